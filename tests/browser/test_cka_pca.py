"""The CKA heat map and the set-fitted / foreground PCA of the Patch features panel in headless Chromium
against the real server with the demo preset (3 images, 3 models): what is drawn is the API's numbers, raw and
calibrated CKA, the PCA fitted on the set and the masked pictures; the CKA panel says what it needs."""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from app.state import ViewState
from tests.browser.conftest import SCREENSHOTS
from tests.browser.helpers import screenshot, view, wait_for
from tests.browser.serverproc import Server

pytestmark = pytest.mark.browser

GRAPH_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.data || !gd.data.length) return null;
const l = gd.layout, title = t => (t && (t.text !== undefined ? t.text : t)) || '';
return JSON.stringify({
  data: gd.data.map(t => ({type: t.type, name: t.name, z: t.z, x: t.x || null, y: t.y || null,
                           zmin: t.zmin === undefined ? null : t.zmin,
                           zmax: t.zmax === undefined ? null : t.zmax})),
  title: title(l.title), xaxis: title((l.xaxis || {}).title), yaxis: title((l.yaxis || {}).title)});
"""


def graph(d: WebDriver, css: str) -> dict[str, Any] | None:
    raw = d.execute_script(GRAPH_JS, css)
    return json.loads(raw) if raw else None


def demo_view(d: WebDriver) -> ViewState | None:
    v = view(d)
    return v if len(v.images) >= 2 and len(v.models) >= 3 and v.layer else None


def answer(server: Server, path: str, **params: Any) -> dict[str, Any]:
    """The API's answer, following its job when it answers 202 (as the page's client does)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        r = httpx.get(f"{server.api}{path}", params=params, timeout=120)
        if r.status_code == 200:
            body: dict[str, Any] = r.json()
            return body
        assert r.status_code == 202, r.text
        time.sleep(0.5)
    raise AssertionError(f"{path} did not finish")


def make_set(server: Server, images: list[str]) -> str:
    r = httpx.post(f"{server.api}/sets", json={"images": images}, timeout=60)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def click(d: WebDriver, css: str) -> None:
    el = wait_for(lambda: d.find_element(By.CSS_SELECTOR, css), css)
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    el.click()


def text_of(d: WebDriver, css: str, part: str) -> str | None:
    text = str(d.find_element(By.CSS_SELECTOR, css).text)
    return text if part in text else None


def showing_models(d: WebDriver, models: list[str]) -> bool:
    return view(d).models == models


def rgb255(picture: list[Any]) -> list[Any]:
    return [[[round(255 * c) for c in px] for px in row] for row in picture]


def pictures_drawn(d: WebDriver, want: dict[str, list[Any]], title: str) -> dict[str, Any] | None:
    """The PCA figure once it shows ``want`` (model -> drawn picture) under a title holding ``title``."""
    fig = graph(d, "#lab-pca")
    if not fig or title not in fig["title"] or len(fig["data"]) != len(want):
        return None
    return fig if all(t["z"] == want[t["name"]] for t in fig["data"]) else None


