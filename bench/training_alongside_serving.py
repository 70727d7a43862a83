"""A training run and predictions in the same process, as ``make run`` serves them, measured at once.

Starts the default layout (one Daphne process, runs trained in its thread executor) on 127.0.0.1 with
a fresh SQLite database and media folder, and a staff account with an API token. Then:

1. ``POST /api/predict/`` at concurrency 1 with nothing training: the latency baseline;
2. ``POST /api/retrain/`` (the architecture and epochs below) and, while that run trains, the same
   predict load, until the run ends;
3. the run's training samples/s (time in training steps, as its progress reports it) and wall time.

    MNIST_ROOT=... python bench/training_alongside_serving.py [--arch lenet5] [--epochs 1] [--mnist-limit N]
                                                            [--seconds 15] [--json PATH]

``TRAINING_TORCH_THREADS`` (default: every core) is passed on to the site, so budgets can be compared.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.loadgen import LoadResult, run_load  # noqa: E402
from bench.predict_api import site_env  # noqa: E402
from tests.support.drawings import SEVEN, canvas, encode  # noqa: E402
from tests.support.processes import free_port, stop, wait_for_port  # noqa: E402

FINISHED = {"succeeded", "failed", "cancelled"}


def api(url: str, token: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def load_while(url: str, body: bytes, keep_going: threading.Event, chunk_seconds: float = 2.0) -> LoadResult:
    """Concurrency-1 predict load in chunks, until ``keep_going`` is cleared."""
    total = LoadResult(concurrency=1, requests=0, errors=0, seconds=0.0, latencies_ms=[])
    while keep_going.is_set():
        part = run_load(url, body, concurrency=1, max_requests=100_000, max_seconds=chunk_seconds)
        total.requests += part.requests
        total.errors += part.errors
        total.seconds += part.seconds
        total.latencies_ms += part.latencies_ms
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="lenet5")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--mnist-limit", type=int, default=None, help="train on the first N MNIST images")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the idle predict baseline")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not os.environ.get("MNIST_ROOT"):
        raise SystemExit("set MNIST_ROOT to the folder holding MNIST/raw/*.gz")

    tmp = Path(tempfile.mkdtemp(prefix="mnistsite-bench-"))
    env = site_env(f"sqlite:///{tmp / 'db.sqlite3'}", tmp, TRAINING_EXECUTOR="thread", TRAINING_REAP_SECONDS="0")
    env.pop("REDIS_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    (tmp / "static").mkdir()
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, env=env, check=True)
    token = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         "from django.contrib.auth.models import User; from rest_framework.authtoken.models import Token; "
         "u = User.objects.create_user('bench', is_staff=True); print(Token.objects.create(user=u).key)"],
        cwd=REPO, env=env, check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]

    body = json.dumps({"image": encode(canvas(SEVEN))}).encode()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    site = subprocess.Popen([sys.executable, "-m", "mnistsite.serve", "ws", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=REPO, env=env)
    try:
        wait_for_port(port, site, timeout=60, name="daphne")
        run_load(f"{base}/api/predict/", body, concurrency=1, max_requests=200, max_seconds=10)  # warm-up
        idle = run_load(f"{base}/api/predict/", body, concurrency=1, max_requests=100_000, max_seconds=args.seconds)

        run = api(f"{base}/api/retrain/", token, {"arch": args.arch, "epochs": args.epochs, "promote": False,
                                                 **({"mnist_limit": args.mnist_limit} if args.mnist_limit else {})})
        keep_going = threading.Event()
        keep_going.set()
        result: dict[str, LoadResult] = {}
        loader = threading.Thread(target=lambda: result.update(busy=load_while(f"{base}/api/predict/", body, keep_going)))
        started = time.monotonic()
        while api(f"{base}/api/runs/{run['id']}/", token)["status"] == "queued":
            time.sleep(0.05)
        loader.start()
        while (state := api(f"{base}/api/runs/{run['id']}/", token))["status"] not in FINISHED:
            time.sleep(0.5)
        wall = time.monotonic() - started
        keep_going.clear()
        loader.join()
    finally:
        stop(site, timeout=30)

    busy = result["busy"]
    rate = (state.get("progress") or {}).get("samples_per_s")
    figures = {
        "run": {"arch": args.arch, "epochs": args.epochs, "status": state["status"],
                "samples_per_second": rate, "wall_seconds": round(wall, 1),
                "log": [line for line in state.get("log", "").splitlines() if "thread" in line]},
        "predict_idle": idle.summary(),
        "predict_while_training": busy.summary(),
    }
    print("\n`make run` layout: one Daphne process, runs in its thread executor")
    print(f"run: {args.arch}, {args.epochs} epoch(s): {state['status']}, "
          f"{rate or 0:,.0f} samples/s in training steps, {wall:.1f} s wall")
    print(f"{'POST /api/predict/, concurrency 1':40}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}")
    for label, res in (("nothing training", idle), ("while the run trains", busy)):
        s = res.summary()
        print(f"{label:40}{s['requests']:>9}{s['errors']:>8}{s['p50_ms']:>9.2f}{s['p90_ms']:>9.2f}{s['p99_ms']:>9.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
