"""The documentation's screenshots, made from the code: ``make screenshots`` (``python -m tests.browser.screenshots``).

A fresh site is served as ``make run`` serves it (as tests/browser/conftest.py starts it), seeded with a staff
account, drawings sent through ``POST /api/predict/`` and labelled with their ``label_key``, and a training run
(a real one through ``POST /api/retrain/`` when ``MNIST_ROOT`` holds MNIST, else a finished one written as a row).
Chromium (/usr/bin/chromium, through Playwright's ``executable_path``) then photographs the drawing page, the
dashboard, the stats page, the review queue and the admin at desktop (1280x800) and phone (375x740) size, and the
pictures are written to docs/images/ as palette PNGs (a few tens of kB each).

The drawings are the pen-drawn development digits when ``STROKES_DEV`` (or ../shared/data/strokes-dev) holds
them, else simple strokes. Not part of the test run: pytest collects ``test_*.py`` only.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, SEED, STAFF, sign_in  # noqa: E402
from tests.dashboard.servers import daphne, manage, site_env  # noqa: E402
from tests.support.drawings import ONE, SEVEN, ZERO, canvas, encode  # noqa: E402

OUT = REPO / "docs" / "images"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
CANVAS_SIZE = 280  # the drawing canvas's own coordinate system
# A seven drawn the way a hand does: a bar, then the stem, with a little wobble.
HAND_SEVEN = [(80, 72), (120, 66), (160, 64), (196, 68), (180, 110), (160, 150), (142, 196), (132, 236)]
# A quick run on a subset when MNIST is there, so the dashboard shows real curves.
RUN_OPTIONS = {"arch": "lenet5", "epochs": 3, "mnist_limit": 12000}


def _post(url: str, payload: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def _get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def _strokes_dir() -> Path | None:
    for candidate in (os.environ.get("STROKES_DEV"), REPO.parent / "shared" / "data" / "strokes-dev"):
        if candidate and (Path(candidate) / "strokes.json.gz").is_file():
            return Path(candidate)
    return None


def _mnist_root() -> Path | None:
    root = os.environ.get("MNIST_ROOT")
    if root and (Path(root) / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file():
        return Path(root)
    return None


def drawings(count: int) -> list[tuple[str, int]]:
    """(base64 PNG data URL, true digit) pairs: pen-drawn digits if available, else simple strokes."""
    strokes = _strokes_dir()
    if strokes is None:
        shapes = [(SEVEN, 7), (ONE, 1), (ZERO, 0)]
        return [(encode(canvas(shapes[i % 3][0])), shapes[i % 3][1]) for i in range(count)]
    from bench.strokes import load_strokes, render, variant_params

    samples = load_strokes(strokes / "strokes.json.gz")
    step = max(1, len(samples) // count)
    out = []
    for n, index in enumerate(range(0, step * count, step)):
        params = variant_params(index, 0, seed=0)
        params["form"] = "transparent"  # what the drawing page sends
        params.pop("rng")  # black ink, as the drawing page draws
        image = render(samples[index], **params)
        out.append((encode(image), int(samples[index]["label"])))
    return out


def _manage(*args: str, env: dict[str, str]) -> str:
    try:
        return manage(*args, env=env).stdout
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"manage.py {args[0]} failed:\n{error.stderr}") from None


def _draw_and_label(site_url: str, pairs: list[tuple[str, int]]) -> None:
    for n, (image, digit) in enumerate(pairs):
        answer = _post(f"{site_url}/api/predict/", {"image": image})
        if n % 3 != 2:  # a third stays unlabelled, for the review queue
            _post(f"{site_url}/api/predictions/{answer['id']}/label/",
                  {"label": digit, "label_key": answer["label_key"]})


def seed(site_url: str, env: dict[str, str]) -> int:
    """Drawings and labels, a run whose candidate then answers in shadow, more drawings; returns the run's id."""
    token = _post(f"{site_url}/api/token/", {"username": STAFF[0], "password": STAFF[1]})["token"]
    pairs = drawings(48)
    _draw_and_label(site_url, pairs[:24])
    if _mnist_root() is None:
        _draw_and_label(site_url, pairs[24:])
        return int(env["SEEDED_RUN"])
    run = _post(f"{site_url}/api/retrain/", RUN_OPTIONS, token)
    deadline = time.monotonic() + 600
    while (state := _get(run["url"], token))["status"] not in {"succeeded", "failed", "cancelled"}:
        if time.monotonic() > deadline:
            raise SystemExit("the seeded training run did not finish within 10 minutes")
        time.sleep(1)
    if state["result_version"]:
        version = state["result_version"]
        version_id = version["id"] if isinstance(version, dict) else version
        _post(f"{site_url}/api/models/{version_id}/shadow/", {"reason": "screenshots"}, token)
    _draw_and_label(site_url, pairs[24:])
    time.sleep(2)  # the shadow thread answers within SHADOW_LINGER_SECONDS of a drawing
    return int(run["id"])


