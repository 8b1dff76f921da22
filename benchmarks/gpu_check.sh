#!/usr/bin/env bash
# The one script for a lent GPU machine (H100/H200, nothing but the repo and python3 with torch):
#   1. build the package and the extension in place, print `python -m inik_fast info`
#   2. run the GPU tests (pytest -m gpu), and the release-fixture tests when the fixture was carried
#      into .carry/iniknet_official_float64.pt
#   3. run the GPU benchmarks, 4. write benchmarks/results/<gpu>-<date>.{json,md}
# Every stage has its own time limit, a failing stage does not stop the next, and everything lands
# in DIR as it is produced (at most 8 files): summary.txt, build.log, tests.log, bench.log,
# bench-ops.json, bench-model.json (raw pytest-benchmark JSON) and <gpu>-<date>.json/.md.
#
# usage: benchmarks/gpu_check.sh --out DIR [--cpu-dry-run] [--deadline SECONDS]
#   --cpu-dry-run  prove the plumbing on a CPU: no build (uses the extension already built), the
#                  Triton interpreter, tiny sizes, one round; results go to DIR only
#   --deadline     seconds for the whole script (default 500, 240 for a dry run); each stage has a
#                  cap and keeps time back for the stages after it, so the benchmarks always run
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
[ -n "$DEADLINE" ] || DEADLINE=$([ $DRY = 1 ] && echo 240 || echo 500)
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
START=$(date +%s)
RESERVE=15          # seconds kept back for the last report
FAILED=0
REPORT_MD=$(mktemp)  # outside DIR: only the files named above come back
trap 'rm -f "$REPORT_MD"' EXIT
: >"$OUT/summary.txt"

if [ $DRY = 1 ]; then
  export TRITON_INTERPRET=1 OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}  # the interpreter's numpy stalls on BLAS threads
  BENCH_ARGS=(--bench-device cpu --bench-size tiny)
else
  BENCH_ARGS=(--bench-device cuda --bench-size full)
fi
if [ -f .carry/iniknet_official_float64.pt ]; then
  export INIK_FAST_FIXTURE="$PWD/.carry/iniknet_official_float64.pt"
fi

record() {  # name status seconds note
  printf '%-13s %-9s %5ss  %s\n' "$1" "$2" "$3" "$4" | tee -a "$OUT/summary.txt"
}

# stage NAME MAX_SECONDS KEEP_SECONDS LOG CMD...: run CMD, appending to LOG, for at most
# MAX_SECONDS and so that KEEP_SECONDS (given for a 500 s deadline, scaled to this one) remain for
# the later stages
stage() {
  local name=$1 max=$2 keep=$(($3 * DEADLINE / 500)) log=$4; shift 4
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
  tally=$(tail -n +"$from" "$log" | grep -E '[0-9]+ (passed|failed|errors?|skipped|deselected)' | tail -n 1 | tr -d '=' | xargs)
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
  stage "$name" "$max" "$keep" "$OUT/bench.log" bash -c '
    budget=$((STAGE_LIMIT - 40 > 10 ? STAGE_LIMIT - 40 : 10))
    exec "$0" -m pytest "$1" --benchmark-only -q -p no:cacheprovider --bench-budget "$budget" \
      --benchmark-json "$2" --benchmark-columns=median,rounds "${@:3}"' \
    "$PY" "benchmarks/$suite.py" "$OUT/$name.json" "${BENCH_ARGS[@]}"
  local jsons=()
  for f in "$OUT"/bench-ops.json "$OUT"/bench-model.json; do [ -s "$f" ] && jsons+=("$f"); done
  [ ${#jsons[@]} -gt 0 ] || return
  if "$PY" benchmarks/report.py "${jsons[@]}" --out-dir "$OUT" >"$REPORT_MD" 2>>"$OUT/bench.log"; then
    [ $DRY = 1 ] || for f in "$OUT"/*.md; do cp "$f" "${f%.md}.json" benchmarks/results/; done
  else
    record report FAIL 0 "benchmarks/report.py failed, see bench.log"; FAILED=1
  fi
}

# 1. build
if [ $DRY = 1 ]; then
  record build skipped 0 "dry run: uses the extension already built"
else
  stage install 120 300 "$OUT/build.log" env INIK_FAST_SKIP_EXT=1 "$PY" -m pip install -q --no-build-isolation --no-deps -e .
  stage build-ext 270 220 "$OUT/build.log" env TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" "$PY" setup.py -q build_ext --inplace
fi
stage info 60 200 "$OUT/build.log" "$PY" -m inik_fast info
grep -E '^ +(cpu|cuda)' "$OUT/build.log" | tail -n 8

# 2. tests
stage tests-gpu 150 200 "$OUT/tests.log" "$PY" -m pytest tests -m gpu -q -p no:cacheprovider
if [ -n "${INIK_FAST_FIXTURE:-}" ]; then
  stage tests-fixture 90 180 "$OUT/tests.log" env PYTHONPATH="benchmarks${PYTHONPATH:+:$PYTHONPATH}" \
    "$PY" -m pytest tests -p fixture_tests -q -p no:cacheprovider
else
  record tests-fixture skipped 0 "no .carry/iniknet_official_float64.pt"
fi

# 3. benchmarks (rm: a JSON left from an earlier run in DIR must not be reported as this run's)
rm -f "$OUT/bench-ops.json" "$OUT/bench-model.json"
bench bench-ops 150 90 bench_ops
bench bench-model 180 0 bench_model

# 4. report and summary
if [ -s "$REPORT_MD" ]; then
  echo; cat "$REPORT_MD"
fi
echo
echo "=== gpu_check summary: $("$PY" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU", "| torch", torch.__version__)' 2>/dev/null), $(date -u +%FT%TZ), $(($(date +%s) - START))s"
cat "$OUT/summary.txt"
echo "files in $OUT: $(cd "$OUT" && ls | xargs)"
exit $FAILED
