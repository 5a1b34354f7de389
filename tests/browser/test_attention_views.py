"""The attention panel's rollout toggle, its second query and its token-norm maps in headless Chromium against
the real server with the demo models: every map drawn is the API's numbers for what its title says (rollout
through the block, the second query's patch, the norms at the block), and a permalink brings both queries and
the rollout back."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from app.components.models import DEMO_MODELS
from app.state import Query, ViewState
from tests.browser.conftest import SCREENSHOTS
from tests.browser.helpers import att_col, click_patch, heatmap, screenshot, view, wait_for, written
from tests.browser.serverproc import Server

pytestmark = pytest.mark.browser
N = len(DEMO_MODELS)

TITLE_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
return gd && gd.layout && gd.layout.title ? String(gd.layout.title.text || '') : null;
"""
NORMS_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.data || !gd.data.length) return null;
return JSON.stringify({z: gd.data[0].z, meta: gd.layout.meta, shapes: (gd.layout.shapes || []).map(
  s => [s.x0, s.y0])});
"""


def row2(index: int) -> str:
    """The CSS selector of column ``index`` of the second query's row."""
    return f"#att-grid2 > .att-col:nth-of-type({index + 1})"


def norms_col(index: int) -> str:
    return f"#att-norms-grid > .norms-col:nth-of-type({index + 1})"


def maps(d: WebDriver, column: Any, **want: Any) -> list[dict[str, Any]] | None:
    """Every column's drawn map (``column(i)`` its selector) when each one's meta has ``want``."""
    drawn = [heatmap(d, column(i)) for i in range(N)]
    if not all(drawn) or any(m["meta"].get(k) != v for m in drawn if m for k, v in want.items()):
        return None
    return drawn  # type: ignore[return-value]


