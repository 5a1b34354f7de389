"""Shared fixtures: a Redis to test against, and a private Redis the tests may stop and restart."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

SHARED_REDIS = ("127.0.0.1", 6379)
# A db of its own on the shared server, flushed at the start of a session, so tests never touch
# anyone's data in db 0. Tests should still use unique keys: other sessions may flush it too.
TEST_DB = 13


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(host: str, port: int, db: int = 0, timeout: float = 0.2) -> bool:
    try:
        client = redis.Redis(
            host=host, port=port, db=db, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


class RedisServer:
    """A redis-server child process on a fixed port, with nothing persisted; stop() and start() again."""

    def __init__(self, port: int | None = None) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed; these tests need it (apt-get install redis-server)")
        self.port = port or _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="vitscope-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 5.0) -> None:
        if self.proc is not None:
            return
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(self.dir)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not _answers("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The shared 127.0.0.1:6379 (db TEST_DB, flushed first) when it answers, else a private server."""
    host, port = SHARED_REDIS
    if _answers(host, port, TEST_DB):
        client = redis.Redis(host=host, port=port, db=TEST_DB)
        client.flushdb()
        client.close()
        yield f"redis://{host}:{port}/{TEST_DB}"
        return
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def redis_server_control() -> Iterator[RedisServer]:
    """A private redis-server (never the shared one) that a test may stop() and start() on the same port."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()
