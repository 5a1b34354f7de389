"""Reading the page in a real browser: Plotly figures as drawn (``gd.data``, ``gd.layout``), waits, clicks."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from app.state import ViewState

T = TypeVar("T")

FIGURE_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.data || !gd.layout) return null;
return JSON.stringify({data: gd.data.map(t => ({type: t.type, z: t.z || null, x: t.x || null, y: t.y || null,
                                                opacity: t.opacity})),
                       layout: {meta: gd.layout.meta || null, shapes: gd.layout.shapes || [],
                                images: (gd.layout.images || []).map(i => ({len: (i.source || "").length})),
                               }});
"""


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 90.0, every: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # noqa: BLE001 - the page may be mid-render: try again
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}"[:2000])


def view(d: WebDriver) -> ViewState:
    """The view the address bar holds (the page writes it there)."""
    return ViewState.from_search("?" + d.current_url.split("?", 1)[1])


def written(d: WebDriver) -> ViewState | None:
    """The view once the page has written it to the address bar: with warm caches the panels can draw
    before it does, and a control changed before then is set back by the address's older view."""
    v = view(d)
    return v if v.images and v.models else None


def att_col(index: int) -> str:
    """The CSS selector of attention column ``index`` (its graph: ``{"type": "att-graph", "index": i}``)."""
    return f"#att-grid > .att-col:nth-of-type({index + 1})"  # the first query's row (#att-grid2: the second)


def _css(graph: str) -> str:
    """A graph given by its id (``crv-graph``) or a CSS selector (``att_col(0)``)."""
    return graph if graph.startswith((".", "#", "[")) else "#" + graph


def figure(driver: WebDriver, graph_id: str) -> dict[str, Any] | None:
    raw = driver.execute_script(FIGURE_JS, _css(graph_id))
    return json.loads(raw) if raw else None


def heatmap(driver: WebDriver, graph_id: str) -> dict[str, Any] | None:
    """The drawn attention map of one column: its ``meta`` and ``z``, or None while there is none."""
    fig = figure(driver, graph_id)
    if not fig or not fig["data"] or fig["data"][0]["type"] != "heatmap" or not fig["data"][0]["z"]:
        return None
    return {"meta": fig["layout"]["meta"], "z": fig["data"][0]["z"], "images": fig["layout"]["images"]}


def upload(driver: WebDriver, path: Path) -> None:
    field = driver.find_element(By.CSS_SELECTOR, "#img-upload-input")
    field.send_keys(str(path))


def tick_model(driver: WebDriver, model_id: str) -> None:
    box = wait_for(
        lambda: driver.find_element(By.CSS_SELECTOR, f"input[type=checkbox][value='{model_id}']"),
        f"the checkbox of {model_id}",
    )
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    if not box.is_selected():
        box.click()


def click_patch(driver: WebDriver, graph_id: str, row: int, col: int, *, shift: bool = False) -> None:
    """Click the centre of patch (row, col) of an attention map, like a user with a mouse (holding Shift)."""
    gd = driver.find_element(By.CSS_SELECTOR, f"{_css(graph_id)} .js-plotly-plot")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", gd)
    time.sleep(0.2)
    x, y, cx, cy = driver.execute_script(
        """
        const gd = arguments[0], P = gd.layout.meta.patch, fl = gd._fullLayout;
        const r = gd.getBoundingClientRect();
        return [r.left + fl.xaxis._offset + fl.xaxis.l2p((arguments[2] + 0.5) * P),
                r.top + fl.yaxis._offset + fl.yaxis.l2p((arguments[1] + 0.5) * P),
                r.left + r.width / 2, r.top + r.height / 2];
        """,
        gd,
        row,
        col,
    )
    chain = ActionChains(driver).move_to_element_with_offset(gd, int(round(x - cx)), int(round(y - cy)))
    (chain.key_down(Keys.SHIFT).click().key_up(Keys.SHIFT) if shift else chain.click()).perform()


def screenshot(driver: WebDriver, folder: Path, name: str, *, full_page: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    if full_page:
        size = driver.get_window_size()
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], min(max(int(height), 800), 6000))
        time.sleep(0.4)
        driver.save_screenshot(str(path))
        driver.set_window_size(size["width"], size["height"])
    else:
        driver.save_screenshot(str(path))
    return path