def save(png: bytes, name: str, out: Path) -> Path:
    """A palette PNG: screenshots have few colours, so 256 keep them sharp at a fraction of the size."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path = out / f"{name}.png"
    image.save(path, "PNG", optimize=True)
    return path


def draw(page, points, *, steps: int = 6) -> None:
    box = page.get_by_test_id("canvas").bounding_box()
    path = [(box["x"] + x * box["width"] / CANVAS_SIZE, box["y"] + y * box["height"] / CANVAS_SIZE) for x, y in points]
    page.mouse.move(*path[0])
    page.mouse.down()
    for x, y in path[1:]:
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()


def photograph(browser, site_url: str, run_id: int, out: Path, size_name: str, viewport: dict,
               **context_args) -> list[Path]:
    from playwright.sync_api import expect

    context = browser.new_context(base_url=site_url, viewport=viewport, device_scale_factor=1, **context_args)
    context.set_default_timeout(30_000)
    page = context.new_page()
    shots = []

    page.goto("/")
    draw(page, HAND_SEVEN)
    expect(page.get_by_test_id("prediction")).to_have_text("7")
    page.mouse.move(0, 0)
    shots.append(save(page.screenshot(), f"draw-{size_name}", out))

    sign_in(page, *STAFF)
    page.goto(f"/dashboard/?run={run_id}")
    expect(page.get_by_test_id("confusion-matrix")).to_have_attribute("data-rows", "10")
    page.wait_for_timeout(800)  # the charts' entry animation
    shots.append(save(page.screenshot(), f"dashboard-{size_name}", out))

    page.goto("/stats/")
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(800)
    shots.append(save(page.screenshot(), f"stats-{size_name}", out))

    page.goto("/review/")
    expect(page.get_by_test_id("review-id")).not_to_have_text("")
    page.wait_for_load_state("networkidle")
    shots.append(save(page.screenshot(), f"review-{size_name}", out))

    page.goto("/admin/classifier/modelversion/")
    page.wait_for_load_state("networkidle")
    shots.append(save(page.screenshot(), f"admin-{size_name}", out))
    context.close()
    return shots


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the PNGs (default docs/images/)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not CHROMIUM.exists():
        raise SystemExit(f"screenshots need Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="mnistsite-screenshots-") as tmp:
        root = Path(tmp)
        (root / "static").mkdir()
        mnist = _mnist_root()
        env = site_env(DATABASE_URL=f"sqlite:///{root / 'db.sqlite3'}", MEDIA_ROOT=str(root / "media"),
                       STATIC_ROOT=str(root / "static"), MNIST_ROOT=str(mnist or root / "no-mnist"),
                       RETRAIN_POLICY_ENABLED="false")
        env["SEEDED_RUN"] = _manage("shell", "-c", SEED, env=env).split()[-1]
        # the conftest's seed also leaves a prediction without a drawing file: not for a picture
        _manage("shell", "-c", "from classifier.models import Prediction; "
               "Prediction.objects.filter(image='drawings/seed.png').delete()", env=env)
        with daphne(env=env, log_path=root / "site.log") as site:
            run_id = seed(site.url, env)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
                shots = photograph(browser, site.url, run_id, out, "desktop", DESKTOP)
                shots += photograph(browser, site.url, run_id, out, "phone", PHONE, has_touch=True, is_mobile=True)
                browser.close()
    for path in shots:
        print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}  {path.stat().st_size // 1024} kB")


if __name__ == "__main__":
    main()
