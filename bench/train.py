"""Training speed per objective, in one run: images/s, achieved TFLOP/s and host syncs per step.

    python bench/train.py [--device auto|cpu|cuda] [--shape tiny|vit-tiny] [--batch-size B]
                          [--compile none,default] [--steps N] [--json PATH]

For each objective (mim, cl, hybrid as the recipes build them: Beit for mim and hybrid, ViT with frozen
sin-cos for cl) and each torch.compile mode asked for:

- host syncs per step: the operators of one full step (augmentation, forward, backward, clip, fused AdamW,
  momentum update) that would make the host wait for a GPU, counted by the dispatcher (eager step;
  ``backend.training.measure``);
- FLOPs per step (matmuls, attention, convolutions, forward + backward; torch's FlopCounterMode);
- images/s of full steps after warm-up (warm-up includes compilation), on the trainer itself
  (``Trainer.calibrate``), and the achieved TFLOP/s = FLOPs per step x steps per second;
- for scale, in the same run: images/s of a bare forward + backward of the same encoder (no augmentation,
  heads, optimizer), and the ratio of the two.

The fused-AdamW lever is measured too (``--optimizer-ab``): the same step with torch's default (foreach)
AdamW. Random uint8 images already on the device (timing does not depend on the pixels). ``tiny`` (dim 64, 2
blocks, the default on the CPU) runs in seconds; ``vit-tiny`` (dim 192, 12 blocks) is the shipped shape.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from backend.training.data import ImageSet
from backend.training.measure import count_flops, count_host_syncs
from backend.training.trainer import TrainConfig, Trainer, resolve_device

OBJECTIVES = [("mim", None), ("cl", None), ("hybrid", 0.5)]
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {"embed_dim": 64, "depth": 2, "num_heads": 2},
    "vit-tiny": {},  # the recipe's own ViT-Tiny width
}


def make_trainer(objective: str, lam: float | None, args: argparse.Namespace, compile_mode: str) -> Trainer:
    n = args.batch_size * 4
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    data = ImageSet(images, torch.zeros(n, dtype=torch.long), ["x"], "random")
    cfg = TrainConfig(
        objective=objective,
        lam=lam,
        batch_size=args.batch_size,
        device=str(args.device),
        patch_size=args.patch_size,
        arch_overrides=SHAPES[args.shape],
        compile=compile_mode,
        progress=False,
        out="out/bench_train",
        epochs=1000,
    )
    return Trainer(cfg, data)


def bare_forward_backward(trainer: Trainer, steps: int) -> float:
    """Images/s of the encoder alone: forward + backward of a sum, no augmentation, heads or optimizer."""
    model = trainer.model.encoder
    x = torch.randn(trainer.batch_size, 3, 32, 32, device=trainer.device)
    with trainer._autocast():
        for _ in range(2):
            model.forward_features(x).float().sum().backward()
        trainer._sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            model.forward_features(x).float().sum().backward()
        trainer._sync()
    model.zero_grad(set_to_none=True)
    return steps * trainer.batch_size / (time.perf_counter() - t0)


def measure(objective: str, lam: float | None, args: argparse.Namespace, compile_mode: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    trainer = make_trainer(objective, lam, args, compile_mode)
    row: dict[str, Any] = {"objective": objective, "compile": compile_mode, "batch_size": trainer.batch_size}
    row["encoder"] = type(trainer.model.encoder).__name__
    # syncs and FLOPs on an eager step (the dispatcher modes do not go through compiled graphs)
    eager = trainer.step_fn
    trainer.step_fn = trainer.model
    trainer.train_step(0)
    syncs = count_host_syncs(lambda: trainer.train_step(1))
    row["host_syncs_per_step"] = sum(syncs.values())
    row["host_sync_ops"] = dict(syncs)
    flops = count_flops(lambda: trainer.train_step(2))
    trainer.step_fn = eager
    row["gflop_per_step"] = round(flops / 1e9, 3)
    ips = trainer.calibrate(warmup=3, min_seconds=args.min_seconds, max_steps=args.steps)
    row["images_per_s"] = round(ips, 1)
    row["tflop_per_s"] = round(flops * ips / trainer.batch_size / 1e12, 4)
    if args.optimizer_ab and compile_mode == "none":
        fused = trainer.optimizer
        trainer.optimizer = torch.optim.AdamW(
            trainer.model.optim_groups(trainer.cfg.weight_decay), lr=trainer.cfg.lr, betas=(0.9, 0.95)
        )
        trainer._clip_params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
        row["images_per_s_foreach_adamw"] = round(
            trainer.calibrate(warmup=2, min_seconds=args.min_seconds, max_steps=args.steps), 1
        )
        trainer.optimizer = fused
    bare = bare_forward_backward(trainer, max(3, args.steps // 2))
    row["bare_fwd_bwd_images_per_s"] = round(bare, 1)
    row["step_vs_bare"] = round(ips / bare, 3)
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument(
        "--shape", choices=sorted(SHAPES), default=None, help="default: tiny on CPU, else vit-tiny"
    )
    ap.add_argument("--patch-size", type=int, default=4, choices=[2, 4])
    ap.add_argument("--batch-size", type=int, default=None, help="default 1024 on CUDA, 32 on the CPU")
    ap.add_argument(
        "--compile", default="none", help="comma-separated torch.compile modes, e.g. none,default"
    )
    ap.add_argument("--objectives", default="mim,cl,hybrid", help="comma-separated subset")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (at most)")
    ap.add_argument("--min-seconds", type=float, default=1.0, help="time at least this long per figure")
    ap.add_argument("--optimizer-ab", action="store_true", help="also time torch's default (foreach) AdamW")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    args.device = resolve_device(args.device)
    cuda = args.device.type == "cuda"
    args.shape = args.shape or ("vit-tiny" if cuda else "tiny")
    args.batch_size = args.batch_size or (1024 if cuda else 32)
    name = torch.cuda.get_device_name(args.device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    print(
        f"device {name}, torch {torch.__version__}, shape {args.shape}, batch {args.batch_size}", flush=True
    )
    rows = []
    wanted = args.objectives.split(",")
    for mode in args.compile.split(","):
        for objective, lam in OBJECTIVES:
            if objective not in wanted:
                continue
            try:
                row = measure(objective, lam, args, mode)
            except Exception as exc:  # a compile mode failing must not lose the other figures
                row = {"objective": objective, "compile": mode, "error": f"{type(exc).__name__}: {exc}"[:500]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {
        "device": name,
        "torch": torch.__version__,
        "shape": args.shape,
        "patch_size": args.patch_size,
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{'objective':9s} {'compile':15s} {'img/s':>10s} {'TFLOP/s':>9s} {'syncs':>6s} {'vs bare':>8s}")
    for r in rows:
        if "error" in r:
            print(f"{r['objective']:9s} {r['compile']:15s} error: {r['error'][:80]}")
            continue
        print(
            f"{r['objective']:9s} {r['compile']:15s} {r['images_per_s']:10.1f} {r['tflop_per_s']:9.4f} "
            f"{r['host_syncs_per_step']:6d} {r['step_vs_bare']:8.3f}"
        )


if __name__ == "__main__":
    main()
