"""Train, snapshot, probe and analyse the three demo models in one budgeted, resumable device run.

    PYTHONPATH=. python scripts/train_demo_models.py --out OUTDIR [--budget 270] [--device cuda]

1. decode CIFAR-10 train and test once (``.data/cifar10/`` or ``../shared/data/cifar10/``);
2. build the three recipes (docs/TRAINING.md): ``cifar-mim-vit-t4`` (SimMIM on Beit), ``cifar-hybrid-vit-t4``
   (the Beit encoder with MoCo v3's heads, lam 0.5), ``cifar-cl-vit-t4`` (MoCo v3 on ViT, frozen sin-cos);
3. measure each one's images/s with the same full steps ``bench/train.py`` times (``Trainer.calibrate``,
   compilation included in its warm-up) and give all three one epoch count, so their training together fits
   ``--budget`` seconds; snapshots at the epochs of ``--snapshot-epochs`` that the plan reaches. The plan is
   written to ``OUTDIR/plan.json`` first and reused as it is by a resumed run;
4. per model: train with checkpoints in ``OUTDIR/<id>/`` (``--checkpoint-every`` steps and after each
   snapshot), so a run cut short leaves a checkpoint to resume from; export float16 weights + card
   (snapshots and their analyses in it), probes (A7, A8) and the final analyses (capture + compute_metrics
   through the catalogue's loading path); pack ``OUTDIR/<id>.tar`` as soon as the model is done;
5. ``OUTDIR/summary.tar``: the comparison table and plots.

Resume: run again with the same ``--out`` (the folder carried back): packed models are skipped, the others
continue from their checkpoint. ``--tiny`` runs the same path on the CPU in seconds (the dry run).
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
from backend.training.objectives import ObjectiveConfig
from backend.training.probe import plot_probes, preprocess_for_card, run_probes
from backend.training.snapshots import analyse_weights
from backend.training.trainer import CHECKPOINT, TrainConfig, Trainer, resolve_device

MODELS = [
    ("cifar-mim-vit-t4", "mim", None),
    ("cifar-hybrid-vit-t4", "hybrid", 0.5),
    ("cifar-cl-vit-t4", "cl", None),
]
TINY_DIMS = {"embed_dim": 48, "depth": 3, "num_heads": 3}
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def pack(tar_path: Path, files: list[Path], arcnames: list[str] | None = None) -> None:
    tmp = tar_path.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for f, name in zip(files, arcnames or [f.name for f in files], strict=True):
            if f.exists():
                tar.add(f, arcname=name)
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


def make_trainer(
    name: str, objective: str, lam: float | None, args: argparse.Namespace, compile_mode: str, data: Any
) -> Trainer:
    cfg = TrainConfig(
        objective=objective,
        lam=lam,
        data="cifar10",
        name=name,
        out=str(args.out / name),
        epochs=args.max_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_frac=args.warmup_frac,
        seed=args.seed,
        device=str(args.device),
        arch_overrides=TINY_DIMS if args.tiny else {},
        compile=compile_mode,
        snapshot_epochs=(),  # set from the plan
        analysis_images=args.analysis_images,
        progress=False,
        log_every=20,
        checkpoint_every=args.checkpoint_every,
        objective_cfg=ObjectiveConfig(),
    )
    return Trainer(cfg, data["train"], data["analysis"])


def build(name: str, objective: str, lam: float | None, args: argparse.Namespace, data: Any) -> Trainer:
    """The trainer with ``--compile``; eager when compilation fails on this machine (logged)."""
    if args.compile != "none":
        try:
            trainer = make_trainer(name, objective, lam, args, args.compile, data)
            trainer.calibrate(warmup=2, min_seconds=0.0, max_steps=1)  # compiles now, or fails now
            return trainer
        except Exception:
            log(f"{name}: torch.compile({args.compile}) failed, training eager:\n{traceback.format_exc()}")
    return make_trainer(name, objective, lam, args, "none", data)


def bench_figures(args: argparse.Namespace, trainers: dict[str, Trainer]) -> dict[str, float]:
    """Images/s per model from a ``bench/train.py --json`` file (ViT-Tiny width, patch 4) at this batch and
    compile mode; the models it lacks are measured here."""
    if args.bench_json is None or args.tiny:
        return {}
    bench = json.loads(args.bench_json.read_text())
    if (bench.get("shape"), bench.get("patch_size")) != ("vit-tiny", 4):
        log(f"{args.bench_json} is not of the ViT-Tiny/4 shape; measuring here")
        return {}
    found: dict[str, float] = {}
    for name, trainer in trainers.items():
        for row in bench.get("rows", []):
            same = (row.get("objective"), row.get("compile"), row.get("batch_size")) == (
                trainer.cfg.objective,
                trainer.cfg.compile,
                trainer.batch_size,
            )
            if same and "images_per_s" in row:
                found[name] = float(row["images_per_s"])
                log(f"{name}: {found[name]:.0f} images/s from {args.bench_json}")
    return found


def plan(trainers: dict[str, Trainer], args: argparse.Namespace) -> dict[str, Any]:
    path = args.out / "plan.json"
    if path.exists():  # a resumed run keeps the plan it started with
        return json.loads(path.read_text())
    given = bench_figures(args, trainers)
    ips = {n: t.calibrate(min_seconds=args.calibrate_seconds) for n, t in trainers.items() if n not in given}
    ips.update({n: v for n, v in given.items() if n in trainers})
    for n, v in ips.items():
        log(
            f"bench {n}: {v:.0f} images/s (batch {trainers[n].batch_size}, compile {trainers[n].cfg.compile})"
        )
    per_epoch_s = sum(t.steps_per_epoch * t.batch_size / ips[n] for n, t in trainers.items())
    epochs = max(1, min(args.max_epochs, math.floor(args.budget / per_epoch_s)))
    snaps = sorted(e for e in args.snapshot_epochs if e < epochs)
    result = {
        "epochs": epochs,
        "snapshot_epochs": [*snaps, epochs],  # the last epoch is analysed as a snapshot too
        "images_per_s": {n: round(v, 1) for n, v in ips.items()},
        "per_epoch_s_all_three": round(per_epoch_s, 2),
        "budget_s": args.budget,
        "device": str(args.device),
    }
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def finish(trainer: Trainer, args: argparse.Namespace, data: Any, ips: float) -> tuple[dict, dict]:
    """Export, probe and analyse a trained model; pack its files."""
    name, work = trainer.cfg.name, Path(trainer.cfg.out)
    weights, card_path = trainer.export(work)
    card = json.loads(card_path.read_text())
    card["training"]["images_per_s_measured"] = ips
    t = time.perf_counter()
    probes = run_probes(
        trainer.model.encoder,
        data["train"],
        data["test"],
        preprocess_for_card(card),
        trainer.device,
        noise_images=args.noise_images,
        seed=args.seed,
        batch_size=1024,
    )
    card["probes"] = probes
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    (work / "probes.json").write_text(json.dumps(probes, indent=1) + "\n")
    log(f"{name}: probes in {time.perf_counter() - t:.1f} s; linear top-1 {probes['linear']['top1']}")
    t = time.perf_counter()
    analysis = data["analysis"].subset(args.analysis_images, args.seed + 1)
    metrics = analyse_weights(weights, card, analysis.images, trainer.device, analysis.source)
    (work / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    log(
        f"{name}: analyses in {time.perf_counter() - t:.1f} s; distance "
        f"{[round(v, 1) for v in metrics['attention_distance']['mean']]}; nmi "
        f"{[round(v, 3) for v in metrics['nmi']['mean']]}; dlogamp "
        f"{[round(v, 2) for v in metrics['delta_log_amplitude']['value']]}"
    )
    files = [weights, card_path, work / "probes.json", work / "metrics.json", work / "train_log.json"]
    snaps = sorted((work / "snapshots").glob("*.safetensors"))
    pack(
        args.out / f"{name}.tar",
        files + snaps,
        [f.name for f in files] + [f"snapshots/{s.name}" for s in snaps],
    )
    return metrics, probes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="results, checkpoints and the plan")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--budget", type=float, default=270.0, help="seconds of training for all three together")
    ap.add_argument("--max-epochs", type=float, default=200.0, help="never plan more epochs than this")
    ap.add_argument("--snapshot-epochs", default="25,50,100,200", help="epochs to snapshot (those reached)")
    ap.add_argument("--batch-size", type=int, default=1024, help="images per step")
    ap.add_argument("--lr", type=float, default=8e-4, help="peak learning rate")
    ap.add_argument("--warmup-frac", type=float, default=0.1, help="fraction of the steps warming up")
    ap.add_argument("--compile", default="default", help="torch.compile mode (none: eager)")
    ap.add_argument(
        "--calibrate-seconds", type=float, default=3.0, help="timed seconds per model for the plan"
    )
    ap.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints")
    ap.add_argument("--train-images", type=int, default=None, help="seeded subset of CIFAR-10 train")
    ap.add_argument("--test-images", type=int, default=None, help="seeded subset of CIFAR-10 test")
    ap.add_argument("--analysis-images", type=int, default=256, help="test images the analyses use")
    ap.add_argument("--noise-images", type=int, default=2000, help="test images of the noise probe")
    ap.add_argument("--seed", type=int, default=0, help="seed of everything")
    ap.add_argument("--models", default=",".join(m[0] for m in MODELS), help="comma-separated subset")
    ap.add_argument("--tiny", action="store_true", help="CPU dry run: small ViT, few images, seconds")
    args = ap.parse_args(argv)
    args.snapshot_epochs = [float(e) for e in args.snapshot_epochs.split(",") if e]
    if args.tiny:
        args.train_images = args.train_images or 96
        args.test_images = args.test_images or 48
        args.batch_size = min(args.batch_size, 32)
        args.analysis_images = min(args.analysis_images, 8)
        args.noise_images = min(args.noise_images, 16)
        args.compile = "none"
    args.device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    log(
        f"torch {torch.__version__}, device {args.device}"
        + (f" ({torch.cuda.get_device_name(args.device)})" if args.device.type == "cuda" else "")
    )
    train_set = load_images("cifar10", "train").subset(args.train_images, args.seed)
    test_set = load_images("cifar10", "test").subset(args.test_images, args.seed)
    data = {"train": train_set, "test": test_set, "analysis": test_set}
    log(f"data: train {tuple(train_set.images.shape)}, test {tuple(test_set.images.shape)}")

    wanted = set(args.models.split(","))
    todo = [m for m in MODELS if m[0] in wanted and not (args.out / f"{m[0]}.tar").exists()]
    trainers = {name: build(name, objective, lam, args, data) for name, objective, lam in todo}
    the_plan: dict[str, Any] = plan(trainers, args) if trainers else {"epochs": 0, "images_per_s": {}}
    log(f"plan: {json.dumps(the_plan)}")

    metrics: dict[str, dict[str, Any]] = {}
    probes: dict[str, dict[str, Any]] = {}
    for name, trainer in trainers.items():
        try:
            trainer.cfg.snapshot_epochs = tuple(the_plan["snapshot_epochs"])
            trainer.set_epochs(the_plan["epochs"])
            ckpt = Path(trainer.cfg.out) / CHECKPOINT
            if ckpt.exists():
                trainer.load_checkpoint(ckpt)
                log(f"{name}: resumed at step {trainer.step} of {trainer.total_steps}")
            trainer.fit()
            h = trainer.history
            log(
                f"{name}: {trainer.step} steps, {trainer.wall_s:.1f} s training; loss {h[0]['loss']:.4f} -> "
                f"{h[-1]['loss']:.4f}; snapshots at epochs {[s['epoch'] for s in trainer.snapshots]}"
            )
            metrics[name], probes[name] = finish(trainer, args, data, the_plan["images_per_s"].get(name, 0.0))
        except Exception:  # one model failing must not lose the others
            log(f"{name} FAILED:\n{traceback.format_exc()}")
        finally:
            trainer.images = trainer.images[:0]  # free the device copy of the data
    for name, _, _ in MODELS:  # models packed by an earlier (cut) run join the summary from their files
        work = args.out / name
        if name in wanted and name not in metrics and (work / "metrics.json").exists():
            metrics[name] = json.loads((work / "metrics.json").read_text())
            probes[name] = json.loads((work / "probes.json").read_text())
    summary_dir = args.out / "summary"
    summary_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    try:
        table = comparison(metrics, probes)
        table["_plan"] = the_plan
        (summary_dir / "summary.json").write_text(json.dumps(table, indent=1) + "\n")
        files.append(summary_dir / "summary.json")
        if probes:
            files.append(plot_probes(probes, summary_dir / "probes.png"))
        if metrics:
            plot_metrics(metrics, summary_dir / "metrics.png")
            files.append(summary_dir / "metrics.png")
    except Exception:
        log(f"summary FAILED:\n{traceback.format_exc()}")
    if files:
        pack(args.out / "summary.tar", files)
    log(f"done: {sorted(p.name for p in args.out.iterdir())}")
    return 0 if len(metrics) == len(trainers) else 1


if __name__ == "__main__":
    sys.exit(main())
