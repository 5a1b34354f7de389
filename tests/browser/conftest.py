"""Fixtures of the browser tests: the real server (``vitscope serve``) in a subprocess, one headless Chromium.

See ``serverproc`` for the server (own models cache with a tiny imported test checkpoint, two offline models).
Nothing is installed here: without Debian's ``chromium`` and ``chromium-driver`` the tests fail and say how to
install them (``.ci/run`` does, through ``make test``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import chrome
from tests.browser.serverproc import REPO, Server, running_server

SCREENSHOTS = REPO / "artifacts" / "screenshots"
CUE_CONFLICT = REPO.parent / "shared" / "data" / "cue_conflict"


@pytest.fixture(scope="session")
def chromium_ok() -> None:
    problem = chrome.missing()
    if problem:
        pytest.fail(f"browser tests need Debian's Chromium: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        tmp_path_factory.mktemp("vitscope-server"), SCREENSHOTS.parent / "browser-server.log"
    ) as s:
        yield s


@pytest.fixture(scope="session")
def browser(chromium_ok: None) -> Iterator[chrome.Browser]:
    b = chrome.Browser(width=1440, height=1000)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def page(server: Server, chromium_ok: None) -> Iterator[WebDriver]:
    """A browser of its own per test module, on the bare address: a new profile, so the demo preset opens."""
    b = chrome.Browser(width=1440, height=1000)
    try:
        b.driver.get(server.url + "/")
        yield b.driver
    finally:
        b.close()


@pytest.fixture(scope="session")
def cue_image() -> Path:
    if not CUE_CONFLICT.is_dir():
        pytest.fail(
            f"{CUE_CONFLICT} is missing: the browser tests read a real image from there", pytrace=False
        )
    images = sorted((CUE_CONFLICT / "cat").glob("*.png")) or sorted(CUE_CONFLICT.rglob("*.png"))
    return images[0]
