"""Password guessing against the login page while people predict: what the guesses cost the site.

Starts the production HTTP entry point (``python -m mnistsite.serve http``, DEBUG off, a fresh database of
its own — on the PostgreSQL server ``--database-url`` names, else an SQLite file —, Redis as cache when
``REDIS_URL`` is set, Django's default password hasher), makes one account, and measures ``POST /api/predict/``
latency at concurrency 1, first alone, then while ``--guessers`` loops post wrong passwords for that
account to ``/account/login/`` (each with a made-up X-Forwarded-For, as the security review's did).
Run it with the lockout on (the default) and off (``--lockout off``: the site before lockouts)::

    .venv/bin/python -m bench.login_guessing --seconds 15
    .venv/bin/python -m bench.login_guessing --seconds 15 --lockout off

The production layout: ``REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python -m bench.login_guessing
--database-url postgres://postgres@127.0.0.1:5432/postgres --seconds 15 [--lockout off]``.

It prints one JSON object: predict latency alone and under guessing, the guesses made and how they
were answered (200: a counted failure, whose password was hashed; 429: refused before hashing), the
server's CPU time per guess (the login page and the POST, measured while only guessers ran), and
whether the right password then still signs in.
"""
from __future__ import annotations

import argparse
import base64
import http.cookiejar
import io
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw

from bench.loadgen import cpu_seconds, run_load
from bench.predict_api import fresh_database
from tests.support.processes import free_port, stop, wait_for_port

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "a-long-pass-phrase-41"


def drawing_body() -> bytes:
    image = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(image).line([(90, 60), (190, 60), (120, 230)], fill=(20, 20, 20, 255), width=18)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return json.dumps({"image": base64.b64encode(buffer.getvalue()).decode()}).encode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def attempt(base: str, password: str, forwarded_for: str) -> int:
    """One sign-in as a browser makes it (the form's CSRF token first); the POST's status."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
    page = opener.open(f"{base}/account/login/", timeout=60).read().decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"username": "alice", "password": password, "csrfmiddlewaretoken": csrf}).encode()
    request = urllib.request.Request(f"{base}/account/login/", data=data, method="POST",
                                     headers={"X-Forwarded-For": forwarded_for, "Referer": f"{base}/"})
    try:
        with opener.open(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each predict measurement")
    parser.add_argument("--guessers", type=int, default=4, help="concurrent guessing loops")
    parser.add_argument("--workers", type=int, default=2, help="HTTP worker processes")
    parser.add_argument("--lockout", choices=["on", "off"], default="on")
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL server on this machine to make the run's own database on (default: SQLite)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="mnistsite-login-guessing-"))
    (folder / "static").mkdir()
    database_url, drop_database = fresh_database(args.database_url, folder)
    env = {key: value for key, value in os.environ.items() if key in {"PATH", "HOME", "LANG", "TMPDIR", "REDIS_URL"}}
    env.update({"DJANGO_SETTINGS_MODULE": "mnistsite.settings", "DEBUG": "false",
                "SECRET_KEY": secrets.token_urlsafe(40), "ALLOWED_HOSTS": "127.0.0.1",
                "DATABASE_URL": database_url, "MEDIA_ROOT": str(folder / "media"),
                "STATIC_ROOT": str(folder / "static"), "PREDICT_THROTTLE": "off", "TOKEN_THROTTLE": "off",
                "LOGIN_LOCKOUT_ENABLED": "true" if args.lockout == "on" else "false", "WEB_WORKERS": str(args.workers)})
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=REPO, env=env, check=True)
    subprocess.run([*manage, "shell", "--no-imports", "-c", "from django.contrib.auth import get_user_model\n"
                    f"get_user_model().objects.create_user('alice', password={PASSWORD!r})"],
                   cwd=REPO, env=env, check=True)

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mnistsite.serve", "http", "--port", str(port)], cwd=REPO, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, server, timeout=120, name="http")
        predict, body = f"{base}/api/predict/", drawing_body()
        run_load(predict, body, concurrency=2, max_requests=100, max_seconds=20)  # warm-up: models loaded
        alone = run_load(predict, body, concurrency=1, max_requests=100_000, max_seconds=args.seconds)

        answers: Counter[int] = Counter()
        done = threading.Event()

        def guess(loop: int) -> None:
            n = 0
            while not done.is_set():
                answers[attempt(base, f"guess-{loop}-{n}", f"198.51.{loop}.{n % 250}")] += 1
                n += 1

        guessers = [threading.Thread(target=guess, args=(i,), daemon=True) for i in range(args.guessers)]
        started, cpu_before = time.monotonic(), cpu_seconds(server.pid, children=True)
        for thread in guessers:
            thread.start()
        time.sleep(args.seconds)  # guesses alone: the server's CPU time per guess (page + POST)
        alone_guesses, cpu_alone = sum(answers.values()), cpu_seconds(server.pid, children=True) - cpu_before
        under = run_load(predict, body, concurrency=1, max_requests=100_000, max_seconds=args.seconds)
        done.set()
        for thread in guessers:
            thread.join(timeout=60)
        guessing_s = time.monotonic() - started
        right = attempt(base, PASSWORD, "198.51.100.250")
    finally:
        stop(server, timeout=30)
        drop_database()

    print(json.dumps({
        "lockout": args.lockout, "database": database_url.split(":", 1)[0], "redis": bool(env.get("REDIS_URL")), "guessers": args.guessers, "workers": args.workers,
        "predict_alone": alone.summary(), "predict_while_guessing": under.summary(),
        "guesses": sum(answers.values()), "guesses_per_s": round(sum(answers.values()) / guessing_s, 1),
        "server_cpu_ms_per_guess": round(cpu_alone / alone_guesses * 1000, 1) if alone_guesses else None,
        "answers": {str(status): count for status, count in sorted(answers.items())},
        "right_password_after": {302: "signed in", 429: "locked out"}.get(right, right),
    }, indent=2))


if __name__ == "__main__":
    main()
