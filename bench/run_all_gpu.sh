#!/usr/bin/env bash
# Every benchmark scenario at full settings on one GPU, in about 9 minutes; results in bench/out/
# (one JSON per scenario, written row by row, plus RESULTS_gpu.md and run_all_gpu.log). With $OUT
# set (the remote runner's output folder), bench/out/ is copied there at the end.
#
#   bash bench/fetch_wheels.sh          # once, on a machine with PyPI (fills bench/wheels/)
#   bash bench/run_all_gpu.sh           # on the GPU machine; remote runner: carry=["bench/wheels"]
#
# SMOKE=1 runs every scenario in --smoke mode instead (checks this script on any machine).
# Each scenario runs under its own time limit (SIGINT, so partial JSON stays) and the whole run
# under BUDGET_S (default 555 s): a slow or failing scenario never takes the others down.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3 || command -v python)}
OUTDIR=bench/out
mkdir -p "$OUTDIR"
LOG="$OUTDIR/run_all_gpu.log"
: > "$LOG"
START=$(date +%s)
DEADLINE=$((START + ${BUDGET_S:-555}))

# distil runs from src/ (no install needed); missing pure-Python deps come from the wheelhouse.
DEPS=/tmp/distil-bench-deps
export PYTHONPATH="$DEPS:$PWD/src:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}"
if [ -d bench/wheels ]; then
  "$PY" bench/install_deps.py bench/wheels "$DEPS" >> "$LOG" 2>&1
fi
if ! "$PY" -c "import distil.trainer, distil.cache" >> "$LOG" 2>&1; then
  echo "cannot import distil (see $LOG): run 'bash bench/fetch_wheels.sh' where PyPI is reachable" \
       "and pass carry=[\"bench/wheels\"] to the remote run" | tee -a "$LOG"
  exit 1
fi
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NONE")
EOF

SMOKE_ARG=${SMOKE:+--smoke}
run() {  # run NAME LIMIT_S COMMAND...: bounded by LIMIT_S and by what is left of the budget
  local name=$1 limit=$2; shift 2
  local now left rc
  now=$(date +%s); left=$((DEADLINE - now))
  if [ "$left" -lt 25 ]; then echo "== $name: skipped, budget spent" | tee -a "$LOG"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s)" | tee -a "$LOG"
  timeout --signal=INT --kill-after=15 "$limit" "$@" >> "$LOG" 2>&1
  rc=$?
  echo "== $name: rc=$rc after $(( $(date +%s) - now ))s" | tee -a "$LOG"
}

run vision_kd_step 160 "$PY" bench/vision_kd_step.py $SMOKE_ARG
SEARCH_S=25; [ -n "${SMOKE:-}" ] && SEARCH_S=5
run lm_token_kd 170 "$PY" bench/lm_token_kd.py --search-budget-s $SEARCH_S $SMOKE_ARG
run cached_teacher 60 "$PY" bench/cached_teacher.py $SMOKE_ARG
if [ -z "${SMOKE:-}" ]; then  # compiling on a CPU takes minutes: GPU only
  run vision_kd_step_compiled 120 "$PY" bench/vision_kd_step.py --compile --tag compiled \
      --pairs resnet32x4-resnet8x4 --batch-sizes 256 --losses hinton_kd --rows distil_step floor
fi
if "$PY" -c "import sklearn, matplotlib" 2> /dev/null; then
  run cpu_demo 40 env CUDA_VISIBLE_DEVICES= "$PY" bench/cpu_demo.py --repeats 1 --no-warmup $SMOKE_ARG
else
  echo "== cpu_demo: skipped (scikit-learn / matplotlib not installed here)" | tee -a "$LOG"
fi

"$PY" bench/report.py "$OUTDIR" $SMOKE_ARG > "$OUTDIR/RESULTS_gpu.md"
cat "$OUTDIR/RESULTS_gpu.md"
echo "total $(( $(date +%s) - START ))s" | tee -a "$LOG"
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp -r "$OUTDIR" "$OUT/bench_out"; fi
