"""One-off steps are one-off, and the one scheduler stays one.

- Migrations are a release step (``make release``): a production entry point started against a database
  that lacks some names them and exits non-zero, instead of failing request by request; after the
  release step it serves.
- Two Celery beats (by mistake, on two machines) against one Redis and one database still cause one
  policy check per interval: the scheduler claims each send (``mnistsite.beat``), and with the stock
  ``DatabaseScheduler`` (no claim at send) the check itself runs once per interval
  (``training.policy_schedule.check_retrain_policy``).

Real processes on 127.0.0.1: redis-server, beat, a worker, the servers, on the deployment's own database.
"""
from __future__ import annotations

import json
import re
import subprocess
import urllib.request
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis

from tests.production.conftest import REPO, Deployment, _own_database_url
from tests.support.processes import free_port, stop

INTERVAL_S = 1
WINDOW_S = 6


@pytest.fixture
def unreleased(tmp_path, redis_server, deployment) -> Iterator[Deployment]:
    """The deployment's settings on a second, empty database: the code is new, the release step not run."""
    (tmp_path / "fresh").mkdir()
    database_url, drop = _own_database_url(tmp_path / "fresh")
    site = Deployment(env={**deployment.env, "DATABASE_URL": database_url}, folder=tmp_path)
    try:
        yield site
    finally:
        drop()


def _run(site: Deployment, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=REPO, env=site.env, capture_output=True, text=True, timeout=120)


def test_servers_refuse_an_unmigrated_database_until_the_release_step(unreleased):
    for argv in (["-m", "mnistsite.serve", "http", "--workers", "1"], ["-m", "mnistsite.serve", "ws"],
                 ["manage.py", "worker"], ["manage.py", "shadow"]):
        done = _run(unreleased, *argv)
        assert done.returncode != 0, (argv, done.stdout, done.stderr)
        said = done.stdout + done.stderr
        assert "make release" in said and "python manage.py migrate" in said, (argv, said)
        assert "contenttypes.0001_initial" in said and re.search(r"lacks \d+ migrations", said), said

    unreachable = Deployment(env={**unreleased.env, "DATABASE_URL": f"postgres://site@127.0.0.1:{free_port()}/site"},
                             folder=unreleased.folder)
    done = _run(unreachable, "-m", "mnistsite.serve", "http", "--workers", "1")
    assert done.returncode == 1 and "Cannot read the database's migrations" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr

    unreleased.manage("migrate", "--noinput", "-v", "0")  # the release step
    with unreleased.serve("http", "--workers", "1") as base:
        with urllib.request.urlopen(f"{base}/readyz", timeout=30) as response:
            assert response.status == 200
            assert json.loads(response.read())["status"] == "ready"


def test_migrate_seeds_the_policy_schedule_once_and_keeps_staff_changes(deployment):
    rows = lambda: deployment.query(  # noqa: E731
        "SELECT t.task, t.queue, i.every, i.period FROM django_celery_beat_periodictask t "
        "JOIN django_celery_beat_intervalschedule i ON i.id = t.interval_id WHERE t.name = 'retrain-policy'")
    assert rows() == [("training.policy_check", "training", 60, "seconds")]  # RETRAIN_POLICY_INTERVAL_SECONDS
    deployment.shell("from training.policy_schedule import policy_interval_set\npolicy_interval_set(seconds=300)")
    deployment.manage("migrate", "--noinput", "-v", "0")  # the next release
    assert rows() == [("training.policy_check", "training", 300, "seconds")]


@contextmanager
def _celery(site: Deployment, *args: str) -> Iterator[Path]:
    log_path = site.folder / f"celery-{args[0]}-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "mnistsite", *args], cwd=REPO,
                                   env=site.env, stdout=out, stderr=subprocess.STDOUT)
    site.logs.append(log_path)
    try:
        yield log_path
    finally:
        stop(process, timeout=20)


def _wait_for(log_path: Path, text: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{log_path.name}: no {text!r}:\n{log_path.read_text()[-3000:]}"
        time.sleep(0.1)


def _two_beats(site: Deployment, *scheduler: str) -> Iterator[None]:
    site.shell(f"from training.policy_schedule import policy_interval_set\npolicy_interval_set(seconds={INTERVAL_S})")
    return [_celery(site, "beat", "--loglevel", "info", *scheduler) for _ in range(2)]


def test_two_beats_queue_one_check_per_interval(deployment):
    queue = redis.Redis.from_url(deployment.env["REDIS_URL"])
    with ExitStack() as stack:
        logs = [stack.enter_context(beat) for beat in _two_beats(deployment)]
        for log_path in logs:
            _wait_for(log_path, "Sending due task retrain-policy")  # each beat has reached its first send
        before = queue.llen("training")
        time.sleep(WINDOW_S)  # a measuring window, not a wait for something to happen
        queued = queue.llen("training") - before
        refused = sum(log_path.read_text().count("was sent by another beat") for log_path in logs)
    print(f"two beats, {INTERVAL_S} s interval, {WINDOW_S} s window: {queued} checks queued, {refused} sends refused")
    # One per interval (not two): a beat whose claim failed sent nothing.
    # (the lower bounds are loose: a busy machine may delay a beat's tick; twice per interval is what must not be)
    assert WINDOW_S / INTERVAL_S / 2 <= queued <= WINDOW_S / INTERVAL_S + 1, queued
    assert refused >= WINDOW_S / INTERVAL_S / 2, refused
    assert deployment.log_problems() == []


def test_two_stock_beats_cause_one_check_per_interval(deployment):
    """Beats started with the stock scheduler both send; the worker runs one check per interval."""
    with ExitStack() as stack:
        worker = stack.enter_context(_celery(
            deployment, "worker", "--pool", "solo", "--queues", "training", "--without-gossip", "--without-mingle",
            "--hostname", f"beat-test-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "info"))
        _wait_for(worker, "ready.")
        logs = [stack.enter_context(beat) for beat in
                _two_beats(deployment, "-S", "django_celery_beat.schedulers:DatabaseScheduler")]
        for log_path in logs:
            _wait_for(log_path, "Sending due task retrain-policy")
        _wait_for(worker, "training.policy_check")

        def counts() -> tuple[int, int, int]:
            text = worker.read_text(errors="replace")
            sent = sum(log_path.read_text().count("Sending due task retrain-policy") for log_path in logs)
            return sent, len(re.findall(r"Task training\.policy_check\[\S+\] succeeded", text)), \
                text.count("another check ran in this interval")

        sent0, done0, skipped0 = counts()
        time.sleep(WINDOW_S)  # a measuring window, not a wait for something to happen
        sent1, done1, skipped1 = counts()
    sent, ran, skipped = sent1 - sent0, (done1 - done0) - (skipped1 - skipped0), skipped1 - skipped0
    per_window = WINDOW_S / INTERVAL_S
    print(f"two stock beats, {INTERVAL_S} s interval, {WINDOW_S} s window: {sent} sent, {ran} checks ran, "
          f"{skipped} skipped")
    assert sent >= 1.5 * per_window, sent  # both beats sent (about) every interval
    assert per_window / 2 <= ran <= per_window + 1, (ran, sent, skipped)
    assert skipped >= per_window / 2, (ran, sent, skipped)
