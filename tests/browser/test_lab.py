"""The Patch features panel and the frequency lab in headless Chromium against the real server with the demo
models: the PCA colours and the similarity maps drawn are the API's numbers for each model, a click on an
attention map picks the patch, and the frequency lab makes the API's perturbed image, shows it and draws what
moved (each model's curves of the copy minus the source's).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from app.metrics import MOVED_CURVES, curve_change
from app.state import Query, ViewState
from tests.browser.conftest import SCREENSHOTS
from tests.browser.helpers import att_col, click_patch, heatmap, screenshot, view, wait_for, written
from tests.browser.serverproc import Server

pytestmark = pytest.mark.browser

TRACES_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.data || !gd.data.length) return null;
return JSON.stringify(gd.data.map(t => ({type: t.type, name: t.name, z: t.z})));
"""


def traces(d: WebDriver, graph: str) -> list[dict[str, Any]] | None:
    raw = d.execute_script(TRACES_JS, graph)
    return json.loads(raw) if raw else None


def n_traces(d: WebDriver, graph: str, n: int = 3) -> list[dict[str, Any]] | None:
    t = traces(d, graph)
    return t if t and len(t) == n else None


LINES_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.data) return null;
return JSON.stringify(gd.data.map(t => ({name: t.name, xaxis: t.xaxis, x: t.x, y: t.y})));
"""


def n_lines(d: WebDriver, graph: str, n: int) -> list[dict[str, Any]] | None:
    raw = d.execute_script(LINES_JS, graph)
    lines = json.loads(raw) if raw else []
    return lines if len(lines) == n else None


def made_text(d: WebDriver) -> str | None:
    text = str(d.find_element(By.CSS_SELECTOR, "#lab-made").text)
    return text if "Made" in text else None


def showing(d: WebDriver, image: str) -> ViewState | None:
    v = view(d)
    return v if v.images and v.images[v.active] == image else None


def layer_of(d: WebDriver) -> int:
    """The shared block as the page holds it (the permalink's; the input's attribute lags behind React)."""
    return int(view(d).layer or 1)


def test_pca_and_similarity_are_the_apis_numbers(server: Server, page: WebDriver) -> None:
    d = page
    drawn = wait_for(lambda: n_traces(d, "#lab-pca"), "3 PCA pictures", 400)
    state = wait_for(lambda: written(d), "the view in the address bar")
    image = state.images[state.active]
    layer = layer_of(d)
    assert layer > 1  # the demo preset shows a late block
    for trace in drawn:
        assert trace["type"] == "image"
        want = httpx.get(
            f"{server.api}/images/{image}/pca", params={"model": trace["name"], "layer": layer}, timeout=60
        ).json()
        got = [[[round(255 * c) for c in px] for px in row] for row in want["rgb"]]
        assert trace["z"] == got
    first = wait_for(lambda: heatmap(d, att_col(0)), "the first attention map", 300)
    click_patch(d, att_col(0), 2, 3)
    picked = Query.at_patch(2, 3, (len(first["z"]), len(first["z"][0])))  # the place clicked
    sims = wait_for(lambda: n_traces(d, "#lab-sim"), "3 similarity maps", 120)
    for trace in sims:
        grid = (len(trace["z"]), len(trace["z"][0]))
        query = picked.index(grid)
        want = httpx.get(
            f"{server.api}/images/{image}/similarity",
            params={"model": trace["name"], "layer": layer, "query": query},
            timeout=60,
        ).json()
        assert trace["z"] == want["map"]
        row, col = divmod(int(query), grid[1])
        assert abs(trace["z"][row][col] - 1.0) < 1e-3  # the patch itself
    # centred: the maps become the API's centred answers, and the titles say so
    box = d.find_element(By.CSS_SELECTOR, "#lab-centre input")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.click()
    for trace in sims:
        query = picked.index((len(trace["z"]), len(trace["z"][0])))
        want = httpx.get(
            f"{server.api}/images/{image}/similarity",
            params={"model": trace["name"], "layer": layer, "query": query, "centred": "true"},
            timeout=60,
        ).json()
        assert want["map"] != trace["z"]
        wait_for(
            lambda w=want, name=trace["name"]: any(
                t["name"] == name and t["z"] == w["map"] for t in n_traces(d, "#lab-sim") or []
            ),
            f"the centred similarity map of {trace['name']}",
            120,
        )
    titles = d.execute_script(
        "return Array.from(document.querySelectorAll('#lab-sim .annotation-text')).map(a => a.textContent)"
    )
    assert len(titles) == 3 and all("centred tokens · mean to the other patches" in t for t in titles), titles
    panel = d.find_element(By.CSS_SELECTOR, "#lab-panel")
    d.execute_script("arguments[0].scrollIntoView({block: 'start'})", panel)
    screenshot(d, SCREENSHOTS, "lab-patch-features", full_page=False)


def test_frequency_lab_makes_and_shows_the_perturbed_image(server: Server, page: WebDriver) -> None:
    d = page
    wait_for(lambda: n_traces(d, "#lab-pca"), "3 PCA pictures", 400)
    before = wait_for(lambda: written(d), "the view in the address bar")
    source = before.images[before.active]
    d.find_element(By.CSS_SELECTOR, "#lab-kind input[value='band_noise']").click()
    freq = d.find_element(By.CSS_SELECTOR, "#lab-freq")
    freq.clear()
    freq.send_keys("2.5")
    button = d.find_element(By.CSS_SELECTOR, "#lab-make")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    made = wait_for(lambda: made_text(d), "the made note", 120)
    # perturbed at the shorter side the demo models read (32 px CIFAR models), not at 224 px
    size = re.search(r": (\d+)x(\d+) px, the shorter side (\S+) reads", made)
    assert size is not None and size.group(3) in before.models, made
    side = min(int(size.group(1)), int(size.group(2)))
    assert side < 224
    want = httpx.post(
        f"{server.api}/images/{source}/perturb",
        json={"kind": "band_noise", "freq": 2.5, "eps": 0.1, "side": side},
        timeout=60,
    ).json()
    assert f"{want['clipped']:.1%} of the values clipped" in made
    after = wait_for(lambda: showing(d, want["id"]), "the new image shown", 60)
    assert source in after.images
    model = after.models[0]
    pca = httpx.get(
        f"{server.api}/images/{want['id']}/pca", params={"model": model, "layer": layer_of(d)}, timeout=60
    ).json()
    rgb = [[[round(255 * c) for c in px] for px in row] for row in pca["rgb"]]
    wait_for(
        lambda: (t := n_traces(d, "#lab-pca")) and t[0]["name"] == model and t[0]["z"] == rgb,
        "the PCA of the perturbed image",
        300,
    )
    # what moved: each model's curves of the copy minus those of the source, as the API's metrics give them
    lines = wait_for(lambda: n_lines(d, "#lab-moves", 3 * len(after.models)), "the what-moved lines", 300)
    for name in after.models:
        before_m, after_m = (
            httpx.get(f"{server.api}/images/{i}/metrics", params={"model": name}, timeout=60).json()
            for i in (source, want["id"])
        )
        for axis, spec in zip(("x", "x2", "x3"), MOVED_CURVES, strict=True):
            change = curve_change(before_m, after_m, spec)
            assert change is not None
            drawn = [t for t in lines if t["name"] == name and (t["xaxis"] or "x") == axis]
            assert len(drawn) == 1 and drawn[0]["x"] == change.x
            assert drawn[0]["y"] == pytest.approx(change.mean, abs=1e-12)
    said = d.find_element(By.CSS_SELECTOR, "#lab-moves-msg").text
    assert "Δ log amplitude (high frequency): cifar-" in said and "moved the most" in said, said
    graph = d.find_element(By.CSS_SELECTOR, "#lab-moves")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", graph)
    screenshot(d, SCREENSHOTS, "lab-what-moved", full_page=False)


POINT_JS = """
const gd = document.querySelector('#crv-graph .js-plotly-plot');
if (!gd || !gd.data) return null;
const tr = gd.data.find(t => t.name === arguments[0] && t.mode === 'lines+markers'
                             && (t.xaxis || 'x') === 'x');
