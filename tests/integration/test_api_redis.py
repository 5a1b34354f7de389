"""The cache on a real Redis: keys fill, an outage costs only recomputation, and the cache comes back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import RedisServer
from tests.integration.test_api import (
    TINY,
    Api,
    models_env,
    png_bytes,
    running,
    settings_for,
    tiny_models_cache,
)

pytestmark = pytest.mark.integration
__all__ = ["models_env", "tiny_models_cache"]  # fixtures used here


def vitscope_keys(url: str) -> list[bytes]:
    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        return list(client.scan_iter(match="vitscope:*", count=1000))
    finally:
        client.close()


async def test_results_land_in_redis_and_uploads_survive_a_flush(
    models_env: Path, tmp_path: Path, redis_server_control: RedisServer
) -> None:
    server = redis_server_control
    url = server.url
    async with running(settings_for(tmp_path, redis_url=url)) as api:
        data = png_bytes(100)
        iid = await api.upload_ok(data)
        r = await api.client.get(f"/api/v1/images/{iid}/attention", params={"model": TINY, "layer": 1})
        assert r.status_code == 200
        await api.service.settle()  # results are written to the cache in the background
        keys = {k.decode().split(":")[1] for k in vitscope_keys(url)}
        # attention per layer, rollout, spectra per depth, metrics, the image, the view, the done mark
        assert {"attn", "rollout", "spectrum", "metrics", "image", "view-attention", "bundle"} <= keys
        assert "tokens" not in keys  # stored only once a set analysis reads them
        sid = (await api.client.post("/api/v1/sets", json={"images": [iid]})).json()["id"]
        captures = api.captures
        r = await api.client.get(f"/api/v1/sets/{sid}/embeddings", params={"model": TINY, "layer": 2})
        assert r.status_code == 200, r.text
        await api.service.settle()
        assert "tokens" in {k.decode().split(":")[1] for k in vitscope_keys(url)}
        assert api.captures == captures + 1  # the tokens took one capture, then every depth is stored
        r = await api.client.get(f"/api/v1/sets/{sid}/embeddings", params={"model": TINY, "layer": 1})
        assert r.status_code == 200 and api.captures == captures + 1
        redis.Redis.from_url(url).flushall()  # Redis evicts everything: the upload is still served from disk
        got = await api.client.get(f"/api/v1/images/{iid}")
        assert got.status_code == 200 and got.content == data
        r2 = await api.client.get(f"/api/v1/images/{iid}/attention", params={"model": TINY, "layer": 2})
        assert r2.status_code == 200


async def _request_run(api: Api, ids: list[str], seconds: float) -> list[httpx.Response]:
    """A steady run of mixed requests (new images too), as a client would send them."""
    out: list[httpx.Response] = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        iid = ids[i % len(ids)]
        out.append(await api.client.get(f"/api/v1/images/{iid}/metrics", params={"model": TINY}))
        out.append(
            await api.client.get(
                f"/api/v1/images/{iid}/attention",
                params={"model": TINY, "layer": 1 + i % 2, "head": str(i % 2), "query": str(i % 16)},
            )
        )
        out.append(
            await api.client.get(f"/api/v1/images/{iid}/spectrum", params={"model": TINY, "depth": i % 3})
        )
        up = await api.upload(png_bytes(1000 + i))
        out.append(up)
        if up.status_code == 201:
            ids.append(up.json()["id"])
        i += 1
        await asyncio.sleep(0.01)
    return out


async def test_redis_stopped_mid_run_then_back(
    models_env: Path, tmp_path: Path, redis_server_control: RedisServer
) -> None:
    server = redis_server_control
    url = server.url
    # the run uploads as fast as the machine answers (hundreds in 4 s on a fast one): the per-client upload
    # limit is not what this test is about, so it is off (0: no cap)
    settings = settings_for(tmp_path, redis_url=url, hot_cache_bytes=0, client_uploads_per_hour=0)
    async with running(settings) as api:
        ids = [await api.upload_ok(png_bytes(200 + i)) for i in range(2)]
        assert vitscope_keys(url)

        run = asyncio.create_task(_request_run(api, ids, seconds=4.0))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(server.stop)
        responses = await run
        assert len(responses) > 8
        bad = [(r.request.url.path, r.status_code, r.text[:200]) for r in responses if r.status_code >= 300]
        assert not bad, bad  # every request succeeded while Redis was down
        assert api.service.store.stats()["errors"] > 0  # and the store did see the outage

        await asyncio.to_thread(server.start)
        assert not vitscope_keys(url)  # a fresh, empty Redis
        deadline = time.monotonic() + 15
        n = 0
        while time.monotonic() < deadline and not vitscope_keys(
            url
        ):  # the breaker probes after its cool-down
            iid = await api.upload_ok(png_bytes(5000 + n))
            r = await api.client.get(f"/api/v1/images/{iid}/metrics", params={"model": TINY})
            assert r.status_code == 200
            n += 1
            await asyncio.sleep(0.2)
        keys = vitscope_keys(url)
        assert keys, "the cache did not fill again after Redis came back"
        # and it serves from Redis again: the same view twice, the second from the store
        iid = await api.upload_ok(png_bytes(9000))
        await api.client.get(f"/api/v1/images/{iid}/metrics", params={"model": TINY})
        captures = api.captures
        r = await api.client.get(f"/api/v1/images/{iid}/attention", params={"model": TINY, "layer": 2})
        assert r.status_code == 200 and api.captures == captures
