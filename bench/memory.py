"""Server memory under concurrent cold requests on distinct large legal images (issue 10, item 2).

    python bench/memory.py [--images 20] [--width 6000] [--height 6600] [--model cifar-cl-vit-t4]
                           [--repo PATH]

Writes ``--images`` distinct photo-like JPEGs of ``--width x --height`` (6000 x 6600 = 39.6 Mpx, under the
40 Mpx cap) to /tmp/vitscope-bench-memory, starts the API (``uvicorn``, CPU, no Redis, no UI, upload caps
off) from ``--repo`` (default: this checkout; point it at an unpacked older commit to compare), uploads the
images one by one, then sends one cold ``GET /images/{id}/metrics`` per image, all at once. Prints the
server's resident memory (Linux /proc: VmRSS, and VmHWM, the peak, reset before each phase) after start-up,
during and after the uploads, during and after the concurrent requests, and 5 s later.
Figures only, never assertions: a benchmark prints (tests/integration/test_hardening_memory.py asserts the
bound in bytes the queue holds).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = Path(tempfile.gettempdir()) / "vitscope-bench-memory"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def large_jpegs(n: int, width: int, height: int) -> list[Path]:
    """Distinct smooth gradients with noise, JPEG quality 85 (a few MB each, like a phone photo)."""
    from PIL import Image

    IMAGES.mkdir(parents=True, exist_ok=True)
    paths = []
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 180
    for seed in range(n):
        path = IMAGES / f"large-{width}x{height}-{seed}.jpg"
        if not path.is_file():
            rng = np.random.default_rng(seed)
            noise = rng.normal(0, 5, size=(height, width, 3)).astype(np.float32)
            pixels = np.clip(base + rng.uniform(0, 60, size=3) + noise, 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
            path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def start_server(repo: Path, port: int, data_dir: str, model: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "VITSCOPE_UI": "false",
            "VITSCOPE_DEVICE": "cpu",
            "VITSCOPE_DATA_DIR": data_dir,
            "VITSCOPE_DATA_DIR_MAX_BYTES": str(8 << 30),
            "VITSCOPE_DEFAULT_MODELS": model,
            "VITSCOPE_CLIENT_UPLOADS_PER_HOUR": "0",
            "VITSCOPE_CLIENT_UPLOAD_BYTES_PER_HOUR": "0",
            "VITSCOPE_QUEUE_SIZE": "256",
            "VITSCOPE_REQUEST_TIMEOUT_S": "1800",
            "VITSCOPE_PORT": str(port),
            "PYTHONPATH": str(repo),
        }
    )
    env.pop("REDIS_URL", None)
    cmd = [sys.executable, "-m", "uvicorn", "backend.api.app:create_app", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, cwd=repo)


def _mb(n: int) -> str:
    return f"{n / 1e6:8.0f} MB"


async def run(args: argparse.Namespace) -> None:
    paths = large_jpegs(args.images, args.width, args.height)
    sizes = [p.stat().st_size for p in paths]
    print(f"{len(paths)} JPEGs {args.width}x{args.height} ({args.width * args.height / 1e6:.1f} Mpx, "
          f"{3 * args.width * args.height / 1e6:.0f} MB decoded), {min(sizes) / 1e6:.1f}-"
          f"{max(sizes) / 1e6:.1f} MB each; server from {args.repo}")  # fmt: skip
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="vitscope-bench-memory-") as data_dir:
        proc = start_server(Path(args.repo), port, data_dir, args.model)
        rows: list[tuple[str, int, int]] = []
        try:
            base = f"http://127.0.0.1:{port}/api/v1"
            async with httpx.AsyncClient(timeout=1800) as client:
                for _ in range(1200):
                    try:
                        if (await client.get(f"{base}/ready")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    raise SystemExit("the server never became ready")
                m = memory(proc.pid)
                rows.append(("after start-up and warm-up", m["VmRSS"], m["VmHWM"]))
                reset_peak(proc.pid)
                ids = []
                for path in paths:
                    r = await client.post(f"{base}/images", files={"file": (path.name, path.read_bytes())})
                    r.raise_for_status()
                    ids.append(r.json()["id"])
                m = memory(proc.pid)
                rows.append((f"after {len(ids)} uploads (one at a time)", m["VmRSS"], m["VmHWM"]))
                reset_peak(proc.pid)
                started = time.perf_counter()
                replies = await asyncio.gather(
                    *(client.get(f"{base}/images/{i}/metrics", params={"model": args.model}) for i in ids)
                )
                seconds = time.perf_counter() - started
                codes = sorted({r.status_code for r in replies})
                m = memory(proc.pid)
                rows.append((f"after {len(ids)} concurrent cold metrics", m["VmRSS"], m["VmHWM"]))
                await asyncio.sleep(5)
                m = memory(proc.pid)
                rows.append(("5 s later", m["VmRSS"], m["VmHWM"]))
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"concurrent requests: status {codes}, {seconds:.1f} s")
    print(f"{'phase':44s} {'RSS':>11s} {'peak (HWM)':>11s}")
    for name, rss, hwm in rows:
        print(f"{name:44s} {_mb(rss)} {_mb(hwm)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20, help="distinct images = concurrent requests")
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=6600)
    parser.add_argument("--model", default="cifar-cl-vit-t4", help="a shipped demo model (offline)")
    parser.add_argument("--repo", default=str(ROOT), help="the checkout whose server is measured")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
