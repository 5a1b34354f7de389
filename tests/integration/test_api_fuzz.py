"""Fuzzing: schemathesis over the OpenAPI document, and hypothesis over the parameters of real images.

Both hit a live uvicorn server (real HTTP, in a thread) and allow any 2xx-4xx answer, never a 5xx. Each answer
schemathesis sees is also checked against the document (response schema and content type conformance): the
UI's API client relies on those shapes and has no fallbacks. The number of examples is bounded
(``VITSCOPE_FUZZ_EXAMPLES``, default 12 per operation) to keep CI quick.

5xx answers the service can give by design, never for a valid single request on an idle server: 503 while
warming up or when the queue is full, 504 when a request waits longer than ``request_timeout_s``.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from backend.api import create_app
from tests.integration.test_api import TINY, settings_for, tiny_models_cache

pytestmark = pytest.mark.integration
__all__ = ["tiny_models_cache"]

EXAMPLES = int(os.environ.get("VITSCOPE_FUZZ_EXAMPLES", "12"))
CONFORMANCE = [response_schema_conformance, content_type_conformance]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Live:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=60)
        self.image_ids: list[str] = []
        self.set_id = ""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_models_cache: Path) -> Iterator[Live]:
    mp = pytest.MonkeyPatch()
    mp.setenv("VITSCOPE_MODELS_CACHE", str(tiny_models_cache))
    mp.setenv("HF_HUB_OFFLINE", "1")
    tmp = tmp_path_factory.mktemp("fuzz")
    app = create_app(settings_for(tmp, max_upload_bytes=512 * 1024, set_wait_s=5.0))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    live = Live(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if live.http.get("/api/v1/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the live server did not get ready")
            time.sleep(0.05)
        for seed in range(2):
            buf = io.BytesIO()
            rng = np.random.default_rng(seed)
            Image.fromarray((rng.random((70, 90, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
            r = live.http.post("/api/v1/images", files={"file": ("x.png", buf.getvalue(), "image/png")})
            live.image_ids.append(r.json()["id"])
        live.set_id = live.http.post("/api/v1/sets", json={"images": live.image_ids}).json()["id"]
        yield live
    finally:
        live.http.close()
        server.should_exit = True
        thread.join(30)
        mp.undo()


def test_openapi_no_server_errors(live: Live) -> None:
    """Every operation of the OpenAPI document, with schemathesis-generated requests (valid and not)."""
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    failures: list[str] = []
    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call()
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}"
                )
                return
            try:
                case.validate_response(response, checks=CONFORMANCE)
            except AssertionError as exc:  # schemathesis' failures (a group of them) are AssertionErrors
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {exc}"[:600])
            if response.status_code >= 400:
                ctype = response.headers.get("content-type") or [""]
                if str(ctype[0] if isinstance(ctype, list) else ctype).startswith("application/json"):
                    err = response.json()["error"]
                    assert err["code"] and err["message"], response.text

        check()
    assert not failures, failures


def test_valid_answers_match_their_schemas(live: Live) -> None:
    """The answers to valid requests (real images, a set, the tiny model) are what the document says."""
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    ops = {(o.method.upper(), o.path): o for o in (r.ok() for r in schema.get_all_operations())}
    image, set_id = live.image_ids[0], live.set_id
    all_heads = {"model": TINY, "head": "all", "layer": 2}
    job = live.http.get("/api/v1/jobs").json()["jobs"]
    requests: list[tuple[str, str, dict[str, Any], dict[str, Any], Any]] = [
        ("GET", "/health", {}, {}, None),
        ("GET", "/ready", {}, {}, None),
        ("GET", "/models", {}, {}, None),
        ("GET", "/models/{model_id}", {"model_id": TINY}, {}, None),
        ("GET", "/images/{image_id}/metrics", {"image_id": image}, {"model": TINY}, None),
        ("GET", "/images/{image_id}/attention", {"image_id": image}, {"model": TINY, "layer": 1}, None),
        ("GET", "/images/{image_id}/attention", {"image_id": image}, all_heads,
         None),
        ("GET", "/images/{image_id}/spectrum", {"image_id": image}, {"model": TINY, "depth": 1}, None),
        ("POST", "/sets", {}, {}, {"images": live.image_ids}),
        ("GET", "/sets/{set_id}", {"set_id": set_id}, {}, None),
        ("GET", "/sets/{set_id}/metrics", {"set_id": set_id}, {"model": TINY}, None),
        ("GET", "/sets/{set_id}/embeddings", {"set_id": set_id}, {"model": TINY, "layer": 1}, None),
        ("GET", "/jobs", {}, {}, None),
        ("GET", "/reference", {}, {}, None),
    ]  # fmt: skip
    if job:
        requests.append(("GET", "/jobs/{job_id}", {"job_id": job[0]["id"]}, {}, None))
    checked = 0
    for method, path, params, query, body in requests:
        operation = ops[(method, "/api/v1" + path)]
        kwargs: dict[str, Any] = {"path_parameters": params, "query": query}
        if body is not None:
            kwargs.update(body=body, media_type="application/json")
        case = operation.Case(**kwargs)
        response = case.call()
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:300]}"
        case.validate_response(response, checks=CONFORMANCE)
        checked += 1
    assert checked == len(requests)


def test_models_say_their_input_size(live: Live) -> None:
    """The demo models read 32 px (their card), whatever their timm name says (patch16_224)."""
    models = {m["id"]: m for m in live.http.get("/api/v1/models").json()["models"]}
    demo = models["cifar-cl-vit-t4"]
    assert demo["arch"].endswith("_224") and demo["patch_size"] == 4 and demo["input_size"] == [32, 32]


QUERIES = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from([TINY, "random-vit-s16x", "", "dino-vit-s16", "tiny-vit\x00", "ü"]),
        "layer": st.one_of(st.integers(-3, 5), st.sampled_from(["", "x", "1.5", "99999999999999999999"])),
        "head": st.sampled_from(["0", "1", "2", "mean", "all", "-1", "", "1e3"]),
        "query": st.one_of(st.integers(-2, 20).map(str), st.sampled_from(["cls", "CLS", "", " 3", "0x1"])),
        "rollout": st.sampled_from(["true", "false", "1", "yes", "maybe"]),
        "format": st.sampled_from(["json", "png", "npy", "gif", ""]),
        "state": st.sampled_from(["out", "attn", "mlp"]),
        "depth": st.integers(-1, 4),
        "method": st.sampled_from(["pca", "tsne", "umap"]),
    },
)


@settings(
    max_examples=EXAMPLES * 4,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
@given(
    route=st.sampled_from(["attention", "spectrum", "metrics", "embeddings", "set-metrics"]),
    params=QUERIES,
)
def test_real_images_any_parameters(live: Live, route: str, params: dict[str, Any]) -> None:
    """Parameters of every kind against images that exist: deeper than random ids reach."""
    if route in ("embeddings", "set-metrics"):
        url = f"/api/v1/sets/{live.set_id}/{'metrics' if route == 'set-metrics' else 'embeddings'}"
    else:
        url = f"/api/v1/images/{live.image_ids[0]}/{route}"
    r = live.http.get(url, params=params)
    assert r.status_code < 500, (url, params, r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert r.json()["error"]["message"]
