"""The real site in a real browser: mnistsite served as `make run` serves it on 127.0.0.1, driven by Playwright
through Debian's Chromium (/usr/bin/chromium). Skipped when that browser is not installed."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

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
    """A fresh site (own database, media and static folders) served as `make run` does; its base URL."""
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
            [sys.executable, "-m", "mnistsite.serve", "site", "--port", str(port)],  # what `make run` runs
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


# ------------------------------------------------------------------ a site with accounts and a finished run

STAFF = ("phone-staff", "pw-phone-staff-123")
VISITOR = ("phone-visitor", "pw-phone-visitor-123")
PHONE = {"width": 375, "height": 740}
# Users are created by the served site's own settings (its password hasher), then one finished run whose
# results (confusion matrix, per-class accuracy) the dashboard shows, and one labelled drawing for /stats/.
SEED = f"""
import datetime
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from classifier.models import ModelVersion, Prediction
from training.models import TrainingRun
call_command("migrate", interactive=False, verbosity=0)
User = get_user_model()
User.objects.create_superuser({STAFF[0]!r}, "staff@example.com", {STAFF[1]!r})
User.objects.create_user({VISITOR[0]!r}, "visitor@example.com", {VISITOR[1]!r})
matrix = [[975 if true == read else 3 for read in range(10)] for true in range(10)]
finished = timezone.now()
run = TrainingRun.objects.create(
    config={{"arch": "mlp", "epochs": 1, "lr": 0.003, "train": {{"batch_size": 128}}}}, executor="thread",
    status="succeeded", total_epochs=1, epoch=1, step=140, total_steps=140, progress=1.0,
    started_at=finished - datetime.timedelta(seconds=42), finished_at=finished,
    data={{"mnist_train_images": 18000, "drawings": 1}},
    history={{"batches": [{{"step": s, "epoch": 1, "loss": 2.3 / s, "lr": 0.003}} for s in range(1, 141, 10)],
              "epochs": [{{"epoch": 1, "train_accuracy": 0.95, "val_accuracy": 0.96}}]}},
    metrics={{"test_accuracy": 0.9753, "val_accuracy": 0.96, "best_epoch": 1, "confusion_matrix": matrix,
              "per_class_accuracy": [0.975] * 10}},
)
version = ModelVersion.objects.active().first() or ModelVersion.objects.first()
Prediction.objects.create(image="drawings/seed.png", input_pixels=bytes(784), probabilities=[0.1] * 10, digit=3,
                          confidence=0.1, model_version=version, latency_ms=1.0, label=8)
print(run.pk)
"""


@dataclass
class SeededSite:
    url: str
    run_id: int


@pytest.fixture(scope="session")
def seeded_site(tmp_path_factory) -> Iterator[SeededSite]:
    """A fresh site served as `make run` does, with a staff account, a visitor account and a finished training run,
    and no MNIST data (MNIST_ROOT is an empty folder)."""
    from tests.dashboard.servers import daphne, manage, site_env

    root = tmp_path_factory.mktemp("seeded-site")
    (root / "static").mkdir()
    env = site_env(DATABASE_URL=f"sqlite:///{root / 'db.sqlite3'}", MEDIA_ROOT=str(root / "media"),
                   STATIC_ROOT=str(root / "static"), MNIST_ROOT=str(root / "no-mnist"))
    run_id = int(manage("shell", "-c", SEED, env=env).stdout.split()[-1])
    with daphne(env=env, log_path=root / "daphne.log") as site:
        yield SeededSite(url=site.url, run_id=run_id)


def sign_in(page, username: str, password: str) -> None:
    """Sign in through the site's own login page (it takes any active account, staff or not)."""
    page.goto("/account/login/?next=/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: urlsplit(url).path == "/")


@pytest.fixture
def phone(browser, seeded_site):
    """A phone-sized touch screen (375 x 740) on the seeded site, not signed in."""
    page = _new_page(browser, seeded_site.url, viewport=PHONE, has_touch=True, is_mobile=True,
                     device_scale_factor=2)
    yield page
    page.context.close()


@pytest.fixture
def staff_phone(phone):
    """The phone, signed in as staff."""
    sign_in(phone, *STAFF)
    return phone


@pytest.fixture
def visitor_phone(phone):
    """The phone, signed in with an account that is not staff."""
    sign_in(phone, *VISITOR)
    return phone
