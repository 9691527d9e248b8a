"""Headless Chromium for the report and studio pages: Debian's (scripts/setup.sh installs it) or Playwright's."""

import shutil

import pytest


def browser_path():
    return shutil.which("chromium") or shutil.which("chromium-browser")  # None: Playwright's own build


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e .[dev] (scripts/setup.sh)")
    with sync_api.sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=browser_path(), args=["--no-sandbox"])
        except sync_api.Error as err:
            pytest.fail(f"no headless Chromium ({str(err).splitlines()[0]}): run scripts/setup.sh")
        yield chromium
        chromium.close()
