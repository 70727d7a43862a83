"""Reads for training runs."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.urls import reverse

from classifier.models import ModelVersion

from .events import run_group
from .models import TrainingRun


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _ref(version: ModelVersion | None) -> dict[str, Any] | None:
    return version.as_ref() if version is not None else None


def run_ws_path(run_id: int) -> str:
    """Where the dashboard's WebSocket for one run lives."""
    return f"/ws/training/{run_id}/"


def run_progress(run: TrainingRun) -> dict[str, Any]:
    return {
        "epoch": run.epoch,
        "total_epochs": run.total_epochs,
        "step": run.step,
        "total_steps": run.total_steps,
        "fraction": run.progress,
        "eta_s": run.eta_seconds,
        "samples_per_s": run.samples_per_second,
    }


def run_summary(run: TrainingRun) -> dict[str, Any]:
    """A run in a list: what, who, where it is, what came of it."""
    return {
        "id": run.pk,
        "status": run.status,
        "arch": run.arch,
        "epochs": (run.config or {}).get("epochs"),
        "base_version": (run.config or {}).get("base_version"),
        "promote": run.promote,
        "executor": run.executor,
        "progress": run_progress(run),
        "cancel_requested": run.cancel_requested,
        "created_by": run.created_by.get_username() if run.created_by_id and run.created_by else None,
        "created_at": _time(run.created_at),
        "started_at": _time(run.started_at),
        "finished_at": _time(run.finished_at),
        "error": run.error or None,
        "result_version": _ref(run.result_version),
        "promoted": bool((run.promotion or {}).get("promoted")),
        "url": reverse("training-run-detail", args=[run.pk]),
    }


def run_state(run: TrainingRun) -> dict[str, Any]:
    """Everything about a run as plain JSON: what a dashboard sends a client on connect."""
    return {
        **run_summary(run),
        "config": run.config,
        "worker": run.worker,
        "device": run.device,
        "heartbeat_at": _time(run.heartbeat_at),
        "history": {"batches": (run.history or {}).get("batches", []), "epochs": (run.history or {}).get("epochs", [])},
        "data": run.data,
        "data_fingerprint": run.data_fingerprint,
        "metrics": run.metrics,
        "promotion": run.promotion,
        "log": run.log,
        "base": _ref(run.base_version),
        "group": run_group(run.pk),
        "ws_path": run_ws_path(run.pk),
    }


def runs_list(*, status: str | None = None) -> QuerySet[TrainingRun]:
    qs = TrainingRun.objects.select_related("created_by", "result_version")
    if status:
        qs = qs.filter(status=status)
    return qs


def run_get(pk: int) -> TrainingRun | None:
    return TrainingRun.objects.select_related("created_by", "result_version", "base_version").filter(pk=pk).first()
