"""Start-up of the `vitscope` command line: wall time of commands that compute nothing, against
`python -c pass` in the same run (issue 15's goal: `vitscope --help` and `vitscope models list` under 1 s).

Run: `python bench/cli_startup.py [--repo PATH]`. One run of each command, interleaved, each in a fresh
interpreter (what a user waits for). `--repo` measures another checkout with this interpreter (e.g. an
older commit unpacked with `git archive COMMIT | tar -x -C /tmp/old`), for before/after figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "python -c pass": None,
    "vitscope --help": ["--help"],
    "vitscope models list": ["models", "list"],
    "vitscope analyze --help": ["analyze", "--help"],
}


def wall(argv: list[str] | None, repo: Path) -> float:
    code = "pass" if argv is None else f"import backend.cli, sys; sys.exit(backend.cli.main({argv!r}))"
    env = dict(os.environ, PYTHONPATH=str(repo))  # ahead of the installed (editable) package
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    repo = parser.parse_args().repo.resolve()
    times = {name: wall(argv, repo) for name, argv in COMMANDS.items()}
    base = times["python -c pass"]
    print(f"{repo} ({os.cpu_count()} CPUs), one run each")
    for name, seconds in times.items():
        print(f"{name:26s} {seconds:6.2f} s  {seconds / base:6.1f}x python -c pass")


if __name__ == "__main__":
    main()
