"""The API's contract: the OpenAPI schema says what the API does, checked by a property-based tester.

Schemathesis (`st run --checks all`) reads the schema the site serves at /api/schema/, generates
requests from it (valid ones, which must be accepted, and invalid ones, which must be refused with a
4xx) and checks every answer against it: a documented status, the documented content type and body,
no 5xx. It runs against the site served as `make run` serves it (`python -m mnistsite.serve site`,
a fresh database migrated, so the shipped models are registered: SQLite, or PostgreSQL when the suite
runs on it), once as an anonymous client
and once with a staff user's token, and the test fails on any failure, printing schemathesis' report.

What the run must not do to the machine: training. Runs that the tester starts (POST /api/retrain/)
go to Celery (TRAINING_EXECUTOR=celery) through a private redis-server that no worker reads, so they
stay queued and cost nothing. The site reads the real MNIST files (MNIST_ROOT, as CI sets it; without
them the test is skipped: /api/mnist/random/ would answer 503 and the promotion gate could not evaluate).
The predict throttle is off (PREDICT_THROTTLE=off); the token endpoint keeps its throttle, so its 429
is exercised and documented.

Reproduce by hand (see docs/api.md): `make run`, then
`st run http://127.0.0.1:8000/api/schema/ --checks all --config-file tests/contract/schemathesis.toml`
with `-H "Authorization: Token <key>"` for the staff run. CONTRACT_MAX_EXAMPLES (default 10) and
CONTRACT_SEED (default fixed) change how many cases each operation gets and which.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.dashboard.servers import Site, daphne, manage, site_env
from tests.production.conftest import RedisServer, _own_database_url

REPO = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
ST = Path(sys.executable).with_name("st")
MAX_EXAMPLES = int(os.environ.get("CONTRACT_MAX_EXAMPLES", 10))
SEED = int(os.environ.get("CONTRACT_SEED", 20261205))
RUN_TIMEOUT_S = 420

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None,
                       reason="the contract test queues runs in a private redis-server (apt-get install redis-server)"),
    pytest.mark.skipif(not ST.exists(), reason=f"schemathesis is not installed ({ST}): pip install -r requirements.txt"),
]

STAFF = ("contract-staff", "pw-contract-staff-123")
# What `make run` does before serving (migrate: the shipped models are registered; collectstatic), then a
# staff user and its token; one process, as starting Django costs seconds on a busy machine.
SET_UP = f"""
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.authtoken.models import Token
call_command("migrate", interactive=False, verbosity=0)
call_command("collectstatic", interactive=False, verbosity=0)
user = get_user_model().objects.create_superuser({STAFF[0]!r}, "staff@example.com", {STAFF[1]!r})
print(Token.objects.create(user=user).key)
"""


@dataclass
class ContractSite:
    site: Site
    staff_token: str

    @property
    def schema_url(self) -> str:
        return f"{self.site.url}/api/schema/"


@pytest.fixture(scope="module")
def contract_site(tmp_path_factory, mnist_root) -> Iterator[ContractSite]:
    root = tmp_path_factory.mktemp("contract-site")
    # A database of its own: an SQLite file, or on PostgreSQL (the suite's second pass) a new database there,
    # where column types (bigint ids) answer out-of-range values differently.
    database_url, drop_database = _own_database_url(root)
    broker = RedisServer(folder=root)
    broker.start()
    try:
        env = site_env(
            DATABASE_URL=database_url, MEDIA_ROOT=str(root / "media"),
            STATIC_ROOT=str(root / "static"), MNIST_ROOT=str(mnist_root),
            # Runs queue in a broker no worker reads: started, never trained.
            TRAINING_EXECUTOR="celery", CELERY_BROKER_URL=broker.url,
            PREDICT_THROTTLE="off",
        )
        token = manage("shell", "-c", SET_UP, env=env).stdout.split()[-1]
        with daphne(env=env, log_path=root / "site.log") as site:
            yield ContractSite(site=site, staff_token=token)
    finally:
        broker.stop()
        drop_database()


def schemathesis(schema_url: str, *args: str, report_dir: Path) -> subprocess.CompletedProcess:
    command = [
        str(ST), "--config-file", str(CONFIG), "--no-color", "run", schema_url, "--checks", "all",
        "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
        "--generation-database", "none", "--request-timeout", "60", *args,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    # Run from a folder of its own: schemathesis may write reports and caches where it runs.
    return subprocess.run(command, cwd=report_dir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def _assert_passed(done: subprocess.CompletedProcess, site: Site) -> None:
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"schemathesis found contract failures:\n{report}\n--- site log (tail):\n{site.log()[-3000:]}"
    assert "No issues found" in report or " passed" in report, report


def test_schema_generates_without_warnings(tmp_path):
    """drf-spectacular's own check: every field, enum and response resolved (no "could not resolve", no
    clashing enum names), and the result valid OpenAPI."""
    done = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yaml")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stderr, done.stderr


def test_contract_holds_for_an_anonymous_client(contract_site, tmp_path):
    _assert_passed(schemathesis(contract_site.schema_url, report_dir=tmp_path), contract_site.site)


def test_contract_holds_for_staff(contract_site, tmp_path):
    done = schemathesis(contract_site.schema_url, "--header", f"Authorization: Token {contract_site.staff_token}",
                        report_dir=tmp_path)
    _assert_passed(done, contract_site.site)
    # The token worked (else every staff operation would have answered a documented 401 and "passed")...
    assert "Authentication failed" not in done.stdout, done.stdout
    # ... and the valid predict requests carried drawings the site recognized and stored (hooks.py).
    request = urllib.request.Request(f"{contract_site.site.url}/api/predictions/",
                                     headers={"Authorization": f"Token {contract_site.staff_token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.load(response)["count"] > 0
