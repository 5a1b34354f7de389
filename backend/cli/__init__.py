"""`vitscope` command line: one module per subcommand, each exposing ``register(subparsers)``.

A subcommand module adds its parser(s) and sets ``func`` to a callable ``(args) -> int`` (the exit status).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from backend import __version__
from backend.errors import VitscopeError

# Modules under backend/cli/ that define subcommands.
COMMAND_MODULES = ["analyze", "models", "serve", "train"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitscope", description="What do self-supervised Vision Transformers learn?"
    )
    parser.add_argument("--version", action="version", version=f"vitscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"backend.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except VitscopeError as exc:
        print(f"vitscope: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
