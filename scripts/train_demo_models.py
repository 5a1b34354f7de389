"""Train, probe and analyse the three shipped demo models in one run (made for one GPU and a fixed time).

    PYTHONPATH=. python scripts/train_demo_models.py --out OUTDIR [--budget 250] [--device cuda]

1. decode CIFAR-10 train and test once (``.data/cifar10/`` or ``../shared/data/cifar10/``);
2. build the three trainers (``cifar-mim-vit-t4`` lam 0, ``cifar-hybrid-vit-t4`` lam 0.5, ``cifar-cl-vit-t4``
   lam 1), measure each one's images/s, and give all three the same number of epochs so that their training
   together fits ``--budget`` seconds;
3. per model: train, export float16 weights + card, per-layer probes + kNN + band-noise robustness (stored in
   the card), then vitscope's own analyses (capture + compute_metrics) on CIFAR-10 test images, from the
   exported float16 file loaded strictly into a fresh timm model;
4. pack each model's files into ``OUTDIR/<id>.tar`` as soon as it is done (a run cut short keeps what it
   finished) and a summary (comparison table, plots) into ``OUTDIR/summary.tar``.

``--tiny`` runs the same path on the CPU in seconds (small ViT, a few dozen images): the dry run before a
device run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tarfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from backend.training.data import load_images
from backend.training.encoder import DEFAULT_ARCH_KWARGS
from backend.training.objectives import ObjectiveConfig
from backend.training.probe import plot_probes, preprocess_for_card, run_probes
from backend.training.trainer import TrainConfig, Trainer, resolve_device

MODELS = [
    ("cifar-mim-vit-t4", "mim", 0.0),
    ("cifar-hybrid-vit-t4", "hybrid", 0.5),
    ("cifar-cl-vit-t4", "cl", 1.0),
]
TINY_ARCH = {"img_size": 32, "patch_size": 4, "embed_dim": 48, "depth": 3, "num_heads": 3, "num_classes": 0}
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def analyse(
    weights: Path, card: dict[str, Any], images: torch.Tensor, device: torch.device
) -> dict[str, Any]:
    """Capture + compute_metrics on the exported float16 file, loaded strictly into a fresh timm model."""
    import timm
    from safetensors.torch import load_file

    from backend.analysis import compute_metrics
    from backend.capture import capture

    model = timm.create_model(card["arch"], pretrained=False, **card["arch_kwargs"])
    model.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()}, strict=True)
    model = model.to(device).eval()
    prep = preprocess_for_card(card)
    pixels = prep(images.to(device))
    record = {
        "data": "CIFAR-10 test",
        "input_size": prep.size,
        "resize": "none (native 32 px)",
        "mean": list(prep.mean),
        "std": list(prep.std),
    }
    trace = capture(model, pixels, model_id=card["id"], preprocessing=record)
    return compute_metrics(trace, card["family"])


def pack(tar_path: Path, files: list[Path]) -> None:
    tmp = tar_path.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for f in files:
            if f.exists():
                tar.add(f, arcname=f.name)
    tmp.replace(tar_path)


def comparison(metrics: dict[str, dict[str, Any]], probes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-layer table of the paper's quantities, one column per model."""
    table: dict[str, Any] = {}
    for name, m in metrics.items():
        table[name] = {
            "attention_distance": [round(v, 3) for v in m["attention_distance"]["mean"]],
            "nmi": [round(v, 4) for v in m["nmi"]["mean"]],
            "delta_log_amplitude": [round(v, 3) for v in m["delta_log_amplitude"]["value"]],
        }
    for name, p in probes.items():
        table.setdefault(name, {})["linear_top1"] = p["linear"]["top1"]
        table[name]["knn_top1"] = p["knn"]["top1"]
        if "noise" in p:
            table[name]["noise_drop"] = p["noise"]["drop"]
    return table


