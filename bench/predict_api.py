"""Latency and throughput of ``POST /api/predict/`` over loopback, beside a Flask demo baseline.

Starts the site under the chosen server and process layout on 127.0.0.1 with a fresh database and
media folder (every prediction is stored: a row and the drawing's file), and the Flask + torch
baseline of ``bench/flask_baseline.py`` (nothing stored). Both get the same request: a 280x280
canvas PNG with a drawn 7, as the drawing page sends it — a real pen-drawn one with ``--strokes``
(the first 7 of a ``strokes.json.gz``, rendered as a browser canvas by ``bench/strokes.py``). Then,
for each: concurrency 1 and concurrency 16, bounded in requests and seconds. Prints a table, the
ratios, and checks that the site stored exactly as many predictions as it answered.

``--synchronous-commit off`` (PostgreSQL) sets that on the benchmark's own database, to measure what
the commit's WAL flush costs a prediction; the site itself keeps PostgreSQL's durable default.

    python bench/predict_api.py [--server production|default] [--workers 2] [--strokes PATH]
                                [--database-url URL] [--synchronous-commit on|off] [--requests 2000]
                                [--seconds 15]
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.loadgen import LoadResult, run_load  # noqa: E402
from bench.strokes import load_strokes, render, variant_params  # noqa: E402
from tests.support.drawings import SEVEN, canvas, encode  # noqa: E402
from tests.support.processes import free_port, stop, wait_for_port  # noqa: E402

TARGETS = {"c1_p50_ms": 5.0, "c1_p99_ms": 15.0, "c16_rps": 500.0, "c16_p99_ms": 50.0}


def server_command(server: str, port: int, workers: int) -> list[str]:
    """The site as its operators start it: ``python -m mnistsite.serve`` (what ``make serve`` / ``make run`` run)."""
    role = {"production": "http", "default": "site"}[server]
    return [sys.executable, "-m", "mnistsite.serve", role, "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers)]


def migrate_site(env: dict[str, str], folder: Path) -> None:
    """A fresh site's folder and schema: its static folder made, ``manage.py migrate`` run (which registers
    the shipped models)."""
    (folder / "static").mkdir()
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, env=env, check=True)


def start_site(server: str, workers: int, env: dict[str, str], *, name: str) -> tuple[subprocess.Popen, str]:
    """The site started as operators start it (``server_command``), once it accepts connections: the
    process and its predict URL. Stopped again if it never does."""
    port = free_port()
    process = subprocess.Popen(server_command(server, port, workers), cwd=REPO, env=env)
    try:
        wait_for_port(port, process, timeout=60, name=name)
    except BaseException:
        stop(process, timeout=30)
        raise
    return process, f"http://127.0.0.1:{port}/api/predict/"


def measure(url: str, body: bytes, args: argparse.Namespace, pid: int) -> dict[str, LoadResult]:
    """Both concurrencies against ``url``; ``pid`` is the server's process, whose CPU time (with its
    children's) is read from /proc around each run."""
    run_load(url, body, concurrency=4, max_requests=200, max_seconds=20)  # warm-up: models loaded, caches hot
    return {
        "c1": run_load(url, body, concurrency=1, max_requests=args.requests, max_seconds=args.seconds, server_pid=pid),
        "c16": run_load(url, body, concurrency=16, max_requests=args.requests * 2, max_seconds=args.seconds,
                        server_pid=pid),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="production", choices=["production", "default"],
                        help="production: `make serve` (Granian, WSGI, --workers processes); "
                             "default: `make run` (one Granian ASGI process, HTTP and WebSockets)")
    parser.add_argument("--workers", type=int, default=2, help="production only (the default run is one process)")
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL server URL; a fresh database is created on it and dropped after "
                             "(default: a fresh SQLite file)")
    parser.add_argument("--synchronous-commit", choices=["on", "off"], default="on",
                        help="PostgreSQL: synchronous_commit of the benchmark's database (default on, as deployed)")
    parser.add_argument("--requests", type=int, default=2000, help="per run at concurrency 1 (x2 at 16)")
    parser.add_argument("--seconds", type=float, default=15.0, help="time bound per run")
    parser.add_argument("--strokes", type=Path,
                        help="send a real pen-drawn 7 from this strokes.json.gz (e.g. ../shared/data/strokes-dev/"
                             "strokes.json.gz) instead of the drawn test 7")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    body = json.dumps({"image": encode(drawing(args.strokes))}).encode()
    tmp = Path(tempfile.mkdtemp(prefix="mnistsite-bench-"))
    database_url, drop_database = fresh_database(args.database_url, tmp)
    if args.synchronous_commit == "off":
        if not args.database_url:
            raise SystemExit("--synchronous-commit is a PostgreSQL setting: give --database-url")
        import psycopg

        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database_url.rsplit("/", 1)[1]}" SET synchronous_commit = off')
    env = site_env(database_url, tmp)
    migrate_site(env, tmp)
    baseline_rows = 0
    results: dict[str, dict[str, LoadResult]] = {}
    site, url = start_site(args.server, args.workers, env, name=args.server)
    try:
        results["site"] = measure(url, body, args, site.pid)
    finally:
        stop(site, timeout=30)
    stored = count_predictions(env) - baseline_rows
    answered = 200 + sum(r.requests - r.errors for r in results["site"].values())

    port = free_port()
    flask = subprocess.Popen([sys.executable, str(REPO / "bench" / "flask_baseline.py"), "--port", str(port)],
                             cwd=REPO, env={**env, "FLASK_DEBUG": "0"}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, flask, timeout=60, name="flask")
        results["flask"] = measure(f"http://127.0.0.1:{port}/predict", body, args, flask.pid)
    finally:
        stop(flask, timeout=30)

    drop_database()
    report(args, results, stored, answered)
    if args.json:
        args.json.write_text(json.dumps({k: {c: r.summary() for c, r in v.items()} for k, v in results.items()},
                                        indent=2))


