"""The real site in a real browser: daphne serving mnistsite on 127.0.0.1, driven by Playwright
through Debian's Chromium (/usr/bin/chromium). Skipped when that browser is not installed."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import free_port, stop, wait_for_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT_S = 60


def pytest_collection_modifyitems(config, items):
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(reason=f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    for item in items:
        if Path(item.fspath).is_relative_to(Path(__file__).parent):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def site_url(tmp_path_factory) -> Iterator[str]:
    """A fresh site (own database, media and static folders) served by daphne; its base URL."""
    root = tmp_path_factory.mktemp("site")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mnistsite.settings",
        "DATABASE_URL": f"sqlite:///{root / 'db.sqlite3'}",
        "MEDIA_ROOT": str(root / "media"),
        "STATIC_ROOT": str(root / "static"),
        "PREDICT_THROTTLE": "off",
        "DEBUG": "true",
        "PYTHONUNBUFFERED": "1",
    }
    for command in (["migrate", "--noinput"], ["collectstatic", "--noinput"]):
        subprocess.run(
            [sys.executable, "manage.py", *command, "--verbosity", "0"],
            cwd=REPO, env=env, check=True, capture_output=True, timeout=120,
        )
    port = free_port()
    log = root / "daphne.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mnistsite.serve", "ws", "--port", str(port)],  # what `make run` runs
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, process, timeout=SERVER_START_TIMEOUT_S, name="daphne", log=log.read_text)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _new_page(browser, site_url: str, **context_args):
    context = browser.new_context(base_url=site_url, **context_args)
    context.set_default_timeout(15_000)
    page = context.new_page()
    # Uncaught exceptions in the page's scripts; a test asserts there are none.
    page.js_errors = []
    page.on("pageerror", lambda error: page.js_errors.append(str(error)))
    return page


@pytest.fixture
def page(browser, site_url):
    """The drawing page, loaded, in a desktop-sized window with a mouse."""
    page = _new_page(browser, site_url, viewport={"width": 1100, "height": 900})
    page.goto("/")
    yield page
    page.context.close()


@pytest.fixture
def touch_page(browser, site_url):
    """The drawing page on a phone-sized touch screen."""
    page = _new_page(browser, site_url, viewport={"width": 390, "height": 844}, has_touch=True,
                     is_mobile=True, device_scale_factor=2)
    page.goto("/")
    yield page
    page.context.close()
