"""``GET /images/{id}/token_norms`` end to end (real Redis): the map is the norms of the cached patch tokens,
the median and the outliers follow from it, the prefix tokens' norms are labelled after the model's prefix
(CLS only, CLS + 4 registers, 4 registers without CLS: random-init tiny ViTs), and bad input gets a 4xx."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from backend.analysis.representation import OUTLIER_FACTOR
from backend.cache import decode_array
from backend.cache import keys as K
from backend.service.bundle import ModelInfo
from tests.integration.test_api import (
    TINY,
    Api,
    api_on,
    png_bytes,
    write_tiny_model,
)

pytestmark = pytest.mark.integration
REG = "tiny-reg"  # CLS + 4 registers
REG_NO_CLS = "tiny-reg-no-cls"  # 4 registers, no CLS (average pool)
LAYERS = 2  # TINY_KWARGS' depth
LABELS = {
    TINY: ["cls"],
    REG: ["cls", "register 1", "register 2", "register 3", "register 4"],
    REG_NO_CLS: ["register 1", "register 2", "register 3", "register 4"],
}


@pytest.fixture(scope="module")
def models_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("token_norm_models")
    write_tiny_model(folder)
    write_tiny_model(folder, REG, seed=1, arch_kwargs={"reg_tokens": 4})
    no_cls = {"reg_tokens": 4, "class_token": False, "global_pool": "avg"}
    write_tiny_model(folder, REG_NO_CLS, seed=2, arch_kwargs=no_cls)
    return folder


api = api_on("models_cache")


def grey_with_a_loud_patch() -> bytes:
    """Mid grey (about 0 after ImageNet normalization) with noise in the top-left corner: at the embedding the
    noisy patch's token is far longer than the grey ones' (bias + position only)."""
    rng = np.random.default_rng(0)
    arr = np.full((64, 64, 3), 124, dtype=np.uint8)
    arr[:16, :16] = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def captured_prefix(model_id: str, data: bytes, layer: int) -> np.ndarray:
    """The prefix tokens of ``x_out[layer]`` from a capture of our own (no API), rounded to float16."""
    from backend.capture import capture
    from backend.imaging import preprocess, preprocessing_for
    from backend.models import load_model
    from backend.uploads import decode_image

    loaded = load_model(model_id, "cpu")
    prep = preprocessing_for(loaded.data_config)
    trace = capture(loaded.model, preprocess([decode_image(data).image], prep))
    x = trace.x_out[layer][0, : trace.num_prefix_tokens]
    return x.to(torch.float16).float().numpy()


async def cached_tokens(api: Api, image: str, model: str, layer: int) -> np.ndarray:
    """The float16 patch tokens the service stored for (image, model, layer)."""
    info: ModelInfo = await api.service.views.models.info(model)
    data = await api.service.views.store.get(K.tokens_key(*info.addr(image), "out", layer))
    assert data is not None, "the tokens were not stored"
    return decode_array(data).astype(np.float32)


@pytest.mark.parametrize("model", [TINY, REG, REG_NO_CLS])
async def test_the_norm_map_is_the_cached_tokens_norms(api: Api, model: str) -> None:
    data = grey_with_a_loud_patch()
    image = await api.upload_ok(data)
    for layer in range(LAYERS + 1):
        r = await api.client.get(
            f"/api/v1/images/{image}/token_norms", params={"model": model, "layer": layer}
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        assert (body["image"], body["model"], body["layer"], body["grid"]) == (image, model, layer, [4, 4])
        tokens = await cached_tokens(api, image, model, layer)
        norms = np.linalg.norm(tokens, axis=-1)
        assert np.allclose(np.asarray(body["map"]).ravel(), norms, rtol=1e-5, atol=1e-6)
        median = float(np.median(norms))
        assert body["median"] == pytest.approx(median, rel=1e-5)
        assert body["outlier_factor"] == OUTLIER_FACTOR
        assert body["outliers"] == [int(i) for i in np.flatnonzero(norms > OUTLIER_FACTOR * median)]
        assert body["stats"]["outlier_fraction"] == pytest.approx(len(body["outliers"]) / 16)
        assert body["stats"]["max"] == pytest.approx(float(norms.max()), rel=1e-5)
        # the prefix: labelled after the model's, the norms of our own capture's prefix tokens
        want_prefix = captured_prefix(model, data, layer)
        assert [p["label"] for p in body["prefix"]] == LABELS[model]
        assert [p["token"] for p in body["prefix"]] == list(range(len(LABELS[model])))
        assert body["num_prefix_tokens"] == len(LABELS[model]) == want_prefix.shape[0]
        assert body["has_cls_token"] is (model != REG_NO_CLS)
        got = [p["norm"] for p in body["prefix"]]
        assert got == pytest.approx(np.linalg.norm(want_prefix, axis=-1).tolist(), rel=2e-3)
    listing = {m["id"]: m for m in (await api.client.get("/api/v1/models")).json()["models"]}
    info = listing[model]["info"]  # loaded by now
    assert (info["num_prefix_tokens"], info["has_cls_token"]) == (len(LABELS[model]), model != REG_NO_CLS)
    # at the embedding the noisy corner patch is the one high-norm token
    zero = await api.client.get(f"/api/v1/images/{image}/token_norms", params={"model": model, "layer": 0})
    assert zero.json()["outliers"] == [0]


async def test_prefix_norms_are_stored_once(api: Api) -> None:
    image = await api.upload_ok(png_bytes(11))
    url = f"/api/v1/images/{image}/token_norms"
    first = await api.client.get(url, params={"model": REG, "layer": 1})
    assert first.status_code == 200, first.text
    info: ModelInfo = await api.service.views.models.info(REG)
    stored = await api.service.views.store.get(K.prefix_norms_key(*info.addr(image)))
    assert stored is not None
    assert decode_array(stored).shape == (LAYERS + 1, 5)
    before = api.captures
    again = [await api.client.get(url, params={"model": REG, "layer": k}) for k in range(LAYERS + 1)]
    assert all(r.status_code == 200 for r in again) and again[1].json() == first.json()
    assert api.captures == before  # every depth from the store


async def test_token_norms_bad_input(api: Api) -> None:
    image = await api.upload_ok(png_bytes(12))
    url = f"/api/v1/images/{image}/token_norms"
    r = await api.client.get(url, params={"model": TINY, "layer": 3})
    assert r.status_code == 400
    assert "layer 3 is out of range: model tiny-vit has 2 blocks; use 0..2" in r.json()["error"]["message"]
    cases: list[dict[str, str | int]] = [{"model": TINY, "layer": -1}, {"model": TINY, "layer": "x"}]
    cases.append({"model": TINY})
    for params in cases:
        bad = await api.client.get(url, params=params)
        assert bad.status_code == 422, (params, bad.text)
        assert "layer" in bad.text
    unknown = await api.client.get(url, params={"model": "no-such-model", "layer": 1})
    assert unknown.status_code == 404 and "no-such-model" in unknown.text
    missing = await api.client.get(f"/api/v1/images/{'0' * 64}/token_norms", params={"layer": 1})
    assert missing.status_code == 404 and "upload it first" in missing.text
