"""Training throughput (images/s) of each objective for the default small model on the available device.

    python bench/train.py [--device auto|cpu|cuda] [--batch-size B] [--steps N] [--tiny]

Random uint8 images (timing does not depend on the pixels); a few warm-up steps, then timed full steps
(augmentation, forward, backward, optimizer, momentum update) on a throw-away copy (``Trainer.calibrate``).
"""

from __future__ import annotations

import argparse
import json

import torch

from backend.training.data import ImageSet
from backend.training.encoder import DEFAULT_ARCH_KWARGS
from backend.training.trainer import TrainConfig, Trainer, resolve_device

OBJECTIVES = [("mim", 0.0), ("cl", 1.0), ("hybrid", 0.5)]
TINY = {"img_size": 32, "patch_size": 4, "embed_dim": 64, "depth": 2, "num_heads": 2, "num_classes": 0}


def measure(
    objective: str, lam: float, device: torch.device, batch_size: int, steps: int, arch_kwargs: dict
) -> float:
    size = int(arch_kwargs.get("img_size", 32))
    n = batch_size * 2
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
    data = ImageSet(images, torch.zeros(n, dtype=torch.long), ["x"], "random")
    cfg = TrainConfig(
        objective=objective,
        lam=lam,
        batch_size=batch_size,
        device=str(device),
        arch_kwargs=arch_kwargs,
        progress=False,
        out="out/bench_train",
    )
    return Trainer(cfg, data).calibrate(warmup=3, min_seconds=1.0, max_steps=steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None, help="default 512 on CUDA, 16 on the CPU")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (at most)")
    ap.add_argument("--tiny", action="store_true", help="a dim-64, 2-block ViT instead of ViT-Tiny")
    args = ap.parse_args()
    device = resolve_device(args.device)
    batch = args.batch_size or (512 if device.type == "cuda" else 16)
    arch_kwargs = TINY if args.tiny else dict(DEFAULT_ARCH_KWARGS)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    results = {}
    for objective, lam in OBJECTIVES:
        ips = measure(objective, lam, device, batch, args.steps, arch_kwargs)
        results[objective] = round(ips, 1)
        print(f"{objective:7s} {ips:10.1f} images/s  (batch {batch}, {name}, {arch_kwargs})", flush=True)
    print(json.dumps({"device": name, "batch_size": batch, "images_per_s": results}))


if __name__ == "__main__":
    main()
