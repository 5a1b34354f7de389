"""The "Beyond the paper" panel in headless Chromium against the real server with the demo models: the curves
drawn are the API's numbers for each model (one image: ``GET /images/{id}/metrics``; the set:
``GET /sets/{id}/metrics``, with the positional share only there), and a click on a curve's point moves the
layer. The null paths (no CLS token, one head) are checked in tests/unit/test_ui_modern.py: every demo model
has a CLS token and several heads.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser.conftest import SCREENSHOTS
from tests.browser.helpers import screenshot, view, wait_for
from tests.browser.serverproc import Server

pytestmark = pytest.mark.browser

# The drawn curves (not the bands): name, the plot they are in, x and y as plain arrays.
CURVES_JS = """
const gd = document.querySelector('#mod-graph .js-plotly-plot');
if (!gd || !gd.data || !gd.data.length || !gd.layout.meta) return null;
return JSON.stringify({
  meta: gd.layout.meta,
  subtitle: (gd.layout.title && gd.layout.title.text) || '',
  curves: gd.data.filter(t => t.mode === 'lines+markers' && t.meta).map(t => ({
    name: t.name, panel: t.meta.panel, curve: t.meta.curve, x: Array.from(t.x), y: Array.from(t.y)})),
  bands: gd.data.filter(t => t.fill === 'toself').length,
  shapes: (gd.layout.shapes || []).map(s => s.x0),
});
"""

POINT_JS = """
const gd = document.querySelector('#mod-graph .js-plotly-plot');
if (!gd || !gd.data) return null;
const tr = gd.data.find(t => t.name === arguments[0] && t.meta && t.meta.panel === 'effective_rank'
                             && t.mode === 'lines+markers');
if (!tr) return null;
const k = Array.from(tr.x).indexOf(arguments[1]);
if (k < 0) return null;
const fl = gd._fullLayout, xa = fl[tr.xaxis.replace('x', 'xaxis')], ya = fl[tr.yaxis.replace('y', 'yaxis')];
const r = gd.getBoundingClientRect();
return [r.left + xa._offset + xa.l2p(tr.x[k]), r.top + ya._offset + ya.l2p(tr.y[k]),
        r.left + r.width / 2, r.top + r.height / 2];
"""


def drawn(d: WebDriver, models: list[str], subtitle: str) -> dict[str, Any] | None:
    """The panel's figure once it shows every model for the scope named by ``subtitle``'s start."""
    raw = d.execute_script(CURVES_JS)
    fig = json.loads(raw) if raw else None
    if not fig or fig["meta"]["models"] != models or subtitle not in fig["subtitle"]:
        return None
    return fig


def curve(fig: dict[str, Any], panel: str, name: str, which: str | None = None) -> dict[str, Any]:
    found = [c for c in fig["curves"] if c["panel"] == panel and c["name"] == name]
    if which is not None:
        found = [c for c in found if c["curve"] == which]
    assert len(found) == 1, (panel, name, which, found)
    return found[0]


def api_json(server: Server, path: str, **params: Any) -> Any:
    """A GET of the API, following a 202's job to its end."""
    r = httpx.get(f"{server.api}{path}", params=params, timeout=120)
    deadline = time.monotonic() + 300
    while r.status_code == 202 and time.monotonic() < deadline:
        job = httpx.get(f"{server.api}/jobs/{r.json()['job']['id']}", timeout=30).json()
        if job["status"] == "succeeded":
            r = httpx.get(f"{server.api}{path}", params=params, timeout=120)
        elif job["status"] == "failed":
            raise AssertionError(job)
        else:
            time.sleep(0.5)
    assert r.status_code == 200, r.text
    return r.json()


def assert_drawn_is(fig: dict[str, Any], model: str, m: dict[str, Any]) -> None:
    """Every plot of one model is the metrics object's numbers (``m``: the API's answer)."""
    approx = lambda v: pytest.approx(v, rel=1e-9, abs=1e-12)  # noqa: E731 - floats through two JSON trips
    rank = curve(fig, "effective_rank", model)
    assert rank["x"] == m["effective_rank"]["depth"] and rank["y"] == approx(m["effective_rank"]["value"])
    div = curve(fig, "head_diversity", model)
    assert div["x"] == m["head_diversity"]["depth"] and div["y"] == approx(m["head_diversity"]["value"])
    assert curve(fig, "token_norm", model)["y"] == approx(m["token_norm"]["mean"]["value"])
    frac = curve(fig, "outlier_fraction", model)["y"]
    assert frac == approx(m["token_norm"]["outlier_fraction"]["value"])
    assert curve(fig, "cls_selectivity", model)["y"] == approx(m["cls_selectivity"]["mean"])
    assert curve(fig, "cls_self", model)["y"] == approx(m["cls_self"]["mean"])
    assert curve(fig, "movement_coherence", model)["y"] == approx(m["movement_coherence"]["mean"])
    attn = curve(fig, "delta_log_amplitude", model, "x_attn")
    assert attn["x"] == m["delta_log_amplitude_attn"]["depth"]
    assert attn["y"] == approx(m["delta_log_amplitude_attn"]["value"])
    out = curve(fig, "delta_log_amplitude", model, "x_out")
    assert out["x"] == m["delta_log_amplitude"]["depth"] and out["y"] == approx(
        m["delta_log_amplitude"]["value"]
    )


