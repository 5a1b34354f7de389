"""REST API benchmark: cold vs cached attention requests, cached throughput, bytes stored per (image, model).

    python bench/api.py [--images 6] [--seconds 10] [--clients 32] [--redis-url redis://127.0.0.1:6379/14]

Starts ``uvicorn`` with the service in a subprocess (API only, model ``random-vit-s16``: a ViT-S/16 with
random weights, so it runs offline), uploads images, then over HTTP with httpx (async):

1. cold: the first attention request of each image (one capture + every analysis + storing the results);
2. cached: the same requests again, one at a time (p50, p99);
3. throughput: ``--clients`` concurrent clients asking cached attention views for ``--seconds``;

and, in this process, the bytes one (image, model) stores for ViT-S/16 and ViT-B/16 (both random init:
``vit_small_patch16_224`` / ``vit_base_patch16_224`` built by timm without weights; byte counts do not
depend on the weights beyond compression). Goals: cached >= 50x faster than cold, >= 800 requests/s cached,
no errors.
Figures only, never assertions: a benchmark prints.
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
MODEL = "random-vit-s16"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _images(n: int) -> list[bytes]:
    """Real photographs-like inputs: the shared cue-conflict images when present, else random pictures."""
    from PIL import Image

    shared = ROOT.parent / "shared" / "data" / "cue_conflict"
    files = sorted(shared.glob("*/*.png"))[:n] if shared.is_dir() else []
    out = [f.read_bytes() for f in files]
    rng = np.random.default_rng(0)
    while len(out) < n:
        buf = io.BytesIO()
        Image.fromarray((rng.random((240, 320, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def start_server(port: int, data_dir: str, redis_url: str | None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "VITSCOPE_UI": "false",
            "VITSCOPE_DATA_DIR": data_dir,
            "VITSCOPE_DEFAULT_MODELS": MODEL,
            "VITSCOPE_PORT": str(port),
            "PYTHONPATH": f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}",
        }
    )
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    cmd = [sys.executable, "-m", "uvicorn", "backend.api.app:create_app", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, cwd=ROOT)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


async def _raw_capacity(
    port: int, pid: int, paths: list[str], args: argparse.Namespace
) -> tuple[float, float]:
    """The server's own capacity: the same cached requests from a minimal keep-alive HTTP/1.1 client whose
    per-request cost is negligible (not httpx), and the server's CPU milliseconds per request."""
    done = 0
    stop = time.perf_counter() + min(args.seconds, 5.0)

    async def connection(w: int) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        wires = [f"GET {p} HTTP/1.1\r\nHost: bench\r\n\r\n".encode() for p in paths]
        k = w
        try:
            while time.perf_counter() < stop:
                writer.write(wires[k % len(wires)])
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                if head.startswith(b"HTTP/1.1 200"):
                    done += 1
                k += 1
        finally:
            writer.close()

    cpu = _cpu_seconds(pid)
    started = time.perf_counter()
    await asyncio.gather(*(connection(w) for w in range(args.clients)))
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds(pid) - cpu
    return done / elapsed, cpu / max(1, done) * 1000


async def wait_ready(client: httpx.AsyncClient, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (await client.get("/api/v1/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the server did not become ready")


async def run_http(args: argparse.Namespace) -> dict[str, float]:
    port = _free_port()
    data_dir = tempfile.mkdtemp(prefix="vitscope-bench-")
    proc = start_server(port, data_dir, args.redis_url)
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=300, limits=limits
        ) as client:
            await wait_ready(client)
            ids = []
            for data in _images(args.images):
                r = await client.post("/api/v1/images", files={"file": ("x.png", data, "image/png")})
                r.raise_for_status()
                ids.append(r.json()["id"])

            def params(k: int) -> dict[str, str | int]:
                return {"model": MODEL, "layer": 12, "head": "mean", "query": str(k % 196)}

            cold = []
            for i, iid in enumerate(ids):
                t = time.perf_counter()
                r = await client.get(f"/api/v1/images/{iid}/attention", params=params(i))
                cold.append(time.perf_counter() - t)
                r.raise_for_status()

            cached = []
            for k in range(args.cached_requests):
                i = k % len(ids)
                t = time.perf_counter()
                r = await client.get(f"/api/v1/images/{ids[i]}/attention", params=params(i))
                cached.append(time.perf_counter() - t)
                r.raise_for_status()

            # throughput: each client has its own httpx.AsyncClient (one keep-alive connection, no pool lock
            # contention) and sends prebuilt requests for the cached views (the client's own per-request cost,
            # URL parsing and header merging, is several times the server's on this path)
            base = f"http://127.0.0.1:{port}"
            paths = [client.build_request("GET", f"/api/v1/images/{iid}/attention", params=params(i)).url
                     for i, iid in enumerate(ids)]  # fmt: skip
            done = 0
            errors = 0
            stop = time.perf_counter() + args.seconds

            async def worker(w: int) -> None:
                nonlocal done, errors
                async with httpx.AsyncClient(base_url=base, timeout=60) as own:
                    requests = [own.build_request("GET", url) for url in paths]
                    k = w
                    while time.perf_counter() < stop:
                        try:
                            r = await own.send(requests[k % len(requests)])
                            if r.status_code == 200:
                                done += 1
                            else:
                                errors += 1
                        except httpx.HTTPError:
                            errors += 1
                        k += 1

            cpu_before = _cpu_seconds(proc.pid)
            started = time.perf_counter()
            await asyncio.gather(*(worker(w) for w in range(args.clients)))
            elapsed = time.perf_counter() - started
            server_cpu = _cpu_seconds(proc.pid) - cpu_before
            raw_rps, raw_cpu = await _raw_capacity(
                port, proc.pid, [str(u.raw_path.decode()) for u in paths], args
            )
            metrics = (await client.get("/api/v1/metrics")).text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    written = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("vitscope_store{") and 'stat="bytes_written"' in line
    )
    return {
        "cold_p50": _pct(cold, 50),
        "cold_p99": _pct(cold, 99),
        "cached_p50": _pct(cached, 50),
        "cached_p99": _pct(cached, 99),
        "rps": done / elapsed,
        "server_ms_per_request": server_cpu / max(1, done) * 1000,
        "raw_rps": raw_rps,
        "raw_server_ms_per_request": raw_cpu,
        "requests": float(done),
        "errors": float(errors),
        "images": float(len(ids)),
        "bytes_written_per_image": written / max(1, len(ids)),
    }


