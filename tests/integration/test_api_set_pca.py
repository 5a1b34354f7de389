"""``GET /sets/{id}/pca`` and the foreground mask of ``GET /images/{id}/pca`` end to end (real Redis), checked
against ``backend.analysis.patches`` run on a direct capture of the same images; the bad parameters' 4xx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from backend.analysis.patches import foreground_mask, pca_rgb, pca_rgb_set
from tests.integration.test_api import (
    TINY,
    Api,
    api_on,
    png_bytes,
    reference_trace,
    write_tiny_model,
)

pytestmark = pytest.mark.integration
SEEDS = (61, 62, 63)  # images of their own: other test files share the Redis cache


@pytest.fixture(scope="module")
def models_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("set_pca_models")
    write_tiny_model(folder)
    return folder


api = api_on("models_cache", max_embedding_points=100)


async def make_set(api: Api, ids: list[str]) -> str:
    r = await api.client.post("/api/v1/sets", json={"images": ids})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def get_ok(api: Api, path: str, **params: Any) -> dict[str, Any]:
    r = await api.client.get(f"/api/v1{path}", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def tokens_of(data: list[bytes], layer: int) -> list[torch.Tensor]:
    """Each image's patch tokens at ``layer`` from a direct capture, rounded to float16 like the cache."""
    _, trace = reference_trace(data)
    z = trace.x_out[layer][:, trace.num_prefix_tokens :]
    return [z[i].half().float() for i in range(z.shape[0])]


async def test_set_pca_is_one_pca_over_all_images(api: Api) -> None:
    data = [png_bytes(s) for s in SEEDS]
    ids = [await api.upload_ok(d) for d in data]
    set_id = await make_set(api, ids)
    body = await get_ok(api, f"/sets/{set_id}/pca", model=TINY, layer=2)
    assert (body["fit"], body["images"], body["grid"], body["layer"]) == ("set", ids, [4, 4], 2)
    assert body["mask"] is None and body["foreground"] is None
    rgb = torch.tensor(body["rgb"])
    assert rgb.shape == (3, 4, 4, 3)
    want = pca_rgb_set(tokens_of(data, 2))
    assert rgb == pytest.approx(torch.stack([w.rgb.reshape(4, 4, 3) for w in want]), abs=2e-3)
    assert body["explained"] == pytest.approx(want[0].explained.tolist(), abs=2e-3)
    # scaled over the set: each channel spans [0, 1] over all images, not within each
    flat = rgb.reshape(-1, 3)
    assert flat.min(0).values.tolist() == pytest.approx([0] * 3, abs=1e-6)
    assert flat.max(0).values.tolist() == pytest.approx([1] * 3, abs=1e-6)
    # fitted on the image alone, the first image's picture differs
    alone = await get_ok(api, f"/images/{ids[0]}/pca", model=TINY, layer=2)
    assert alone["fit"] == "image" and alone["rgb"] != body["rgb"][0]
    # a set of one image is that image's PCA (the same cached tokens)
    single = await get_ok(api, f"/sets/{await make_set(api, ids[:1])}/pca", model=TINY, layer=2)
    assert single["rgb"] == [alone["rgb"]] and single["explained"] == alone["explained"]


async def test_foreground_mask_of_the_image_and_the_set(api: Api) -> None:
    data = [png_bytes(s) for s in SEEDS]
    ids = [await api.upload_ok(d) for d in data]
    tokens = tokens_of(data, 1)
    one = await get_ok(api, f"/images/{ids[0]}/pca", model=TINY, layer=1, mask="true")
    assert one["mask"]["threshold"] == 0.0
    keep = foreground_mask(tokens[0])
    assert torch.tensor(one["foreground"]).flatten().tolist() == keep.tolist()
    assert one["mask"]["kept"] == pytest.approx(keep.double().mean().item())
    rgb = torch.tensor(one["rgb"]).reshape(-1, 3)
    assert rgb[~keep].abs().max().item() == 0.0  # the background is black
    assert rgb == pytest.approx(pca_rgb(tokens[0], 0.0).rgb, abs=2e-3)
    assert 0 < keep.sum() < 16

    set_id = await make_set(api, ids)
    body = await get_ok(api, f"/sets/{set_id}/pca", model=TINY, layer=1, mask="true", threshold=0.5)
    want = pca_rgb_set(tokens, 0.5)
    masks = torch.cat([w.foreground for w in want if w.foreground is not None])
    assert torch.tensor(body["foreground"]).flatten().tolist() == masks.tolist()
    assert body["mask"]["threshold"] == 0.5
    assert body["mask"]["kept"] == pytest.approx(masks.double().mean().item())
    got = torch.tensor(body["rgb"]).reshape(-1, 3)
    assert got == pytest.approx(torch.cat([w.rgb for w in want]), abs=2e-3)
    assert got[~masks].abs().max().item() == 0.0
    # the mask's view is its own: the unmasked one is not served for it
    plain = await get_ok(api, f"/sets/{set_id}/pca", model=TINY, layer=1)
    assert plain["rgb"] != body["rgb"] and plain["mask"] is None


async def test_pca_views_refuse_bad_parameters(api: Api) -> None:
    ids = [await api.upload_ok(png_bytes(s)) for s in SEEDS[:2]]
    set_id = await make_set(api, ids)
    for path in (f"/images/{ids[0]}/pca", f"/sets/{set_id}/pca"):
        r = await api.client.get(f"/api/v1{path}", params={"model": TINY, "threshold": 0.5})
        assert r.status_code == 400 and "add mask=true" in r.text, r.text
        r = await api.client.get(f"/api/v1{path}", params={"model": TINY, "mask": "true", "threshold": 5})
        assert r.status_code == 422 and "threshold" in r.text and "less than or equal to 3" in r.text, r.text
        # off the 0.05 grid: each float would be a job and a cache entry of its own
        r = await api.client.get(f"/api/v1{path}", params={"model": TINY, "mask": "true", "threshold": 0.013})
        assert r.status_code == 400 and "not a multiple of 0.05" in r.text, r.text
        r = await api.client.get(f"/api/v1{path}", params={"model": TINY, "mask": "maybe"})
        assert r.status_code == 422 and "mask" in r.text, r.text
        r = await api.client.get(f"/api/v1{path}", params={"model": TINY, "layer": 3})
        assert r.status_code == 400 and "use 0..2" in r.text, r.text
        r = await api.client.get(f"/api/v1{path}", params={"model": "no-such-model"})
        assert r.status_code == 404, r.text
    r = await api.client.get(f"/api/v1/sets/{'0' * 64}/pca", params={"model": TINY})
    assert r.status_code == 404 and "no set" in r.text
    # bounded: 7 images x 16 patches = 112 tokens > max_embedding_points (100 here)
    seven = [await api.upload_ok(png_bytes(70 + s)) for s in range(7)]
    r = await api.client.get(f"/api/v1/sets/{await make_set(api, seven)}/pca", params={"model": TINY})
    assert r.status_code == 400 and "at most 100 are allowed (max_embedding_points)" in r.text, r.text
