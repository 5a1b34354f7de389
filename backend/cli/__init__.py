"""`vitscope` command line: one module per subcommand, each exposing ``register(subparsers)``.

A subcommand module adds its parser(s) and sets ``func`` to a callable ``(args) -> int`` (the exit status).
Modules import torch, timm or dash inside the functions that need them, never at the top.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from backend import __version__
from backend.errors import VitscopeError

# Each subcommand: the module under backend/cli/ whose ``register(sub)`` defines it, and the one line that
# `vitscope --help` shows. Only the module of the command being run is imported, so `vitscope --help` loads
# no command code. A new command: one line here and a module with ``register``.
COMMANDS: dict[str, tuple[str, str]] = {
    "analyze": ("analyze", "run the paper's analyses on image files, folders or datasets (local or Ray)"),
    "models": ("models", "list, download and import pretrained ViTs"),
    "serve": ("serve", "run the REST API at /api/v1 (OpenAPI at /docs) and the UI at /"),
    "train": ("train", "train a CL (MoCo v3), MIM (SimMIM) or hybrid ViT and register it"),
    "probe": ("train", "per-layer linear probes, kNN and frequency-band noise robustness"),
    "claims": ("claims", "check the paper's CL vs MIM claims on images (exit 0 only when all hold)"),
}
# The modules taking part (tests narrow it to the one under test).
COMMAND_MODULES = list(dict.fromkeys(module for module, _ in COMMANDS.values()))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with ``command``'s module registered for real and every other command as a name + help."""
    parser = argparse.ArgumentParser(
        prog="vitscope", description="What do self-supervised Vision Transformers learn?"
    )
    parser.add_argument("--version", action="version", version=f"vitscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {name: entry for name, entry in COMMANDS.items() if entry[0] in COMMAND_MODULES}
    if command in commands:
        importlib.import_module(f"backend.cli.{commands[command][0]}").register(sub)
    for name, (_, help_line) in commands.items():
        if name not in sub.choices:
            sub.add_parser(name, help=help_line)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        return int(args.func(args))
    except VitscopeError as exc:
        print(f"vitscope: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