def test_cka_heat_map_is_the_apis_matrix_raw_and_calibrated(server: Server, page: WebDriver) -> None:
    d = page
    state = wait_for(lambda: demo_view(d), "the demo preset", 400)
    a, b = state.models[0], state.models[1]
    click(d, "#cka-toggle")
    fig = wait_for(lambda: graph(d, "#cka-graph"), "the CKA heat map", 400)
    body = answer(server, f"/sets/{make_set(server, state.images)}/cka", model_a=a, model_b=b)
    assert (body["model_a"], body["model_b"], body["images"]) == (a, b, state.images)
    (trace,) = fig["data"]
    assert trace["type"] == "heatmap" and trace["z"] == body["cka"]
    assert trace["x"] == body["depth_b"] and trace["y"] == body["depth_a"]
    assert (trace["zmin"], trace["zmax"]) == (0, 1)
    assert fig["yaxis"] == f"model A depth ({a})" and fig["xaxis"] == f"model B depth ({b})"
    null = [v for row in body["null_mean"] for v in row]
    note = wait_for(lambda: text_of(d, "#cka-msg", "null's mean"), "the null's mean")
    assert f"CKA is {sum(null) / len(null):.3f} on average" in note
    assert f"({min(null):.3f} to {max(null):.3f})" in note
    assert f"{len(state.images)} images" in note

    click(d, "#cka-scale input[value='calibrated']")
    fig = wait_for(
        lambda: (f := graph(d, "#cka-graph")) and f["data"][0]["z"] == body["calibrated"] and f,
        "the calibrated map",
        120,
    )
    top = max(abs(v) for row in body["calibrated"] for v in row)
    assert (fig["data"][0]["zmin"], fig["data"][0]["zmax"]) == (-top, top)
    assert "calibrated" in fig["title"]
    panel = d.find_element(By.CSS_SELECTOR, "#cka-panel")
    d.execute_script("arguments[0].scrollIntoView({block: 'start'})", panel)
    screenshot(d, SCREENSHOTS, "cka-heat-map", full_page=False)


def test_set_fitted_and_masked_pca_are_the_apis_pictures(server: Server, page: WebDriver) -> None:
    d = page
    state = wait_for(lambda: demo_view(d), "the demo preset", 400)
    image, layer = state.images[state.active], int(state.layer or 1)
    set_id = make_set(server, state.images)

    def from_set(mask: bool) -> dict[str, list[Any]]:
        out = {}
        for m in state.models:
            params = {"model": m, "layer": layer, **({"mask": "true"} if mask else {})}
            body = answer(server, f"/sets/{set_id}/pca", **params)
            assert body["images"] == state.images and body["fit"] == "set"
            out[m] = rgb255(body["rgb"][body["images"].index(image)])
        return out

    click(d, "#lab-fit input[value='set']")
    want = from_set(mask=False)
    wait_for(lambda: pictures_drawn(d, want, "the whole set"), "the set-fitted PCA pictures", 400)
    alone = answer(server, f"/images/{image}/pca", model=state.models[0], layer=layer)
    assert rgb255(alone["rgb"]) != want[state.models[0]]  # fitted on the set, not this image

    click(d, "#lab-mask input[value='foreground']")
    masked = from_set(mask=True)
    wait_for(
        lambda: pictures_drawn(d, masked, "foreground patches of the whole set"), "the masked set PCA", 400
    )

    click(d, "#lab-fit input[value='image']")
    own = {}
    for m in state.models:
        body = answer(server, f"/images/{image}/pca", model=m, layer=layer, mask="true")
        assert body["mask"]["threshold"] == 0.0
        for row, keep in zip(body["rgb"], body["foreground"], strict=True):
            assert all(px == [0, 0, 0] for px, k in zip(row, keep, strict=True) if not k)  # black background
        own[m] = rgb255(body["rgb"])
    wait_for(lambda: pictures_drawn(d, own, "foreground patches of this image"), "the masked image PCA", 300)
    panel = d.find_element(By.CSS_SELECTOR, "#lab-panel")
    d.execute_script("arguments[0].scrollIntoView({block: 'start'})", panel)
    screenshot(d, SCREENSHOTS, "lab-foreground-pca", full_page=False)


def test_cka_says_what_it_needs(server: Server, page: WebDriver) -> None:
    d = page
    state = wait_for(lambda: demo_view(d), "the demo preset", 400)
    for images, models, need in (
        (state.images[:1], state.models[:2], "add 2 or more images (now 1)"),
        (state.images[:2], state.models[:1], "select 2 or more models (now 1)"),
    ):
        d.get(server.url + "/" + ViewState(images=images, models=models).to_search())
        wait_for(partial(showing_models, d, models), "the linked view")
        click(d, "#cka-toggle")
        wait_for(partial(text_of, d, "#cka-msg", need), need, 120)
