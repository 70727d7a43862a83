"""Where runs execute: a Celery worker (production), a background thread of this process (the
one-command default, no broker), or inline (tests, debugging).

``TRAINING_EXECUTOR`` picks one; it defaults to ``celery`` when ``CELERY_BROKER_URL`` (default:
``REDIS_URL``) is set, else ``thread``. Each run remembers the executor it was queued on. Either way
the same function runs: ``training.execution.training_run_execute``.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from django.conf import settings
from kombu.exceptions import OperationalError
from django.db import close_old_connections, connection, transaction

from mnistsite.celery import app

from . import events
from .execution import training_run_execute, training_run_fail_to_queue
from .models import TrainingRun
from .reaper import start_reaper
from .tasks import run_training

log = logging.getLogger(__name__)


def dispatch(run: TrainingRun) -> None:
    """Hand ``run`` to its executor once the current transaction commits (never before)."""
    run_id, executor = run.pk, run.executor
    device = (run.config or {}).get("device")
    transaction.on_commit(lambda: send(run_id, executor=executor, device=device))


def send(run_id: int, *, executor: str, device: str | None = None) -> None:
    try:
        if executor == TrainingRun.Executor.CELERY:
            _send_to_celery(run_id, device=device)
            # Workers reap each other's dead runs; the process that queued one watches too, so a run
            # is failed within a minute even when every worker is gone.
            start_reaper()
        elif executor == TrainingRun.Executor.THREAD:
            thread_executor().submit(run_id, loop=events.server_loop())
        else:
            training_run_execute(run_id=run_id)
    except (OperationalError, OSError) as exc:  # the broker is unreachable: an outage, not a bug
        log.warning("run %s could not be queued on %s: %s", run_id, executor, exc)
        training_run_fail_to_queue(run_id=run_id, error=f"The run could not be queued ({executor}): {exc}")
    except Exception as exc:
        log.exception("run %s could not be queued on %s", run_id, executor)
        training_run_fail_to_queue(run_id=run_id, error=f"The run could not be queued ({executor}): {exc}")


def _send_to_celery(run_id: int, *, device: str | None) -> None:
    queue_name = settings.TRAINING_GPU_QUEUE if device == "cuda" else settings.TRAINING_QUEUE
    # A connection per dispatch (runs are rare): always to the broker the settings name now.
    with app.connection_for_write(settings.CELERY_BROKER_URL) as conn:
        run_training.apply_async(args=[run_id], queue=queue_name, connection=conn, retry=True,
                                 retry_policy=settings.CELERY_TASK_PUBLISH_RETRY_POLICY)


class ThreadExecutor:
    """One daemon thread taking runs from a queue, one at a time (like a single worker).

    A run left behind when the process exits stays "running" until the reaper marks it failed.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[int, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, run_id: int, *, loop: Any = None) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="training-executor", daemon=True)
                self._thread.start()
        start_reaper()
        self._queue.put((run_id, loop))

    def _work(self) -> None:
        while True:
            run_id, loop = self._queue.get()
            events.set_home_loop(loop)
            close_old_connections()
            try:
                training_run_execute(run_id=run_id)
            except Exception:
                log.exception("run %s: executor error", run_id)
            finally:
                events.set_home_loop(None)
                connection.close()
                self._queue.task_done()

    def join(self, timeout: float) -> bool:
        """Wait until every submitted run has finished (tests); True when idle in time."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


_executor: ThreadExecutor | None = None
_executor_lock = threading.Lock()


def thread_executor() -> ThreadExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadExecutor()
        return _executor
