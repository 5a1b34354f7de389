"""`vitscope models list | pull ID... | import FILE`: the model zoo from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from backend.errors import BadRequest


def register(subparsers: Any) -> None:
    from backend.models import FAMILIES, FORMATS

    parser = subparsers.add_parser("models", help="list, download and import pretrained ViTs")
    sub = parser.add_subparsers(dest="models_command", required=True)

    ls = sub.add_parser("list", help="the catalogue: id, family, arch, weights available, licence")
    ls.set_defaults(func=_list)

    pull = sub.add_parser("pull", help="download weights into models_cache (needs internet)")
    pull.add_argument("ids", nargs="+", metavar="ID", help="catalogue id or timm model name")
    pull.add_argument("--no-progress", action="store_true", help="no progress bar")
    pull.set_defaults(func=_pull)

    imp = sub.add_parser("import", help="convert an original checkpoint and add it to the catalogue")
    imp.add_argument("file", type=Path, help="checkpoint file (.pth, .pth.tar, .bin, .safetensors)")
    imp.add_argument("--format", required=True, choices=FORMATS, dest="fmt", help="original release format")
    imp.add_argument("--arch", help="timm architecture (default: the catalogue's for a catalogue id)")
    imp.add_argument("--as", required=True, dest="name", metavar="NAME", help="model id to register")
    imp.add_argument("--family", choices=FAMILIES, help="default: from the format (dino: cl, mae: mim, ...)")
    imp.add_argument("--arch-kwargs", type=_json_object, default=None, metavar="JSON",
                     help='extra timm create_model kwargs, e.g. \'{"img_size": 224}\'')
    imp.add_argument("--trusted", action="store_true",
                     help="allow arbitrary pickled objects (only for files from a source you trust)")
    imp.set_defaults(func=_import)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _list(args: argparse.Namespace) -> int:
    from backend.models import list_specs, weights_available

    rows = [("ID", "FAMILY", "ARCH", "AVAILABLE", "LICENCE")]
    for spec in list_specs():
        available = "random" if spec.untrained and spec.source == "random" else (
            "yes" if weights_available(spec) else "no")
        rows.append((spec.id, spec.family, spec.arch, available, spec.license))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _pull(args: argparse.Namespace) -> int:
    from backend.models import pull

    for model_id in args.ids:
        print(f"{model_id}: {pull(model_id, progress=not args.no_progress)}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from backend.models import import_checkpoint
    from backend.models.catalog import BUILTIN
    from backend.models.importing import default_family
    from backend.models.weights import find_weights

    arch = args.arch or (BUILTIN[args.name].arch if args.name in BUILTIN else None)
    if arch is None:
        raise BadRequest(f"--arch is required: {args.name!r} is not a catalogue id")
    family = args.family or default_family(args.fmt, arch, args.name)
    if family is None:
        raise BadRequest("--family is required for --format timm with an untagged --arch")
    spec = import_checkpoint(args.file, args.fmt, arch, args.name, family, trusted=args.trusted,
                             arch_kwargs=args.arch_kwargs)
    found = find_weights(spec)
    print(f"imported {spec.id} ({spec.family}, {spec.arch}): {found.path if found else spec.location}")
    return 0
