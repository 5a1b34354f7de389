"""``GET /sets/{id}/cka`` (and the set metrics' positional share), ``/images/{id}/similarity`` and ``/pca``
end to end (real Redis), checked against the analyses run directly on a capture of the same images; the new
metrics and the no-CLS 400 through the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backend.analysis.cka import cka_with_null, image_means
from backend.analysis.patches import patch_similarity, pca_rgb
from backend.analysis.representation import positional_share_of
from tests.integration.test_api import (
    TINY,
    TINY_KWARGS,
    Api,
    api_on,
    png_bytes,
    reference_trace,
    write_tiny_model,
)

pytestmark = pytest.mark.integration
NO_CLS = "tiny-no-cls"


@pytest.fixture(scope="module")
def models_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("set_analyses_models")
    write_tiny_model(folder)
    write_tiny_model(folder, "tiny-vit-b", seed=1)
    write_tiny_model(folder, NO_CLS, seed=2)  # then the card is made class-token free (avg pool)
    card_path = folder / "imported" / f"{NO_CLS}.json"
    card = json.loads(card_path.read_text())
    card["arch_kwargs"] = {**TINY_KWARGS, "class_token": False, "global_pool": "avg"}
    from safetensors.torch import save_file

    from backend.models.loading import build_model

    model = build_model(card["arch"], card["arch_kwargs"])
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "imported" / card["weights"])
    )
    card_path.write_text(json.dumps(card))
    return folder


api = api_on("models_cache")


async def test_cka_and_positional_share_of_a_set(api: Api) -> None:
    data = [png_bytes(seed) for seed in range(4)]
    ids = [await api.upload_ok(d) for d in data]
    set_id = (await api.client.post("/api/v1/sets", json={"images": ids})).json()["id"]

    r = await api.client.get(f"/api/v1/sets/{set_id}/cka", params={"model_a": TINY, "model_b": TINY})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model_a"], body["model_b"], body["images"]) == (TINY, TINY, ids)
    assert body["depth_a"] == body["depth_b"] == [0, 1, 2] and (body["permutations"], body["seed"]) == (20, 0)
    # the same numbers from a direct capture (the API reads float16 tokens: a loose tolerance)
    _, trace = reference_trace(data)
    x = image_means(trace.x_out, trace.num_prefix_tokens).double()
    want = cka_with_null(x, x)
    assert torch.tensor(body["cka"]) == pytest.approx(want.cka, abs=2e-3)
    assert torch.tensor(body["null_mean"]) == pytest.approx(want.null.mean(0), abs=2e-3)
    assert torch.tensor(body["calibrated"]) == pytest.approx(want.calibrated, abs=4e-3)
    assert [body["cka"][i][i] for i in range(3)] == pytest.approx([1, 1, 1], abs=1e-9)

    r = await api.client.get(f"/api/v1/sets/{set_id}/cka", params={"model_a": TINY, "model_b": "tiny-vit-b"})
    assert r.status_code == 200, r.text
    other = r.json()
    assert len(other["cka"]) == 3 and all(len(row) == 3 for row in other["cka"])
    assert other["cka"] != body["cka"]

    # the positional share of a set is in the set metrics (the same definition, from the same tokens)
    r = await api.client.get(f"/api/v1/sets/{set_id}/metrics", params={"model": TINY})
    assert r.status_code == 200, r.text
    share = r.json()["positional_share"]
    assert share["depth"] == [0, 1, 2]
    expected = positional_share_of(trace.x_out, trace.num_prefix_tokens)
    assert expected is not None
    assert share["value"] == pytest.approx(expected.tolist(), abs=2e-3)


async def test_set_analyses_refuse_what_they_cannot_compute(api: Api) -> None:
    one = await api.upload_ok(png_bytes(9))
    set_id = (await api.client.post("/api/v1/sets", json={"images": [one]})).json()["id"]
    r = await api.client.get(f"/api/v1/sets/{set_id}/cka", params={"model_a": TINY, "model_b": TINY})
    assert r.status_code == 400 and "2 or more images" in r.text
    two = await api.upload_ok(png_bytes(10))
    set_id = (await api.client.post("/api/v1/sets", json={"images": [one, two]})).json()["id"]
    r = await api.client.get(f"/api/v1/sets/{set_id}/cka", params={"model_a": TINY})
    assert r.status_code == 422  # model_b is required
    r = await api.client.get(
        f"/api/v1/sets/{set_id}/cka", params={"model_a": TINY, "model_b": "no-such-model"}
    )
    assert r.status_code == 404


async def test_image_metrics_and_a_model_without_cls(api: Api) -> None:
    iid = await api.upload_ok(png_bytes(3))
    m = (await api.client.get(f"/api/v1/images/{iid}/metrics", params={"model": TINY})).json()
    assert m["token_norm"]["depth"] == [0, 1, 2] and len(m["effective_rank"]["value"]) == 3
    assert len(m["cls_selectivity"]["mean"]) == 2 and m["positional_share"] is None  # one image
    r = await api.client.get(f"/api/v1/images/{iid}/metrics", params={"model": NO_CLS})
    assert r.status_code == 200 and r.json()["cls_selectivity"] is None and r.json()["cls_self"] is None
    r = await api.client.get(f"/api/v1/images/{iid}/attention", params={"model": NO_CLS, "layer": 1})
    assert r.status_code == 400, r.text  # the default query is cls
    assert "has no CLS token; query a patch (a row-major patch index 0..15)" in r.text
    r = await api.client.get(
        f"/api/v1/images/{iid}/attention", params={"model": NO_CLS, "layer": 1, "query": 5}
    )
    assert r.status_code == 200, r.text
    r = await api.client.get(f"/api/v1/images/{iid}/attention", params={"model": TINY, "layer": 1})
    assert r.status_code == 200, r.text


async def test_patch_similarity_and_pca_views(api: Api) -> None:
    data = png_bytes(4)
    iid = await api.upload_ok(data)
    r = await api.client.get(
        f"/api/v1/images/{iid}/similarity", params={"model": TINY, "layer": 2, "query": 5}
    )
    assert r.status_code == 200, r.text
    sim = r.json()
    assert (sim["grid"], sim["layer"], sim["query"]) == ([4, 4], 2, 5)
    _, trace = reference_trace([data])
    tokens = trace.x_out[2][0, trace.num_prefix_tokens :]
    want = patch_similarity(tokens, 5).reshape(4, 4)
    assert torch.tensor(sim["map"]) == pytest.approx(want, abs=2e-3)  # float16 tokens in the cache
    assert sim["map"][1][1] == pytest.approx(1, abs=1e-3)  # patch 5 is row 1, column 1
    assert sim["centred"] is False
    r = await api.client.get(
        f"/api/v1/images/{iid}/similarity", params={"model": TINY, "layer": 2, "query": 5, "centred": "true"}
    )
    centred = r.json()
    assert r.status_code == 200 and centred["centred"] is True, r.text
    want = patch_similarity(tokens, 5, centred=True).reshape(4, 4)
    assert torch.tensor(centred["map"]) == pytest.approx(want, abs=2e-3)
    assert centred["map"] != sim["map"]
    r = await api.client.get(f"/api/v1/images/{iid}/similarity", params={"model": TINY, "centred": "perhaps"})
    assert r.status_code == 422 and "centred" in r.text, r.text
    r = await api.client.get(f"/api/v1/images/{iid}/pca", params={"model": TINY, "layer": 1})
    assert r.status_code == 200, r.text
    pca = r.json()
    rgb = torch.tensor(pca["rgb"])
    assert rgb.shape == (4, 4, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert pca["explained"] == pytest.approx(pca_rgb(trace.x_out[1][0, 1:]).explained.tolist(), abs=2e-3)
    r = await api.client.get(f"/api/v1/images/{iid}/similarity", params={"model": TINY, "query": 16})
    assert r.status_code == 400 and "0..15" in r.text
    r = await api.client.get(f"/api/v1/images/{iid}/pca", params={"model": TINY, "layer": 3})
    assert r.status_code == 400 and "use 0..2" in r.text
