"""`vitscope analyze DATASET... --models ID[,ID...] --out DIR [--engine local|ray]`: per-image Parquet,
metrics.json and figures, for a few images or a whole dataset (backend/engine)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.engine.set_stats import MAX_SET_IMAGES, SET_IMAGES

PREPROCESSING_MODES = ("auto", "paper", "model")  # backend.imaging.PREPROCESSING_MODES, checked by a test


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        description="Run the paper's analyses on images with one or more models. Per-image values go "
        "to OUT/per_image.parquet, the mean and std over images to OUT/metrics.json, figures beside them. "
        "A rerun with the same OUT skips the images already there. An unreadable image is skipped with a "
        "warning (and listed in metrics.json); the exit status is 1 only when nothing could be analysed.",
    )
    p.add_argument(
        "datasets",
        nargs="+",
        metavar="DATASET",
        help="image files, folders (searched recursively), globs ('data/**/*.jpg') or WebDataset .tar shards",
    )
    p.add_argument("--models", required=True, help="comma-separated model ids (see `vitscope models list`)")
    p.add_argument("--out", required=True, type=Path, help="output folder (reused to resume)")
    p.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="local: this process; ray: decode in Ray CPU tasks, models in an actor pool "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--ray-address",
        help="a running Ray cluster (e.g. ray://head:10001 or auto); without it Ray starts on this machine",
    )
    p.add_argument("--ray-num-cpus", type=int, help="CPUs of the Ray instance started here (default: all)")
    p.add_argument("--actors", type=int, help="model actors (default: one per GPU of the cluster, else 1)")
    p.add_argument(
        "--actor-cpus",
        type=float,
        default=1.0,
        help="CPUs (torch threads) per CPU actor (default: %(default)s)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (default: %(default)s)")
    p.add_argument(
        "--preprocessing",
        default="auto",
        choices=PREPROCESSING_MODES,
        help="auto: the model's own eval preprocessing where its card sets one or its input is not 224 px "
        "(the demo models: 32 px, no crop), else paper; paper: resize 256 bilinear + centre crop 224 "
        "(scaled to the model's input); model: the model's card / timm data config (default: %(default)s)",
    )
    p.add_argument("--download", action="store_true", help="download missing weights")
    p.add_argument(
        "--strict", action="store_true", help="stop (exit 2) at the first image that cannot be read"
    )
    p.add_argument(
        "--set-images",
        type=int,
        default=SET_IMAGES,
        metavar="N",
        help="the positional share of each model and linear CKA between every pair of models, on the first N "
        f"analysed images (one more forward pass over them; 0: none, at most {MAX_SET_IMAGES}; "
        "default: %(default)s)",
    )
    p.add_argument("--no-figures", action="store_true", help="write the numbers only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from backend.engine.pipeline import Options, analyze_dataset, write_document
    from backend.errors import BadRequest

    model_ids = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if args.device == "cuda" and args.engine == "local":
        import torch

        if not torch.cuda.is_available():
            raise BadRequest(
                "--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto"
            )
    opts = Options(
        datasets=tuple(args.datasets),
        out=args.out,
        model_ids=model_ids,
        engine=args.engine,
        device=args.device,
        preprocessing=args.preprocessing,
        download=args.download,
        batch_size=args.batch_size,
        strict=args.strict,
        ray_address=args.ray_address,
        ray_num_cpus=args.ray_num_cpus,
        actors=args.actors,
        actor_cpus=args.actor_cpus,
        figures=not args.no_figures,
        progress=not args.no_progress,
        set_images=args.set_images,
    )
    outcome = analyze_dataset(opts)
    path = write_document(outcome.document, args.out)
    if outcome.analysed and opts.figures:  # as the engine writes its figures (backend/engine/pipeline.py)
        from backend.figures import plot_modern

        plot_modern(outcome.document["models"], args.out / "modern.png")
    skipped = outcome.document["skipped"]
    if not outcome.analysed:
        print(
            f"vitscope: error: nothing could be analysed: {len(skipped)} image(s) skipped (see {path})",
            file=sys.stderr,
        )
        return 1
    note = f", {len(skipped)} skipped (listed in metrics.json)" if skipped else ""
    print(
        f"wrote {path} and {args.out / 'per_image.parquet'} for {len(model_ids)} model(s) on "
        f"{outcome.analysed} image(s) ({outcome.new_rows} new row(s)){note}"
    )
    return 0
