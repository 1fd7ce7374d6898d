#!/usr/bin/env bash
# kvcast benchmarks on a GPU: the Google Benchmark suite to JSON, and a look at the kernel's SASS.
#
#   tools/gpu-bench.sh OUTDIR BUILD_DIR [extra benchmark flags, e.g. --benchmark_filter=...]
#
# Then, on any machine: python3 tools/bench_report.py OUTDIR/bench.json
set -uo pipefail
out=${1:?usage: tools/gpu-bench.sh OUTDIR BUILD_DIR [flags]}
build=${2:?usage: tools/gpu-bench.sh OUTDIR BUILD_DIR [flags]}
shift 2
mkdir -p "$out"
bench="$build/benchmarks/kvcast_bench"
export LD_LIBRARY_PATH="$(dirname "$bench"):${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > "$out/gpu.txt" 2>&1
# SASS of the main variant: 16-byte loads, 16-byte stores and packed fp8 conversions.
if command -v cuobjdump >/dev/null; then
  cuobjdump -sass "$bench" > "$out/sass-all.txt" 2>/dev/null
  awk '/Function : .*downcast_kernel.*13__nv_bfloat16.*4e4m3.*ELi16ELi16ELb1ELi256ELb0E/{p=1} p&&/Function : /&&!/downcast_kernel.*13__nv_bfloat16.*4e4m3.*ELi16ELi16ELb1ELi256ELb0E/{p=0} p' "$out/sass-all.txt" > "$out/sass-kvcast-bf16-e4m3-v16.txt"
  {
    echo "SASS opcode counts, kvcast downcast_kernel<bf16, e4m3, *, vec 16, dense> (both modes):"
    grep -oE '(LDG|STG|LD|ST)\.E[A-Z0-9_.]*|F2FP[A-Z0-9_.]*|MUFU[A-Z0-9_.]*|FCHK|CALL[A-Z.]*' "$out/sass-kvcast-bf16-e4m3-v16.txt" | sort | uniq -c
    # The realigned kernel (odd rows): 16-byte loads and stores, shuffles, byte stores at the ends.
    echo "SASS opcode counts, kvcast downcast_realigned_kernel<bf16, e4m3, *> (both modes; each shuffle also has a divergent-path copy):"
    awk '/Function : .*downcast_realigned_kernel.*13__nv_bfloat16NS_4e4m3/{p=1;next} p&&/Function : /{p=0} p' "$out/sass-all.txt" |
      grep -oE '(LDG|STG)\.E[A-Z0-9_.]*|SHFL\.[A-Z]+|F2FP[A-Z0-9_.]*|CALL[A-Z.]*' | sort | uniq -c
  } > "$out/sass-summary.txt"
  rm -f "$out/sass-all.txt"
fi
"$bench" --benchmark_out="$out/bench.json" --benchmark_out_format=json "$@" > "$out/bench.txt" 2>&1
echo "bench rc=$? rows=$(grep -c '^[a-z]' "$out/bench.txt")"
