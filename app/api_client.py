"""The UI's only way to the backend: HTTP calls to the REST API (`/api/v1`, issue 3).

Every error the API returns is JSON ``{"error": {"code", "message"}}``; :class:`ApiError` carries it to the
page, which shows the message in words. Network failures become ``ApiError`` too (code ``unreachable``), so a
callback never crashes on a dead API.

Small, immutable answers (attention maps of one layer, metrics, spectra) are kept in an in-process LRU keyed
by the request: an image id is the sha256 of its bytes, so the same request always means the same answer. This
keeps the click-to-map path at one local HTTP hop per model and zero once a map was seen.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=5.0)


class ApiError(Exception):
    """An error answer of the API (or no answer at all), with the API's own words."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "api_error",
        status: int | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.retry_after = retry_after  # the API's Retry-After header (429, 503), passed on to the page

    def __str__(self) -> str:
        return self.message


class _Lru:
    """A small thread-safe LRU of immutable JSON answers."""

    def __init__(self, max_items: int) -> None:
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._max = max_items
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)


def api_base(api_url: str) -> str:
    """``http://host:port``, ``http://host:port/`` or ``http://host:port/api/v1`` -> ``http://host:port/api/v1``."""
    url = api_url.rstrip("/")
    return url if url.endswith(API_PREFIX) else url + API_PREFIX


def _error_from(resp: httpx.Response) -> ApiError:
    code, message = "http_error", ""
    try:
        body = resp.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            code = str(err.get("code") or code)
            message = str(err.get("message") or "")
        elif isinstance(body, dict) and "detail" in body:  # FastAPI's own validation errors
            detail = body["detail"]
            if isinstance(detail, list):
                message = "; ".join(
                    f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg', '')}" for d in detail
                )
            else:
                message = str(detail)
    except ValueError:
        text = resp.text.strip()[:300]
        message = f"the API answered {resp.status_code} {resp.reason_phrase}" + (f": {text}" if text else "")
    if not message:
        message = f"the API answered {resp.status_code} {resp.reason_phrase}"
    return ApiError(message, code=code, status=resp.status_code, retry_after=resp.headers.get("Retry-After"))


