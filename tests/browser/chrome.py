"""Headless Chromium from Debian's ``chromium`` + ``chromium-driver``, driven by Selenium (tests and bench).

Nothing is downloaded: a missing browser is an error that says how to install it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "install Debian's browser with: apt-get update && apt-get install -y chromium chromium-driver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--window-size=1440,1000",
)


def missing() -> str | None:
    """Why a browser cannot start here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: {INSTALL_HINT}"
    if not CHROMEDRIVER.exists():
        return f"{CHROMEDRIVER} is missing: {INSTALL_HINT}"
    return None


class Browser:
    """One headless Chromium with its own fresh profile folder, removed on close."""

    def __init__(self, *, width: int = 1440, height: int = 1000, download_dir: Path | None = None) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        problem = missing()
        if problem:
            raise RuntimeError(problem)
        self.profile = Path(tempfile.mkdtemp(prefix="vitscope-chromium-"))
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--window-size={width},{height}")
        options.add_argument(f"--user-data-dir={self.profile}")
        if download_dir is not None:
            options.add_experimental_option(
                "prefs",
                {
                    "download.default_directory": str(download_dir),
                    "download.prompt_for_download": False,
                    "profile.default_content_setting_values.automatic_downloads": 1,
                },
            )
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        self.driver.set_page_load_timeout(60)
        self.driver.set_script_timeout(60)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
