"""The REST API end to end against a real Redis: uploads, metrics, attention, spectra, sets, jobs.

A tiny timm ViT (2 blocks, 2 heads, 64 px -> a 4 x 4 grid) is registered in a temporary models cache, so
every capture takes milliseconds. The fixtures here are imported by the other ``test_api_*`` modules.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from backend.api import create_app
from backend.config import Settings

pytestmark = pytest.mark.integration

TINY = "tiny-vit"
TINY_KWARGS: dict[str, Any] = {
    "img_size": 64,
    "depth": 2,
    "embed_dim": 32,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "pretrained_cfg_overlay": {"input_size": [3, 64, 64]},
}


# ---------------------------------------------------------------------------------------------- fixtures
def write_tiny_model(
    folder: Path, name: str = TINY, seed: int = 0, arch_kwargs: dict[str, Any] | None = None
) -> None:
    """A tiny ViT with random weights, registered as an imported model card in ``folder/imported``;
    ``arch_kwargs`` change timm's (``{"reg_tokens": 4}``: registers)."""
    from safetensors.torch import save_file

    from backend.models.loading import build_model

    kwargs = {**TINY_KWARGS, **(arch_kwargs or {})}
    imported = folder / "imported"
    imported.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model("vit_tiny_patch16_224", kwargs)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(imported / f"{name}.safetensors")
    )
    card = {
        "id": name,
        "family": "cl",
        "arch": "vit_tiny_patch16_224",
        "arch_kwargs": kwargs,
        "weights": f"{name}.safetensors",
        "license": "test only",
        "description": "2 blocks, 2 heads, 64 px: for tests",
    }
    (imported / f"{name}.json").write_text(json.dumps(card))


@pytest.fixture(scope="session")
def tiny_models_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models_cache")
    write_tiny_model(folder)
    return folder


