#!/usr/bin/env bash
# kvcast's NVFP4 write in FlashInfer's numerics (Arithmetic::fast_math) against FlashInfer's own
# kernel: builds tools/flashinfer_nvfp4/ against an unpacked FlashInfer wheel (its headers and
# vendored CCCL; FlashInfer's side with FlashInfer's JIT flags) and runs it on this machine's GPU.
#   tools/flashinfer-nvfp4.sh FLASHINFER_DATA_DIR [OUT_DIR] [ARCH]
# FLASHINFER_DATA_DIR: the wheel's flashinfer/data (holding include/ and cccl/).
set -euo pipefail
data=${1:?usage: tools/flashinfer-nvfp4.sh FLASHINFER_DATA_DIR [OUT_DIR] [ARCH]}
out=${2:-build-flashinfer-nvfp4}
arch=${3:-sm_90}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
nvcc -O3 -std=c++17 -use_fast_math -DNDEBUG -DFLASHINFER_ENABLE_F16 -DFLASHINFER_ENABLE_BF16 -DFLASHINFER_ENABLE_FP8_E4M3 \
  -DFLASHINFER_ENABLE_FP8_E5M2 -arch="$arch" -I"$data/cccl/libcudacxx/include" -I"$data/cccl/cub" -I"$data/cccl/thrust" \
  -I"$data/include" -c "$root/tools/flashinfer_nvfp4/flashinfer_side.cu" -o "$out/flashinfer_side.o"
nvcc -O3 -std=c++17 -arch="$arch" -I"$root/include" -c "$root/tools/flashinfer_nvfp4/compare.cu" -o "$out/compare.o"
nvcc -arch="$arch" "$out/flashinfer_side.o" "$out/compare.o" -o "$out/flashinfer_nvfp4_compare"
if [[ ${KVCAST_BUILD_ONLY:-0} != 1 ]]; then "$out/flashinfer_nvfp4_compare"; fi
