"""A run outlives its database connections (PostgreSQL: a backend terminated, as a restart or a failover does).

The connections are really terminated, with ``pg_terminate_backend`` from another connection; the run's
progress writes, cancel polls and heartbeats open a new connection and go on, and a run that fails records
its true reason. Never "worker presumed dead" for a worker that lives. On SQLite (no backends to terminate)
these tests are skipped; CI runs the suite on PostgreSQL too.
"""
from __future__ import annotations

import logging
import time

import psycopg
import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from training import execution
from training.executor import thread_executor
from training.models import TrainingRun
from training.reaper import training_runs_reap
from training.reporting import CancelFlag, Heartbeat, RunReporter, reconnecting

from .conftest import QUICK_RUN

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True)]


@pytest.fixture(autouse=True)
def _postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("terminates PostgreSQL backends; the suite's PostgreSQL run has them")
    yield
    connection.close()  # whatever a test left of this thread's connection, the next test starts afresh


def _admin_connection() -> psycopg.Connection:
    """A connection of its own to the test database, as an operator's psql session would be."""
    s = connection.settings_dict
    return psycopg.connect(dbname=s["NAME"], user=s["USER"] or None, password=s["PASSWORD"] or None,
                           host=s["HOST"] or None, port=s["PORT"] or None, autocommit=True)


def terminate(*, except_pids: set[int] = frozenset(), only_pid: int | None = None) -> int:
    """Terminate backends of the test database from another connection; how many were terminated."""
    with _admin_connection() as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        pids = [pid for (pid,) in rows if (only_pid is None or pid == only_pid) and pid not in except_pids]
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    return len(pids)


def own_backend() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def kill_own_connection() -> None:
    assert terminate(only_pid=own_backend()) == 1


def running_run() -> TrainingRun:
    now = timezone.now()
    return TrainingRun.objects.create(config={"arch": "logreg"}, executor="thread", status="running",
                                      started_at=now, heartbeat_at=now - timezone.timedelta(seconds=30))


def test_a_lost_connection_is_reopened_for_the_next_statement():
    run = running_run()
    kill_own_connection()
    with pytest.raises(OperationalError):  # what happens today without a reconnect
        TrainingRun.objects.filter(pk=run.pk).update(step=1)
    connection.close()
    kill_own_connection()
    assert reconnecting(lambda: TrainingRun.objects.filter(pk=run.pk).update(step=2)) == 1
    assert TrainingRun.objects.get(pk=run.pk).step == 2


def test_no_retry_inside_a_transaction():
    run = running_run()
    with pytest.raises(OperationalError):
        with transaction.atomic():
            TrainingRun.objects.filter(pk=run.pk).update(step=1)
            kill_own_connection()
            reconnecting(lambda: TrainingRun.objects.filter(pk=run.pk).update(step=2))
    assert reconnecting(lambda: TrainingRun.objects.get(pk=run.pk).step) == 0  # neither write happened


def test_progress_heartbeat_and_cancel_poll_reconnect(settings):
    run = running_run()
    reporter, heartbeat = RunReporter(run.pk), Heartbeat(run.pk)
    cancel = CancelFlag(run.pk, reporter, heartbeat)
    for step, act in enumerate([reporter.write, heartbeat.beat, cancel.poll], start=1):
        reporter.fields["step"] = step
        kill_own_connection()
        act()
    assert not (reporter.lost or heartbeat.lost or cancel.lost or cancel.cancelled)
    row = TrainingRun.objects.get(pk=run.pk)
    assert row.status == "running" and row.step == 1
    assert row.heartbeat_at > timezone.now() - timezone.timedelta(seconds=10)  # fresh: the reaper leaves it alone
    assert training_runs_reap() == []


def test_a_failure_is_recorded_truthfully_over_a_new_connection():
    run = running_run()
    kill_own_connection()
    assert execution._finish(run.pk, TrainingRun.Status.FAILED, error="DataError: no MNIST", line="failed: no MNIST")
    row = TrainingRun.objects.get(pk=run.pk)
    assert row.status == "failed" and row.error == "DataError: no MNIST" and "presumed dead" not in row.log


@pytest.mark.slow
def test_a_run_whose_connections_are_terminated_at_a_quarter_finishes(
        shipped_versions, staff_client, mnist_settings, settings, monkeypatch, caplog):
    settings.TRAINING_EXECUTOR = "thread"
    settings.TRAINING_PROGRESS_WRITE_SECONDS = 0  # every batch writes: the next write meets the dead connection
    settings.TRAINING_CANCEL_POLL_SECONDS = 0
    test_backend = own_backend()  # this thread's connection stays; the run's threads lose theirs
    terminated: list[int] = []
    report = RunReporter.__call__

    def terminating_at_a_quarter(self, event):
        if event.get("type") == "batch" and event["progress"] >= 0.25 and not terminated:
            terminated.append(terminate(except_pids={test_backend}))
        return report(self, event)

    monkeypatch.setattr(RunReporter, "__call__", terminating_at_a_quarter)
    caplog.set_level(logging.WARNING, logger="training.reporting")

    response = staff_client.post("/api/retrain/", QUICK_RUN, format="json")
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    deadline = time.monotonic() + 120
    while TrainingRun.objects.get(pk=run_id).status not in TrainingRun.FINISHED:
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.05)
    assert thread_executor().join(10)

    run = TrainingRun.objects.get(pk=run_id)
    assert terminated and terminated[0] >= 1  # the run's own connection (and its heartbeat's) were terminated
    assert any("database connection lost" in r.getMessage() for r in caplog.records)
    assert run.status == "succeeded", run.error
    assert run.progress == 1.0 and run.result_version_id is not None
    assert "presumed dead" not in run.log and not run.error
    assert training_runs_reap() == []
