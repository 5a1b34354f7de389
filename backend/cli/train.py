"""`vitscope train` (SimMIM / MoCo v3 / hybrid ViTs) and `vitscope probe` (A7 linear probes, A8 noise)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from backend.errors import BadRequest


class _DefaultsFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default, unless it has none to show (required options, flags,
    unset values) or the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default == () or default == argparse.SUPPRESS
        if action.required or unset or "default" in text:
            return text
        return f"{text} (default: {action.default})"


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated epochs like 25,50,100,200, not {text!r}"
        ) from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"snapshot epochs must be positive, not {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    # Kept free of torch/timm imports: `vitscope --help` must not pay for them.
    t = sub.add_parser(
        "train",
        help="train a CL (MoCo v3), MIM (SimMIM) or hybrid ViT and register it",
        description="Train a self-supervised ViT as the paper's models are built (docs/TRAINING.md): "
        "mim = SimMIM's encoder as timm Beit (no absolute position embedding, one shared relative position "
        "bias, layer scale 0.1, drop path 0.1); cl = MoCo v3 on a timm ViT with a fixed 2D sin-cos position "
        "embedding; hybrid = the MIM encoder with MoCo's heads, loss (1 - lam) * MIM + lam * CL.",
        formatter_class=_DefaultsFormatter,
    )
    t.add_argument("--objective", required=True, choices=["mim", "cl", "hybrid"], help="what to train")
    t.add_argument(
        "--lam", type=float, default=None, help="hybrid weight in [0, 1]: (1 - lam) * MIM + lam * CL"
    )
    t.add_argument("--out", required=True, type=Path, help="folder for checkpoint, weights, card and logs")
    t.add_argument("--name", required=True, help="model id to register (lowercase letters, digits, . _ -)")
    t.add_argument(
        "--data", default="cifar10", help="cifar10, or an ImageFolder directory (or one with train/)"
    )
    t.add_argument(
        "--encoder",
        choices=["vit", "beit"],
        default=None,
        help="timm class to train; default: beit (SimMIM's) for mim and hybrid, vit (MoCo v3's) for cl",
    )
    t.add_argument(
        "--pos-embed",
        choices=["learnable", "sincos-fixed", "none"],
        default=None,
        help="absolute position embedding; default: none for beit, sincos-fixed for vit (learnable starts "
        "from the same sin-cos table)",
    )
    t.add_argument("--patch-size", type=int, choices=[2, 4], default=4, help="patch size in pixels")
    t.add_argument("--img-size", type=int, default=32, help="input size in pixels (images are resized to it)")
    t.add_argument(
        "--epochs", type=float, default=100.0, help="epochs to train (the cosine schedule's length)"
    )
    t.add_argument("--batch-size", type=int, default=256, help="images per step")
    t.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (AdamW)")
    t.add_argument(
        "--weight-decay",
        type=float,
        default=0.05,
        help="AdamW weight decay (not on norms, biases, embeddings)",
    )
    t.add_argument(
        "--warmup-frac", type=float, default=0.05, help="fraction of the steps spent warming up the LR"
    )
    t.add_argument(
        "--seed", type=int, default=0, help="seed of the data order, initialization and augmentations"
    )
    t.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when available"
    )
    t.add_argument(
        "--compile",
        default="none",
        choices=["none", "default", "reduce-overhead", "max-autotune"],
        help="torch.compile mode for the loss computation (none: eager)",
    )
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="cap the number of steps (the schedule too; default: no cap)",
    )
    t.add_argument(
        "--train-images", type=int, default=None, help="train on a seeded subset of this size (default: all)"
    )
    t.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds: measure images/s first and shorten the run to fit (default: no budget)",
    )
    t.add_argument("--mask-ratio", type=float, default=0.6, help="SimMIM: fraction of the image masked")
    t.add_argument(
        "--mask-unit",
        type=int,
        default=2,
        help="SimMIM: side of a mask square in patches (2: 2 x 2 patches, as SimMIM; 1: single patches)",
    )
    t.add_argument("--temperature", type=float, default=0.2, help="MoCo v3: InfoNCE temperature")
    t.add_argument(
        "--momentum", type=float, default=0.99, help="MoCo v3: momentum of the key encoder at step 0"
    )
    t.add_argument(
        "--no-momentum-cosine",
        action="store_true",
        help="MoCo v3: keep the momentum fixed (default: cosine to 1)",
    )
    t.add_argument(
        "--arch-kwargs",
        default=None,
        help='JSON merged into the timm kwargs, e.g. {"embed_dim": 384, "num_heads": 6} (default: ViT-Tiny, '
        "dim 192, 12 blocks, 3 heads)",
    )
    t.add_argument(
        "--snapshot-epochs",
        type=_floats,
        default=(),
        help="comma-separated epochs (e.g. 25,50,100,200) at which the encoder is saved under OUT/snapshots/ "
        "and analysed; the analyses go in the card (none by default)",
    )
    t.add_argument(
        "--analysis-images", type=int, default=128, help="test images each snapshot is analysed on"
    )
    t.add_argument(
        "--checkpoint-every", type=int, default=500, help="steps between checkpoints (0: at the end only)"
    )
    t.add_argument(
        "--probe", action="store_true", help="run the probes after training; results go in the card"
    )
    t.add_argument("--test-images", type=int, default=None, help="test images for --probe (default: all)")
    t.add_argument("--no-register", action="store_true", help="write weights and card only")
    t.set_defaults(func=run_train)

    p = sub.add_parser(
        "probe",
        help="per-layer linear probes, kNN and frequency-band noise robustness",
        formatter_class=_DefaultsFormatter,
    )
    p.add_argument("model", help="model id (see `vitscope models list`)")
    p.add_argument(
        "--data", default="cifar10", help="cifar10, or a directory holding train/ and test/ folders"
    )
    p.add_argument(
        "--train-images", type=int, default=None, help="seeded subset of the train split (default: all)"
    )
    p.add_argument(
        "--test-images", type=int, default=None, help="seeded subset of the test split (default: all)"
    )
    p.add_argument("--out", required=True, type=Path, help="folder for probes.json and probes.png")
    p.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when available"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets and the noise")
    p.add_argument("--knn-k", type=int, default=20, help="neighbours of the kNN classifier")
    p.add_argument(
        "--noise-eps",
        type=float,
        nargs="*",
        default=[0.1, 0.5],
        help="noise amplitudes in normalized input units (none: skip A8)",
    )
    p.add_argument("--noise-freqs", type=int, default=11, help="band centres from 0 to pi")
    p.add_argument("--noise-images", type=int, default=2000, help="test images the noise robustness uses")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument("--no-update-card", action="store_true", help="do not store the results in the model card")
    p.set_defaults(func=run_probe)


def _device(name: str) -> Any:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise BadRequest(
            "--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto"
        )
    from backend.training.trainer import resolve_device

    return resolve_device(name)


def run_train(args: argparse.Namespace) -> int:
    from backend.training.objectives import ObjectiveConfig, lam_for
    from backend.training.trainer import TrainConfig, train

    try:
        lam_for(args.objective, args.lam)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    try:
        overrides = json.loads(args.arch_kwargs) if args.arch_kwargs else {}
    except ValueError as exc:
        raise BadRequest(f"--arch-kwargs is not JSON: {exc}") from exc
    if not isinstance(overrides, dict):
        raise BadRequest(f"--arch-kwargs must be a JSON object, not {args.arch_kwargs!r}")
    late = [e for e in args.snapshot_epochs if e > args.epochs]
    if late:
        raise BadRequest(f"--snapshot-epochs {late} lie beyond --epochs {args.epochs:g}")
    if args.img_size % args.patch_size:
        raise BadRequest(f"--img-size {args.img_size} is not a multiple of --patch-size {args.patch_size}")
    _device(args.device)
    cfg = TrainConfig(
        objective=args.objective,
        lam=args.lam,
        data=args.data,
        name=args.name,
        out=str(args.out),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_frac=args.warmup_frac,
        seed=args.seed,
        device=args.device,
        encoder=args.encoder,
        pos_embed=args.pos_embed,
        patch_size=args.patch_size,
        img_size=args.img_size,
        arch_overrides=overrides,
        compile=args.compile,
        snapshot_epochs=args.snapshot_epochs,
        analysis_images=args.analysis_images,
        max_steps=args.max_steps,
        train_images=args.train_images,
        time_budget_s=args.time_budget,
        checkpoint_every=args.checkpoint_every,
        objective_cfg=ObjectiveConfig(
            mask_ratio=args.mask_ratio,
            mask_patches=args.mask_unit,
            temperature=args.temperature,
            momentum=args.momentum,
            momentum_cosine=not args.no_momentum_cosine,
        ),
    )
    trainer = train(cfg, resume=args.resume)
    weights, card_path = args.out / f"{args.name}.safetensors", args.out / f"{args.name}.json"
    card = json.loads(card_path.read_text())
    if args.probe:
        from backend.training.probe import plot_probes, probe_encoder

        result = probe_encoder(
            trainer.model.encoder,
            card,
            args.data,
            trainer.device,
            train_images=args.train_images,
            test_images=args.test_images,
            seed=args.seed,
        )
        card["probes"] = result
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        (args.out / "probes.json").write_text(json.dumps(result, indent=1) + "\n")
        plot_probes({args.name: result}, args.out / "probes.png")
    last = trainer.history[-1] if trainer.history else {}
    print(
        f"{args.name}: {trainer.step} steps, {card['training']['images_seen']} images, "
        f"loss {last.get('loss', float('nan')):.4f}; weights {weights}"
    )
    if not args.no_register:
        spec = register_card(weights, card)
        print(f"registered {spec.id} (family {spec.family})")
    return 0


def register_card(weights: Path, card: dict[str, Any], dest: Path | None = None) -> Any:
    from backend.models import register_trained

    return register_trained(
        weights, card["arch"], card["arch_kwargs"], card["id"], card["family"], card, dest=dest
    )


def run_probe(args: argparse.Namespace) -> int:
    from backend.models import load_model
    from backend.training.data import load_images
    from backend.training.probe import Preprocess, plot_probes, run_probes

    device = _device(args.device)
    loaded = load_model(args.model, device)
    dc = loaded.data_config
    prep = Preprocess(int(dc["input_size"][-1]), tuple(dc["mean"]), tuple(dc["std"]))
    train = load_images(args.data, "train").subset(args.train_images, args.seed)
    test = load_images(args.data, "test").subset(args.test_images, args.seed)
    result = run_probes(
        loaded.model,
        train,
        test,
        prep,
        device,
        knn_k=args.knn_k,
        noise_eps=args.noise_eps,
        noise_freqs=args.noise_freqs,
        noise_images=args.noise_images,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    result["model"] = args.model
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probes.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_probes({args.model: result}, args.out / "probes.png")
    lin = result["linear"]
    best = max(range(len(lin["top1"])), key=lambda i: lin["top1"][i])
    print(
        f"{args.model}: linear top-1 by depth {lin['top1']} (best {lin['top1'][best]:.2f} at depth "
        f"{lin['depth'][best]}), kNN {result['knn']['top1']:.2f}; {args.out / 'probes.json'}"
    )
    if not args.no_update_card:
        card_path = _card_path(loaded.spec)
        if card_path is not None:
            card = json.loads(card_path.read_text())
            card["probes"] = result
            card_path.write_text(json.dumps(card, indent=2) + "\n")
            print(f"probes stored in {card_path}")
    return 0


def _card_path(spec: Any) -> Path | None:
    """The card beside a file-backed model's weights (demo, imported or trained models)."""
    if getattr(spec, "source", "") != "file":
        return None
    path = Path(spec.location).with_name(f"{spec.id}.json")
    return path if path.is_file() else None
