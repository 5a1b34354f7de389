"""A local stand-in for the model hub (``HF_ENDPOINT``), for the download tests: every file it is asked for is
the same 24 MiB, sent slowly (about 6 s) so that a progress bar can be seen moving.

It answers like the hub does for a plain (non-LFS-xet) file: ``HEAD`` with ``X-Repo-Commit``, ``ETag`` (the
sha256 of the bytes, which huggingface_hub keeps as the blob's name), ``Content-Length``; ``GET`` the bytes.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Over huggingface_hub's 10 MB write chunk, so the file on disk grows part way.
PAYLOAD = bytes(range(256)) * 4096 * 24  # 24 MiB
CHUNKS = 24
CHUNK_DELAY_S = 0.25
ETAG = hashlib.sha256(PAYLOAD).hexdigest()
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Handler(BaseHTTPRequestHandler):
    server_version = "fakehub/1"

    def _headers(self) -> None:
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{ETAG}"')
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.server.requests.append(("HEAD", self.path))  # type: ignore[attr-defined]
        self._headers()

    def do_GET(self) -> None:  # noqa: N802
        self.server.requests.append(("GET", self.path))  # type: ignore[attr-defined]
        self._headers()
        step = len(PAYLOAD) // CHUNKS
        for i in range(CHUNKS):
            self.wfile.write(PAYLOAD[i * step : (i + 1) * step])
            self.wfile.flush()
            time.sleep(CHUNK_DELAY_S)

    def log_message(self, *_args: object) -> None:
        return


@contextmanager
def fake_hub() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """``(url, requests seen)`` of a hub on a free local port, for the ``with`` block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.requests  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
