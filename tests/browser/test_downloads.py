"""A model without weights, downloaded from the page: the Download button in "more models", its progress bar,
then the model among the runnable ones. The server allows downloads (``VITSCOPE_ALLOW_DOWNLOADS=1``); its hub
is a local stand-in (``tests.browser.fakehub``), so nothing leaves the machine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from tests.browser.chrome import Browser
from tests.browser.conftest import SCREENSHOTS
from tests.browser.fakehub import fake_hub
from tests.browser.helpers import screenshot, wait_for
from tests.browser.serverproc import Server, running_server

pytestmark = pytest.mark.browser

MODEL = "dino-vit-s16"  # from the hub (timm/...), not in the test server's models cache


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    with fake_hub() as h:
        yield h


@pytest.fixture(scope="module")
def download_server(tmp_path_factory: pytest.TempPathFactory, hub: tuple[str, Any]) -> Iterator[Server]:
    env = {"VITSCOPE_ALLOW_DOWNLOADS": "1", "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub[0]}
    with running_server(
        tmp_path_factory.mktemp("vitscope-downloads"), SCREENSHOTS.parent / "browser-download-server.log",
        extra_env=env,
    ) as s:  # fmt: skip
        yield s


def _progress(d: Any) -> dict[str, Any] | None:
    return d.execute_script(
        "const b = Array.from(document.querySelectorAll('progress.pull-bar'))"
        ".find(p => p.id.indexOf(arguments[0]) >= 0);"
        "if (!b) return null; const msg = b.parentElement.querySelector('[role=status]');"
        "return {shown: b.offsetParent !== null, value: b.value, text: msg ? msg.textContent : ''};",
        MODEL,
    )


def test_a_downloaded_model_shows_its_progress_and_becomes_runnable(
    download_server: Server, chromium_ok: None, hub: tuple[str, list[tuple[str, str]]]
) -> None:
    browser = Browser(width=1280, height=1000)
    d = browser.driver
    try:
        d.get(download_server.url + "/?head=mean")
        summary = wait_for(lambda: d.find_element(By.ID, "mdl-more-summary"), "the more-models list")
        d.execute_script("arguments[0].scrollIntoView({block: 'center'})", summary)
        summary.click()
        button = wait_for(
            lambda: d.find_element(
                By.XPATH, f"//li[.//span[@class='model-id' and text()='{MODEL}']]//button[text()='Download']"
            ),
            f"the Download button of {MODEL}",
        )
        assert not d.find_elements(By.CSS_SELECTOR, f"input[type=checkbox][value='{MODEL}']")
        button.click()
        during = wait_for(lambda: (p := _progress(d)) and p["shown"] and p, "the progress bar", timeout=60)
        assert 0.0 <= float(during["value"]) <= 1.0
        # The job measures the bytes written so far (against the catalogue's size): it moves before the end.
        moving = wait_for(
            lambda: [
                j for j in httpx.get(f"{download_server.api}/jobs", timeout=10).json()["jobs"]
                if j["kind"] == "pull" and j["status"] == "running" and 0 < j["done"] < j["total"]
            ],
            "a download job part way",
            timeout=60,
            every=0.1,
        )  # fmt: skip
        assert moving[0]["total"] > 24 * 2**20
        screenshot(d, SCREENSHOTS, "20-download-progress", full_page=False)
        wait_for(
            lambda: d.find_elements(By.CSS_SELECTOR, f"input[type=checkbox][value='{MODEL}']"),
            f"{MODEL} among the runnable models",
            timeout=60,
        )
        assert any(method == "GET" and MODEL.split("-")[0] in path for method, path in hub[1]), hub[1]
    finally:
        browser.close()