def bytes_per_image(arch: str) -> dict[str, int]:
    """Encode one image's bundle for a random-init timm model: bytes per kind of key."""
    import timm
    import torch

    sys.path.insert(0, str(ROOT))
    from backend.capture import capture
    from backend.imaging import preprocess, preprocessing_for
    from backend.service.bundle import ModelInfo, build_bundles, encode_bundle
    from backend.uploads import decode_image

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=0).eval()
    data_config = dict(timm.data.resolve_model_data_config(model))
    prep = preprocessing_for(data_config)
    image = decode_image(_images(1)[0]).image
    pixels = preprocess([image], prep)
    with torch.inference_mode():
        trace = capture(model, pixels, model_id=arch, preprocessing=prep.as_dict())
    blocks = list(model.blocks)
    info = ModelInfo(
        id=arch, family="baseline", arch=arch, digest="random", preprocessing=prep.as_dict(),
        layers=len(blocks),
        heads=int(blocks[0].attn.num_heads), grid=trace.grid, patch_size=trace.patch_size,
        num_prefix=trace.num_prefix_tokens, embed_dim=int(model.embed_dim),
        num_parameters=sum(p.numel() for p in model.parameters()),
    )  # fmt: skip
    bundle = build_bundles(info, trace)[0]
    bundle.encoded = encode_bundle(info, "0" * 64, bundle)
    kinds: dict[str, int] = {}
    for key, value in bundle.encoded.items():
        kind = key.split(":")[1]
        kinds[kind] = kinds.get(kind, 0) + len(value)
    kinds["total"] = sum(kinds.values())
    raw = sum(a.nbytes for a in bundle.attention) + sum(a.nbytes for a in bundle.rollout)
    raw += sum(t.nbytes for t in bundle.tokens) + sum(m.nbytes for m in bundle.spectrum.values())
    kinds["raw_float16"] = raw
    return kinds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--cached-requests", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--redis-url",
        default=None,
        help="cache in this Redis db, which the benchmark FLUSHES first (default: the embedded LRU)",
    )
    parser.add_argument("--skip-bytes", action="store_true")
    args = parser.parse_args()

    print(f"vitscope API benchmark: {os.cpu_count()} CPUs, model {MODEL} (ViT-S/16, random init), "
          f"cache {'redis ' + args.redis_url if args.redis_url else 'embedded LRU'}")  # fmt: skip
    if args.redis_url:  # content addresses: a previous run's entries would make every request a cached one
        import redis

        client = redis.Redis.from_url(args.redis_url)
        client.flushdb()
        client.close()
    r = asyncio.run(run_http(args))
    ms = 1000.0
    print(f"cold attention request   p50 {r['cold_p50'] * ms:9.1f} ms   p99 {r['cold_p99'] * ms:9.1f} ms"
          f"   ({int(r['images'])} images: capture + analyses; stored in the background)")  # fmt: skip
    print(f"cached attention request p50 {r['cached_p50'] * ms:9.2f} ms   p99 {r['cached_p99'] * ms:9.2f} ms")
    print(f"cached / cold speed-up   p50 {r['cold_p50'] / r['cached_p50']:9.0f}x   (goal >= 50x)")
    print(
        f"cached throughput        {r['rps']:9.0f} requests/s with {args.clients} clients over "
        f"{args.seconds:g} s, {int(r['requests'])} requests, {int(r['errors'])} errors (goal >= 800/s, none)"
    )
    print(f"server CPU per cached request {r['server_ms_per_request']:.3f} ms (httpx run)")
    print(f"server capacity          {r['raw_rps']:9.0f} req/s from a minimal HTTP/1.1 client (no httpx) "
          f"({r['raw_server_ms_per_request']:.3f} ms server CPU per request)")  # fmt: skip
    print(
        f"stored per image (server, ViT-S/16, all keys + views): {r['bytes_written_per_image'] / 1e6:.2f} MB"
    )
    if not args.skip_bytes:
        for label, arch in (("ViT-S/16", "vit_small_patch16_224"), ("ViT-B/16", "vit_base_patch16_224")):
            kinds = bytes_per_image(arch)
            parts = ", ".join(
                f"{k} {v / 1e6:.2f}" for k, v in kinds.items() if k not in ("total", "raw_float16")
            )
            print(f"bytes per (image, model) {label} (random init): {kinds['total'] / 1e6:.2f} MB stored "
                  f"(float16 raw {kinds['raw_float16'] / 1e6:.2f} MB); MB by kind: {parts}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