if (!tr) return null;
const k = Array.from(tr.x).indexOf(arguments[1]);
if (k < 0) return null;
const fl = gd._fullLayout, r = gd.getBoundingClientRect();
return [r.left + fl.xaxis._offset + fl.xaxis.l2p(tr.x[k]), r.top + fl.yaxis._offset + fl.yaxis.l2p(tr.y[k]),
        r.left + r.width / 2, r.top + r.height / 2];
"""


def test_a_click_on_a_curve_shows_that_block_everywhere(server: Server, page: WebDriver) -> None:
    d = page
    state = wait_for(lambda: view(d) if view(d).models else None, "the chosen models")
    model, block = state.models[0], 3
    assert layer_of(d) != block
    gd = wait_for(lambda: d.find_element(By.CSS_SELECTOR, "#crv-graph .js-plotly-plot"), "the curves")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", gd)
    time.sleep(0.3)
    x, y, cx, cy = wait_for(lambda: d.execute_script(POINT_JS, model, block), f"the point of block {block}")
    ActionChains(d).move_to_element_with_offset(gd, int(round(x - cx)), int(round(y - cy))).click().perform()
    wait_for(lambda: layer_of(d) == block, f"the page on block {block}", 60)
    image = view(d).images[view(d).active]
    pca = httpx.get(
        f"{server.api}/images/{image}/pca", params={"model": model, "layer": block}, timeout=60
    ).json()
    rgb = [[[round(255 * c) for c in px] for px in row] for row in pca["rgb"]]
    wait_for(
        lambda: (t := n_traces(d, "#lab-pca")) and t[0]["name"] == model and t[0]["z"] == rgb,
        f"the PCA of block {block}",
        120,
    )
    handle = "return (document.querySelector('#ctl-layer [aria-valuenow]') || {}).ariaValueNow || null;"
    assert wait_for(lambda: d.execute_script(handle), "the slider's handle", 30) == str(block)
