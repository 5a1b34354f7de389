"""``GET /api/v1/claims`` on constructed models whose answers are known (tests/unit/test_cli_claims.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from backend.analysis.claims import ModelValues, evaluate_claims
from backend.api.routes.claims import ClaimsOut
from tests.integration.test_api import (
    Api,
    api_on,
    png_bytes,
    write_tiny_model,
)
from tests.unit.test_cli_claims import constructed

pytestmark = pytest.mark.integration
ROLES = {"cl": "claims-cl", "mim": "claims-mim", "hybrid": "claims-hybrid"}


@pytest.fixture(scope="module")
def claims_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("claims_api_models")
    write_tiny_model(folder)
    random_pos = torch.randn(1, 17, 32, generator=torch.Generator().manual_seed(0))
    constructed("claims-cl", "cl", torch.ones(1, 17, 32), 1.0, folder)
    constructed("claims-mim", "mim", random_pos, 2.0, folder)
    constructed("claims-hybrid", "hybrid", random_pos, 0.6, folder)
    return folder


api = api_on("claims_cache")


async def test_claims_of_a_set_and_of_one_image(api: Api) -> None:
    ids = [await api.upload_ok(png_bytes(seed)) for seed in range(3)]
    r = await api.client.post("/api/v1/sets", json={"images": ids})
    set_id = r.json()["id"]
    r = await api.client.get("/api/v1/claims", params={**ROLES, "set": set_id})
    assert r.status_code == 200, r.text
    body = r.json()
    ClaimsOut.model_validate(body, strict=True)  # the documented shape
    assert body["all_held"] and (body["held"], body["total"], body["images"]) == (4, 4, 3)
    assert body["set"] == set_id and body["image"] is None and body["image_ids"] == ids
    assert body["models"] == ROLES and body["distance_scale"] == "px"
    assert [c["id"] for c in body["claims"]] == ["distance", "nmi", "fourier", "hybrid"]
    assert all(c["images_held"] == 3 and "holds on 3 of 3 images" in c["summary"] for c in body["claims"])
    assert body["claims"][0]["values"]["cl"] == pytest.approx(8 * 2.0080150, abs=1e-3)  # uniform, 4x4 at 8
    assert body["preprocessing"]["claims-cl"]["source"] == "card"
    # the same as evaluating the per-image metrics the API answers
    per_role = {}
    for role, model in ROLES.items():
        objs = [
            (await api.client.get(f"/api/v1/images/{i}/metrics", params={"model": model})).json() for i in ids
        ]
        per_role[role] = ModelValues.from_metrics(objs)
    want = evaluate_claims(per_role["cl"], per_role["mim"], per_role["hybrid"])
    assert [c["per_image"] for c in body["claims"]] == [c.as_dict()["per_image"] for c in want]

    r = await api.client.get(
        "/api/v1/claims", params={"cl": ROLES["mim"], "mim": ROLES["cl"], "image": ids[0]}
    )
    one = r.json()
    assert r.status_code == 200 and one["image"] == ids[0] and one["images"] == 1 and one["total"] == 3
    assert not one["all_held"] and one["held"] == 0


async def test_claims_bad_requests(api: Api) -> None:
    image = await api.upload_ok(png_bytes(7))
    r = await api.client.get("/api/v1/claims", params={"cl": ROLES["cl"], "mim": ROLES["mim"]})
    assert r.status_code == 400 and "exactly one of image" in r.json()["error"]["message"]
    r = await api.client.get("/api/v1/claims", params={**ROLES, "image": image, "set": image})
    assert r.status_code == 400
    r = await api.client.get(
        "/api/v1/claims", params={"cl": "no-such-model", "mim": ROLES["mim"], "image": image}
    )
    assert r.status_code == 404
    r = await api.client.get("/api/v1/claims", params={**ROLES, "image": "0" * 64})
    assert r.status_code == 404
    r = await api.client.get("/api/v1/claims", params={"mim": ROLES["mim"], "image": image})
    assert r.status_code == 422  # cl is required
