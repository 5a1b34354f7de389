"""Run a container health-check script (`python -c ...`) against a local HTTP server, for the compose and
Dockerfile tests: no Docker engine runs here."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from typing import Any


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).paths.append(self.path)
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_check(script: str, container_port: int, status: int | None) -> tuple[int, list[str]]:
    """Exit status of ``script`` (its port rewritten) against a server answering ``status`` (None: nothing
    listens), and the paths it asked for."""

    class Handler(_Handler):
        pass

    Handler.status, Handler.paths = status or 200, []
    port = _free_port()
    script = script.replace(f", {container_port},", f", {port},")
    server = None
    if status is not None:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return proc.returncode, Handler.paths
