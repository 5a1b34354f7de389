"""The UI's login: none, one shared password (a login page and a signed session cookie), or a reverse proxy
that authenticates and names the user in a header. One ``before_request`` hook guards every route of the
Flask server under Dash: the page, Dash's ``/_dash-*`` routes, the assets and the UI's own ``/_vitscope/*``
routes (which call the API with the server's token).

The cookie is signed with a secret made when the process starts: restarting the UI logs everyone out.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import html
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import flask
from itsdangerous import BadSignature, URLSafeTimedSerializer

MODES = ("none", "password", "proxy-header")
COOKIE = "vitscope_ui"
SESSION_SECONDS = 12 * 3600  # one school day
LOGIN_PATH = "/_vitscope/login"
LOGOUT_PATH = "/_vitscope/logout"
MAX_FAILURES = 10  # wrong passwords per client address ...
FAILURE_WINDOW = 600.0  # ... in this many seconds, then 429 until the oldest leaves the window


@dataclass(frozen=True)
class UiAuth:
    """How the UI authenticates its users. ``password`` and ``proxy_header`` are used by their mode."""

    mode: str = "none"
    password: str | None = None
    proxy_header: str = "X-Forwarded-User"
    redis_url: str | None = None  # where wrong passwords are counted (None: in this process)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"UI auth mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.mode == "password" and not self.password:
            raise ValueError("UI auth mode 'password' needs a password")

    def __repr__(self) -> str:  # never print the password
        return f"UiAuth(mode={self.mode!r}, proxy_header={self.proxy_header!r})"


def client_address() -> str | None:
    """The browser's address as this server sees it (after ``--proxy-hops``), inside a request; else None."""
    if not flask.has_request_context():
        return None
    return flask.request.remote_addr


def same_site_path(target: str | None, prefix: str) -> str:
    """Where the login may send the browser: a path of this app, else ``prefix``.

    Read as a browser would: percent-escapes decoded and control characters dropped (a browser ignores a tab
    or newline in ``/\t/evil.example``, which then means ``//evil.example``), so no form of another site
    (``//host``, ``/\\host``, ``https://...``) gets through, and the ``Location`` header never holds a line
    break. The path goes back as given, less its control characters, percent-encoded where it must be.
    """
    if not target:
        return prefix
    text = "".join(ch for ch in unquote(target) if ch.isprintable())
    parts = urlsplit(text)
    if (
        parts.scheme
        or parts.netloc
        or not text.startswith(prefix)
        or text[1:2] in ("/", "\\")
        or "\\" in text
    ):
        return prefix
    kept = "".join(ch for ch in target if ch.isprintable())
    return quote(kept, safe="/?&=:@,;+-._~!$'()*%#")


def _json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Any:
    response = flask.jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