def api_map(server: Server, meta: dict[str, Any]) -> Any:
    params = {"model": meta["model"], "layer": meta["layer"], "head": meta["head"], "query": meta["query"]}
    if meta.get("rollout"):
        params["rollout"] = "true"
    r = httpx.get(f"{server.api}/images/{meta['image']}/attention", params=params, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["map"]


def with_query2(d: WebDriver) -> ViewState | None:
    v = view(d)
    return v if v.query2 is not None else None


def title(d: WebDriver, selector: str) -> str:
    return str(d.execute_script(TITLE_JS, selector) or "")


def test_rollout_toggle_draws_the_apis_rollout_maps(server: Server, page: WebDriver) -> None:
    d = page
    wait_for(lambda: maps(d, att_col), "the demo's maps", 400)
    assert not wait_for(lambda: written(d), "the view in the address bar").rollout
    d.find_element(By.CSS_SELECTOR, "#att-rollout input[type=checkbox]").click()
    rolled = wait_for(lambda: maps(d, att_col, rollout=True), "the rollout maps", 120)
    for i, m in enumerate(rolled):
        assert m["meta"]["head"] == "mean"
        assert m["z"] == api_map(server, m["meta"])
        assert f"rollout to block {m['meta']['layer']}" in title(d, att_col(i))
    assert wait_for(lambda: view(d).rollout, "rollout=1 in the address")
    # a click goes through the page's script: the new query's rollout maps, the API's numbers
    click_patch(d, att_col(0), 5, 2)
    grid = tuple(rolled[0]["meta"]["grid"])
    query = Query.at_patch(5, 2, (grid[0], grid[1])).index((grid[0], grid[1]))
    clicked = wait_for(lambda: maps(d, att_col, rollout=True, query=query), "the clicked query's rollout", 60)
    for m in clicked:
        assert m["z"] == api_map(server, m["meta"])
    # and back off: the maps of the block itself
    d.find_element(By.CSS_SELECTOR, "#att-rollout input[type=checkbox]").click()
    plain = wait_for(lambda: maps(d, att_col, rollout=False, query=query), "the block's maps", 120)
    assert plain[0]["z"] == api_map(server, plain[0]["meta"]) and plain[0]["z"] != clicked[0]["z"]


def test_second_query_row_and_its_permalink(server: Server, page: WebDriver) -> None:
    d = page
    first = wait_for(lambda: maps(d, att_col), "the maps", 400)
    assert not d.find_element(By.ID, "att-row2").is_displayed()
    d.find_element(By.CSS_SELECTOR, "#att-rollout input[type=checkbox]").click()
    wait_for(lambda: maps(d, att_col, rollout=True), "the rollout maps", 120)
    grid = (first[0]["meta"]["grid"][0], first[0]["meta"]["grid"][1])
    before = view(d).query
    click_patch(d, att_col(1), 1, 6, shift=True)  # Shift+click: the second query, the first stays
    second = Query.at_patch(1, 6, grid).index(grid)
    row = wait_for(lambda: maps(d, row2, query=second, rollout=True), "the second row", 120)
    for i, m in enumerate(row):
        assert m["z"] == api_map(server, m["meta"])
        assert "2nd query" in title(d, row2(i))
    state = wait_for(lambda: with_query2(d), "query2 in the address")
    assert state.query == before and state.query2 is not None and state.query2.index(grid) == second
    assert d.find_element(By.ID, "att-q2-row").get_attribute("value") == "1"
    # the keyboard: row and col boxes, then Enter
    box = d.find_element(By.ID, "att-q2-row")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("6", Keys.ENTER)
    moved = Query.at_patch(6, 6, grid).index(grid)
    row = wait_for(lambda: maps(d, row2, query=moved, rollout=True), "the second row at (6, 6)", 120)
    assert all(m["z"] == api_map(server, m["meta"]) for m in row)
    d.find_element(By.ID, "att-q2-cls").click()
    row = wait_for(lambda: maps(d, row2, query="cls", rollout=True), "the second row for CLS", 120)
    assert all(m["z"] == api_map(server, m["meta"]) for m in row)
    screenshot(d, SCREENSHOTS, "attention-second-query", full_page=False)
    # the permalink brings back both queries and the rollout
    link = d.find_element(By.ID, "ctl-permalink").get_attribute("value")
    assert link and "query2=cls" in link and "rollout=1" in link
    click_patch(d, att_col(0), 0, 0)
    wait_for(lambda: view(d).query.index(grid) == 0, "another first query")
    d.get(link)
    linked = ViewState.from_search("?" + link.split("?", 1)[1])
    want = linked.query.index(grid)
    back = wait_for(lambda: maps(d, att_col, rollout=True, query=want), "the linked first row", 180)
    again = wait_for(lambda: maps(d, row2, rollout=True, query="cls"), "the linked second row", 180)
    assert back[0]["z"] == api_map(server, back[0]["meta"]) and again[0]["z"] == api_map(
        server, again[0]["meta"]
    )
    d.find_element(By.ID, "att-q2-off").click()
    wait_for(lambda: not d.find_element(By.ID, "att-row2").is_displayed(), "the second row hidden", 60)
    assert wait_for(lambda: view(d).query2 is None and "query2" not in d.current_url, "no query2 in the link")


def all_norms(d: WebDriver) -> list[dict[str, Any]] | None:
    figs = [norms(d, i) for i in range(N)]
    return [f for f in figs if f] if all(figs) else None


def norms(d: WebDriver, index: int) -> dict[str, Any] | None:
    raw = d.execute_script(NORMS_JS, norms_col(index))
    return json.loads(raw) if raw else None


def test_token_norm_maps_are_the_apis(server: Server, page: WebDriver) -> None:
    d = page
    wait_for(lambda: maps(d, att_col), "the maps", 400)
    toggle = d.find_element(By.ID, "att-norms-toggle")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", toggle)
    toggle.click()
    state = view(d)
    image, layer = state.images[state.active], int(state.layer or 1)
    drawn = wait_for(lambda: all_norms(d), "the token-norm maps", 180)
    for i, fig in enumerate(drawn):
        model = fig["meta"]["model"]
        r = httpx.get(
            f"{server.api}/images/{image}/token_norms", params={"model": model, "layer": layer}, timeout=60
        )
        body = r.json()
        assert r.status_code == 200 and fig["meta"]["layer"] == layer
        assert fig["z"] == body["map"]
        patch = 4  # the demo models: 32 px in 4 px patches
        outlined = sorted((int(y) // patch) * body["grid"][1] + int(x) // patch for x, y in fig["shapes"])
        assert outlined == body["outliers"]
        side = d.find_element(By.CSS_SELECTOR, f"{norms_col(i)} .norms-side").text
        assert [p["label"] for p in body["prefix"]] == ["cls"]  # the demo models: CLS, no registers
        assert f"cls {body['prefix'][0]['norm']:.4g}" in side.replace("\n", " ")
        assert "register" not in side
    assert wait_for(lambda: "norms" in view(d).panels, "open=norms in the address")
    screenshot(d, SCREENSHOTS, "attention-token-norms", full_page=False)
