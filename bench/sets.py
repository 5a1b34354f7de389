"""Cold analyses through the API against a bare forward of the same model, in one interleaved run.

    python bench/sets.py [--arch vit_base_patch16_224] [--repeats 5] [--set-size 8] [--redis-url URL]

The service runs in this process (FastAPI over httpx's ASGI transport, the real runner, batching and store)
with a random-init timm model registered as an imported model (so it runs offline). Each repeat, interleaved
so that a slow moment of the machine hits every variant alike:

1. ``bare N``: ``model(pixels)`` of a batch of N (fused attention, ``inference_mode``), timm on its own;
2. ``set N``: N new images (never seen before): upload each, ``POST /sets``, ``GET /sets/{id}/metrics``
   until the answer is there (one capture of the batch + every analysis);
3. ``bare 1`` and ``single``: the same for one new image and ``GET /images/{id}/metrics``.

Storing the results runs in the background after the answer; the bench waits for it between variants (not
timed) and prints its time separately. Ratios are medians over repeats of the per-repeat ratio. Goals
(issue 11): ``set 8 / bare 8 <= 1.3`` and ``single / bare 1 <= 1.3`` for ViT-B/16 on CPU.
Figures only, never assertions: a benchmark prints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
IMAGES = ROOT.parent / "shared" / "data" / "cue_conflict"


def write_model(folder: Path, arch: str) -> str:
    """A random-init timm model as an imported model card (weights in safetensors)."""
    import torch
    from safetensors.torch import save_file

    from backend.models.loading import build_model

    name = f"bench-{arch.replace('_', '-')}"
    imported = folder / "imported"
    imported.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_model(arch, {})
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(imported / f"{name}.safetensors")
    )
    card = {"id": name, "family": "baseline", "arch": arch, "arch_kwargs": {},
            "weights": f"{name}.safetensors", "license": "bench only",
            "description": f"random-init {arch} for bench/sets.py"}  # fmt: skip
    (imported / f"{name}.json").write_text(json.dumps(card))
    return name


def image_files() -> list[bytes]:
    files = sorted(IMAGES.glob("*/*.png"))
    if not files:
        raise SystemExit(f"no images under {IMAGES} (the shared cue-conflict set)")
    return [f.read_bytes() for f in files]


async def run(args: argparse.Namespace) -> None:
    import httpx
    import torch

    from backend.api import create_app
    from backend.config import Settings
    from backend.models import load_model

    tmp = Path(tempfile.mkdtemp(prefix="vitscope-bench-sets-"))
    os.environ["VITSCOPE_MODELS_CACHE"] = str(tmp / "models")
    os.environ["HF_HUB_OFFLINE"] = "1"
    model_id = write_model(tmp / "models", args.arch)
    pictures = image_files()
    needed = args.repeats * (args.set_size + 1) + 2
    if len(pictures) < needed:
        raise SystemExit(f"{needed} distinct images needed, {len(pictures)} found: use fewer --repeats")
    settings = Settings(
        ui=False, device="cpu", data_dir=tmp / "data", default_models=[model_id], redis_url=args.redis_url,
        max_batch=max(8, args.set_size), set_wait_s=600.0, request_timeout_s=600.0,
    )  # fmt: skip
    bare: Any = load_model(model_id, "cpu").model.eval()  # the same weights, outside the service
    for m in bare.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = True
    size = int(bare.default_cfg.get("input_size", (3, 224, 224))[-1])
    app = create_app(settings)
    service = app.state.service
    times: dict[str, list[float]] = {k: [] for k in ("bare_n", "set", "bare_1", "single", "store_set")}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:
            while (await client.get("/api/v1/ready")).status_code != 200:
                await asyncio.sleep(0.1)
            feed = iter(pictures)

            async def upload(data: bytes) -> str:
                r = await client.post("/api/v1/images", files={"file": ("x.png", data, "image/png")})
                r.raise_for_status()
                return str(r.json()["id"])

            async def a_set(n: int) -> float:
                chosen = [next(feed) for _ in range(n)]
                start = time.perf_counter()
                ids = await asyncio.gather(*(upload(d) for d in chosen))
                r = await client.post("/api/v1/sets", json={"images": ids})
                r.raise_for_status()
                url = f"/api/v1/sets/{r.json()['id']}/metrics?model={model_id}"
                while (r := await client.get(url)).status_code == 202:
                    await asyncio.sleep(0.02)
                r.raise_for_status()
                return time.perf_counter() - start

            async def single() -> float:
                data = next(feed)
                start = time.perf_counter()
                iid = await upload(data)
                r = await client.get(f"/api/v1/images/{iid}/metrics?model={model_id}")
                r.raise_for_status()
                return time.perf_counter() - start

            def forward(n: int) -> float:
                pixels = torch.randn(n, 3, size, size)
                start = time.perf_counter()
                with torch.inference_mode():
                    bare(pixels)
                return time.perf_counter() - start

            async def settled() -> float:
                start = time.perf_counter()
                await service.settle()
                return time.perf_counter() - start

            forward(args.set_size), forward(1)  # warm-up of every variant
            await a_set(1)
            await single()
            await settled()
            for _ in range(args.repeats):
                times["bare_n"].append(forward(args.set_size))
                times["set"].append(await a_set(args.set_size))
                times["store_set"].append(await settled())
                times["bare_1"].append(forward(1))
                times["single"].append(await single())
                await settled()
            batches = list(service.pool.runners[0].stats.batches)
    med = {k: 1000 * statistics.median(v) for k, v in times.items()}
    set_ratio = statistics.median(s / b for s, b in zip(times["set"], times["bare_n"], strict=True))
    one_ratio = statistics.median(s / b for s, b in zip(times["single"], times["bare_1"], strict=True))
    n = args.set_size
    print(f"{args.arch} (random init), cpu x{torch.get_num_threads()}, torch {torch.__version__}, "
          f"store {service.store.backend}, {args.repeats} repeats (medians)")  # fmt: skip
    print(f"  bare batch-{n} fused forward   {med['bare_n']:8.1f} ms")
    print(f"  set of {n} new images -> metrics {med['set']:8.1f} ms   ratio {set_ratio:5.2f}  (goal <= 1.3)")
    print(f"  storing the set's results       {med['store_set']:8.1f} ms   (background, after the answer)")
    print(f"  bare batch-1 fused forward      {med['bare_1']:8.1f} ms")
    print(
        f"  one new image -> metrics        {med['single']:8.1f} ms   ratio {one_ratio:5.2f}  (goal <= 1.3)"
    )
    print(f"  batch sizes the runner ran: {batches}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="vit_base_patch16_224")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--set-size", type=int, default=8)
    parser.add_argument("--redis-url", default=None, help="store in Redis (default: the in-process store)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
