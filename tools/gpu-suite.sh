#!/usr/bin/env bash
# kvcast GPU suite: every test binary, then compute-sanitizer (memcheck, racecheck, initcheck,
# synccheck) over a representative subset of the GPU tests, with one summary file of counts.
#
#   tools/gpu-suite.sh OUTDIR [BUILD_DIR]
#
# KVCAST_SUITE_PARTS=tests or =sanitizers runs one half (to fit a run limit); default both.
# KVCAST_SUITE_JOBS=N runs up to N of the runs at once (they share the GPU; the host reference
# is most of their time); default 1, one after the other. The summary's order is the same.
# BUILD_DIR holds built tests (for example from `cmake --preset h100 && cmake --build --preset h100`);
# without it the script configures and builds build-h100 itself (needs nvcc, CMake, Ninja and
# GoogleTest on the machine).
set -uo pipefail
out=${1:?usage: tools/gpu-suite.sh OUTDIR [BUILD_DIR]}
build=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }

if [ -z "$build" ]; then
  build="$root/build-h100"
  (cd "$root" && cmake --preset h100 -DKVCAST_BUILD_BENCHMARKS=OFF >/dev/null && cmake --build --preset h100) > "$out/build.log" 2>&1 \
    || { note "build failed: see build.log"; exit 1; }
fi
tests="$build/tests"
note "kvcast GPU suite — $(date -u +%FT%TZ)"
note "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo unknown)"

status=0
parts=${KVCAST_SUITE_PARTS:-all}
jobs_max=${KVCAST_SUITE_JOBS:-1}
runs=()  # each run's summary line goes to $out/line-<index>.txt; printed in order at the end
start_run() {  # start_run LINE_PREFIX LOG KIND COMMAND...: KIND is tests or a sanitizer tool
  local index=${#runs[@]} prefix=$1 log=$2 kind=$3
  shift 3
  runs+=("$index")
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do sleep 1; done
  (
    start=$(date +%s)
    "$@" > "$log" 2>&1
    rc=$?
    passed=$(grep -m1 -oE '\[  PASSED  \] [0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
    if [ "$kind" = tests ]; then
      failed=$(grep -m1 -oE '\[  FAILED  \] [0-9]+ test' "$log" | grep -oE '[0-9]+' || echo 0)
      skipped=$(grep -m1 -oE '\[  SKIPPED \] [0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
      echo "$prefix: rc=$rc passed=$passed failed=$failed skipped=$skipped ($(( $(date +%s) - start ))s)" > "$out/line-$index.txt"
    else
      errors=$(grep -oE 'ERROR SUMMARY: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$' || echo '?')
      [ "$kind" = racecheck ] && errors=$(grep -oE 'RACECHECK SUMMARY: [0-9]+ hazard' "$log" | tail -1 | grep -oE '[0-9]+' || echo "$errors")
      echo "$prefix: rc=$rc errors=$errors tests_passed=$passed ($(( $(date +%s) - start ))s)" > "$out/line-$index.txt"
    fi
    echo "$rc" > "$out/rc-$index.txt"
  ) &
}

[ "$parts" = sanitizers ] || for bin in kvcast_test_host kvcast_test_read_host kvcast_test_numerics kvcast_test_primitives kvcast_test_gpu kvcast_test_gpu_fastmath kvcast_test_gpu_hostile kvcast_test_block kvcast_test_read kvcast_test_read_fastmath kvcast_test_nvfp4; do
  start_run "tests $bin" "$out/$bin.log" tests "$tests/$bin"
done

# Sanitizers over a subset that reaches every kernel variant, layout and path but runs in minutes.
gpu_subset='Downcast/0.*:Downcast/5.*:Downcast/10.*:DropIn.*:Checked.*:InputPrecision.*:LargeCalls.*'
hostile_subset='Property.*:EdgeValues.*:Graph.*:Streams.*'
block_subset='BlockDowncast.FusedRopeIsBitExactBf16'
read_subset='ReadGrid.SlotsBf16:ReadGrid.PageTableBf16:ReadGrid.StridesAlignmentAndOddShapes:ReadProperty.*:ReadGraph.*:ReadRoundTrip.*'
nvfp4_subset='Nvfp4Write.Bf16Grid*:Nvfp4Write.HostileGlobalScalesOnTheDevice'
export KVCAST_PROPERTY_CASES=${KVCAST_PROPERTY_CASES_SANITIZED:-150}
[ "$parts" = tests ] || for tool in memcheck racecheck initcheck synccheck; do
  for pair in "kvcast_test_gpu:$gpu_subset" "kvcast_test_gpu_hostile:$hostile_subset" "kvcast_test_block:$block_subset" \
              "kvcast_test_read:$read_subset" "kvcast_test_nvfp4:$nvfp4_subset"; do
    bin=${pair%%:*}
    filter=${pair#*:}
    start_run "sanitizer $tool $bin" "$out/sanitizer-$tool-$bin.log" "$tool" \
      compute-sanitizer --tool "$tool" --error-exitcode 99 "$tests/$bin" --gtest_filter="$filter"
  done
done
wait
for index in "${runs[@]}"; do
  note "$(cat "$out/line-$index.txt")"
  [ "$(cat "$out/rc-$index.txt")" = 0 ] || status=1
  rm -f "$out/line-$index.txt" "$out/rc-$index.txt"
done
[ "$parts" = sanitizers ] || grep -h '^\[ property \]' "$out/kvcast_test_gpu_hostile.log" | tee -a "$summary"
note "suite status: $([ $status -eq 0 ] && echo PASS || echo FAIL)"
exit $status