class _Failures:
    """Wrong passwords per client address in a sliding window (bounded memory), in this process."""

    def __init__(self) -> None:
        self._by_client: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._by_client.setdefault(client, deque())
        self._by_client.move_to_end(client)
        while times and times[0] <= now - FAILURE_WINDOW:
            times.popleft()
        while len(self._by_client) > 10_000:
            self._by_client.popitem(last=False)
        return times

    def retry_after(self, client: str) -> int:
        """0 when the client may try again now, else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            return _wait(list(self._recent(client, now)), now)

    def add(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(client, now).append(now)

    def clear(self, client: str) -> None:
        with self._lock:
            self._by_client.pop(client, None)


def _wait(times: list[float], now: float) -> int:
    """Seconds until a client with failures at ``times`` (oldest first) may try again; 0 = now."""
    if len(times) < MAX_FAILURES:
        return 0
    return max(1, math.ceil(times[-MAX_FAILURES] + FAILURE_WINDOW - now))


class _RedisFailures(_Failures):
    """The same window in Redis (one sorted set per client, wall-clock scores), so that UI replicas and a
    restart share it; while Redis does not answer, this process counts on its own (never locks anyone out
    because Redis is down, never lets the count go)."""

    def __init__(self, url: str, timeout_s: float = 0.25) -> None:
        import redis

        super().__init__()
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    @staticmethod
    def _key(client: str) -> str:
        return "vitscope:ui-login-failures:" + hashlib.sha256(client.encode()).hexdigest()[:32]

    def retry_after(self, client: str) -> int:
        import redis

        now = time.time()
        key = self._key(client)
        try:
            pipe = self._redis.pipeline()
            pipe.zremrangebyscore(key, "-inf", now - FAILURE_WINDOW)
            pipe.zrange(key, 0, -1, withscores=True)
            times = [float(score) for _, score in pipe.execute()[1]]
        except redis.RedisError:
            return super().retry_after(client)
        return max(_wait(times, now), super().retry_after(client))

    def add(self, client: str) -> None:
        import redis

        super().add(client)
        now, key = time.time(), self._key(client)
        try:
            pipe = self._redis.pipeline()
            pipe.zadd(key, {secrets.token_hex(8): now})
            pipe.expire(key, math.ceil(FAILURE_WINDOW))
            pipe.execute()
        except redis.RedisError:
            pass  # counted in this process above

    def clear(self, client: str) -> None:
        import redis

        super().clear(client)
        with contextlib.suppress(redis.RedisError):
            self._redis.delete(self._key(client))


def install(server: flask.Flask, auth: UiAuth, prefix: str) -> None:
    """Guard every route of ``server``; ``prefix`` is where the browser reaches the app (``/`` or ``/x/``)."""
    if auth.mode == "none":
        return
    if auth.mode == "proxy-header":
        _install_proxy_header(server, auth.proxy_header)
        return
    _install_password(server, auth.password or "", prefix, auth.redis_url)


def _install_proxy_header(server: flask.Flask, header: str) -> None:
    @server.before_request
    def require_header() -> Any:
        if flask.request.headers.get(header, "").strip():
            return None
        return _json_error(
            401,
            "unauthorized",
            f"this UI is reached through a reverse proxy that logs users in and sets the {header} header; "
            f"the request has no {header}: open the UI through that proxy",
        )


def _install_password(server: flask.Flask, password: str, prefix: str, redis_url: str | None) -> None:
    signer = URLSafeTimedSerializer(secrets.token_bytes(32), salt="vitscope-ui-login")
    expected = hashlib.sha256(password.encode()).digest()
    failures = _RedisFailures(redis_url) if redis_url else _Failures()
    open_paths = {LOGIN_PATH, LOGOUT_PATH}

    def logged_in() -> bool:
        token = flask.request.cookies.get(COOKIE)
        if not token:
            return False
        try:
            signer.loads(token, max_age=SESSION_SECONDS)
        except BadSignature:  # a wrong, forged or expired cookie
            return False
        return True

    @server.before_request
    def require_login() -> Any:
        if flask.request.path in open_paths or logged_in():
            return None
        page = flask.request.path == "/" or "text/html" in flask.request.headers.get("Accept", "")
        if flask.request.method == "GET" and page:  # a browser opening the page: to the login form
            here = prefix + flask.request.full_path.lstrip("/").rstrip("?")
            return flask.redirect(f"{prefix}{LOGIN_PATH.lstrip('/')}?next={quote(here, safe='')}", 302)
        message = f"log in first: open {prefix} and enter the class password"
        return _json_error(401, "unauthorized", message, {"Cache-Control": "no-store"})

    @server.route(LOGIN_PATH, methods=["GET", "POST"])
    def login() -> Any:
        client = flask.request.remote_addr or "unknown"
        target = same_site_path(flask.request.values.get("next"), prefix)
        if flask.request.method == "GET":
            return _login_page(prefix, target, None, 200)
        wait = failures.retry_after(client)
        if wait:
            message = f"too many wrong passwords from this address; try again in {wait} s"
            page = _login_page(prefix, target, message, 429)
            page.headers["Retry-After"] = str(wait)
            return page
        given = hashlib.sha256(flask.request.form.get("password", "").encode()).digest()
        if not hmac.compare_digest(given, expected):
            failures.add(client)
            return _login_page(prefix, target, "That is not the class password. Try again.", 401)
        failures.clear(client)
        response = flask.redirect(target, 303)
        response.set_cookie(
            COOKIE,
            signer.dumps({"v": 1}),
            max_age=SESSION_SECONDS,
            path=prefix,
            httponly=True,
            samesite="Lax",
            secure=flask.request.is_secure,
        )
        return response

    @server.route(LOGOUT_PATH, methods=["GET", "POST"])
    def logout() -> Any:
        response = flask.redirect(f"{prefix}{LOGIN_PATH.lstrip('/')}", 303)
        response.delete_cookie(COOKIE, path=prefix, httponly=True, samesite="Lax")
        return response


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vitscope · log in</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f6f7f9; color: #1f2937; margin: 0; }}
main {{ max-width: 22rem; margin: 12vh auto; background: #fff; padding: 2rem; border-radius: 8px;
       box-shadow: 0 1px 4px rgba(0,0,0,.12); }}
h1 {{ margin: 0 0 .25rem; font-size: 1.5rem; }} p {{ margin: .25rem 0 1rem; color: #4b5563; }}
label {{ display: block; font-weight: 600; margin-bottom: .25rem; }}
input[type=password] {{ width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; }}
button {{ margin-top: 1rem; padding: .5rem 1.25rem; font-size: 1rem; }}
.error {{ color: #b91c1c; font-weight: 600; }}
</style></head>
<body><main>
<h1>vitscope</h1>
<p>Enter the class password to open the UI.</p>
{error}
<form method="post" action="{action}">
<input type="hidden" name="next" value="{target}">
<label for="password">Class password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
</form>
</main></body></html>
"""


def _login_page(prefix: str, target: str, error: str | None, status: int) -> flask.Response:
    body = _PAGE.format(
        action=html.escape(prefix + LOGIN_PATH.lstrip("/")),
        target=html.escape(target),
        error=f'<p class="error" role="alert">{html.escape(error)}</p>' if error else "",
    )
    response = flask.Response(body, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    return response
