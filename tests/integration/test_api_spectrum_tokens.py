"""What the spectrum and embeddings answers add for the UI's curves, end to end (real Redis): the
half-diagonal bins' frequencies beside ``delta``, and the singular values of each image's patch tokens beside
the 2D projection, checked against ``backend.analysis`` run on a direct capture of the same images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backend.analysis import half_diagonal_frequencies, singular_values
from tests.integration.test_api import (
    TINY,
    Api,
    api_on,
    png_bytes,
    reference_trace,
    write_tiny_model,
)

pytestmark = pytest.mark.integration
SEEDS = (71, 72, 73)  # images of their own: other test files share the Redis cache


@pytest.fixture(scope="module")
def models_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("spectrum_tokens_models")
    write_tiny_model(folder)
    return folder


api = api_on("models_cache")


async def get_ok(api: Api, path: str, **params: Any) -> dict[str, Any]:
    r = await api.client.get(f"/api/v1{path}", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_spectrum_answer_carries_each_bins_frequency(api: Api) -> None:
    iid = await api.upload_ok(png_bytes(SEEDS[0]))
    for state, depth in (("out", 0), ("out", 2), ("attn", 1)):
        body = await get_ok(api, f"/images/{iid}/spectrum", model=TINY, state=state, depth=depth)
        grid = (body["grid"][0], body["grid"][1])
        assert grid == (4, 4)
        want = half_diagonal_frequencies(grid)
        assert len(body["frequencies"]) == len(body["delta"]) == len(want) == 2
        assert np.asarray(body["frequencies"]) == pytest.approx(np.asarray(want), rel=1e-5)  # 6 digits
        # the last bin is the one the depth curve reads, and delta_bin names the same frequency
        assert body["frequencies"][-1] == pytest.approx(body["delta_bin"]["radians_per_patch"], rel=1e-5)
        assert body["delta"][-1] == pytest.approx(body["high_frequency_delta"], rel=1e-5)


async def test_embeddings_answer_carries_the_singular_values_of_a_direct_capture(api: Api) -> None:
    data = [png_bytes(s) for s in SEEDS]
    ids = [await api.upload_ok(d) for d in data]
    r = await api.client.post("/api/v1/sets", json={"images": ids})
    assert r.status_code == 201, r.text
    set_id = r.json()["id"]
    _, trace = reference_trace(data)
    for layer in (0, 2):
        body = await get_ok(api, f"/sets/{set_id}/embeddings", model=TINY, layer=layer, method="pca")
        # the tokens the projection reads: block output, prefix dropped, float16 in the cache
        z = trace.x_out[layer].half().float()
        s = singular_values(z, trace.num_prefix_tokens).double()
        assert s.shape == (3, 16)
        assert body["singular_values_centred"] is False
        assert body["singular_values_largest"] == pytest.approx(s[:, 0].tolist(), rel=1e-5)
        normalized = s / s[:, :1]
        got = torch.tensor(body["singular_values_normalized"], dtype=torch.float64)
        assert got.shape == (3, 16)
        assert got.numpy() == pytest.approx(normalized.numpy(), abs=1e-5)
        assert body["singular_values_mean"] == pytest.approx(normalized.mean(0).tolist(), abs=1e-5)
        assert body["singular_values_mean"][0] == pytest.approx(1.0, abs=1e-6)
        # not the centred tokens' (which a PCA would see): those give another curve
        c = singular_values(z, trace.num_prefix_tokens, centre=True).double()
        assert not np.allclose((c / c[:, :1]).numpy(), got.numpy(), atol=1e-3)
    tsne = await get_ok(api, f"/sets/{set_id}/embeddings", model=TINY, layer=2, method="tsne")
    assert tsne["singular_values_mean"] == body["singular_values_mean"], "one token matrix, any projection"
