"""The Dash UI in headless Chromium against the real server: upload, compare, click, slide, permalink, errors.

Run with ``pytest -m browser tests/browser``; screenshots go to ``artifacts/screenshots/`` (gitignored).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from app.state import ViewState
from tests.browser.chrome import Browser
from tests.browser.conftest import SCREENSHOTS
from tests.browser.helpers import (
    att_col,
    click_patch,
    figure,
    heatmap,
    screenshot,
    tick_model,
    upload,
    wait_for,
)
from tests.browser.serverproc import BASELINE_MODEL, TEST_MODEL, Server

pytestmark = pytest.mark.browser

MODELS = (BASELINE_MODEL, TEST_MODEL)
GRAPHS = (att_col(0), att_col(1))


def maps(driver: WebDriver) -> list[dict[str, Any]] | None:
    drawn = [heatmap(driver, g) for g in GRAPHS]
    return drawn if all(drawn) else None  # type: ignore[return-value]


def maps_where(
    driver: WebDriver, pred: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]] | None:
    drawn = maps(driver)
    return drawn if drawn and pred(drawn) else None


def flat(z: list[list[float]]) -> list[float]:
    return [v for row in z for v in row]


def curve_marker(driver: WebDriver) -> float | None:
    fig = figure(driver, "crv-graph")
    if not fig or not fig["data"] or not fig["layout"]["shapes"]:
        return None
    return float(fig["layout"]["shapes"][0]["x0"])


@pytest.fixture(scope="module")
def compare(server: Server, browser: Browser, cue_image: Path) -> dict[str, Any]:
    """The page with one real image uploaded and the two offline models ticked, both maps drawn."""
    d = browser.driver
    d.get(server.url + "/?head=mean")  # a link, not the bare address: no demo preset
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#img-upload-input"), "the upload field")
    upload(d, cue_image)
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, ".strip-pick.strip-active"), "the uploaded image")
    for m in MODELS:
        tick_model(d, m)
    drawn = wait_for(lambda: maps(d), "two attention maps", timeout=180)
    return {"image": cue_image, "first": drawn}


def test_upload_and_two_models_draw_both_maps(browser: Browser, compare: dict[str, Any]) -> None:
    d = browser.driver
    drawn = compare["first"]
    assert [m["meta"]["model"] for m in drawn] == list(MODELS)
    for m in drawn:
        h, w = m["meta"]["grid"]
        values = flat(m["z"])
        assert len(m["z"]) == h and len(m["z"][0]) == w and (h, w) == (14, 14)
        assert abs(sum(values) - 1.0) < 1e-3, "rows renormalized over patches (A1) sum to 1"
        assert max(values) > min(values), "a map with data, not a constant"
        assert m["images"] and m["images"][0]["len"] > 1000, "the image is drawn under the map"
        assert m["meta"]["query"] == "cls"
    assert wait_for(lambda: curve_marker(d), "the per-layer curves")
    status = d.find_element(By.ID, "mdl-status").text
    assert "ready to run" in status
    screenshot(d, SCREENSHOTS, "01-two-models")


def test_click_another_patch_changes_both_maps(browser: Browser, compare: dict[str, Any]) -> None:
    d = browser.driver
    before = maps(d)
    assert before
    click_patch(d, GRAPHS[0], 3, 10)
    after = wait_for(
        lambda: maps_where(d, lambda m: all(x["meta"]["query"] == 3 * 14 + 10 for x in m)),
        "both maps for query patch (3, 10)",
    )
    for old, new in zip(before, after, strict=True):
        assert flat(old["z"]) != flat(new["z"]), f"{new['meta']['model']}: the map did not change"
    assert d.find_element(By.ID, "ctl-row").get_attribute("value") == "3"
    assert d.find_element(By.ID, "ctl-col").get_attribute("value") == "10"
    assert "query=0.25,0.75" in d.current_url
    screenshot(d, SCREENSHOTS, "02-query-patch", full_page=False)


def test_layer_slider_moves_the_curve_marker(browser: Browser, compare: dict[str, Any]) -> None:
    d = browser.driver
    start = wait_for(lambda: curve_marker(d), "the curves' layer marker")
    thumb = d.find_element(By.CSS_SELECTOR, "#ctl-layer [role=slider]")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", thumb)
    thumb.send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT, Keys.ARROW_LEFT)  # the keyboard reaches it too
    target = start - 3
    wait_for(lambda: curve_marker(d) == target, f"the marker at block {target:g}")
    baseline = wait_for(lambda: maps_where(d, lambda m: m[0]["meta"]["layer"] == target), "that block's maps")
    assert baseline[0]["meta"]["model"] == BASELINE_MODEL
    assert f"layer={int(target)}" in d.current_url
    screenshot(d, SCREENSHOTS, "03-layer-moved")


def test_permalink_opens_the_same_view(server: Server, browser: Browser, compare: dict[str, Any]) -> None:
    d = browser.driver
    link = wait_for(lambda: d.find_element(By.ID, "ctl-permalink").get_attribute("value"), "the permalink")
    assert link.startswith(server.url) and link == d.current_url
    state = ViewState.from_search("?" + link.split("?", 1)[1])
    assert state.models == list(MODELS) and len(state.images) == 1
    before = maps(d)
    marker = curve_marker(d)
    assert before and marker
    original = d.current_window_handle
    d.switch_to.new_window("tab")
    try:
        d.get(link)
        after = wait_for(lambda: maps(d), "the maps of the permalink", timeout=120)
        for old, new in zip(before, after, strict=True):
            assert new["meta"] == old["meta"], "same model, layer, head and query"
            assert flat(new["z"]) == pytest.approx(flat(old["z"]), abs=1e-6)
        assert wait_for(lambda: curve_marker(d), "the curves") == marker
        for m in MODELS:
            assert d.find_element(By.CSS_SELECTOR, f"input[type=checkbox][value='{m}']").is_selected()
        assert d.find_element(By.ID, "ctl-row").get_attribute("value") == "3"
        screenshot(d, SCREENSHOTS, "04-permalink")
    finally:
        d.close()
        d.switch_to.window(original)


def test_text_file_upload_shows_the_error_and_the_page_keeps_working(
    browser: Browser, compare: dict[str, Any], tmp_path: Path
) -> None:
    d = browser.driver
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not an image\n")
    upload(d, bad)
    message = wait_for(lambda: d.find_element(By.ID, "img-error").text, "the upload error message")
    assert "notes.txt" in message
    assert len(message) > len("notes.txt: ") + 10, f"the API's words are shown: {message!r}"
    d.execute_script("document.getElementById('img-error').scrollIntoView({block: 'center'})")
    screenshot(d, SCREENSHOTS, "05-upload-error", full_page=False)
    # Still working: the image set is unchanged and a click still redraws both maps.
    assert len(d.find_elements(By.CSS_SELECTOR, ".strip-pick")) == 1
    click_patch(d, GRAPHS[1], 12, 1)
    wait_for(
        lambda: maps_where(d, lambda m: all(x["meta"]["query"] == 12 * 14 + 1 for x in m)),
        "both maps for query patch (12, 1) after the failed upload",
    )


def test_a_large_photo_uploads(browser: Browser, compare: dict[str, Any], tmp_path: Path) -> None:
    """Over 1 MB: the page sends the file itself, not as base64 in a Dash callback (body limits stop that)."""
    import numpy as np
    from PIL import Image

    big = tmp_path / "big-photo.png"
    Image.fromarray((np.random.default_rng(0).random((720, 1000, 3)) * 255).astype("uint8")).save(big)
    assert big.stat().st_size > 2_000_000
    d = browser.driver
    upload(d, big)
    wait_for(lambda: len(d.find_elements(By.CSS_SELECTOR, ".strip-pick")) == 2, "the large photo in the set")
    assert "big-photo.png" in d.find_element(By.ID, "img-strip").text
    assert not d.find_element(By.ID, "img-error").text
