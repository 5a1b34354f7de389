"""Who a client is, and slow clients (issue 10, item 11 and "Also"): no proxy trusted unless configured
(loopback included), the upload caps in Redis when Redis is configured (two replicas and a restart share
them), a deadline on request headers and on request bodies."""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.api.clients import RedisUploadLedger, TrustedProxies, client_address
from backend.config import Settings
from tests.integration.test_api import models_env, png_bytes, running, settings_for, tiny_models_cache
from tests.integration.test_hosting import assert_429, peer, upload

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("models_env")]
__all__ = ["models_env", "tiny_models_cache"]

TOKEN = "hardening-test-token-0123456789"


def _scope(peer_address: str, forwarded: str | None = None) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return {"type": "http", "client": (peer_address, 1234), "headers": headers}


# ---------------------------------------------------------------------------------------------- proxies
async def test_loopback_is_not_a_trusted_proxy_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VITSCOPE_TRUSTED_PROXIES", raising=False)
    default = Settings(ui=False)
    assert default.trusted_proxies == []
    trusted = TrustedProxies(default.trusted_proxies)
    for local in ("127.0.0.1", "::1"):  # any local process could otherwise pick its own address
        assert await client_address(_scope(local, "203.0.113.50"), trusted) == local
    configured = TrustedProxies(Settings(ui=False, trusted_proxies=["127.0.0.1"]).trusted_proxies)
    assert await client_address(_scope("127.0.0.1", "203.0.113.50"), configured) == "203.0.113.50"


async def test_local_uploads_cannot_dodge_the_cap_with_x_forwarded_for(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, client_uploads_per_hour=1)
    async with running(settings, wait_ready=False) as api, peer(api, "127.0.0.1") as local:
        assert (await upload(local, png_bytes(60), {"X-Forwarded-For": "203.0.113.60"})).status_code == 201
        r = await upload(local, png_bytes(61), {"X-Forwarded-For": "203.0.113.61"})
        assert_429(r, "client 127.0.0.1")


async def test_the_api_token_vouches_for_the_mounted_uis_x_forwarded_for(tmp_path: Path) -> None:
    """The UI in the same process calls the API over loopback with the token and the browser's address."""
    settings = settings_for(tmp_path, client_uploads_per_hour=1, api_token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running(settings, wait_ready=False) as api, peer(api, "127.0.0.1", auth) as ui:
        assert (await upload(ui, png_bytes(62), {"X-Forwarded-For": "203.0.113.62"})).status_code == 201
        assert (await upload(ui, png_bytes(63), {"X-Forwarded-For": "203.0.113.63"})).status_code == 201
        assert_429(await upload(ui, png_bytes(64), {"X-Forwarded-For": "203.0.113.63"}), "203.0.113.63")


# ---------------------------------------------------------------------------------------------- Redis
async def test_upload_caps_are_shared_by_replicas_and_survive_a_restart(
    tmp_path: Path, redis_url: str
) -> None:
    client = f"203.0.113.{secrets.randbelow(200) + 1}-{secrets.token_hex(4)}"  # unique keys in the test db
    settings = settings_for(tmp_path, client_uploads_per_hour=2, api_token=TOKEN, redis_url=redis_url)
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Forwarded-For": client}
    async with (
        running(settings, wait_ready=False) as one,
        running(settings, wait_ready=False) as two,
        peer(one, "127.0.0.1", headers) as a,
        peer(two, "127.0.0.1", headers) as b,
    ):
        assert (await upload(a, png_bytes(70))).status_code == 201
        assert (await upload(b, png_bytes(71))).status_code == 201
        retry = assert_429(await upload(a, png_bytes(72)), "2 uploads in the last hour")
        assert 3500 <= retry <= 3600
        assert_429(await upload(b, png_bytes(73)), "2 uploads")
    async with running(settings, wait_ready=False) as restarted, peer(restarted, "127.0.0.1", headers) as c:
        assert_429(await upload(c, png_bytes(74)), "2 uploads")


async def test_the_byte_cap_in_redis_counts_what_arrived(redis_url: str) -> None:
    ledger = RedisUploadLedger(redis_url, 0, 1000, prefix=f"vitscope-test:{secrets.token_hex(6)}:")
    try:
        entry, _, _ = await ledger.reserve("c", 900)  # declared 900 ...
        assert entry is not None
        await ledger.settle(entry, 100)  # ... but only 100 came
        second, why, _ = await ledger.reserve("c", 850)
        assert second is not None, why
        refused, why, retry = await ledger.reserve("c", 200)
        assert refused is None and "950 bytes" in why and retry >= 3500
    finally:
        await ledger.close()


async def test_with_redis_down_the_caps_count_in_memory(redis_server_control: Any) -> None:
    url = redis_server_control.url
    redis_server_control.stop()
    ledger = RedisUploadLedger(url, 1, 0, timeout=0.2)
    try:
        started = time.monotonic()
        assert (await ledger.reserve("d", 10))[0] is not None
        refused, why, _ = await ledger.reserve("d", 10)
        assert refused is None and "1 uploads" in why
        assert time.monotonic() - started < 2
    finally:
        await ledger.close()


# ---------------------------------------------------------------------------------------------- slow clients
async def test_a_body_that_does_not_arrive_in_time_gets_408(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, body_timeout_s=0.5)
    boundary = "hardeningboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    async def trickle() -> AsyncIterator[bytes]:
        yield head
        await asyncio.sleep(3)  # a slow client stops sending
        yield png_bytes(80) + f"\r\n--{boundary}--\r\n".encode()

    async with running(settings, wait_ready=False) as api:
        started = time.monotonic()
        r = await api.client.post(
            "/api/v1/images",
            content=trickle(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert r.status_code == 408, r.text
        assert r.json()["error"]["code"] == "request_timeout"
        assert "did not arrive within 0.5 s" in r.json()["error"]["message"]
        assert time.monotonic() - started < 2.5
        assert (await api.upload(png_bytes(81))).status_code == 201  # a prompt upload is unaffected


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(settings: Settings) -> Iterator[int]:
    """`vitscope serve`'s uvicorn config (the header deadline protocol) on a free port, in a thread."""
    import uvicorn

    from backend.api import create_app
    from backend.cli.serve import uvicorn_config

    app = create_app(settings)
    server = uvicorn.Server(uvicorn_config(app, settings, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield settings.port
    finally:
        server.should_exit = True
        thread.join(10)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes the connection (EOF) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except TimeoutError:
        return False


def test_slow_headers_and_idle_connections_are_closed(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, port=_free_port(), header_timeout_s=0.5, keep_alive_s=1.0)
    with served(settings) as port:
        with socket.create_connection(("127.0.0.1", port)) as silent:  # opens, never sends
            assert _closed_within(silent, 3)
        with socket.create_connection(("127.0.0.1", port)) as slow:  # headers one piece at a time
            slow.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
            time.sleep(0.2)
            slow.sendall(b"X-Slow: 1\r\n")
            assert _closed_within(slow, 3)
        with socket.create_connection(("127.0.0.1", port)) as prompt:  # a whole request is answered
            prompt.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            prompt.settimeout(3)
            assert prompt.recv(4096).startswith(b"HTTP/1.1 200")
            assert _closed_within(prompt, 4)  # then idle: closed after the keep-alive / header deadline
        with socket.create_connection(("127.0.0.1", port)) as huge:  # unfinished headers past the limit
            huge.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8192)
            huge.sendall(b"a" * (settings.max_header_bytes + 1024))
            huge.settimeout(3)
            assert huge.recv(4096).startswith(b"HTTP/1.1 400")
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
        assert r.status_code == 200
