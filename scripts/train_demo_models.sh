#!/usr/bin/env bash
# One device run for the demo models: train, probe and analyse the three CIFAR-10 ViTs, then the capture
# benchmark. Needs the CIFAR-10 archives in .data/cifar10/ (carried to the device) or ../shared/data/cifar10/.
#   OUT=out/demo_run BUDGET=280 scripts/train_demo_models.sh
set -uo pipefail
OUT=${OUT:-out/demo_run}
mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
$PY scripts/train_demo_models.py --out "$OUT" --device "${DEVICE:-cuda}" --budget "${BUDGET:-280}" "$@" 2>&1 \
    | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
if [ -f bench/capture.py ]; then
    timeout "${BENCH_TIMEOUT:-90}" $PY bench/capture.py --device "${DEVICE:-cuda}" 2>&1 | tee "$OUT/bench_capture.txt"
fi
exit "$rc"
