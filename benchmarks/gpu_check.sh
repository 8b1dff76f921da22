#!/usr/bin/env bash
# The one script for a lent GPU machine (H100/H200, nothing but the repo and python3 with torch):
#   1. build the package and the extension in place, print `python -m inik_fast info`
#   2. run the GPU tests (pytest -m gpu, in parallel with pytest-xdist where it is there); with the
#      release's large fixture carried into .carry/iniknet_official_float64.pt, its GPU tests too
#   3. sweep the kernel variants built side by side (benchmarks/sweep.py), each checked against the
#      float64 reference and timed beside the release; 4. profile one call per backend, kernel by
#      kernel (benchmarks/profile_gpu.py, then Nsight Compute when `ncu` is there)
#   5. run the GPU benchmarks and write benchmarks/results/<gpu>-<date>.{json,md} and
#      sweep-<gpu>-<date>.{json,md}; 6. the large-fixture tests, when carried (CPU-side)
# Every stage has its own time limit, a failing stage does not stop the next, and everything lands
# in DIR as it is produced (at most 8 files): summary.txt, run.log (every stage's output),
# profile.txt, <gpu>-<date>.json/.md (the benchmarks) and sweep-<gpu>-<date>.json/.md.
#
# usage: benchmarks/gpu_check.sh --out DIR [--cpu-dry-run] [--deadline SECONDS]
#   --cpu-dry-run  prove the plumbing on a CPU: no build (uses the extension already built), the
#                  Triton interpreter, tiny sizes, one round; results go to DIR only
#   --deadline     seconds for the whole script (default 470, 420 for a dry run: about 90 s of CPU
#                  work that a loaded shared machine can stretch 4-5x); each stage has a cap and
#                  keeps time back for the stages after it, so the benchmarks always run
#   PYTHON         interpreter to use (default python3)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

OUT="" DRY=0 DEADLINE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="${2:-}"; shift 2 ;;
    --cpu-dry-run) DRY=1; shift ;;
    --deadline) DEADLINE="${2:-}"; shift 2 ;;
    *) echo "gpu_check.sh: unknown argument '$1'; expected --out DIR [--cpu-dry-run] [--deadline SECONDS]" >&2; exit 2 ;;
  esac
done
[ -n "$OUT" ] || { echo "gpu_check.sh: --out DIR is required" >&2; exit 2; }
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)" || exit 2
[ -n "$DEADLINE" ] || DEADLINE=$([ $DRY = 1 ] && echo 420 || echo 470)
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
# every stage imports this checkout's package, the scripts run as files (sweep.py, profile_gpu.py)
# too, even where the interpreter has another copy installed (a dry run does not install)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
RESERVE=15          # seconds kept back for the last report
FAILED=0
WORK=$(mktemp -d)  # outside DIR: only the files named above come back
trap 'rm -rf "$WORK"' EXIT
REPORT_MD="$WORK/report.md" LOG="$OUT/run.log"
: >"$OUT/summary.txt"

if [ $DRY = 1 ]; then
  export TRITON_INTERPRET=1 OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}  # the interpreter's numpy stalls on BLAS threads
  BENCH_ARGS=(--bench-device cpu --bench-size tiny) SWEEP_ARGS=(--tiny)
  export BENCH_RESERVE=20  # seconds a stage keeps after its budget: one tiny entry, then the JSON
else
  BENCH_ARGS=(--bench-device cuda --bench-size full) SWEEP_ARGS=()
  export BENCH_RESERVE=40
fi
if [ -f .carry/iniknet_official_float64.pt ]; then
  export INIK_FAST_FIXTURE="$PWD/.carry/iniknet_official_float64.pt"
fi

record() {  # name status seconds note
  printf '%-13s %-9s %5ss  %s\n' "$1" "$2" "$3" "$4" | tee -a "$OUT/summary.txt"
}

# stage NAME MAX_SECONDS KEEP_SECONDS LOG CMD...: run CMD, appending to LOG, for at most
# MAX_SECONDS and so that KEEP_SECONDS (given for a 470 s deadline, scaled to this one) remain for
# the later stages
stage() {
  local name=$1 max=$2 keep=$(($3 * DEADLINE / 470)) log=$4; shift 4
  local left=$((DEADLINE - ($(date +%s) - START) - RESERVE - keep))
  local limit=$((max < left ? max : left))
  if [ $limit -lt 10 ]; then
    record "$name" SKIPPED 0 "deadline ${DEADLINE}s reached"; FAILED=1; return 1
  fi
  touch "$log"
  local from=$(($(wc -l <"$log") + 1))
  echo "=== $name (limit ${limit}s): $*" >>"$log"
  local t0=$(date +%s)
  STAGE_LIMIT=$limit timeout -k 10 "$limit" "$@" >>"$log" 2>&1
  local rc=$? status=ok
  if [ $rc = 124 ] || [ $rc = 137 ]; then status=TIMEOUT; elif [ $rc != 0 ]; then status="FAIL($rc)"; fi
  [ $rc = 0 ] || FAILED=1
  local tally
  tally=$(tail -n +"$from" "$log" | grep -E '^(sweep: |=* ?[0-9]+ (passed|failed|errors?|skipped|deselected))' | tail -n 1 | tr -d '=' | xargs)
  echo "--- $name: tail of $(basename "$log")"
  tail -n +"$from" "$log" | tail -n 5
  record "$name" "$status" $(($(date +%s) - t0)) "$tally"
  return $rc
}

