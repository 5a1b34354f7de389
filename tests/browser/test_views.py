"""The first minute and the address bar, in headless Chromium against the real server: the demo preset on a
first visit, permalinks that restore row/col on 8x8 and 14x14 grids, Back/Forward, the layer box's Enter,
``/docs`` without a CDN, no cloud-share button, 404 for unknown paths; screenshots of the first visit at 1280
and 1920 px, light and dark (into ``$VITSCOPE_SCREENS``, default ``artifacts/screenshots/``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from app import gallery
from app.components.models import DEMO_MODELS
from tests.browser.chrome import Browser
from tests.browser.conftest import SCREENSHOTS
from tests.browser.helpers import att_col, click_patch, figure, heatmap, screenshot, wait_for
from tests.browser.serverproc import BASELINE_MODEL, Server

pytestmark = pytest.mark.browser

DEMO_8x8 = DEMO_MODELS[0]  # 32 px, patch 4: an 8x8 grid
SCREENS = Path(os.environ.get("VITSCOPE_SCREENS") or SCREENSHOTS)


def drawn(driver: WebDriver, n: int) -> list[dict[str, Any]] | None:
    maps = [heatmap(driver, att_col(i)) for i in range(n)]
    return maps if all(maps) else None  # type: ignore[return-value]


def drawn_where(driver: WebDriver, n: int, **want: Any) -> list[dict[str, Any]] | None:
    maps = drawn(driver, n)
    if not maps:
        return None
    ok = all(all(m["meta"].get(k) == v[i] for k, v in want.items()) for i, m in enumerate(maps))
    return maps if ok else None


def boxes(driver: WebDriver) -> tuple[str | None, str | None]:
    return (
        driver.find_element(By.ID, "ctl-row").get_attribute("value"),
        driver.find_element(By.ID, "ctl-col").get_attribute("value"),
    )


def set_dark(driver: WebDriver, dark: bool) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]},
    )


@pytest.fixture(scope="module")
def fresh(chromium_ok: None) -> Iterator[Browser]:
    """A browser that has never seen the page (its own new profile: no localStorage)."""
    b = Browser(width=1280, height=900)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def cat_id(server: Server) -> str:
    data, name = gallery.read(gallery.DEMO_IMAGES[0])
    r = httpx.post(f"{server.api}/images", files={"file": (name, data, "image/png")}, timeout=60)
    r.raise_for_status()
    return str(r.json()["id"])


def test_first_visit_loads_the_demo_preset(server: Server, fresh: Browser) -> None:
    d = fresh.driver
    d.get(server.url + "/")
    maps = wait_for(lambda: drawn(d, len(DEMO_MODELS)), "the demo's attention maps", timeout=240)
    assert [m["meta"]["model"] for m in maps] == list(DEMO_MODELS)
    assert all(m["meta"]["grid"] == [8, 8] for m in maps), "the demo models see 32 px in 4 px patches"
    strip = d.find_elements(By.CSS_SELECTOR, ".strip-pick")
    assert len(strip) == len(gallery.DEMO_IMAGES)
    assert "texture" in d.find_element(By.ID, "img-strip").text, "the strip names the cue-conflict images"
    assert d.find_element(By.ID, "img-demo").is_displayed()
    assert "images=" in d.current_url and "name=" in d.current_url, "the view is in the address bar"
    # A ready view, not empty axes: the claims strip has its verdicts (so the curves' numbers are in).
    wait_for(
        lambda: d.find_element(By.CSS_SELECTOR, "#crv-claims .claims-tally").text, "the claims", timeout=240
    )
    for width in (1280, 1920):
        for dark in (False, True):
            d.set_window_size(width, 1000)
            set_dark(d, dark)
            d.execute_script("window.scrollTo(0, 0)")
            wait_for(lambda: drawn(d, len(DEMO_MODELS)), "the maps after resizing")
            screenshot(d, SCREENS, f"first-visit-{width}-{'dark' if dark else 'light'}", full_page=True)
    set_dark(d, False)
    d.set_window_size(1280, 900)
    # The background follows the theme.
    set_dark(d, True)
    bg = d.execute_script("return getComputedStyle(document.body).backgroundColor")
    set_dark(d, False)
    assert bg != d.execute_script("return getComputedStyle(document.body).backgroundColor")


def test_later_visits_start_empty_and_the_demo_is_one_click(server: Server, fresh: Browser) -> None:
    d = fresh.driver
    d.get(server.url + "/")
    wait_for(lambda: "Add an image" in d.find_element(By.ID, "att-empty").text, "the empty state's words")
    assert not d.find_elements(By.CSS_SELECTOR, ".strip-pick")
    d.find_element(By.ID, "img-demo").click()
    wait_for(lambda: drawn(d, len(DEMO_MODELS)), "the demo after one click", timeout=180)


@pytest.mark.parametrize(
    ("models", "expect_boxes", "expect_queries"),
    [
        ((DEMO_8x8, BASELINE_MODEL), ("3", "3"), (3 * 8 + 3, 6 * 14 + 6)),
        ((BASELINE_MODEL, DEMO_8x8), ("6", "6"), (6 * 14 + 6, 3 * 8 + 3)),
    ],
)
def test_permalink_restores_row_and_col_on_the_first_columns_grid(
    server: Server,
    browser: Browser,
    cat_id: str,
    models: tuple[str, str],
    expect_boxes: tuple[str, str],
    expect_queries: tuple[int, int],
) -> None:
    """``query=0.4375,0.4375`` is patch (3, 3) of an 8x8 grid and (6, 6) of a 14x14 one."""
    d = browser.driver
    d.get(f"{server.url}/?images={cat_id}&models={','.join(models)}&query=0.4375,0.4375")
    wait_for(lambda: drawn_where(d, 2, query=expect_queries), "the maps of the linked query", timeout=180)
    wait_for(lambda: boxes(d) == expect_boxes, f"row/col {expect_boxes}", timeout=30)
    hint = d.find_element(By.ID, "ctl-query-hint").text
    grid = "8x8" if models[0] == DEMO_8x8 else "14x14"
    assert grid in hint and models[0] in hint, hint
    assert "query=0.4375,0.4375" in d.current_url, "restoring does not move the query"


def test_back_and_forward_step_through_the_views(server: Server, browser: Browser, cat_id: str) -> None:
    d = browser.driver
    d.get(f"{server.url}/?images={cat_id}&models={DEMO_8x8},{BASELINE_MODEL}&query=cls&opacity=0.45")
    wait_for(lambda: drawn_where(d, 2, query=("cls", "cls")), "the CLS maps")
    fig = figure(d, att_col(0))
    assert fig and abs(fig["data"][0]["opacity"] - 0.45) < 1e-6, "the linked opacity"
    # Open the address the page wrote (its own canonical form): Back to it must still be heard.
    d.get(d.current_url)
    wait_for(lambda: drawn_where(d, 2, query=("cls", "cls")), "the CLS maps of the canonical address")
    start = d.current_url
    click_patch(d, att_col(0), 1, 2)
    wait_for(lambda: drawn_where(d, 2, query=(1 * 8 + 2, 2 * 14 + 4)), "the maps of patch (1, 2)")
    wait_for(lambda: d.current_url != start, "a new address")
    clicked = d.current_url
    box = d.find_element(By.CSS_SELECTOR, "#ctl-layer input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("2", Keys.ENTER)  # the layer box takes Enter
    wait_for(lambda: drawn_where(d, 2, layer=(2, 2)), "block 2 after Enter in the layer box")
    wait_for(lambda: "layer=2" in d.current_url, "the layer in the address")
    d.back()
    wait_for(lambda: d.current_url == clicked, "Back: the clicked view's address")
    wait_for(lambda: drawn_where(d, 2, query=(1 * 8 + 2, 2 * 14 + 4), layer=(12, 12)), "Back: its maps")
    d.back()
    wait_for(lambda: d.current_url == start, "Back again: the first view")
    wait_for(lambda: drawn_where(d, 2, query=("cls", "cls")), "Back again: the CLS maps")
    assert d.current_url.startswith(server.url), "Back stays in the app"
    d.forward()
    wait_for(lambda: drawn_where(d, 2, query=(1 * 8 + 2, 2 * 14 + 4)), "Forward: the clicked view again")


def test_no_cloud_share_button(server: Server, browser: Browser, cat_id: str) -> None:
    d = browser.driver
    d.get(f"{server.url}/?images={cat_id}&models={DEMO_8x8},{BASELINE_MODEL}")
    wait_for(lambda: drawn(d, 2), "two maps")
    gd = d.find_element(By.CSS_SELECTOR, f"{att_col(0)} .js-plotly-plot")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", gd)
    buttons = wait_for(
        lambda: d.execute_script(
            "return Array.from(document.querySelectorAll('.modebar-btn')).map("
            "b => (b.getAttribute('data-title') || '') + '|' + (b.getAttribute('data-attr') || ''))"
        ),
        "the toolbars' buttons",
    )
    assert buttons, "the maps have a toolbar"
    assert not [b for b in buttons if "cloud" in b.lower() or "chart studio" in b.lower()], buttons
    # The map's own camera would save under a fixed name; its export bar names files after the view.
    removed = d.execute_script("return arguments[0]._context.modeBarButtonsToRemove", gd)
    assert "toImage" in removed, removed
    configs = d.execute_script(
        "return Array.from(document.querySelectorAll('.js-plotly-plot')).map(g => g._context.showSendToCloud)"
    )
    assert configs and not any(configs)


def test_docs_work_without_a_cdn(server: Server, browser: Browser) -> None:
    d = browser.driver
    d.get(server.url + "/docs")
    title = wait_for(lambda: d.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text, "Swagger UI")
    assert "vitscope" in title
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, ".opblock"), "the routes")
    loaded = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(u.startswith(server.url) for u in loaded), "every file from this server"


def test_unknown_paths_are_404(server: Server) -> None:
    r = httpx.get(server.url + "/no-such-page", timeout=30)
    assert r.status_code == 404 and "Not found" in r.text
    assert httpx.get(server.url + "/", timeout=30).status_code == 200


def test_a_hovered_token_outlines_its_patch_on_the_map(server: Server, browser: Browser, cat_id: str) -> None:
    """The token 2D view's hover names the patch; the patch is outlined on that model's attention map."""
    d = browser.driver
    d.get(f"{server.url}/?images={cat_id}&models={DEMO_8x8},{BASELINE_MODEL}&open=tokens")
    wait_for(lambda: drawn(d, 2), "two maps")
    found = wait_for(
        lambda: d.execute_script(
            "const gd = document.querySelector('#tok-graph .js-plotly-plot');"
            "if (!gd || !gd.data || !gd.data.length || !gd._fullLayout) return null;"
            "const i = gd.data.findIndex(t => ((t.customdata || [])[0] || [])[4] === arguments[0]);"
            "if (i < 0) return null;"
            "gd.scrollIntoView({block: 'center'});"
            "const t = gd.data[i], fl = gd._fullLayout, r = gd.getBoundingClientRect();"
            "return [t.customdata[5], fl.xaxis._offset + fl.xaxis.d2p(t.x[5]) - r.width / 2,"
            "        fl.yaxis._offset + fl.yaxis.d2p(t.y[5]) - r.height / 2];",
            DEMO_8x8,
        ),
        "the token view of the set",
        timeout=180,
    )
    point, dx, dy = found
    gd = d.find_element(By.CSS_SELECTOR, "#tok-graph .js-plotly-plot")
    ActionChains(d).move_to_element_with_offset(gd, int(round(dx)), int(round(dy))).perform()  # a real hover
    _token, row, col, image, model = point
    assert image == cat_id and model == DEMO_8x8 and 0 <= row < 8 and 0 <= col < 8
    hover = d.execute_script(
        "const h = document.querySelector('#tok-graph .hoverlayer'); return h ? h.textContent : '';"
    )
    assert f"row {row}" in hover and f"col {col}" in hover, hover
    shape = wait_for(
        lambda: d.execute_script(
            "const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');"
            "return (gd.layout.shapes || []).find(s => s.name === 'token-hover') || null;",
            att_col(0),
        ),
        "the outlined patch on the 8x8 map",
    )
    assert (shape["x0"], shape["y0"]) == (col * 4, row * 4), shape
    other = d.execute_script(
        "const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');"
        "return (gd.layout.shapes || []).filter(s => s.name === 'token-hover').length;",
        att_col(1),
    )
    assert other == 0, "only the hovered token's model"
