"""`vitscope train` (SimMIM / MoCo v3 / hybrid ViTs) and `vitscope probe` (A7 linear probes, A8 noise)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from backend.errors import BadRequest


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a CL (MoCo v3), MIM (SimMIM) or hybrid ViT and register it")
    t.add_argument("--objective", required=True, choices=["mim", "cl", "hybrid"])
    t.add_argument("--lam", type=float, default=None, help="hybrid weight: (1 - lam) * MIM + lam * CL")
    t.add_argument(
        "--data", default="cifar10", help="cifar10, or an ImageFolder directory (or one with train/)"
    )
    t.add_argument("--epochs", type=float, default=100.0)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--out", required=True, type=Path, help="folder for checkpoint, weights, card and logs")
    t.add_argument("--name", required=True, help="model id to register (lowercase letters, digits, . _ -)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument("--max-steps", type=int, default=None, help="cap the number of steps (the schedule too)")
    t.add_argument("--train-images", type=int, default=None, help="train on a seeded subset of this size")
    t.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds: measure images/s first and shorten the run to fit",
    )
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--weight-decay", type=float, default=0.05)
    t.add_argument("--warmup-frac", type=float, default=0.05)
    t.add_argument("--mask-ratio", type=float, default=0.6)
    t.add_argument("--mask-patch-px", type=int, default=8, help="SimMIM mask square (0: one per patch)")
    t.add_argument("--temperature", type=float, default=0.2)
    t.add_argument("--momentum", type=float, default=0.99)
    t.add_argument("--no-momentum-cosine", action="store_true", help="keep the momentum fixed")
    t.add_argument("--arch", default=None, help="timm ViT name (default vit_tiny_patch16_224)")
    t.add_argument(
        "--arch-kwargs",
        default=None,
        help='JSON kwargs for timm.create_model (default {"img_size": 32, "patch_size": 4})',
    )
    t.add_argument("--checkpoint-every", type=int, default=500)
    t.add_argument(
        "--probe", action="store_true", help="run the probes after training; results go in the card"
    )
    t.add_argument("--test-images", type=int, default=None, help="test images for --probe")
    t.add_argument("--no-register", action="store_true", help="write weights and card only")
    t.set_defaults(func=run_train)

    p = sub.add_parser("probe", help="per-layer linear probes, kNN and frequency-band noise robustness")
    p.add_argument("model", help="model id (see `vitscope models list`)")
    p.add_argument(
        "--data", default="cifar10", help="cifar10, or a directory holding train/ and test/ folders"
    )
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--test-images", type=int, default=None)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--knn-k", type=int, default=20)
    p.add_argument(
        "--noise-eps",
        type=float,
        nargs="*",
        default=[0.1, 0.5],
        help="noise amplitudes in normalized input units (none: skip A8)",
    )
    p.add_argument("--noise-freqs", type=int, default=11, help="band centres from 0 to pi")
    p.add_argument("--noise-images", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-update-card", action="store_true", help="do not store the results in the model card")
    p.set_defaults(func=run_probe)


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise BadRequest(
            "--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto"
        )
    from backend.training.trainer import resolve_device

    return resolve_device(name)


def run_train(args: argparse.Namespace) -> int:
    from backend.training import encoder as enc
    from backend.training.objectives import ObjectiveConfig, lam_for
    from backend.training.trainer import TrainConfig, train

    try:
        lam_for(args.objective, args.lam)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    arch_kwargs = json.loads(args.arch_kwargs) if args.arch_kwargs else dict(enc.DEFAULT_ARCH_KWARGS)
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
        arch=args.arch or enc.DEFAULT_ARCH,
        arch_kwargs=arch_kwargs,
        max_steps=args.max_steps,
        train_images=args.train_images,
        time_budget_s=args.time_budget,
        checkpoint_every=args.checkpoint_every,
        objective_cfg=ObjectiveConfig(
            mask_ratio=args.mask_ratio,
            mask_patch_px=args.mask_patch_px or None,
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