def use_models_cache(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Path:
    """The service reads its models from ``folder``, offline (tests never wait on the network)."""
    monkeypatch.setenv("VITSCOPE_MODELS_CACHE", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return folder


@pytest.fixture
def models_env(tiny_models_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_models_cache(monkeypatch, tiny_models_cache)


@dataclass
class Api:
    app: Any
    client: httpx.AsyncClient

    @property
    def service(self) -> Any:
        return self.app.state.service

    @property
    def captures(self) -> int:
        return int(self.service.pool.captures)

    async def upload(self, data: bytes, name: str = "image.png", ctype: str = "image/png") -> httpx.Response:
        return await self.client.post("/api/v1/images", files={"file": (name, data, ctype)})

    async def upload_ok(self, data: bytes) -> str:
        r = await self.upload(data)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def settings_for(tmp: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "ui": False,
        "device": "cpu",
        "data_dir": tmp / "data",
        "default_models": [TINY],
        "max_wait_ms": 2.0,
        "set_wait_s": 30.0,
        "redis_url": None,
    }
    base.update(overrides)
    return Settings(**base)


@asynccontextmanager
async def running(settings: Settings, *, wait_ready: bool = True, **kwargs: Any) -> AsyncIterator[Api]:
    app = create_app(settings, **kwargs)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://vitscope.test", timeout=60
        ) as client:
            api = Api(app, client)
            auth = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
            if wait_ready:
                for _ in range(600):
                    if (await client.get("/api/v1/ready", headers=auth)).status_code == 200:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the app never became ready")
            yield api


@pytest.fixture
async def api(models_env: Path, tmp_path: Path, redis_url: str) -> AsyncIterator[Api]:
    """The service with the cache on the real Redis (the shared server's test db, or a private one)."""
    async with running(settings_for(tmp_path, redis_url=redis_url)) as a:
        yield a


def api_on(models_fixture: str, **overrides: Any) -> Any:
    """An ``api`` fixture for a module that writes its own models folder (the fixture named
    ``models_fixture``): the service on the real Redis reading its models from there, ``overrides`` on the
    settings."""

    @pytest.fixture
    async def api(
        request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> AsyncIterator[Api]:
        use_models_cache(monkeypatch, request.getfixturevalue(models_fixture))
        async with running(settings_for(tmp_path, redis_url=redis_url, **overrides)) as a:
            yield a

    return api


def png_bytes(seed: int = 0, size: tuple[int, int] = (80, 96), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def reference_trace(data_list: list[bytes]) -> Any:
    """Capture the tiny model directly (no API): what the service must agree with."""
    from backend.capture import capture
    from backend.imaging import preprocess, preprocessing_for
    from backend.models import load_model
    from backend.uploads import decode_image

    loaded = load_model(TINY, "cpu")
    prep = preprocessing_for(loaded.data_config)
    pixels = preprocess([decode_image(d).image for d in data_list], prep)
    return loaded, capture(loaded.model, pixels, model_id=TINY, preprocessing=prep.as_dict())


def assert_close_tree(got: Any, want: Any, rel: float = 1e-4, abs_: float = 1e-6, path: str = "") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (
            f"{path}: keys {sorted(got)} != {sorted(want)}"
        )
        for k in want:
            assert_close_tree(got[k], want[k], rel, abs_, f"{path}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: length differs"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close_tree(g, w, rel, abs_, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert math.isclose(float(got), want, rel_tol=rel, abs_tol=abs_), f"{path}: {got} != {want}"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


# ---------------------------------------------------------------------------------------------- tests
async def test_health_ready_and_prometheus(api: Api) -> None:
    r = await api.client.get("/api/v1/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = await api.client.get("/api/v1/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["models"] == {TINY: "ok"} and body["cache"] == "redis" and body["cache_ok"] is True
    text = (await api.client.get("/api/v1/metrics")).text
    for name in (
        "vitscope_requests_total",
        "vitscope_request_seconds_bucket",
        "vitscope_queue_depth",
        "vitscope_batch_size_bucket",
        "vitscope_cache_total",
        "vitscope_models_loaded",
    ):
        assert name in text, name


async def test_upload_same_bytes_same_id_and_image_back(api: Api) -> None:
    import hashlib

    data = png_bytes(1)
    r1 = await api.upload(data)
    r2 = await api.upload(data, name="other-name.png")
    assert r1.status_code == r2.status_code == 201
    body = r1.json()
    assert body["id"] == r2.json()["id"] == hashlib.sha256(data).hexdigest()
    assert (body["width"], body["height"], body["format"]) == (80, 96, "PNG")
    got = await api.client.get(f"/api/v1/images/{body['id']}")
    assert got.status_code == 200 and got.content == data and got.headers["content-type"] == "image/png"


async def test_metrics_is_the_cli_metrics_object(api: Api) -> None:
    from backend.analysis import compute_metrics

    data = png_bytes(2)
    iid = await api.upload_ok(data)
    r = await api.client.get(f"/api/v1/images/{iid}/metrics", params={"model": TINY})
    assert r.status_code == 200, r.text
    loaded, trace = reference_trace([data])
    want = json.loads(json.dumps(compute_metrics(trace, loaded.spec.family)))
    # float16 is only for arrays; the metrics come from the float32 capture: equal up to float noise
    assert_close_tree(r.json(), want, rel=1e-4, abs_=1e-5)


async def test_attention_json_png_npy(api: Api) -> None:
    from backend.analysis import query_map

    # An image of this test only: the shared Redis keeps other tests' results of the same image and model.
    data = png_bytes(7_235)
    iid = await api.upload_ok(data)
    url = f"/api/v1/images/{iid}/attention"
    _, trace = reference_trace([data])

    for layer, head, query in [(1, "0", "5"), (2, "1", "cls"), (2, "mean", "15")]:
        r = await api.client.get(url, params={"model": TINY, "layer": layer, "head": head, "query": query})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["grid"] == [4, 4] and body["layer"] == layer and body["patch_size"] == 16
        m = np.array(body["map"])
        assert m.shape == (4, 4)
        assert abs(m.sum() - 1.0) < 1e-4  # rows renormalized over patches (A1)
        q = None if query == "cls" else int(query)
        ref = query_map(trace.attentions[layer - 1][0], (4, 4), 1, q).numpy()  # (heads, 4, 4)
        ref = ref.mean(0) if head == "mean" else ref[int(head)]
        np.testing.assert_allclose(m, ref, rtol=2e-3, atol=2e-4)  # float16 cache

    r = await api.client.get(url, params={"model": TINY, "layer": 2, "head": "all", "query": "cls"})
    maps = np.array(r.json()["map"])
    assert maps.shape == (2, 4, 4) and np.allclose(maps.sum((1, 2)), 1.0, atol=1e-4)

    r = await api.client.get(url, params={"model": TINY, "layer": 2, "query": "3", "format": "npy"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    arr = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert arr.shape == (4, 4) and arr.dtype == np.float32 and abs(arr.sum() - 1) < 1e-5

    r = await api.client.get(
        url, params={"model": TINY, "layer": 1, "head": "all", "query": "6", "format": "png"}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.format == "PNG" and im.size == (2 * 64 + 4, 64)  # two heads side by side
        small = np.asarray(im.convert("RGB"))
    params: dict[str, Any] = {"model": TINY, "layer": 1, "head": "0", "query": "6", "format": "png"}
    with Image.open(io.BytesIO((await api.client.get(url, params=params)).content)) as im:
        one = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(one, small[:, :64])  # the first tile is head 0
    r = await api.client.get(url, params={**params, "scale": 3})
    with Image.open(io.BytesIO(r.content)) as im:
        big = np.asarray(im.convert("RGB"))
    assert big.shape == (192, 192, 3)  # nearest neighbour: every pixel a 3 x 3 block of the same colour
    np.testing.assert_array_equal(big, one.repeat(3, axis=0).repeat(3, axis=1))
    for bad in ("0", "17"):
        r = await api.client.get(url, params={**params, "scale": bad})
        assert r.status_code == 422 and "scale" in r.json()["error"]["message"]

    r = await api.client.get(url, params={"model": TINY, "layer": 2, "rollout": "true", "query": "cls"})
    assert r.status_code == 200 and r.json()["rollout"] is True
    assert abs(np.array(r.json()["map"]).sum() - 1.0) < 1e-4
    assert api.captures == 1  # one capture served every layer, head, query and format


async def test_spectrum(api: Api) -> None:
    from backend.analysis import log_amplitude_spectrum

    data = png_bytes(4)
    iid = await api.upload_ok(data)
    _, trace = reference_trace([data])
    for state, depth in [("out", 0), ("out", 2), ("attn", 1)]:
        r = await api.client.get(
            f"/api/v1/images/{iid}/spectrum", params={"model": TINY, "state": state, "depth": depth}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        states = trace.x_out if state == "out" else [None, *trace.x_attn]
        want = log_amplitude_spectrum(states[depth], (4, 4), 1)[0].numpy()
        np.testing.assert_allclose(np.array(body["map"]), want, rtol=1e-4, atol=1e-4)
        assert body["delta"][0] == 0 and len(body["delta"]) == 2
        assert math.isclose(body["high_frequency_delta"], body["delta"][-1], abs_tol=1e-5)
    r = await api.client.get(
        f"/api/v1/images/{iid}/spectrum", params={"model": TINY, "depth": 1, "format": "npy"}
    )
    assert np.load(io.BytesIO(r.content)).shape == (4, 4)


async def test_sets_metrics_and_embeddings(api: Api) -> None:
    from backend.analysis import compute_metrics

    datas = [png_bytes(10 + i) for i in range(3)]
    ids = [await api.upload_ok(d) for d in datas]
    r = await api.client.post("/api/v1/sets", json={"images": ids})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    again = await api.client.post("/api/v1/sets", json={"images": ids})
    assert again.json()["id"] == sid
    assert (await api.client.get(f"/api/v1/sets/{sid}")).json()["images"] == ids

    r = await api.client.get(f"/api/v1/sets/{sid}/metrics", params={"model": TINY})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["num_images"] == 3 and got["images"] == ids
    # The set's means and spread equal compute_metrics over the three images as one batch.
    loaded, trace = reference_trace(datas)
    want = json.loads(json.dumps(compute_metrics(trace, loaded.spec.family)))
    assert_close_tree({k: got[k] for k in want}, want, rel=1e-4, abs_=1e-5)

    for method in ("pca", "tsne"):
        r = await api.client.get(
            f"/api/v1/sets/{sid}/embeddings", params={"model": TINY, "layer": 2, "method": method}
        )
        assert r.status_code == 200, r.text
        e = r.json()
        assert len(e["coords"]) == 3 * 16 and all(len(p) == 2 for p in e["coords"])
        assert e["image_index"] == [i for i in range(3) for _ in range(16)]
        assert e["state"] == "out" and e["layer"] == 2 and e["images"] == ids
    # PCA of the stacked tokens, straight from the capture (block 2 output, prefix dropped)
    from backend.analysis import pca_2d

    tokens = trace.x_out[2][:, 1:].reshape(-1, 32)
    r = await api.client.get(f"/api/v1/sets/{sid}/embeddings", params={"model": TINY, "layer": 2})
    np.testing.assert_allclose(
        np.abs(r.json()["coords"]), np.abs(pca_2d(tokens).numpy()), rtol=2e-2, atol=2e-2
    )


async def test_jobs_for_slow_sets(models_env: Path, tmp_path: Path, redis_url: str) -> None:
    async with running(settings_for(tmp_path, redis_url=redis_url, set_wait_s=0.0)) as api:
        ids = [await api.upload_ok(png_bytes(20 + i)) for i in range(2)]
        sid = (await api.client.post("/api/v1/sets", json={"images": ids})).json()["id"]
        r = await api.client.get(f"/api/v1/sets/{sid}/metrics", params={"model": TINY})
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        assert r.headers["location"] == f"/api/v1/jobs/{job['id']}"
        assert job["kind"] == "set-metrics" and job["total"] == 2
        for _ in range(400):
            state = (await api.client.get(f"/api/v1/jobs/{job['id']}")).json()
            if state["status"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(0.05)
        assert state["status"] == "succeeded" and state["progress"] == 1.0, state
        r = await api.client.get(state["result_url"])
        assert r.status_code == 200 and r.json()["num_images"] == 2
        listing = (await api.client.get("/api/v1/jobs")).json()["jobs"]
        assert any(j["id"] == job["id"] for j in listing)


async def test_a_set_larger_than_a_batch_goes_through_the_runner_in_batches(
    models_env: Path, tmp_path: Path, redis_url: str
) -> None:
    from backend.analysis import compute_metrics

    async with running(settings_for(tmp_path, redis_url=redis_url, max_batch=4, set_wait_s=0.0)) as api:
        datas = [png_bytes(700 + i) for i in range(10)]
        ids = [await api.upload_ok(d) for d in datas]
        sid = (await api.client.post("/api/v1/sets", json={"images": ids})).json()["id"]
        r = await api.client.get(f"/api/v1/sets/{sid}/metrics", params={"model": TINY})
        assert r.status_code == 202
        job = r.json()["job"]["id"]
        seen = []
        for _ in range(1200):
            state = (await api.client.get(f"/api/v1/jobs/{job}")).json()
            seen.append(state["done"])
            if state["status"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(0.02)
        assert state["status"] == "succeeded" and state["done"] == state["total"] == 10, state
        assert seen == sorted(seen)  # progress only grows, image by image
        batches = api.service.pool.runners[0].stats.batches
        assert max(batches) <= 4 and sum(batches) >= 10  # never more than max_batch on the device at once
        got = (await api.client.get(state["result_url"])).json()
        loaded, trace = reference_trace(datas)
        want = json.loads(json.dumps(compute_metrics(trace, loaded.spec.family)))
        assert_close_tree({k: got[k] for k in want}, want, rel=1e-4, abs_=1e-5)


async def test_fifty_identical_requests_compute_once(api: Api) -> None:
    iid = await api.upload_ok(png_bytes(30))
    before = api.captures
    params: dict[str, Any] = {"model": TINY, "layer": 2, "head": "1", "query": "7"}
    responses = await asyncio.gather(
        *(api.client.get(f"/api/v1/images/{iid}/attention", params=params) for _ in range(50))
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert api.captures - before == 1
    assert api.service.captures.requested == 1


async def test_models_listing(api: Api) -> None:
    await api.client.get("/api/v1/ready")
    models = {m["id"]: m for m in (await api.client.get("/api/v1/models")).json()["models"]}
    tiny = models[TINY]
    assert tiny["available"] and tiny["loaded"] and tiny["patch_size"] == 16 and tiny["family"] == "cl"
    assert tiny["info"]["layers"] == 2 and tiny["info"]["grid"] == [4, 4]
    assert "random-vit-s16" in models and models["random-vit-s16"]["available"]
    # Not loaded: the patch size comes from the card's arch_kwargs (4), not the arch name (patch16).
    demo = models["cifar-cl-vit-t4"]
    assert not demo["loaded"] and demo["patch_size"] == 4 and demo["family"] == "cl"
    one = await api.client.get(f"/api/v1/models/{TINY}")
    assert one.status_code == 200 and one.json()["id"] == TINY
    pull = await api.client.post(f"/api/v1/models/{TINY}/pull")
    assert pull.status_code == 200 and pull.json()["available"]  # already there: nothing to download


async def test_bearer_token(models_env: Path, tmp_path: Path) -> None:
    token = "s3cret-token-0123456789"
    async with running(settings_for(tmp_path, api_token=token), wait_ready=False) as api:
        assert (await api.client.get("/api/v1/health")).status_code == 200
        r = await api.client.get("/api/v1/models")
        assert r.status_code == 401 and "bearer token" in r.json()["error"]["message"]
        assert r.headers["www-authenticate"] == "Bearer"
        r = await api.client.get("/api/v1/models", headers={"Authorization": "Bearer wrong-token-000000000"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = await api.client.get("/api/v1/models", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200


async def test_ready_waits_for_warmup(models_env: Path, tmp_path: Path) -> None:
    import threading

    from backend.runner import default_loader

    gate = threading.Event()

    def slow_loader(model_id: str, device: Any) -> Any:
        gate.wait(10)
        return default_loader(model_id, device)

    async with running(settings_for(tmp_path), wait_ready=False, loader=slow_loader) as api:
        r = await api.client.get("/api/v1/ready")
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        assert (await api.client.get("/api/v1/health")).status_code == 200
        gate.set()
        for _ in range(200):
            if (await api.client.get("/api/v1/ready")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert (await api.client.get("/api/v1/ready")).status_code == 200


async def test_full_queue_answers_503_and_timeouts_504(models_env: Path, tmp_path: Path) -> None:
    import threading

    from backend.runner import default_loader

    gate = threading.Event()
    calls = {"n": 0}

    def gated_loader(model_id: str, device: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 1:  # warm-up passes; the first real batch holds the device
            gate.wait(10)
        return default_loader(model_id, device)

    settings = settings_for(
        tmp_path, queue_size=1, max_batch=1, request_timeout_s=0.5, model_memory_bytes=1024 * 1024
    )
    async with running(settings, loader=gated_loader) as api:
        api.service.pool.runners[0].models._entries.clear()  # force a (gated) reload on the next batch
        ids = [await api.upload_ok(png_bytes(40 + i)) for i in range(4)]
        responses = await asyncio.gather(
            *(api.client.get(f"/api/v1/images/{i}/metrics", params={"model": TINY}) for i in ids)
        )
        codes = sorted(r.status_code for r in responses)
        assert 503 in codes and 504 in codes, codes
        busy = next(r for r in responses if r.status_code == 503)
        assert int(busy.headers["retry-after"]) >= 1 and busy.json()["error"]["code"] == "busy"
        late = next(r for r in responses if r.status_code == 504)
        assert late.json()["error"]["code"] == "timeout"
        gate.set()
        r = await api.client.get(f"/api/v1/images/{ids[0]}/metrics", params={"model": TINY})
        assert r.status_code == 200


def test_openapi_documents_every_route(models_env: Path, tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path))
    spec = app.openapi()
    paths = set(spec["paths"])
    for p in [
        "/api/v1/health",
        "/api/v1/ready",
        "/api/v1/metrics",
        "/api/v1/models",
        "/api/v1/images",
        "/api/v1/images/{image_id}",
        "/api/v1/images/{image_id}/metrics",
        "/api/v1/images/{image_id}/attention",
        "/api/v1/images/{image_id}/spectrum",
        "/api/v1/sets",
        "/api/v1/sets/{set_id}/metrics",
        "/api/v1/sets/{set_id}/embeddings",
        "/api/v1/jobs/{job_id}",
    ]:
        assert p in paths, p
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


async def test_fast_lane_answers_cached_views_exactly_like_the_routes(
    models_env: Path, tmp_path: Path, redis_url: str
) -> None:
    token = "fast-lane-token-0123456789"
    auth = {"Authorization": f"Bearer {token}"}
    async with running(settings_for(tmp_path, redis_url=redis_url, api_token=token)) as api:
        api.client.headers.update(auth)
        iid = await api.upload_ok(png_bytes(50))
        for path, params in [
            ("attention", {"model": TINY, "layer": "2", "head": "all", "query": "3"}),
            ("attention", {"model": TINY, "format": "npy"}),
            ("spectrum", {"model": TINY, "state": "attn", "depth": "2"}),
            ("metrics", {"model": TINY}),
        ]:
            url = f"/api/v1/images/{iid}/{path}"
            first = await api.client.get(url, params=params)  # computed by the route
            hits = api.service.hot.hits
            again = await api.client.get(url, params=params)  # answered by the fast lane
            assert api.service.hot.hits == hits + 1
            assert (
                (again.status_code, again.content)
                == (first.status_code, first.content)
                == (200, first.content)
            )
            assert again.headers["content-type"] == first.headers["content-type"]
            assert again.headers["content-length"] == str(len(first.content))
        url = f"/api/v1/images/{iid}/attention"
        assert (
            await api.client.get(url, params={"model": ""})
        ).status_code == 422  # never served from the lane
        assert (await api.client.get(url, params={"model": TINY, "layer": "02"})).status_code == 200
        r = await api.client.get(url, params={"model": TINY, "format": "npy"}, headers={"Authorization": "x"})
        assert r.status_code == 401  # the lane sits behind the token check
        metrics = (await api.client.get("/api/v1/metrics")).text
        assert 'route="/api/v1/images/{image_id}/spectrum"' in metrics