def test_one_image_draws_the_image_metrics_and_says_positional_share_needs_a_set(
    server: Server, page: WebDriver
) -> None:
    d = page
    state = wait_for(lambda: view(d) if view(d).models and view(d).images else None, "the demo preset", 240)
    models, image = list(state.models), state.images[state.active]
    radio = wait_for(lambda: d.find_element(By.CSS_SELECTOR, "#mod-scope input[value='image']"), "the scope")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", radio)
    radio.click()
    fig = wait_for(lambda: drawn(d, models, "one image"), "the panel for one image", 300)
    for model in models:
        m = api_json(server, f"/images/{image}/metrics", model=model)
        assert m["positional_share"] is None and m["cls_self"] is not None  # the demo models have CLS
        assert_drawn_is(fig, model, m)
    assert not [c for c in fig["curves"] if c["panel"] == "positional_share"]
    notes = fig["meta"]["notes"]["positional_share"]
    assert set(notes) == set(models) and all("2+ images" in why for why in notes.values())
    assert len(fig["shapes"]) == 9 and set(fig["shapes"]) == {fig["meta"]["layer"]}  # the marker everywhere
    live = wait_for(
        lambda: d.find_element(By.CSS_SELECTOR, "#mod-live").get_attribute("textContent"), "notes"
    )
    assert all(f"{model}: effective rank" in live for model in models)


def test_the_set_draws_the_set_metrics_with_the_positional_share(server: Server, page: WebDriver) -> None:
    d = page
    state = wait_for(lambda: view(d) if view(d).models else None, "the demo preset", 240)
    models, ids = list(state.models), list(state.images)
    assert len(ids) >= 2
    d.find_element(By.CSS_SELECTOR, "#mod-scope input[value='set']").click()
    fig = wait_for(lambda: drawn(d, models, f"mean over {len(ids)} images"), "the panel for the set", 400)
    set_id = httpx.post(f"{server.api}/sets", json={"images": ids}, timeout=60).json()["id"]
    for model in models:
        m = api_json(server, f"/sets/{set_id}/metrics", model=model)
        assert m["num_images"] == len(ids)
        assert_drawn_is(fig, model, m)
        share = curve(fig, "positional_share", model)
        assert share["x"] == m["positional_share"]["depth"]
        assert share["y"] == pytest.approx(m["positional_share"]["value"], rel=1e-9)
    assert "positional_share" not in fig["meta"].get("notes", {})  # an empty {} is not sent
    assert fig["bands"] > 0  # std over images
    panel = d.find_element(By.CSS_SELECTOR, "#mod-panel")
    d.execute_script("arguments[0].scrollIntoView({block: 'start'})", panel)
    screenshot(d, SCREENSHOTS, "modern-panel", full_page=False)


def test_a_click_on_a_curve_moves_the_layer(server: Server, page: WebDriver) -> None:
    d = page
    state = wait_for(lambda: view(d) if view(d).models else None, "the demo preset", 240)
    model = state.models[0]
    block = 2 if (state.layer or 0) != 2 else 3
    wait_for(lambda: drawn(d, list(state.models), ""), "the panel", 300)
    gd = d.find_element(By.CSS_SELECTOR, "#mod-graph .js-plotly-plot")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", gd)
    time.sleep(0.3)
    x, y, cx, cy = wait_for(lambda: d.execute_script(POINT_JS, model, block), f"the point of depth {block}")
    ActionChains(d).move_to_element_with_offset(gd, int(round(x - cx)), int(round(y - cy))).click().perform()
    wait_for(lambda: view(d).layer == block, f"the page on block {block}", 60)

    def moved() -> dict[str, Any] | None:
        f = drawn(d, list(state.models), "")
        return f if f and set(f["shapes"]) == {block} else None

    fig = wait_for(moved, "the layer marker moved", 60)
    assert fig["meta"]["layer"] == block
    handle = "return (document.querySelector('#ctl-layer [aria-valuenow]') || {}).ariaValueNow || null;"
    assert wait_for(lambda: d.execute_script(handle), "the slider's handle", 30) == str(block)