class ApiClient:
    """Typed calls of the REST API. Thread-safe: Dash runs callbacks in several threads."""

    def __init__(
        self,
        api_url: str,
        *,
        token: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base = api_base(api_url)
        token = token if token is not None else os.environ.get("VITSCOPE_API_TOKEN") or None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.base,
            headers=headers,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )
        self._cache = _Lru(2048)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vitscope-ui-api")

    def close(self) -> None:
        self._http.close()
        self._pool.shutdown(wait=False)

    # -- plumbing --------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ApiError(
                f"the API at {self.base} did not answer {method} {path} in time ({exc.__class__.__name__})",
                code="timeout",
            ) from exc
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the API at {self.base}: {exc}", code="unreachable") from exc
        if resp.status_code >= 400:
            raise _error_from(resp)
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._request(method, path, **kwargs)
        if resp.status_code == 202:
            return self._wait_job(resp.json(), method, path, kwargs)
        try:
            return resp.json()
        except ValueError as exc:
            raise ApiError(
                f"the API answered {path} with something that is not JSON", code="bad_answer"
            ) from exc

    def _wait_job(self, accepted: Any, method: str, path: str, kwargs: dict[str, Any]) -> Any:
        """Follow a 202 answer's job to its end, then return its result (or ask again, now cached)."""
        job_id = None
        if isinstance(accepted, dict):
            job = accepted.get("job")
            job_id = job.get("id") if isinstance(job, dict) else job
            job_id = job_id or accepted.get("job_id") or accepted.get("id")
        if not job_id:
            return accepted
        deadline = time.monotonic() + 600.0
        delay = 0.1
        while time.monotonic() < deadline:
            state = self.job(str(job_id))
            status = str(state.get("status") or state.get("state") or "").lower()
            if status in ("done", "finished", "succeeded", "success", "completed"):
                if "result" in state and state["result"] is not None:
                    return state["result"]
                return self._json(method, path, **kwargs)
            if status in ("failed", "error", "cancelled"):
                err = state.get("error")
                message = err.get("message") if isinstance(err, dict) else str(err or "the job failed")
                raise ApiError(str(message), code="job_failed")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        raise ApiError(f"job {job_id} did not finish within 10 minutes", code="timeout")

    def _cached(self, key: Hashable, fetch: Callable[[], T]) -> T:
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        value = fetch()
        self._cache.put(key, value)
        return value

    def parallel(self, calls: Iterable[Callable[[], T]]) -> list[T | ApiError]:
        """Run independent calls at once; each result is its value or the ApiError it raised."""

        def guard(call: Callable[[], T]) -> T | ApiError:
            try:
                return call()
            except ApiError as exc:
                return exc

        futures = [self._pool.submit(guard, c) for c in calls]
        return [f.result() for f in futures]

    # -- endpoints -------------------------------------------------------------------------------------

    def health(self) -> bool:
        try:
            return self._request("GET", "/health").status_code == 200
        except ApiError:
            return False

    def models(self) -> list[dict[str, Any]]:
        body = self._json("GET", "/models")
        items = body.get("models", body.get("items", [])) if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise ApiError("the API's model list is not a list", code="bad_answer")
        return [m for m in items if isinstance(m, dict) and "id" in m]

    def upload_image(
        self, data: bytes, filename: str, content_type: str | None = None, *, client: str | None = None
    ) -> dict[str, Any]:
        """``POST /images``; ``client`` (the browser's address) goes in ``X-Forwarded-For``, so the API's
        per-client upload caps count the student, not this server."""
        files = {"file": (filename or "upload", data, content_type or "application/octet-stream")}
        headers = {"X-Forwarded-For": client} if client else None
        body = self._json("POST", "/images", files=files, headers=headers)
        if not isinstance(body, dict) or "id" not in body:
            raise ApiError("the API accepted the upload but gave no image id", code="bad_answer")
        return body

    def image_bytes(self, image_id: str) -> tuple[bytes, str]:
        def fetch() -> tuple[bytes, str]:
            resp = self._request("GET", f"/images/{image_id}")
            return resp.content, resp.headers.get("content-type", "application/octet-stream")

        return self._cached(("image", image_id), fetch)

    def metrics(self, image_id: str, model: str) -> dict[str, Any]:
        return self._cached(
            ("metrics", image_id, model),
            lambda: self._json("GET", f"/images/{image_id}/metrics", params={"model": model}),
        )

    def attention(
        self, image_id: str, model: str, layer: int, head: int | str, query: int | str
    ) -> dict[str, Any]:
        params = {"model": model, "layer": layer, "head": head, "query": query}
        return self._cached(
            ("attention", image_id, model, layer, str(head), str(query)),
            lambda: self._json("GET", f"/images/{image_id}/attention", params=params),
        )

    def attention_heads(
        self, image_id: str, model: str, layer: int, query: int | str, num_heads: int
    ) -> list[Any]:
        """The maps of all heads of a layer: one ``head=all`` call where the API has it, else one per head."""
        key = ("attention-heads", image_id, model, layer, str(query))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        try:
            body = self._json(
                "GET",
                f"/images/{image_id}/attention",
                params={"model": model, "layer": layer, "head": "all", "query": query},
            )
            maps = body.get("maps", body.get("map"))
            if isinstance(maps, list) and maps and isinstance(maps[0], list) and isinstance(maps[0][0], list):
                self._cache.put(key, maps)
                return maps
        except ApiError as exc:
            if exc.status is None or exc.status >= 500:
                raise
        results = self.parallel(
            [partial(self.attention, image_id, model, layer, h, query) for h in range(num_heads)]
        )
        maps = []
        for r in results:
            if isinstance(r, ApiError):
                raise r
            maps.append(r["map"])
        self._cache.put(key, maps)
        return maps

    def spectrum(self, image_id: str, model: str, depth: int, state: str = "out") -> dict[str, Any]:
        params = {"model": model, "depth": depth, "state": state}
        return self._cached(
            ("spectrum", image_id, model, depth, state),
            lambda: self._json("GET", f"/images/{image_id}/spectrum", params=params),
        )

    def create_set(self, image_ids: list[str]) -> str:
        key = ("set", tuple(image_ids))

        def fetch() -> str:
            body = self._json("POST", "/sets", json={"images": image_ids})
            set_id = body.get("id") if isinstance(body, dict) else None
            if not set_id:
                raise ApiError("the API created the set but gave no set id", code="bad_answer")
            return str(set_id)

        return self._cached(key, fetch)

    def set_metrics(self, set_id: str, model: str) -> dict[str, Any]:
        return self._cached(
            ("set-metrics", set_id, model),
            lambda: self._json("GET", f"/sets/{set_id}/metrics", params={"model": model}),
        )

    def embeddings(self, set_id: str, model: str, layer: int, method: str) -> dict[str, Any]:
        params = {"model": model, "layer": layer, "method": method}
        return self._cached(
            ("embeddings", set_id, model, layer, method),
            lambda: self._json("GET", f"/sets/{set_id}/embeddings", params=params),
        )

    def reference(self) -> dict[str, Any]:
        """``GET /reference``: the paper's published curves (static, so kept once fetched)."""
        return self._cached(("reference",), lambda: self._json("GET", "/reference"))

    def job(self, job_id: str) -> dict[str, Any]:
        body = self._json("GET", f"/jobs/{job_id}")
        return body if isinstance(body, dict) else {}
