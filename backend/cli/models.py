"""`vitscope models list | pull [ID...] [--preset NAME] | verify [ID...] | import FILE`: the model zoo from
the command line."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backend.errors import BadRequest

_SIZE_RE = re.compile(r"(tiny|small|base|large|huge|giant|gigantic)")
_PATCH_RE = re.compile(r"patch(\d+)")
_INPUT_RE = re.compile(r"_(\d+)(?:\.|$)")  # the trailing resolution of a timm name: ..._224[.tag]


class _Formats:
    """``--format``'s choices, read from the converters on use: they import torch, `models list` does not."""

    def _all(self) -> tuple[str, ...]:
        from backend.models import FORMATS

        return tuple(FORMATS)

    def __contains__(self, value: object) -> bool:
        return value in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())


def register(subparsers: Any) -> None:
    from backend.models import FAMILIES
    from backend.models.catalog import PRESETS

    parser = subparsers.add_parser("models", description="List, download and import pretrained ViTs.")
    sub = parser.add_subparsers(dest="models_command", required=True)

    ls = sub.add_parser("list", help="the catalogue: id, family, architecture, weights available, licence")
    ls.set_defaults(func=_list)

    pull = sub.add_parser(
        "pull",
        help="download weights into models_cache (needs internet)",
        description="Print what will be fetched with a size estimate per file, skip what is present, then "
        "download with progress. Models without a direct link (SimMIM) get manual instructions.",
    )
    pull.add_argument("ids", nargs="*", metavar="ID", help="catalogue id or timm model name")
    pull.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="a named set: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in PRESETS.items()),
    )
    pull.add_argument("--dry-run", action="store_true", help="print the plan only; download nothing")
    pull.add_argument("--no-progress", action="store_true", help="no progress bar")
    pull.set_defaults(func=_pull)

    verify = sub.add_parser(
        "verify",
        help="recompute the sha256 of weights files and compare with the recorded digests",
        description="One line per model: OK, MISMATCH (expected, got), NO RECORD or MISSING. Exit status 1 "
        "when any file does not match its record.",
    )
    verify.add_argument("ids", nargs="*", metavar="ID", help="default: every model whose weights are present")
    verify.set_defaults(func=_verify)

    imp = sub.add_parser("import", help="convert an original checkpoint and add it to the catalogue")
    imp.add_argument("file", type=Path, help="checkpoint file (.pth, .pth.tar, .bin, .safetensors)")
    imp.add_argument(
        "--format",
        required=True,
        choices=_Formats(),
        dest="fmt",
        metavar="FORMAT",
        help="original release format: %(choices)s",
    )
    imp.add_argument("--arch", help="timm architecture (default: the catalogue's for a catalogue id)")
    imp.add_argument("--as", required=True, dest="name", metavar="NAME", help="model id to register")
    imp.add_argument("--family", choices=FAMILIES, help="default: from the format (dino: cl, mae: mim, ...)")
    imp.add_argument(
        "--arch-kwargs",
        type=_json_object,
        default=None,
        metavar="JSON",
        help="extra timm create_model kwargs, e.g. '{\"img_size\": 224}'",
    )
    imp.add_argument(
        "--trusted",
        action="store_true",
        help="allow arbitrary pickled objects (only for files from a source you trust)",
    )
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
        available = (
            "random"
            if spec.untrained and spec.source == "random"
            else ("yes" if weights_available(spec) else "no")
        )
        rows.append((spec.id, spec.family, arch_label(spec.arch, spec.arch_kwargs), available, spec.license))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def arch_label(arch: str, arch_kwargs: dict[str, Any]) -> str:
    """The size, patch and input the model is built with ("ViT-Tiny/4 at 32 px"), without building it.

    ``arch_kwargs`` override the timm name (the demo models are patch 4 at 32 px on ``vit_tiny_patch16_224``);
    the input size is the pretrained-config overlay's, else ``img_size``, else the name's.
    """
    size = _SIZE_RE.search(arch)
    patch = arch_kwargs.get("patch_size") or (int(m.group(1)) if (m := _PATCH_RE.search(arch)) else None)
    overlay = arch_kwargs.get("pretrained_cfg_overlay", {}).get("input_size")
    side: Any = overlay[-2:] if overlay else arch_kwargs.get("img_size")
    if side is None and (m := _INPUT_RE.search(arch)):
        side = int(m.group(1))
    shape = {k: arch_kwargs[k] for k in ("embed_dim", "depth", "num_heads") if k in arch_kwargs}
    label = "ViT" if shape or not size else f"ViT-{size.group(1).capitalize()}"
    if patch:
        label += f"/{patch}"
    if isinstance(side, list | tuple):
        side = side[0] if len(set(side)) == 1 else "x".join(map(str, side))
    if side:
        label += f" at {side} px"
    if shape:  # not a named size: say what it is
        label += " (" + ", ".join(f"{k.replace('num_', '')} {v}" for k, v in shape.items()) + ")"
    return label


def _pull(args: argparse.Namespace) -> int:
    from backend.models import models_cache_dir
    from backend.models import plan as p

    items = p.plan_pull(p.resolve_ids(args.ids, args.preset))
    what = f"preset '{args.preset}'" if args.preset else "pull"
    print(f"{what}: {len(items)} model{'s' * (len(items) != 1)} into {models_cache_dir()}")
    print("\n".join(p.plan_table(items)))
    print(p.plan_summary(items))
    for item in items:
        if item.action == p.MANUAL:
            print("\n".join(["", *p.manual_instructions(item)]))
        elif item.action == p.MISSING:
            print("\n" + p.missing_instructions(item))
    if args.dry_run:
        print("\nDry run: nothing downloaded.")
        return 0
    p.check_can_download(items)
    if p.to_download(items):
        print()
    failures = p.download(items, progress=not args.no_progress, echo=lambda line: print(line, flush=True))
    print("\n" + _pull_outcome(items, failures))
    return 1 if failures or any(i.action == p.MISSING for i in items) else 0


def _pull_outcome(items: list[Any], failures: list[str]) -> str:
    from backend.models import plan as p

    downloads = len(p.to_download(items))
    present = sum(i.action == p.PRESENT for i in items)
    missing = [i.spec.id for i in items if i.action in (p.MANUAL, p.MISSING)]
    text = f"Done: {downloads - len(failures)} downloaded, {present} already present"
    if missing:
        text += f", still missing: {', '.join(missing)} (see above)"
    if failures:
        text += f", {len(failures)} failed"
    return text + "."


def _verify(args: argparse.Namespace) -> int:
    from backend.models.verify import MISMATCH, specs_to_verify, verify_spec

    specs = specs_to_verify(args.ids)
    width = max((len(s.id) for s in specs), default=0)
    counts: dict[str, int] = {}
    for verdict in map(verify_spec, specs):
        print(verdict.line(width), flush=True)
        counts[verdict.status] = counts.get(verdict.status, 0) + 1
    if not counts:
        print("no model has weights in the models cache or the demo folder: nothing to verify")
    else:
        summary = ", ".join(f"{n} {status}" for status, n in counts.items())
        print(f"{sum(counts.values())} checked: {summary}")
    return 1 if counts.get(MISMATCH) else 0


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
    spec = import_checkpoint(
        args.file, args.fmt, arch, args.name, family, trusted=args.trusted, arch_kwargs=args.arch_kwargs
    )
    found = find_weights(spec)
    print(f"imported {spec.id} ({spec.family}, {spec.arch}): {found.path if found else spec.location}")
    return 0
