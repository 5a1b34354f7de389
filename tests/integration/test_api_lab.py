"""``POST /images/{id}/perturb`` end to end (real Redis): the perturbed image is an ordinary image id (its
bytes are what ``backend.perturb`` makes of the source, its views answer), and bad input gets a clear 4xx."""

from __future__ import annotations

import io
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from backend.perturb import Perturbation, perturb_image
from tests.integration.test_api import (
    TINY,
    Api,
    models_env,
    png_bytes,
    running,
    settings_for,
    tiny_models_cache,
)

pytestmark = pytest.mark.integration
__all__ = ["models_env", "tiny_models_cache"]


@pytest.fixture
async def api(models_env: Path, tmp_path: Path, redis_url: str) -> AsyncIterator[Api]:
    async with running(settings_for(tmp_path, redis_url=redis_url)) as a:
        yield a


async def test_perturbed_image_is_an_ordinary_image(api: Api) -> None:
    data = png_bytes(3, size=(96, 80))
    source = await api.upload_ok(data)
    body: dict[str, Any] = {"kind": "band_noise", "freq": 2.0, "eps": 0.2, "seed": 5, "side": 64}
    r = await api.client.post(f"/api/v1/images/{source}/perturb", json=body)
    assert r.status_code == 201, r.text
    rec = r.json()
    assert r.headers["location"] == f"/api/v1/images/{rec['id']}"
    assert (
        rec["source"] == source and rec["format"] == "PNG" and (rec["width"], rec["height"]) == (77, 64)
    )  # 96 x 80 at a shorter side of 64
    assert rec["perturbation"] == {**body, "half_width": 0.2, "freq": 2.0}
    want = perturb_image(Image.open(io.BytesIO(data)), Perturbation.parse(**body))
    got = await api.client.get(f"/api/v1/images/{rec['id']}")
    assert got.status_code == 200 and got.content == want.png  # byte for byte what the pure function makes
    assert rec["clipped"] == pytest.approx(want.clipped) and rec["clipped"] > 0
    again = await api.client.post(f"/api/v1/images/{source}/perturb", json=body)
    assert again.json()["id"] == rec["id"]  # same source and parameters: same bytes, same id
    att = await api.client.get(f"/api/v1/images/{rec['id']}/attention", params={"model": TINY, "layer": 1})
    assert att.status_code == 200, att.text
    sim = await api.client.get(f"/api/v1/images/{rec['id']}/similarity", params={"model": TINY, "query": 0})
    assert sim.status_code == 200 and sim.json()["map"][0][0] == pytest.approx(1.0, abs=1e-3)
    low = await api.client.post(f"/api/v1/images/{source}/perturb", json={"kind": "low_pass", "cutoff": 0})
    pixels = np.asarray(
        Image.open(io.BytesIO((await api.client.get(f"/api/v1/images/{low.json()['id']}")).content))
    )
    assert low.status_code == 201 and int(np.ptp(pixels.reshape(-1, 3), axis=0).max()) <= 1  # the mean only


async def test_perturb_bad_input(api: Api) -> None:
    source = await api.upload_ok(png_bytes(4))
    url = f"/api/v1/images/{source}/perturb"
    cases = [
        ({"kind": "low_pass", "cutoff": 4}, 400, f"cutoff 4.0 is out of range: use 0 .. {math.pi:g}"),
        ({"kind": "band_noise"}, 400, "band_noise needs freq"),
        ({"kind": "low_pass", "eps": 0.1}, 400, "eps does not apply"),
        ({"kind": "band_noise", "freq": 1, "eps": 2}, 400, "eps 2.0 is out of range"),
        ({"kind": "low_pass", "side": 4096}, 400, "side 4096 is out of range: use 16..1024"),
        ({"kind": "blur"}, 422, "kind"),
        ({"kind": "low_pass", "sigma": 1}, 422, "sigma"),
    ]
    for body, status, text in cases:
        r = await api.client.post(url, json=body)
        assert r.status_code == status, (body, r.text)
        assert text in r.text, (body, r.text)
    missing = await api.client.post(f"/api/v1/images/{'0' * 64}/perturb", json={"kind": "low_pass"})
    assert missing.status_code == 404 and "upload it first" in missing.text


async def test_perturb_respects_the_upload_limit(models_env: Path, tmp_path: Path) -> None:
    data = png_bytes(5, size=(64, 64))
    async with running(settings_for(tmp_path, max_upload_bytes=len(data) + 10)) as api:
        source = await api.upload_ok(data)
        # noise makes the 224 px PNG far larger than the limit: refused by the upload path, nothing stored
        r = await api.client.post(f"/api/v1/images/{source}/perturb", json={"kind": "band_noise", "freq": 3})
        assert r.status_code == 413 and "at most" in r.text
        assert len(api.service.images.folder) == 1


async def test_perturbed_copies_count_as_uploads_in_the_per_client_cap(
    models_env: Path, tmp_path: Path
) -> None:
    """A perturbed copy is a new stored image: it counts in the same hourly cap as an upload (else one
    upload would let a client make images without bound, one seed at a time)."""
    async with running(settings_for(tmp_path, client_uploads_per_hour=2)) as capped:
        source = await capped.upload_ok(png_bytes(4, size=(64, 64)))
        body: dict[str, Any] = {"kind": "band_noise", "freq": 2.0, "eps": 0.2, "side": 32}
        first = await capped.client.post(f"/api/v1/images/{source}/perturb", json={**body, "seed": 1})
        assert first.status_code == 201, first.text
        second = await capped.client.post(f"/api/v1/images/{source}/perturb", json={**body, "seed": 2})
        assert second.status_code == 429, second.text
        assert second.json()["error"]["code"] == "too_many_uploads"
        assert int(second.headers["Retry-After"]) > 0
