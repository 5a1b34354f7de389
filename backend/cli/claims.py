"""`vitscope claims CL_MODEL MIM_MODEL [HYBRID_MODEL] IMAGES...`: the paper's claims checked on images.

Each model runs with its own eval preprocessing (``backend.imaging.preprocessing_for``, mode auto: the demo
models at 32 px without a crop). Prints every claim on the set means and per image, and exits 0 only when
every claim holds on the set means (1 when one does not, 2 on bad input).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_NOT_HELD = 1


def register(sub: argparse._SubParsersAction) -> None:
    from backend.cli.analyze import PREPROCESSING_MODES  # no torch import for --help

    p = sub.add_parser(
        "claims",
        help="check the paper's CL vs MIM claims (distance, NMI, Fourier, hybrid) on images",
        description="Later-half attention distance CL > MIM; later-half NMI CL < MIM; delta log amplitude "
        "MIM > CL over depths 1..L; the hybrid's later-half distance between CL's and MIM's. Exit status 0 "
        "only when every claim holds on the set means.",
    )
    p.add_argument(
        "args",
        nargs="+",
        metavar="CL_MODEL MIM_MODEL [HYBRID_MODEL] IMAGES",
        help="the CL model, the MIM model, optionally a hybrid model (a third argument that is not an "
        "existing file or folder), then image files or folders (searched recursively)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="(default: %(default)s)")
    p.add_argument(
        "--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)"
    )
    p.add_argument(
        "--preprocessing",
        default="auto",
        choices=PREPROCESSING_MODES,
        help="auto: each model's own eval preprocessing; paper / model force one rule (default: %(default)s)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the full report (per image) here")
    p.add_argument("--quiet", action="store_true", help="only the overall lines, not every image")
    p.add_argument("--download", action="store_true", help="download missing weights")
    p.set_defaults(func=run)


def split_args(args: list[str]) -> tuple[list[str], list[Path]]:
    """``CL MIM [HYBRID] IMAGES...`` -> model ids, image paths: a third argument that is no existing path is
    the hybrid model."""
    from backend.errors import BadRequest

    if len(args) < 3:
        raise BadRequest("claims needs CL_MODEL MIM_MODEL [HYBRID_MODEL] and at least one image or folder")
    n_models = 3 if len(args) >= 4 and not Path(args[2]).exists() else 2
    return args[:n_models], [Path(a) for a in args[n_models:]]


def model_values(
    model_id: str, images: list[Any], device: Any, batch_size: int, mode: str, download: bool
) -> tuple[Any, dict[str, Any]]:
    """One model over the images: its ``ModelValues`` and the preprocessing record it used."""
    import torch

    from backend.analysis.claims import ModelValues
    from backend.analysis.summary import PerImage, per_image_values
    from backend.capture import capture
    from backend.imaging import model_preprocessing, preprocess
    from backend.models import load_model

    loaded = load_model(model_id, device, download=download)
    prep = model_preprocessing(loaded, mode)
    parts: list[PerImage] = []
    grid, patch = (0, 0), 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            pixels = preprocess(images[start : start + batch_size], prep).to(device)
            trace = capture(loaded.model, pixels, model_id=model_id, preprocessing=prep.as_dict())
            grid, patch = trace.grid, trace.patch_size
            parts.append(per_image_values(trace))
    values = ModelValues.from_per_image(
        PerImage.concat(parts), model=model_id, family=loaded.spec.family, grid=grid, patch_size=patch
    )
    return values, prep.as_dict()


def format_report(claims: list[Any], names: list[str], roles: dict[str, str], quiet: bool) -> list[str]:
    lines = [
        f"Claims of Park et al. (ICLR 2023) on {len(names)} image(s): "
        + ", ".join(f"{role.upper() if role != 'hybrid' else role} = {m}" for role, m in roles.items())
    ]
    for c in claims:
        lines.append(f"[{'held' if c.held else 'NOT held'}] {c.id}: {c.statement}")
        lines.append(f"    {c.summary}")
    if not quiet:
        lines.append("per image (held / not held, then each role's value):")
        for i, name in enumerate(names):
            cells = []
            for c in claims:
                v = " ".join(f"{role}={x:.3f}" for role, x in c.per_image_values[i].items())
                cells.append(f"{c.id} {'held' if c.per_image[i] else 'NOT'} ({v})")
            lines.append(f"  {name}: " + "; ".join(cells))
    held = sum(c.held for c in claims)
    lines.append(f"overall: {held} of {len(claims)} claims hold on the set means")
    return lines


def read_images(datasets: list[Path]) -> tuple[list[str], list[Any]]:
    """The images of the arguments (files, folders, globs, shards: ``vitscope analyze``'s rules), decoded; an
    unreadable file is skipped with a warning naming it (the claims need the same images for every model)."""
    from backend.engine.sources import expand
    from backend.errors import BadRequest, VitscopeError
    from backend.uploads import decode_image

    names, images = [], []
    for ref in expand(datasets):
        try:
            images.append(decode_image(ref.read()).image)
        except (OSError, VitscopeError) as exc:
            print(f"vitscope: warning: skipped {ref.path}: {exc}", file=sys.stderr)
            continue
        names.append(ref.path)
    if not images:
        raise BadRequest(f"none of the {len(names)} image(s) could be read; see the warnings above")
    return names, images


def run(args: argparse.Namespace) -> int:
    from backend.analysis.claims import claims_report, evaluate_claims
    from backend.errors import BadRequest
    from backend.models.catalog import get_spec
    from backend.runner import resolve_devices

    if args.batch_size < 1:
        raise BadRequest(f"--batch-size must be at least 1, got {args.batch_size}")
    model_ids, datasets = split_args(list(args.args))
    for model_id in model_ids:
        get_spec(model_id)  # unknown ids fail before any image is read
    device = resolve_devices(args.device)[0]
    names, images = read_images(datasets)
    roles = dict(zip(("cl", "mim", "hybrid"), model_ids, strict=False))
    values, preprocessing = {}, {}
    for role, model_id in roles.items():
        values[role], preprocessing[model_id] = model_values(
            model_id, images, device, args.batch_size, args.preprocessing, args.download
        )
    claims = evaluate_claims(values["cl"], values["mim"], values.get("hybrid"))
    print("\n".join(format_report(claims, names, roles, args.quiet)))
    if args.json is not None:
        report = claims_report(claims) | {
            "image_files": names,
            "models": roles,
            "preprocessing": preprocessing,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if all(c.held for c in claims) else EXIT_NOT_HELD
