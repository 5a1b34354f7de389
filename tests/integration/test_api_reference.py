"""``GET /api/v1/reference``: the paper's curves, filtered, with 400s that name what is allowed."""

from __future__ import annotations

import pytest

from backend.api.routes.reference import ReferenceOut
from backend.reference import paper_reference
from tests.integration.test_api import Api, api, models_env, tiny_models_cache

pytestmark = pytest.mark.integration
__all__ = ["api", "models_env", "tiny_models_cache"]


async def test_reference_is_the_shipped_document(api: Api) -> None:
    r = await api.client.get("/api/v1/reference")
    assert r.status_code == 200, r.text
    body = r.json()
    ReferenceOut.model_validate(body, strict=True)  # the documented shape
    assert body == paper_reference()
    assert body["series"][0]["id"] == "mocov3-b16.attention_distance"
    assert body["series"][0]["values_relative"][0] == pytest.approx(110.41 / 116.4922, abs=1e-4)


async def test_reference_filters(api: Api) -> None:
    r = await api.client.get("/api/v1/reference", params={"metric": "nmi", "family": "cl"})
    assert r.status_code == 200
    assert [s["id"] for s in r.json()["series"]] == ["mocov3-b16.nmi"]
    r = await api.client.get("/api/v1/reference", params={"metric": "linear_probe_top1"})
    assert {s["family"] for s in r.json()["series"]} == {"cl", "mim"}


async def test_reference_bad_filters_name_what_is_allowed(api: Api) -> None:
    r = await api.client.get("/api/v1/reference", params={"metric": "entropy"})
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "'entropy'" in message and "attention_distance" in message and "nmi" in message
    r = await api.client.get("/api/v1/reference", params={"family": "supervised"})
    assert r.status_code == 400 and "cl, mim" in r.json()["error"]["message"]


async def test_spectrum_says_which_bin_it_reads(api: Api) -> None:
    """The tiny model's 4 x 4 grid: the paper's (4 + 1) // 2 = 2 bins, the last at 1 cycle per image."""
    from tests.integration.test_api import TINY, png_bytes

    image = await api.upload_ok(png_bytes(3))
    r = await api.client.get(f"/api/v1/images/{image}/spectrum", params={"model": TINY, "depth": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["delta"]) == 2 and body["delta_bin"]["index"] == 1
    assert body["delta_bin"]["label"] == "bin 1: 1 cycle per image, 1/2 pi per patch, 4x4 grid"
    assert body["high_frequency_delta"] == pytest.approx(body["delta"][body["delta_bin"]["index"]], abs=1e-5)
