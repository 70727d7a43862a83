"""Reads for the dashboard: what a watcher may see of runs, built on ``training.selectors``.

Watching is public, so anyone gets a run's progress, curves and results; the run's log, the worker's
host and process, who started it and the ids of the drawings it trained on are for staff only.
"""
from __future__ import annotations

import math
from typing import Any

from training import selectors as training_selectors
from training.models import TrainingRun

RUNS_SHOWN = 50  # the run list: the newest runs, on the page and on connect
STAFF_ONLY = ("log", "worker", "created_by", "url")
STAFF_ONLY_DATA = ("drawing_ids",)
MAX_RUN_ID = 2**63 - 1

# What the training services publish as a run's status, and what the dashboard calls that moment.
LIFECYCLE_EVENTS = {
    TrainingRun.Status.QUEUED: "queued",
    TrainingRun.Status.RUNNING: "started",
    TrainingRun.Status.SUCCEEDED: "finished",
    TrainingRun.Status.FAILED: "failed",
    TrainingRun.Status.CANCELLED: "cancelled",
}


def parse_run_id(value: Any) -> int | None:
    """A run id from a URL or query string; None for anything that cannot be one."""
    text = str(value or "")
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    number = int(text)
    return number if 0 < number <= MAX_RUN_ID else None


def visible(data: dict[str, Any], *, staff: bool) -> dict[str, Any]:
    """``data`` (a run summary or state) as this watcher may see it."""
    if staff:
        return data
    shown = {key: value for key, value in data.items() if key not in STAFF_ONLY}
    if isinstance(shown.get("data"), dict):
        shown["data"] = {key: value for key, value in shown["data"].items() if key not in STAFF_ONLY_DATA}
    return shown


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (JSON has neither; a diverging loss has both)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def runs_snapshot(*, staff: bool, limit: int = RUNS_SHOWN) -> list[dict[str, Any]]:
    """The newest runs, newest first, as summaries."""
    runs = training_selectors.runs_list()[:limit]
    return [visible(training_selectors.run_summary(run), staff=staff) for run in runs]


def run_summary(run_id: int, *, staff: bool) -> dict[str, Any] | None:
    run = training_selectors.run_get(run_id)
    return None if run is None else visible(training_selectors.run_summary(run), staff=staff)


def run_state(run_id: int, *, staff: bool) -> dict[str, Any] | None:
    """Everything about one run, with the history so far (what a watcher gets on connect)."""
    run = training_selectors.run_get(run_id)
    return None if run is None else visible(training_selectors.run_state(run), staff=staff)


def run_for_version(version_id: int) -> int | None:
    """The run that produced a model version, if one did."""
    return TrainingRun.objects.filter(result_version_id=version_id).values_list("pk", flat=True).first()


def current_run_id() -> int | None:
    """The run a visitor most likely wants to watch: a running one, else a queued one, else the newest."""
    for status in (TrainingRun.Status.RUNNING, TrainingRun.Status.QUEUED):
        run_id = TrainingRun.objects.filter(status=status).values_list("pk", flat=True).first()
        if run_id is not None:
            return run_id
    return TrainingRun.objects.values_list("pk", flat=True).first()