# bench NAME MAX_SECONDS KEEP_SECONDS SUITE: pytest-benchmark skips what would start after --bench-budget, so
# the JSON is written even when the stage runs short of time; then the report is rebuilt from all
# JSON so far (into DIR; on a GPU also into benchmarks/results)
bench() {
  local name=$1 max=$2 keep=$3 suite=$4
  stage "$name" "$max" "$keep" "$LOG" bash -c '
    budget=$((STAGE_LIMIT - BENCH_RESERVE > 10 ? STAGE_LIMIT - BENCH_RESERVE : 10))
    exec "$0" -m pytest "$1" --benchmark-only -q -p no:cacheprovider --bench-budget "$budget" \
      --benchmark-json "$2" --benchmark-columns=median,rounds "${@:3}"' \
    "$PY" "benchmarks/$suite.py" "$WORK/$name.json" "${BENCH_ARGS[@]}"
  local jsons=()
  for f in "$WORK"/bench-ops.json "$WORK"/bench-model.json; do [ -s "$f" ] && jsons+=("$f"); done
  [ ${#jsons[@]} -gt 0 ] || return
  if "$PY" benchmarks/report.py "${jsons[@]}" --out-dir "$WORK/report" --stages "$OUT/summary.txt" >"$REPORT_MD" 2>>"$LOG"; then
    cp "$WORK"/report/* "$OUT"/
  else
    record report FAIL 0 "benchmarks/report.py failed, see run.log"; FAILED=1
  fi
}

# 1. build
if [ $DRY = 1 ]; then
  record build skipped 0 "dry run: uses the extension already built"
else
  stage install 120 400 "$LOG" env INIK_FAST_SKIP_EXT=1 "$PY" -m pip install -q --no-build-isolation --no-deps -e .
  stage build-ext 200 360 "$LOG" env TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" "$PY" setup.py -q build_ext --inplace
fi
stage info 60 350 "$LOG" "$PY" -m inik_fast info
grep -E '^ +(cpu|cuda|triton)' "$LOG" | tail -n 8

# 2. tests
# in parallel where pytest-xdist is there: compiling the Triton kernels for each tested shape is
# CPU work, and one process took more than 87 s for the first 5 tests (2026-12-04)
XDIST=() && "$PY" -c "import xdist" 2>/dev/null && [ $DRY = 0 ] && XDIST=(-n 12)
stage tests-gpu 180 200 "$LOG" "$PY" -m pytest tests -m gpu -q -p no:cacheprovider --durations=15 "${XDIST[@]}"

# 3. the variant sweep (its budget ends it 20 s before the stage's limit, with its files written)
stage sweep 110 130 "$LOG" bash -c 'exec "$0" benchmarks/sweep.py --out "$1" --budget $((STAGE_LIMIT - 20)) "${@:2}"' \
  "$PY" "$WORK/sweep" "${SWEEP_ARGS[@]}"
cp "$WORK"/sweep/sweep-* "$OUT"/ 2>/dev/null

# 4. the profile: torch.profiler, then Nsight Compute's summary of the CUDA backend's kernels
if [ $DRY = 1 ]; then
  record profile skipped 0 "dry run: needs a GPU"
else
  stage profile 40 115 "$OUT/profile.txt" "$PY" benchmarks/profile_gpu.py
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -n 1)
  if [ -n "$NCU" ]; then
    stage ncu 45 90 "$OUT/profile.txt" "$NCU" --clock-control none --kernel-name regex:ikconv --launch-count 5 \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats "$PY" benchmarks/profile_gpu.py --ncu-target cuda
  else
    record ncu skipped 0 "no ncu found"
  fi
fi

# 5. benchmarks
bench bench-ops 120 60 bench_ops
bench bench-model 110 20 bench_model
[ $DRY = 1 ] || cp "$OUT"/*.md "$OUT"/*.json benchmarks/results/ 2>/dev/null

# 6. the CPU-side tests of the release's large fixture, when it was carried (CI runs them too)
if [ -n "${INIK_FAST_FIXTURE:-}" ]; then
  stage tests-fixture 60 0 "$LOG" env PYTHONPATH="benchmarks${PYTHONPATH:+:$PYTHONPATH}" \
    "$PY" -m pytest tests -p fixture_tests -q -p no:cacheprovider
else
  record tests-fixture skipped 0 "no .carry/iniknet_official_float64.pt"
fi

# 7. report and summary
if [ -s "$REPORT_MD" ]; then
  echo; cat "$REPORT_MD"
fi
echo
echo "=== gpu_check summary: $("$PY" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU", "| torch", torch.__version__)' 2>/dev/null), $(date -u +%FT%TZ), $(($(date +%s) - START))s"
cat "$OUT/summary.txt"
echo "files in $OUT: $(cd "$OUT" && ls | xargs)"
exit $FAILED
