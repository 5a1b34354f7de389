#!/usr/bin/env bash
# One device run of the demo-model recipe (scripts/train_demo_models.py): plan from measured images/s, train
# the three models with snapshots, probe, analyse, pack. Everything is written to $OUT as it goes (checkpoints
# included), so a run cut short is resumed by running it again with the returned $OUT carried back.
# Needs the CIFAR-10 archives in .data/cifar10/ (carried to the device) or ../shared/data/cifar10/.
#   OUT=out/demo_run BUDGET=270 scripts/train_demo_models.sh [extra train_demo_models.py options]
# BENCH_JSON=path plans from an earlier `bench/train.py --json` run on the same GPU (no calibration here).
# Device time: about 40 s start-up and data, up to 3 x 60 s compiling, BUDGET s training, about 90 s probes
# and analyses; the whole command is capped at LIMIT s (default 590: under a 10-minute command and inside an
# 11-minute device allowance with the machine's start).
set -uo pipefail
OUT=${OUT:-out/demo_run}
mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
timeout --signal=TERM "${LIMIT:-590}" $PY scripts/train_demo_models.py --out "$OUT" --device "${DEVICE:-cuda}" \
    --budget "${BUDGET:-270}" ${BENCH_JSON:+--bench-json "$BENCH_JSON"} "$@" 2>&1 | tee -a "$OUT/log.txt"
rc=${PIPESTATUS[0]}
if [ "${BENCH:-0}" = 1 ]; then  # the speed figures of bench/train.py (eager and compiled), if time is left
    timeout 240 $PY bench/train.py --device "${DEVICE:-cuda}" --compile none,default --optimizer-ab \
        --json "$OUT/bench_train.json" 2>&1 | tee "$OUT/bench_train.txt"
fi
exit "$rc"
