"""Cost of one full capture plus every analysis, against a bare timm forward of the same model and batch.

Prints, per (model, batch), the median over interleaved repeats of

    ratio = time(capture + compute_metrics) / min(time(fused forward), time(non-fused forward))

Goal: at most 1.3x. Run: `python bench/capture.py [--device cpu|cuda] [--repeats 7]`.
Random-init weights (timing does not depend on the values).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import timm
import torch

from backend.analysis import compute_metrics
from backend.capture import capture

MODELS = ["vit_small_patch16_224", "vit_base_patch16_224"]


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def set_fused(model: torch.nn.Module, fused: bool) -> None:
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = fused


def bench_one(name: str, batch: int, device: torch.device, repeats: int) -> dict[str, float]:
    model = timm.create_model(name, pretrained=False, num_classes=0).to(device).eval()
    pixels = torch.randn(batch, 3, 224, 224, device=device)

    @torch.no_grad()
    def forward(fused: bool) -> object:
        set_fused(model, fused)
        return model(pixels)

    def full() -> object:
        set_fused(model, True)  # capture switches it off itself
        return compute_metrics(capture(model, pixels, model_id=name), "baseline")

    runs = {"fused": lambda: forward(True), "eager": lambda: forward(False), "capture": full}
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    ratios = []
    for _ in range(repeats):  # interleaved, so that a slow moment of the machine hits every variant alike
        for key, fn in runs.items():
            times[key].append(timed(fn, device))
        ratios.append(times["capture"][-1] / min(times["fused"][-1], times["eager"][-1]))
    return {
        "fused_ms": 1000 * statistics.median(times["fused"]),
        "eager_ms": 1000 * statistics.median(times["eager"]),
        "capture_ms": 1000 * statistics.median(times["capture"]),
        "ratio": statistics.median(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    device = torch.device(args.device)
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    print(f"device: {label}, torch {torch.__version__}, timm {timm.__version__}, repeats {args.repeats}")
    header = ("model", "batch", "fused ms", "eager ms", "capture+analyses ms", "ratio")
    print(f"{header[0]:24s} {header[1]:>5s} {header[2]:>9s} {header[3]:>9s} {header[4]:>20s} {header[5]:>6s}")
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            r = bench_one(name, batch, device, args.repeats)
            print(
                f"{name:24s} {batch:5d} {r['fused_ms']:9.1f} {r['eager_ms']:9.1f} {r['capture_ms']:20.1f} "
                f"{r['ratio']:6.2f}"
            )


if __name__ == "__main__":
    main()