def drawing(strokes: Path | None):
    """The canvas both servers get: the test 7, or the first 7 of ``strokes`` drawn as a browser canvas."""
    if strokes is None:
        return canvas(SEVEN)
    samples = load_strokes(strokes)
    index = next(i for i, sample in enumerate(samples) if sample["label"] == 7)
    params = variant_params(index, 2)  # variant 2: ink on a transparent canvas, as the drawing page sends it
    return render(samples[index], **params)


def site_env(database_url: str, folder: Path, **extra: str) -> dict[str, str]:
    """The environment a benchmarked site runs in: production settings (DEBUG off, a fresh secret key),
    its own database and media folder, no predict throttle; ``extra`` variables over those."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "MEDIA_ROOT": str(folder / "media"),
        "STATIC_ROOT": str(folder / "static"),
        "PREDICT_THROTTLE": "off",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "mnistsite.settings",
        **extra,
    }


def fresh_database(server_url: str | None, tmp: Path):
    """A new, empty database for this run, and a function that removes it."""
    if not server_url:
        return f"sqlite:///{tmp / 'db.sqlite3'}", lambda: None
    import psycopg
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(server_url)
    if parts.hostname not in {"127.0.0.1", "localhost"}:
        raise SystemExit("benchmarks only use servers on this machine")
    name = f"mnistsite_bench_{secrets.token_hex(4)}"
    admin = server_url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlunsplit(parts._replace(path=f"/{name}")), drop


def count_predictions(env: dict[str, str]) -> int:
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         "from classifier.models import Prediction; print(Prediction.objects.count())"],
        cwd=REPO, env=env, check=True, capture_output=True, text=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def report(args: argparse.Namespace, results: dict[str, dict[str, LoadResult]], stored: int, answered: int) -> None:
    processes = f"{args.workers} worker process(es)" if args.server == "production" else "one process"
    print(f"\nPOST /api/predict/ on 127.0.0.1 — site: {args.server}, {processes}, "
          f"{'PostgreSQL' if args.database_url else 'SQLite'}, {'a real pen-drawn' if args.strokes else 'the test'} 7; "
          f"every prediction stored")
    print(f"{'':26}{'requests':>9}{'errors':>8}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'CPU ms/req':>11}")
    for name, label in (("site", "mnistsite"), ("flask", "Flask demo (stores nothing)")):
        for conc, result in results[name].items():
            s = result.summary()
            print(f"{label[:18] + ' ' + conc:26}{s['requests']:>9}{s['errors']:>8}{s['throughput_rps']:>9.0f}"
                  f"{s['p50_ms']:>9.2f}{s['p90_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['server_cpu_ms_per_request']:>11.2f}")
    site, flask = results["site"], results["flask"]
    print(f"\nratio mnistsite / Flask demo: throughput at 16 = {site['c16'].throughput / flask['c16'].throughput:.2f}x, "
          f"p50 at 1 = {site['c1'].percentile(50) / flask['c1'].percentile(50):.2f}x, "
          f"server CPU per request at 1 = {site['c1'].cpu_ms_per_request / flask['c1'].cpu_ms_per_request:.2f}x "
          f"(the web server's own processes; the database's are not counted)")
    print(f"predictions stored: {stored} of {answered} answered")
    checks = {
        "c1_p50_ms": site["c1"].percentile(50) <= TARGETS["c1_p50_ms"],
        "c1_p99_ms": site["c1"].percentile(99) <= TARGETS["c1_p99_ms"],
        "c16_rps": site["c16"].throughput >= TARGETS["c16_rps"],
        "c16_p99_ms": site["c16"].percentile(99) < TARGETS["c16_p99_ms"],
    }
    print("targets: " + ", ".join(f"{k} {TARGETS[k]:g}: {'met' if ok else 'MISSED'}" for k, ok in checks.items()))


if __name__ == "__main__":
    main()
