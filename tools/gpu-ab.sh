#!/usr/bin/env bash
# Same-call A/B of two kvcast_bench binaries: ROUNDS rounds, each running A then B with the
# same filter, in one process each, back to back (so both see the same machine state).
#
#   tools/gpu-ab.sh OUTDIR A_BENCH B_BENCH ROUNDS FILTER
#
# Writes OUTDIR/ab-a-R.json and OUTDIR/ab-b-R.json; then, on any machine:
#   python3 tools/bench_report.py --ab OUTDIR/ab-a-*.json --vs OUTDIR/ab-b-*.json
set -uo pipefail
out=${1:?usage: tools/gpu-ab.sh OUTDIR A_BENCH B_BENCH ROUNDS FILTER}
a=${2:?}; b=${3:?}; rounds=${4:?}; filter=${5:?}
mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
  for side in a b; do
    bin=$a; [ "$side" = b ] && bin=$b
    LD_LIBRARY_PATH="$(dirname "$bin"):${LD_LIBRARY_PATH:-}" "$bin" --benchmark_filter="$filter" \
      --benchmark_out="$out/ab-$side-$r.json" --benchmark_out_format=json > "$out/ab-$side-$r.txt" 2>&1
    echo "ab round $r $side rc=$? rows=$(grep -c '^[a-z]' "$out/ab-$side-$r.txt")"
  done
done
