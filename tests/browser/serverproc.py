"""Start the real server (``vitscope serve``) in a subprocess for the browser tests and ``bench/ui.py``.

It gets its own models cache and data folder under ``root``, holding a tiny test checkpoint imported with
``backend.models.import_checkpoint`` (family MIM, random weights, 4 blocks, 3 heads), so two models run
offline: ``random-vit-s16`` (the random-init catalogue baseline) and ``test-tiny-vit``. Both are warmed up
before ``/ready`` answers 200.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
TEST_MODEL = "test-tiny-vit"
BASELINE_MODEL = "random-vit-s16"
TINY_KWARGS = {"embed_dim": 96, "depth": 4, "num_heads": 3}

_IMPORT_TINY = f"""
import tempfile, pathlib, torch, timm
from backend.models import import_checkpoint
kw = {TINY_KWARGS!r}
torch.manual_seed(0)
m = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, **kw)
p = pathlib.Path(tempfile.mkdtemp()) / "tiny-test.pth"
torch.save(m.state_dict(), p)
import_checkpoint(p, "timm", "vit_small_patch16_224", {TEST_MODEL!r}, "mim", arch_kwargs=kw)
"""

# `vitscope serve` itself (its subcommand module), without importing the CLI's other subcommands.
_SERVE = (
    "import argparse, sys\n"
    "from backend.cli import serve\n"
    "parser = argparse.ArgumentParser(prog='vitscope')\n"
    "serve.register(parser.add_subparsers(dest='command', required=True))\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.func(args))\n"
)


@dataclass
class Server:
    url: str
    api: str
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(
    api: str, proc: subprocess.Popen[bytes], log: Path, timeout: float, headers: dict[str, str]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}; log:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{api}/ready", timeout=2.0, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not ready within {timeout:.0f} s; log:\n{log.read_text()[-4000:]}")


@contextmanager
def running_server(
    root: Path, log: Path, *, timeout: float = 240.0, extra_env: dict[str, str] | None = None
) -> Iterator[Server]:
    """``extra_env``: more ``VITSCOPE_*`` settings (class mode, a login); a token in it is used to wait."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITSCOPE_") and k != "REDIS_URL"}
    env.update(
        VITSCOPE_MODELS_CACHE=str(root / "models_cache"),
        VITSCOPE_DATA_DIR=str(root / "data"),
        VITSCOPE_DEVICE="cpu",
        VITSCOPE_DEFAULT_MODELS=f"{BASELINE_MODEL},{TEST_MODEL}",
        VITSCOPE_ALLOW_DOWNLOADS="0",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    token = env.get("VITSCOPE_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    subprocess.run([sys.executable, "-c", _IMPORT_TINY], cwd=REPO, env=env, check=True, timeout=300)
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-c", _SERVE, "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--log-level", "warning"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(f"{url}/api/v1", proc, log, timeout, headers)
        yield Server(url=url, api=f"{url}/api/v1", log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
