"""Two real ``vitscope serve`` processes sharing one real Redis behave as one service.

Each process has its own data folder (nothing shared but Redis): an upload through one is readable through the
other, 50 identical cold requests spread over both make exactly one capture (the Redis lock), and a job that
one process runs is readable through the other.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_api import TINY, png_bytes, tiny_models_cache

pytestmark = pytest.mark.integration
__all__ = ["tiny_models_cache"]  # the fixture used here
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(port: int, data: Path, redis_url: str, models: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "VITSCOPE_UI": "false",
            "VITSCOPE_DEVICE": "cpu",
            "VITSCOPE_DATA_DIR": str(data),
            "VITSCOPE_DEFAULT_MODELS": TINY,
            "VITSCOPE_MODELS_CACHE": str(models),
            "VITSCOPE_SET_WAIT_S": "0",
            "HF_HUB_OFFLINE": "1",
            "REDIS_URL": redis_url,
            "PYTHONPATH": str(ROOT),
        }
    )
    cmd = [sys.executable, "-m", "uvicorn", "backend.api.app:create_app", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, cwd=ROOT)


@pytest.fixture
def replicas(tiny_models_cache: Path, tmp_path: Path, redis_url: str) -> Iterator[list[str]]:
    ports = [_free_port(), _free_port()]
    procs = [_serve(p, tmp_path / f"data{i}", redis_url, tiny_models_cache) for i, p in enumerate(ports)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        deadline = time.monotonic() + 120
        for url, proc in zip(urls, procs, strict=True):
            while True:
                assert proc.poll() is None, f"the server at {url} exited with {proc.returncode}"
                assert time.monotonic() < deadline, f"the server at {url} never became ready"
                try:
                    if httpx.get(f"{url}/api/v1/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _captures(client: httpx.Client, url: str) -> int:
    text = client.get(f"{url}/api/v1/metrics").text
    found = re.findall(r'^vitscope_captures_total\{device="[^"]+"\} (\S+)$', text, re.M)
    return int(sum(float(v) for v in found))


def test_two_processes_share_uploads_captures_and_jobs(replicas: list[str]) -> None:
    a, b = replicas
    data = png_bytes(seed=4242, size=(72, 64))
    with httpx.Client(timeout=60) as client:
        r = client.post(f"{a}/api/v1/images", files={"file": ("x.png", data, "image/png")})
        assert r.status_code == 201, r.text
        image = r.json()["id"]
        # Uploaded through a, read through b (b has its own, empty data folder).
        assert client.get(f"{b}/api/v1/images/{image}").content == data
        before = _captures(client, a) + _captures(client, b)

    async def cold_requests() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            url = f"/api/v1/images/{image}/metrics?model={TINY}"
            return await asyncio.gather(*(client.get((a, b)[i % 2] + url) for i in range(50)))

    answers = asyncio.run(cold_requests())
    assert [r.status_code for r in answers] == [200] * 50
    assert len({r.content for r in answers}) == 1  # one result, whichever process answered
    with httpx.Client(timeout=60) as client:
        assert _captures(client, a) + _captures(client, b) - before == 1

        # A job that a runs is readable through b, progress included.
        other = png_bytes(seed=4343, size=(64, 64))
        ids = [image]
        r = client.post(f"{a}/api/v1/images", files={"file": ("y.png", other, "image/png")})
        ids.append(r.json()["id"])
        set_id = client.post(f"{a}/api/v1/sets", json={"images": ids}).json()["id"]
        r = client.get(f"{a}/api/v1/sets/{set_id}/metrics", params={"model": TINY})
        assert r.status_code in (200, 202), r.text
        if r.status_code == 202:
            job = r.json()["job"]["id"]
            deadline = time.monotonic() + 60
            while True:
                seen = client.get(f"{b}/api/v1/jobs/{job}")
                assert seen.status_code == 200, seen.text
                record = seen.json()
                assert record["id"] == job and record["total"] == 2
                if record["status"] == "succeeded":
                    assert record["done"] == 2
                    break
                assert time.monotonic() < deadline
                time.sleep(0.1)
        # b answers the set's metrics from what a stored, computing nothing.
        captures = _captures(client, b)
        r = client.get(f"{b}/api/v1/sets/{set_id}/metrics", params={"model": TINY})
        assert r.status_code == 200 and r.json()["num_images"] == 2
        assert _captures(client, b) == captures
