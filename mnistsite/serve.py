"""The entry point of every server: ``python -m mnistsite.serve site|http|ws [--host H] [--port P] [--workers N]``.

``site`` (``make run``): everything in one process — HTTP and the dashboard's WebSockets — with
Granian running the ASGI application (``mnistsite.asgi``, no lifespan protocol). Its HTTP requests
run on ``HTTP_THREADS`` long-lived threads (default 2 where there are two cores or more), each in one
call from middleware to view (``mnistsite.handlers``), not handed to a thread and back for every
middleware (README: "The default run's speed").

Production: ``http``: Granian running Django's WSGI handler, one worker per core by default, one
blocking thread per worker (a request's CPU work is the prediction; more threads per worker only
contend for the same core). ``ws``: Daphne running the ASGI application for the dashboard's
WebSockets (it also answers HTTP). A reverse proxy routes ``/ws/`` to ``ws`` and the rest to ``http``.

``make run``, ``make serve`` / ``make serve-ws``, the process-manager examples in ``deploy/`` and the
benchmarks start the site through this module, so what is measured is what runs. It replaces itself with the
server process (``exec``), so signals from a process manager reach the server directly.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import django
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from mnistsite.checks import require_migrated

BIN = Path(sys.executable).parent


def http_command(*, host: str, port: int, workers: int) -> list[str]:
    return [
        str(BIN / "granian"), "--interface", "wsgi", "--host", host, "--port", str(port),
        "--workers", str(workers), "--blocking-threads", "1", "--respawn-failed-workers",
        "--log-level", os.environ.get("SERVE_LOG_LEVEL", "warning"), "mnistsite.wsgi:application",
    ]


def site_command(*, host: str, port: int) -> list[str]:
    # One worker: the in-memory channel layer, the cache and training threads live in one process.
    return [
        str(BIN / "granian"), "--interface", "asginl", "--host", host, "--port", str(port), "--workers", "1",
        "--log-level", os.environ.get("SERVE_LOG_LEVEL", "warning"), "mnistsite.asgi:application",
    ]


def ws_command(*, host: str, port: int) -> list[str]:
    # Access logs are the proxy's job (as with Granian, which writes none); SERVE_ACCESS_LOG=- turns them on.
    access_log = os.environ.get("SERVE_ACCESS_LOG", os.devnull)
    # A listen backlog for bursts of socket handshakes (a dashboard's viewers reconnecting after a
    # restart): Twisted's default of 50 drops connections when hundreds arrive at once.
    backlog = int(os.environ.get("WS_LISTEN_BACKLOG", 1024))
    interface = host.replace(":", "\\:")  # Twisted's endpoint syntax escapes the colons of IPv6 addresses
    endpoint = f"tcp:port={port}:interface={interface}:backlog={backlog}"
    # A handshake waits for its consumer to join the groups: under a burst that can take longer than
    # Daphne's default 5 s, after which it would drop the connection unanswered.
    connect_timeout = os.environ.get("WS_CONNECT_TIMEOUT", "30")
    return [str(BIN / "daphne"), "-e", endpoint, "--websocket_connect_timeout", connect_timeout, "-v", "1",
            "--access-log", access_log, "mnistsite.asgi:application"]


PRODUCTION_ROLES = {"http", "ws"}


def require_production_debug_off(entry: str) -> None:
    """A production entry point starts only when DEBUG is explicitly off in its environment.

    Left out, DEBUG defaults to on (``make run``'s one-command quick start, the tests), which would serve
    tracebacks and settings to anyone, signed with the public development key; so ``serve http``/``ws`` and
    ``manage.py worker`` refuse that default instead of falling back to it. With DEBUG=false the settings
    then refuse a missing, placeholder or weak SECRET_KEY (``mnistsite.settings.secret_key_problem``).
    """
    value = os.environ.get("DEBUG", "").strip().lower()
    if value in {"0", "false", "no", "off"}:
        try:  # a missing or weak SECRET_KEY stops the start here, once, not in every server worker it spawns
            settings.SECRET_KEY
        except ImproperlyConfigured as exc:
            raise SystemExit(f"{entry}: {exc}") from None
        return
    said = f"DEBUG={os.environ['DEBUG']!r}" if "DEBUG" in os.environ else "DEBUG is not set (on by default)"
    raise SystemExit(
        f"{entry} is a production entry point and needs DEBUG=false in its environment, but {said}. Set DEBUG=false "
        "and a SECRET_KEY (docs/operations/production.md, deploy/mnistsite.env.example); for development run "
        "`make run` (python -m mnistsite.serve site) instead."
    )


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mnistsite.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["site", "http", "ws"],
                        help="site: HTTP and WebSockets in one process (Granian, ASGI; `make run`); "
                             "http: the site and API (Granian, WSGI); ws: the dashboard's WebSockets (Daphne, ASGI)")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_WORKERS", 0)) or os.cpu_count() or 1,
                        help="http only: worker processes (default WEB_WORKERS, else one per core)")
    return parser.parse_args(argv)


def command(argv: Sequence[str] | None = None) -> list[str]:
    args = parse(argv)
    if args.role == "site":
        return site_command(host=args.host, port=args.port)
    if args.role == "http":
        return http_command(host=args.host, port=args.port, workers=args.workers)
    return ws_command(host=args.host, port=args.port)


def prepare_metrics_folder(*, port: int) -> Path:
    """prometheus_client's multiprocess folder for the HTTP workers (PROMETHEUS_MULTIPROC_DIR, else one per
    port under the temp folder), emptied: counters start at zero with the server, and the workers' files sum."""
    folder = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or Path(tempfile.gettempdir()) / f"mnistsite-metrics-{port}")
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return folder


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mnistsite.settings")
    role = parse(argv).role
    if role in PRODUCTION_ROLES:
        require_production_debug_off(f"python -m mnistsite.serve {role}")
    argv_out = command(argv)
    if role == "http":
        prepare_metrics_folder(port=parse(argv).port)
    if role in PRODUCTION_ROLES:  # migrations are a release step (`make release`): refuse a database without them
        django.setup(set_prefix=False)
        require_migrated()
    os.execv(argv_out[0], argv_out)


if __name__ == "__main__":
    main()