def plot_metrics(metrics: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, m in metrics.items():
        layers = list(range(1, len(m["attention_distance"]["mean"]) + 1))
        axes[0].plot(layers, m["attention_distance"]["mean"], marker="o", label=name)
        axes[1].plot(layers, m["nmi"]["mean"], marker="o", label=name)
        axes[2].plot(
            m["delta_log_amplitude"]["depth"], m["delta_log_amplitude"]["value"], marker="o", label=name
        )
    for ax, title, ylab in zip(
        axes,
        ["A2 mean attention distance", "A3 NMI (attention collapse)", "A4 delta log amplitude (high freq)"],
        ["pixels", "NMI", "delta log amp"],
        strict=True,
    ):
        ax.set_title(title)
        ax.set_xlabel("layer / depth")
        ax.set_ylabel(ylab)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("out/demo_models"), help="checkpoints and scratch")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--budget", type=float, default=250.0, help="seconds of training for all three together")
    ap.add_argument("--max-epochs", type=float, default=200.0)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=8e-4)
    ap.add_argument("--warmup-frac", type=float, default=0.1)
    ap.add_argument("--train-images", type=int, default=None)
    ap.add_argument("--test-images", type=int, default=None)
    ap.add_argument("--analysis-images", type=int, default=256)
    ap.add_argument("--noise-images", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default=",".join(m[0] for m in MODELS))
    ap.add_argument("--tiny", action="store_true", help="CPU dry run: small ViT, few images, seconds")
    args = ap.parse_args(argv)
    if args.tiny:
        args.train_images = args.train_images or 96
        args.test_images = args.test_images or 48
        args.batch_size = min(args.batch_size, 32)
        args.analysis_images = min(args.analysis_images, 8)
        args.noise_images = min(args.noise_images, 16)
    arch_kwargs = dict(TINY_ARCH if args.tiny else DEFAULT_ARCH_KWARGS)
    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    log(
        f"torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    train_set = load_images("cifar10", "train").subset(args.train_images, args.seed)
    test_set = load_images("cifar10", "test").subset(args.test_images, args.seed)
    log(f"data: train {tuple(train_set.images.shape)}, test {tuple(test_set.images.shape)}")
    analysis_images = test_set.subset(args.analysis_images, args.seed + 1).images

    wanted = set(args.models.split(","))
    trainers: dict[str, Trainer] = {}
    ips: dict[str, float] = {}
    for name, objective, lam in MODELS:
        if name not in wanted:
            continue
        cfg = TrainConfig(
            objective=objective,
            lam=lam,
            data="cifar10",
            name=name,
            out=str(args.work / name),
            epochs=args.max_epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_frac=args.warmup_frac,
            seed=args.seed,
            device=str(device),
            arch_kwargs=arch_kwargs,
            progress=False,
            log_every=20,
            checkpoint_every=0,
            objective_cfg=ObjectiveConfig(),
        )
        trainers[name] = Trainer(cfg, train_set)
        ips[name] = trainers[name].calibrate()
        log(f"bench {name}: {ips[name]:.0f} images/s (batch {trainers[name].batch_size})")
    # One epoch count for all: their training together fits the budget.
    per_epoch_s = sum(t.steps_per_epoch * t.batch_size / ips[n] for n, t in trainers.items())
    epochs = max(1, min(args.max_epochs, math.floor(args.budget / per_epoch_s)))
    log(
        f"plan: {epochs} epochs each ({per_epoch_s:.1f} s per epoch of all three, budget {args.budget:.0f} s)"
    )

    metrics: dict[str, dict[str, Any]] = {}
    probes: dict[str, dict[str, Any]] = {}
    for name, trainer in trainers.items():
        try:
            trainer.set_epochs(epochs)
            trainer.fit()
            h = trainer.history
            log(
                f"{name}: {trainer.step} steps in {trainer.wall_s:.1f} s; loss {h[0]['loss']:.4f} -> "
                f"{h[-1]['loss']:.4f}; "
                + ", ".join(f"{k} {h[-1][k]:.4f}" for k in ("mim", "cl") if k in h[-1])
                + f"; {sum(r['images_per_s'] for r in h[1:]) / max(1, len(h) - 1):.0f} images/s"
            )
            work = Path(trainer.cfg.out)
            weights, card_path = trainer.export(work)
            card = json.loads(card_path.read_text())
            card["training"]["images_per_s_measured"] = round(ips[name], 1)
            t = time.perf_counter()
            result = run_probes(
                trainer.model.encoder,
                train_set,
                test_set,
                preprocess_for_card(card),
                device,
                noise_images=args.noise_images,
                seed=args.seed,
                batch_size=1024,
            )
            probes[name] = result
            card["probes"] = result
            card_path.write_text(json.dumps(card, indent=2) + "\n")
            (work / "probes.json").write_text(json.dumps(result, indent=1) + "\n")
            log(
                f"{name}: probes in {time.perf_counter() - t:.1f} s; linear top-1 by depth "
                f"{result['linear']['top1']}; kNN {result['knn']['top1']}; "
                f"noise drop {result['noise']['drop']}"
            )
            t = time.perf_counter()
            metrics[name] = analyse(weights, card, analysis_images, device)
            (work / "metrics.json").write_text(json.dumps(metrics[name], indent=1) + "\n")
            m = metrics[name]
            log(
                f"{name}: analyses in {time.perf_counter() - t:.1f} s; distance "
                f"{[round(v, 1) for v in m['attention_distance']['mean']]}; nmi "
                f"{[round(v, 3) for v in m['nmi']['mean']]}; dlogamp "
                f"{[round(v, 2) for v in m['delta_log_amplitude']['value']]}"
            )
            pack(
                args.out / f"{name}.tar",
                [weights, card_path, work / "probes.json", work / "metrics.json", work / "train_log.json"],
            )
        except Exception:  # one model failing must not lose the others
            log(f"{name} FAILED:\n{traceback.format_exc()}")
        finally:
            trainer.images = trainer.images[:0]  # free the device copy of the data
    summary_dir = args.work / "summary"
    summary_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    try:
        table = comparison(metrics, probes)
        table["_bench_images_per_s"] = {n: round(v, 1) for n, v in ips.items()}
        table["_epochs"] = epochs
        (summary_dir / "summary.json").write_text(json.dumps(table, indent=1) + "\n")
        files.append(summary_dir / "summary.json")
        if probes:
            files.append(plot_probes(probes, summary_dir / "probes.png"))
        if metrics:
            plot_metrics(metrics, summary_dir / "metrics.png")
            files.append(summary_dir / "metrics.png")
    except Exception:
        log(f"summary FAILED:\n{traceback.format_exc()}")
    pack(args.out / "summary.tar", files)
    log(f"done: {sorted(p.name for p in args.out.iterdir())}")
    return 0 if len(metrics) == len(trainers) else 1


if __name__ == "__main__":
    sys.exit(main())
