"""Reads for the dashboard: what a watcher may see of runs, built on ``training.selectors``.

Watching is public, so anyone gets a run's progress, curves and results; the run's log, the worker's
host and process, who started it and the ids of the drawings it trained on are for staff only.
"""
from __future__ import annotations

from typing import Any

from classifier.templatetags.confusion import render_confusion_matrix
from training import selectors as training_selectors
from training.models import TrainingRun

RUNS_SHOWN = 50  # the run list: the newest runs, on the page and on connect
STAFF_ONLY = ("log", "worker", "created_by", "url")
STAFF_ONLY_DATA = ("drawing_ids",)


def visible(data: dict[str, Any], *, staff: bool) -> dict[str, Any]:
    """``data`` (a run summary or state) as this watcher may see it."""
    if staff:
        return data
    shown = {key: value for key, value in data.items() if key not in STAFF_ONLY}
    if isinstance(shown.get("data"), dict):
        shown["data"] = {key: value for key, value in shown["data"].items() if key not in STAFF_ONLY_DATA}
    return shown


def runs_snapshot(*, staff: bool, limit: int = RUNS_SHOWN) -> list[dict[str, Any]]:
    """The newest runs, newest first, as summaries."""
    runs = training_selectors.runs_list()[:limit]
    return [visible(training_selectors.run_summary(run), staff=staff) for run in runs]


def run_summary(run_id: int, *, staff: bool) -> dict[str, Any] | None:
    run = training_selectors.run_get(run_id)
    return None if run is None else visible(training_selectors.run_summary(run), staff=staff)


def run_state(run_id: int, *, staff: bool) -> dict[str, Any] | None:
    """Everything about one run, with the history so far (what a watcher gets on connect).

    ``confusion_html`` is its MNIST test confusion matrix as the site's one table (empty until the
    run has been evaluated), so the page shows it exactly as the admin and the statistics page do.
    """
    run = training_selectors.run_get(run_id)
    if run is None:
        return None
    state = training_selectors.run_state(run)
    state["confusion_html"] = render_confusion_matrix((run.metrics or {}).get("confusion_matrix"))
    return visible(state, staff=staff)


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
