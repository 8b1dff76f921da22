#!/usr/bin/env bash
# The exact recipe of the bundled default checkpoint inik_fast/weights/default.pt:
# `inik-fast train` on the synthetic defocus data (scikit-image's photos, the motorcycle pair
# held out), the release model config, Adam 2e-4, MultiStepLR x0.5 at 24/48/72% of the
# steps, MSE + 0.1 FFT loss, crops 128 x 128, batch 2, 5000 steps, fused backend ("auto").
# About 65 minutes on 2 CPU cores (the bundled run: 1:04:27, 0.77 s a step; on a busy machine add
# --threads 1, which is slower alone, 1.6 s a step, but does not collapse under contention).
# Rerunning it after an interruption resumes from runs/default/last.pt (checkpoint every 50 steps).
# Extra arguments go to `inik-fast train` (e.g. --stop-after 3 with RUN=/tmp/try W=/tmp/try_w for a dry run).
# STEPS=10000 RUN=runs/default10k doubles the schedule (about 2 hours 10 minutes) if 5000 steps fall short of the goal.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN=${RUN:-runs/default}
STEPS=${STEPS:-5000}
W=${W:-inik_fast/weights}

"$PY" -m inik_fast train --dataset synthetic --crop 128 --batch 2 --steps "$STEPS" --lr 2e-4 --seed 0 \
    --backend auto --val-every 500 --ckpt-every 50 --log-every 50 --out "$RUN" --resume "$@"
mkdir -p "$W"
"$PY" -m inik_fast export "$RUN/last.pt" "$W/default.pt"
cp "$RUN/train.log" "$W/default.log"
# The PSNR goal: held-out synthetic images (other photos and seeds than training) incl. the motorcycle pair.
"$PY" -m inik_fast eval --checkpoint "$W/default.pt" --json "$W/default_eval.json" | tee "$W/default_eval.txt"
# The same weights again, with the evaluation beside the training settings in the file's meta.
"$PY" -m inik_fast export "$RUN/last.pt" "$W/default.pt" --eval-json "$W/default_eval.json"
