"""Hosting for a class, on the API side: class mode, per-client upload caps, trusted proxies, /models fields.

In-process (httpx over ASGI); the tiny test model of ``test_api`` keeps warm-up fast; no Redis needed.
"""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.api.clients import TrustedProxies, UploadLedger, client_address
from backend.config import MiB
from tests.integration.test_api import (  # noqa: F401 - fixtures
    TINY,
    Api,
    models_env,
    png_bytes,
    running,
    settings_for,
    tiny_models_cache,
)

pytestmark = pytest.mark.usefixtures("models_env")  # the tiny test model, offline

TOKEN = "hosting-test-token-0123456789"


def gallery_image(key: str = "chelsea") -> bytes:
    from app import gallery

    return gallery.read(key)[0]


@asynccontextmanager
async def peer(
    api: Api, address: str, headers: dict[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests come from ``address`` (the direct peer the API sees)."""
    transport = httpx.ASGITransport(app=api.app, client=(address, 40000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://vitscope.test", timeout=60, headers=headers
    ) as client:
        yield client


async def upload(
    client: httpx.AsyncClient, data: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post("/api/v1/images", files={"file": ("x.png", data, "image/png")}, headers=headers)


def assert_429(r: httpx.Response, needle: str) -> int:
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["code"] == "too_many_uploads" and needle in err["message"], err
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= 3600 and f"retry in {retry} s" in err["message"]
    return retry


# ---------------------------------------------------------------------------------------------- class mode
async def test_class_mode_refuses_uploads_but_the_gallery(tmp_path: Path) -> None:
    async with running(settings_for(tmp_path, class_mode=True)) as api:
        r = await upload(api.client, png_bytes(1))
        assert r.status_code == 403, r.text
        err = r.json()["error"]
        assert err["code"] == "class_mode" and "only the images of the example gallery" in err["message"]
        # The gallery's images still get in, from the UI server or anyone else: they are the gallery.
        r = await upload(api.client, gallery_image("chelsea"))
        assert r.status_code == 201, r.text
        image_id = r.json()["id"]
        r = await api.client.get(f"/api/v1/images/{image_id}/metrics", params={"model": TINY})
        assert r.status_code == 200


async def test_class_mode_refuses_even_with_the_token(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, class_mode=True, api_token=TOKEN)
    async with running(settings, wait_ready=False) as api:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await upload(api.client, png_bytes(2))).status_code == 401  # no token: the token's 401 first
        r = await upload(api.client, png_bytes(2), headers=auth)
        assert r.status_code == 403 and r.json()["error"]["code"] == "class_mode"
        assert (await upload(api.client, gallery_image("coffee"), headers=auth)).status_code == 201


async def test_class_mode_refuses_model_pulls(tmp_path: Path) -> None:
    async with running(settings_for(tmp_path, class_mode=True), wait_ready=False) as api:
        for model in ("dino-vit-s16", TINY):  # missing weights or present: no pulls in class mode
            r = await api.client.post(f"/api/v1/models/{model}/pull")
            assert r.status_code == 403, r.text
            err = r.json()["error"]
            assert err["code"] == "class_mode" and f"vitscope models pull {model}" in err["message"]


# ---------------------------------------------------------------------------------------------- upload caps
async def test_the_upload_after_the_cap_gets_429_and_others_are_unaffected(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, client_uploads_per_hour=2)
    async with (
        running(settings, wait_ready=False) as api,
        peer(api, "198.51.100.7") as student,
        peer(api, "198.51.100.8") as other,
    ):
        for seed in range(2):
            assert (await upload(student, png_bytes(seed))).status_code == 201
        retry = assert_429(await upload(student, png_bytes(2)), "client 198.51.100.7 made 2 uploads")
        assert retry > 3500  # the oldest upload leaves the window in about an hour
        assert "VITSCOPE_CLIENT_UPLOADS_PER_HOUR" in (await upload(student, png_bytes(3))).text
        assert (await upload(other, png_bytes(4))).status_code == 201  # another client
        # Reads are never capped.
        assert (await student.get("/api/v1/models")).status_code == 200


async def test_the_byte_cap(tmp_path: Path) -> None:
    big = png_bytes(5, size=(160, 160))  # ~77 KB of noise
    settings = settings_for(
        tmp_path, max_upload_bytes=100 * 1024, client_upload_bytes_per_hour=120 * 1024, data_dir_max_bytes=MiB
    )
    async with running(settings, wait_ready=False) as api, peer(api, "198.51.100.9") as student:
        assert (await upload(student, big)).status_code == 201
        r = await upload(student, png_bytes(6, size=(160, 160)))
        assert_429(r, "VITSCOPE_CLIENT_UPLOAD_BYTES_PER_HOUR")
        small = png_bytes(7, size=(20, 20))
        assert (await upload(student, small)).status_code == 201  # a small one still fits


async def test_x_forwarded_for_is_believed_only_from_trusted_proxies(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, client_uploads_per_hour=1, trusted_proxies=["10.0.0.0/8"])
    async with running(settings, wait_ready=False) as api:
        async with peer(api, "10.1.2.3") as proxy:  # a trusted proxy (the ui server) speaks for students
            assert (await upload(proxy, png_bytes(10), {"X-Forwarded-For": "203.0.113.1"})).status_code == 201
            assert_429(await upload(proxy, png_bytes(11), {"X-Forwarded-For": "203.0.113.1"}), "203.0.113.1")
            assert (await upload(proxy, png_bytes(12), {"X-Forwarded-For": "203.0.113.2"})).status_code == 201
            # A student's own X-Forwarded-For, passed on by the proxy, does not make them someone else.
            spoof = {"X-Forwarded-For": "192.0.2.99, 203.0.113.2"}
            assert_429(await upload(proxy, png_bytes(13), spoof), "client 203.0.113.2")
        async with peer(api, "198.51.100.20") as direct:  # not a proxy: its header is ignored
            r = await upload(direct, png_bytes(14), {"X-Forwarded-For": "203.0.113.3"})
            assert r.status_code == 201
            r = await upload(direct, png_bytes(15), {"X-Forwarded-For": "203.0.113.4"})
            assert_429(r, "client 198.51.100.20")


async def test_no_cap_when_zero(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, client_uploads_per_hour=0, client_upload_bytes_per_hour=0)
    async with running(settings, wait_ready=False) as api:
        for seed in range(4):
            assert (await upload(api.client, png_bytes(20 + seed))).status_code == 201


def _scope(peer_address: str, forwarded: str | None = None) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return {"type": "http", "client": (peer_address, 1234), "headers": headers}


async def test_client_address_rules() -> None:
    trusted = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "localhost"])
    assert await client_address(_scope("198.51.100.1", "1.2.3.4"), trusted) == "198.51.100.1"
    assert await client_address(_scope("127.0.0.1"), trusted) == "127.0.0.1"
    assert await client_address(_scope("127.0.0.1", "203.0.113.5"), trusted) == "203.0.113.5"
    # Through two trusted proxies; the leftmost entry is the client's own claim and is not believed.
    chain = _scope("10.0.0.1", "6.6.6.6, 203.0.113.5, 10.0.0.2")
    assert await client_address(chain, trusted) == "203.0.113.5"
    assert await client_address(_scope("10.0.0.1", "[2001:db8::1]:443"), trusted) == "2001:db8::1"
    assert await client_address(_scope("10.0.0.1", "203.0.113.6:5555"), trusted) == "203.0.113.6"
    # A host name (compose's "ui") is resolved when needed.
    by_name = TrustedProxies(["localhost"])
    assert await client_address(_scope("127.0.0.1", "203.0.113.7"), by_name) == "203.0.113.7"
    nowhere = TrustedProxies(["no-such-host.invalid"])
    assert await client_address(_scope("127.0.0.1", "203.0.113.7"), nowhere) == "127.0.0.1"


def test_ledger_window_and_retry_after() -> None:
    now = [1000.0]
    ledger = UploadLedger(2, 0, clock=lambda: now[0])
    assert ledger.admit("a", 10)[0] is not None
    now[0] += 600
    assert ledger.admit("a", 10)[0] is not None
    entry, why, retry = ledger.admit("a", 10)
    assert entry is None and "2 uploads" in why and retry == 3000  # the first leaves at 1000 + 3600
    now[0] += 3000
    assert ledger.admit("a", 10)[0] is not None  # the window slid


# ---------------------------------------------------------------------------------------------- models
async def test_models_say_why_a_model_is_unavailable(tmp_path: Path) -> None:
    async with running(settings_for(tmp_path), wait_ready=False) as api:
        models = {m["id"]: m for m in (await api.client.get("/api/v1/models")).json()["models"]}
        tiny = models[TINY]
        assert tiny["available"] and tiny["default"]
        assert tiny["unavailable_reason"] is None and tiny["fetch_command"] is None
        dino = models["dino-vit-s16"]
        assert not dino["available"] and not dino["default"]
        cache = os.environ["VITSCOPE_MODELS_CACHE"]
        assert "expected" in dino["unavailable_reason"] and cache in dino["unavailable_reason"]
        assert dino["fetch_command"] == "vitscope models pull dino-vit-s16"
        simmim = models["simmim-vit-b16"]  # no direct download link
        assert "by hand" in simmim["unavailable_reason"]
        assert simmim["fetch_command"].startswith("vitscope models import simmim_pretrain")
        assert "--as simmim-vit-b16" in simmim["fetch_command"]
        one = (await api.client.get("/api/v1/models/dino-vit-s16")).json()
        assert one["fetch_command"] == dino["fetch_command"]


# ---------------------------------------------------------------------------------------------- body limit
async def test_the_mounted_ui_upload_route_has_the_upload_limit(tmp_path: Path) -> None:
    from backend.api import create_app

    settings = settings_for(tmp_path, max_upload_bytes=3 * MiB, ui=True)
    app = create_app(settings, api_url="http://127.0.0.1:9")  # nothing listens: the UI cannot pass it on
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://vitscope.test", timeout=60) as client:
        two_mb = io.BytesIO(b"\0" * (2 * MiB))
        r = await client.post("/_vitscope/upload", files={"file": ("a.png", two_mb, "image/png")})
        assert r.status_code != 413, r.text  # over the 1 MB default, under the upload limit
        assert r.json()["error"]["code"] in ("unreachable", "timeout")
        r = await client.post("/_vitscope/upload", files={"file": ("a.png", b"\0" * (4 * MiB), "image/png")})
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_gallery_digests_are_the_gallery() -> None:
    import hashlib

    from app import gallery
    from backend.service.gallery import gallery_digests

    examples = gallery.available()
    assert examples, "scikit-image ships the example photographs"
    assert gallery_digests() == {hashlib.sha256(gallery.read(e.key)[0]).hexdigest() for e in examples}
