"""Large legal images must not exhaust memory (issue 10, item 2): each is decoded under a byte budget and
shrunk to what its model reads before it waits in the runner queue; the queue is bounded in bytes. The bound
is asserted in bytes the queue held (``Runner.peak_queued_bytes``), never in wall time; bench/memory.py
measures the server's RSS with more and larger images."""

from __future__ import annotations

import asyncio
import io
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from backend.errors import QueueFull
from backend.runner import Runner
from tests.integration.test_api import TINY, models_env, running, settings_for, tiny_models_cache

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("models_env")]
__all__ = ["models_env", "tiny_models_cache"]

SIDE_W, SIDE_H = 3000, 2000  # 6 Mpx: 18 MB decoded


def large_jpeg(seed: int, size: tuple[int, int] = (SIDE_W, SIDE_H)) -> bytes:
    """A smooth gradient with noise (a photo-like JPEG of a few MB), different for every seed."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w, y / h, (x + y) / (w + h)], axis=-1) * 200 + rng.uniform(0, 40, size=3)
    pixels = np.clip(base + rng.normal(0, 6, size=(h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


async def test_concurrent_cold_requests_on_large_images_queue_only_shrunk_views(tmp_path: Path) -> None:
    n = 6
    settings = settings_for(tmp_path, max_batch=2, decode_memory_bytes=128 * 2**20)
    async with running(settings) as api:
        ids = [await api.upload_ok(large_jpeg(seed)) for seed in range(n)]
        replies = await asyncio.gather(
            *(api.client.get(f"/api/v1/images/{i}/metrics", params={"model": TINY}) for i in ids)
        )
        assert [r.status_code for r in replies] == [200] * n, [
            r.text for r in replies if r.status_code != 200
        ]
        runner = api.service.pool.runners[0]
        resize = int(replies[0].json()["preprocessing"]["resize"])  # 71 for the 64 px test model
        view = 3 * resize * math.ceil(resize * SIDE_W / SIDE_H)  # one shrunk view: 71 x 107, 23 KB
        full = 3 * SIDE_W * SIDE_H  # one decoded image: 18 MB
        assert 0 < runner.peak_queued_bytes <= n * view
        assert runner.peak_queued_bytes < full  # all of them together hold less than one full frame
        budget = api.service.images.decode_budget
        cost = 2 * full  # a decode's peak (decode_cost)
        assert budget.peak <= max(settings.decode_memory_bytes, cost)
        assert budget.held == 0  # every decode gave its bytes back


async def test_the_shrunk_view_gives_the_same_model_input_as_the_full_image(tmp_path: Path) -> None:
    from backend.imaging import Preprocessing, to_model_input
    from backend.uploads import decode_image

    data = large_jpeg(7, size=(1200, 900))
    async with running(settings_for(tmp_path), wait_ready=False) as api:
        image_id = await api.upload_ok(data)
        for resize, interpolation in ((71, "bicubic"), (256, "bilinear")):
            prep = Preprocessing(
                (64, 64), resize, interpolation, "center", 0.9, (0.5,) * 3, (0.5,) * 3, "model"
            )
            view = await api.service.images.model_view(image_id, prep)
            assert min(view.size) == resize
            full = decode_image(data).image
            assert torch.equal(to_model_input(view, prep), to_model_input(full, prep))


def picture(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), (120, 30, 200))


async def test_the_queue_is_bounded_in_bytes(models_env: Path) -> None:
    gate = threading.Event()

    def gated(_loaded: Any, _trace: Any, _i: int) -> None:
        gate.wait(10)

    runner = Runner("cpu", max_batch=1, max_wait_s=0.0, queue_size=64, queue_bytes=2 * 2**20)
    await runner.start()
    try:
        busy = asyncio.create_task(runner.submit(TINY, picture(64, 64), gated))  # on the device
        await asyncio.sleep(0.3)
        waiting = [asyncio.create_task(runner.submit(TINY, picture(600, 500), gated)) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert runner.queued_bytes == 2 * 3 * 600 * 500  # 1.8 MB wait
        with pytest.raises(QueueFull, match=r"hold 1,800,000 bytes of images.*queue_bytes"):
            await runner.submit(TINY, picture(600, 500), gated)
        gate.set()
        await asyncio.gather(busy, *waiting)
        assert runner.peak_queued_bytes == 1_800_000
    finally:
        gate.set()
        await runner.stop()
