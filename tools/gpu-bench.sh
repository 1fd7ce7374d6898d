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
# SASS: every write kernel's instruction count, and the opcodes of the dense 16-wide and the
# realigned bf16 E4M3 kernels (16-byte loads and stores, packed fp8 conversions, shuffles).
if command -v cuobjdump >/dev/null; then
  cuobjdump -sass "$bench" > "$out/sass-all.txt" 2>/dev/null
  python3 "$(dirname "$0")/sass_summary.py" "$out/sass-all.txt" > "$out/sass-summary.txt"
  # Kernels whose global loads are not all issued before the first is waited for (a decode step
  # then pays two memory latencies): tools/sass_loads.py.
  python3 "$(dirname "$0")/sass_loads.py" "$out/sass-all.txt" > "$out/sass-loads.txt"
  rm -f "$out/sass-all.txt"
fi
"$bench" --benchmark_out="$out/bench.json" --benchmark_out_format=json "$@" > "$out/bench.txt" 2>&1
echo "bench rc=$? rows=$(grep -c '^[a-z]' "$out/bench.txt")"
