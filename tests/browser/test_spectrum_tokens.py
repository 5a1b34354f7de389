"""The spectrum panel's Δ log amplitude lines and the tokens panel's singular-value curves in headless
Chromium against the real server with the demo preset (3 images, 3 models): every drawn line is the API's
numbers, for block outputs and post-attention states; screenshots of both."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from app.figures.tokens import SV_AXIS
from tests.browser.conftest import SCREENSHOTS
from tests.browser.helpers import screenshot, wait_for
from tests.browser.serverproc import Server
from tests.browser.test_cka_pca import answer, click, demo_view, make_set

pytestmark = pytest.mark.browser

LINES_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.data || !gd.data.length || !gd.layout) return null;
const l = gd.layout, title = t => (t && (t.text !== undefined ? t.text : t)) || '';
return JSON.stringify({
  data: gd.data.map(t => ({name: t.name, x: Array.from(t.x || []), y: Array.from(t.y || []),
                           meta: t.meta || null, symbol: (t.marker || {}).symbol || null})),
  title: title(l.title), xaxis: title((l.xaxis || {}).title), yaxis: title((l.yaxis || {}).title),
  ytype: (gd._fullLayout.yaxis || {}).type || null, filename: (l.meta || {}).filename || null});
"""


def lines(d: WebDriver, css: str) -> dict[str, Any] | None:
    raw = d.execute_script(LINES_JS, css)
    return json.loads(raw) if raw else None


def delta_drawn(d: WebDriver, models: list[str], state: str) -> dict[str, Any] | None:
    """The Δ figure once it shows a line and a last-bin marker for each of ``models`` at ``state``."""
    fig = lines(d, "#spc-delta-graph")
    if not fig:
        return None
    shown = [(t["meta"]["model"], t["meta"]["curve"]) for t in fig["data"] if t["meta"]["state"] == state]
    return fig if sorted(shown) == sorted((m, c) for m in models for c in ("delta", "last-bin")) else None


def sv_drawn(d: WebDriver, n: int) -> dict[str, Any] | None:
    """The singular-value figure once it shows ``n`` curves."""
    fig = lines(d, "#tok-sv-graph")
    return fig if fig and len(fig["data"]) == n else None


@pytest.mark.parametrize("state", ["out", "attn"])
def test_delta_lines_are_the_apis_half_diagonal(server: Server, page: WebDriver, state: str) -> None:
    d = page
    view = wait_for(lambda: demo_view(d), "the demo preset", 400)
    image, layer = view.images[view.active], int(view.layer or 1)
    if state == "attn":
        click(d, "#spc-state input[value='attn']")
    fig = wait_for(lambda: delta_drawn(d, view.models, state), f"the Δ lines of {state}", 300)
    assert "π radians per patch" in fig["xaxis"] and "Δ log amplitude" in fig["yaxis"]
    assert fig["filename"] == f"vitscope_spectrum-delta_{state}_block{layer}"
    for t in fig["data"]:
        m, depth = t["meta"]["model"], t["meta"]["depth"]
        assert 1 <= depth <= layer  # the block the maps show, clipped to the model's depth
        body = answer(server, f"/images/{image}/spectrum", model=m, depth=depth, state=state)
        assert (body["state"], body["depth"]) == (state, depth)
        x_over_pi = [f[1] / math.pi for f in body["frequencies"]]
        if t["meta"]["curve"] == "delta":
            assert t["y"] == body["delta"] and t["y"][0] == 0
            assert t["x"] == pytest.approx(x_over_pi, rel=1e-12, abs=1e-15)
            assert len(t["x"]) == len(body["frequencies"]) >= 2
        else:  # the last bin, marked at the value the depth curve plots
            assert t["symbol"] == "diamond-open"
            assert t["y"] == [body["high_frequency_delta"]]
            assert t["x"] == pytest.approx(x_over_pi[-1:], rel=1e-12)
    graph = d.find_element("css selector", "#spc-delta-graph")
    d.execute_script("arguments[0].scrollIntoView({block: 'end'})", graph)
    screenshot(d, SCREENSHOTS, f"spectrum-delta-{state}", full_page=False)
    if state == "attn":
        click(d, "#spc-state input[value='out']")  # as the other tests expect the page


def test_singular_value_curves_are_the_apis(server: Server, page: WebDriver) -> None:
    d = page
    view = wait_for(lambda: demo_view(d), "the demo preset", 400)
    layer = int(view.layer or 1)
    click(d, "#tok-toggle")
    fig = wait_for(lambda: sv_drawn(d, len(view.models)), "the singular-value curves", 400)
    assert fig["ytype"] == "log" and fig["yaxis"] == SV_AXIS
    assert fig["filename"] == f"vitscope_singular-values_block{layer}"
    set_id = make_set(server, view.images)
    assert sorted(t["meta"]["model"] for t in fig["data"]) == sorted(view.models)
    for t in fig["data"]:
        m, at = t["meta"]["model"], t["meta"]["layer"]
        assert 1 <= at <= layer and t["meta"]["method"] == "pca"
        body = answer(server, f"/sets/{set_id}/embeddings", model=m, layer=at, method="pca")
        assert body["images"] == view.images and body["singular_values_centred"] is False
        assert t["y"] == body["singular_values_mean"] and t["y"][0] == pytest.approx(1.0, abs=1e-6)
        assert t["x"] == list(range(1, len(body["singular_values_mean"]) + 1))
        assert len(body["singular_values_largest"]) == len(view.images)
    graph = d.find_element("css selector", "#tok-sv-graph")
    d.execute_script("arguments[0].scrollIntoView({block: 'end'})", graph)
    screenshot(d, SCREENSHOTS, "tokens-singular-values", full_page=False)
