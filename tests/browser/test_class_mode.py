"""A class's server in headless Chromium: password login, class mode (gallery only, preloaded models), logout.

Its own `vitscope serve` with an API token, the UI's password mode and class mode (see ``serverproc``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from tests.browser.chrome import Browser
from tests.browser.conftest import SCREENSHOTS
from tests.browser.helpers import att_col, heatmap, screenshot, tick_model, wait_for
from tests.browser.serverproc import BASELINE_MODEL, TEST_MODEL, Server, running_server

pytestmark = pytest.mark.browser

PASSWORD = "browser-test class pw"
CLASS_ENV = {
    "VITSCOPE_CLASS_MODE": "true",
    "VITSCOPE_API_TOKEN": "browser-test-token-0123456789",
    "VITSCOPE_UI_AUTH": "password",
    "VITSCOPE_UI_PASSWORD": PASSWORD,
}


@pytest.fixture(scope="module")
def class_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        tmp_path_factory.mktemp("vitscope-class"), SCREENSHOTS.parent / "browser-class-server.log",
        extra_env=CLASS_ENV,
    ) as s:  # fmt: skip
        yield s


def _log_in(d: Any, password: str) -> None:
    field = wait_for(lambda: d.find_element(By.ID, "password"), "the password field")
    field.clear()
    field.send_keys(password)
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def test_class_mode_behind_the_class_password(class_server: Server, browser: Browser) -> None:
    d = browser.driver
    d.delete_all_cookies()
    d.get(class_server.url + "/?layer=2")
    wait_for(lambda: "_vitscope/login" in d.current_url, "the login page")
    _log_in(d, "not the password")
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, ".error"), "the wrong-password message")
    assert "not the class password" in d.find_element(By.CSS_SELECTOR, ".error").text
    _log_in(d, PASSWORD)
    wait_for(lambda: d.find_elements(By.ID, "img-panel"), "the page after logging in")
    assert d.current_url.startswith(class_server.url + "/?") and "layer=2" in d.current_url

    # Class mode: no drop zone and no file field; the gallery and the preloaded models only.
    assert not d.find_elements(By.ID, "img-upload") and not d.find_elements(By.ID, "img-upload-input")
    assert not d.find_elements(By.CSS_SELECTOR, "input[type=file]")
    wait_for(lambda: "Class mode" in d.find_element(By.ID, "mdl-status").text, "the model list")
    offered = {
        b.get_attribute("value") for b in d.find_elements(By.CSS_SELECTOR, "#mdl-panel input[type=checkbox]")
    }
    assert offered == {BASELINE_MODEL, TEST_MODEL}

    gallery = wait_for(
        lambda: d.find_element(By.CSS_SELECTOR, "button.gallery-item[title*='Chelsea']"), "the gallery"
    )
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", gallery)
    gallery.click()
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, ".strip-pick.strip-active"), "the gallery image")
    for m in (BASELINE_MODEL, TEST_MODEL):
        tick_model(d, m)
    drawn = wait_for(
        lambda: all(heatmap(d, g) for g in (att_col(0), att_col(1))), "both attention maps", timeout=180
    )
    assert drawn
    screenshot(d, SCREENSHOTS, "10-class-mode")

    # Log out: back to the login page; the browser opening any of the UI's routes gets there again.
    d.find_element(By.CSS_SELECTOR, "a.logout-link").click()
    wait_for(lambda: "_vitscope/login" in d.current_url, "the login page after logging out")
    d.get(class_server.url + "/_dash-layout")
    wait_for(lambda: d.find_elements(By.ID, "password"), "the login page instead of the layout")
