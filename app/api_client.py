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
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from app.state import IMAGE_ID

T = TypeVar("T")

API_PREFIX = "/api/v1"
_SET_ID = IMAGE_ID  # a set id is the sha256 of its ordered id list
_JOB_ID = re.compile(r"^[0-9a-f]{16,64}$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9_.:+-]{1,200}$")
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
    """The API's error answer (``{"error": {"code", "message"}}``, the one shape of every error it sends)."""
    code, message = "http_error", ""
    try:
        err = resp.json().get("error")
        if isinstance(err, dict):
            code = str(err.get("code") or code)
            message = str(err.get("message") or "")
    except (ValueError, AttributeError):
        pass
    if not message:  # not the API (a proxy's page, a dead upstream)
        text = resp.text.strip()[:300]
        message = f"the API answered {resp.status_code} {resp.reason_phrase}" + (f": {text}" if text else "")
    return ApiError(message, code=code, status=resp.status_code, retry_after=resp.headers.get("Retry-After"))


def segment(value: str, what: str, pattern: re.Pattern[str]) -> str:
    """One path segment of an API URL: ``value`` checked against ``pattern``, then percent-encoded.

    Ids come from the browser's stores, which a user can forge: ``"../jobs?"`` must never name another route.
    """
    if not isinstance(value, str) or not pattern.match(value):
        raise ApiError(f"{what} {str(value)[:80]!r} is malformed", code="bad_request", status=400)
    return quote(value, safe="")


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
        """Follow a 202 answer's job (``{"job": {...}}``) to its end; its result, or ask again."""
        job_id = str(accepted["job"]["id"])
        deadline = time.monotonic() + 600.0
        delay = 0.1
        while time.monotonic() < deadline:
            state = self.job(job_id)
            if state["status"] == "succeeded":
                if state.get("result") is not None:
                    return state["result"]
                return self._json(method, path, **kwargs)
            if state["status"] == "failed":
                err = state.get("error") or {}
                raise ApiError(str(err.get("message") or "the job failed"), code="job_failed")
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
        return list(self._json("GET", "/models")["models"])

    def upload_image(
        self, data: bytes, filename: str, content_type: str | None = None, *, client: str | None = None
    ) -> dict[str, Any]:
        """``POST /images``; ``client`` (the browser's address) goes in ``X-Forwarded-For``, so the API's
        per-client upload caps count the student, not this server."""
        files = {"file": (filename or "upload", data, content_type or "application/octet-stream")}
        headers = {"X-Forwarded-For": client} if client else None
        body: dict[str, Any] = self._json("POST", "/images", files=files, headers=headers)
        return body

    def image_bytes(self, image_id: str) -> tuple[bytes, str]:
        path = f"/images/{segment(image_id, 'image id', IMAGE_ID)}"

        def fetch() -> tuple[bytes, str]:
            resp = self._request("GET", path)
            return resp.content, resp.headers.get("content-type", "application/octet-stream")

        return self._cached(("image", image_id), fetch)

    def metrics(self, image_id: str, model: str) -> dict[str, Any]:
        path = f"/images/{segment(image_id, 'image id', IMAGE_ID)}/metrics"
        return self._cached(
            ("metrics", image_id, model), lambda: self._json("GET", path, params={"model": model})
        )

    def attention(
        self,
        image_id: str,
        model: str,
        layer: int,
        head: int | str,
        query: int | str,
        rollout: bool = False,
    ) -> dict[str, Any]:
        """``rollout``: the attention rollout through block ``layer`` (the API wants ``head`` "mean" then)."""
        path = f"/images/{segment(image_id, 'image id', IMAGE_ID)}/attention"
        params: dict[str, Any] = {"model": model, "layer": layer, "head": head, "query": query}
        if rollout:
            params["rollout"] = "true"
        return self._cached(
            ("attention", image_id, model, layer, str(head), str(query), rollout),
            lambda: self._json("GET", path, params=params),
        )

    def attention_heads(self, image_id: str, model: str, layer: int, query: int | str) -> list[Any]:
        """The maps of all heads of a layer (``head=all``: heads x H x W)."""
        body = self.attention(image_id, model, layer, "all", query)
        return list(body["map"])

    def spectrum(self, image_id: str, model: str, depth: int, state: str = "out") -> dict[str, Any]:
        path = f"/images/{segment(image_id, 'image id', IMAGE_ID)}/spectrum"
        params = {"model": model, "depth": depth, "state": state}
        return self._cached(
            ("spectrum", image_id, model, depth, state), lambda: self._json("GET", path, params=params)
        )

    def similarity(
        self, image_id: str, model: str, layer: int, query: int, centred: bool = False
    ) -> dict[str, Any]:
        """``GET /images/{id}/similarity``: cosine of patch ``query``'s token to every patch (``map``), of the
        tokens minus the image's mean patch token with ``centred``."""
        path = f"/images/{segment(image_id, 'image id', IMAGE_ID)}/similarity"
        params = {"model": model, "layer": layer, "query": query, "centred": str(centred).lower()}
        return self._cached(
            ("similarity", image_id, model, layer, query, centred),
            lambda: self._json("GET", path, params=params),
        )

    def pca(self, image_id: str, model: str, layer: int, mask: bool = False) -> dict[str, Any]:
        """``GET /images/{id}/pca``: the patch tokens' top 3 principal components as RGB (``rgb``);
        ``mask``: of the foreground patches only (the API's rule at its default threshold)."""
        path = f"/images/{segment(image_id, 'image id', IMAGE_ID)}/pca"
        params: dict[str, Any] = {"model": model, "layer": layer, **({"mask": "true"} if mask else {})}
        return self._cached(
            ("pca", image_id, model, layer, mask), lambda: self._json("GET", path, params=params)
        )

    def token_norms(self, image_id: str, model: str, layer: int) -> dict[str, Any]:
        """``GET /images/{id}/token_norms``: the patch tokens' norms (``map``), outliers and the prefix's."""
        path = f"/images/{segment(image_id, 'image id', IMAGE_ID)}/token_norms"
        params = {"model": model, "layer": layer}
        return self._cached(
            ("token_norms", image_id, model, layer), lambda: self._json("GET", path, params=params)
        )

    def perturb(self, image_id: str, body: dict[str, Any], *, client: str | None = None) -> dict[str, Any]:
        """``POST /images/{id}/perturb``: the new image's upload record (a new image id)."""
        path = f"/images/{segment(image_id, 'image id', IMAGE_ID)}/perturb"
        headers = {"X-Forwarded-For": client} if client else None
        record: dict[str, Any] = self._json("POST", path, json=body, headers=headers)
        return record

    def create_set(self, image_ids: list[str]) -> str:
        for i in image_ids:
            segment(i, "image id", IMAGE_ID)
        key = ("set", tuple(image_ids))
        return self._cached(key, lambda: str(self._json("POST", "/sets", json={"images": image_ids})["id"]))

    def set_metrics(self, set_id: str, model: str) -> dict[str, Any]:
        path = f"/sets/{segment(set_id, 'set id', _SET_ID)}/metrics"
        return self._cached(
            ("set-metrics", set_id, model), lambda: self._json("GET", path, params={"model": model})
        )

    def embeddings(self, set_id: str, model: str, layer: int, method: str) -> dict[str, Any]:
        path = f"/sets/{segment(set_id, 'set id', _SET_ID)}/embeddings"
        params = {"model": model, "layer": layer, "method": method}
        return self._cached(
            ("embeddings", set_id, model, layer, method), lambda: self._json("GET", path, params=params)
        )

    def set_pca(self, set_id: str, model: str, layer: int, mask: bool = False) -> dict[str, Any]:
        """``GET /sets/{id}/pca``: one PCA fitted on the whole set, a picture per image (``rgb``)."""
        path = f"/sets/{segment(set_id, 'set id', _SET_ID)}/pca"
        params: dict[str, Any] = {"model": model, "layer": layer, **({"mask": "true"} if mask else {})}
        return self._cached(
            ("set-pca", set_id, model, layer, mask), lambda: self._json("GET", path, params=params)
        )

    def cka(self, set_id: str, model_a: str, model_b: str) -> dict[str, Any]:
        """``GET /sets/{id}/cka``: linear CKA between every depth of two models, with its permutation null."""
        path = f"/sets/{segment(set_id, 'set id', _SET_ID)}/cka"
        params = {"model_a": model_a, "model_b": model_b}
        return self._cached(("cka", set_id, model_a, model_b), lambda: self._json("GET", path, params=params))

    def reference(self) -> dict[str, Any]:
        """``GET /reference``: the paper's published curves (static, so kept once fetched)."""
        return self._cached(("reference",), lambda: self._json("GET", "/reference"))

    def claims(
        self, roles: dict[str, str], *, image: str | None = None, set_id: str | None = None
    ) -> dict[str, Any]:
        """``GET /claims``: the paper's claims for ``roles`` (``cl``, ``mim`` and maybe ``hybrid`` model ids)
        on one image or a set (exactly one of them)."""
        params: dict[str, str] = dict(roles)
        if set_id is not None:
            params["set"] = segment(set_id, "set id", _SET_ID)
        else:
            params["image"] = segment(str(image), "image id", IMAGE_ID)
        key = ("claims", tuple(sorted(params.items())))
        return self._cached(key, lambda: self._json("GET", "/claims", params=params))

    def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self._json("GET", f"/jobs/{segment(job_id, 'job id', _JOB_ID)}")
        return body

    def jobs(self) -> list[dict[str, Any]]:
        """``GET /jobs``: recent jobs, newest first."""
        return list(self._json("GET", "/jobs")["jobs"])

    def pull(self, model_id: str) -> dict[str, Any]:
        """``POST /models/{id}/pull`` without waiting: ``{"job": {...}}`` (202) or the model (200)."""
        resp = self._request("POST", f"/models/{segment(model_id, 'model id', _MODEL_ID)}/pull")
        body: dict[str, Any] = resp.json()
        return body
