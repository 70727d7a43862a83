"""Training runs: what was asked, how far it got, what it produced."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from classifier.models import ModelVersion


class TrainingRunQuerySet(models.QuerySet):
    def unfinished(self) -> "TrainingRunQuerySet":
        return self.filter(status__in=TrainingRun.UNFINISHED)

    def running(self) -> "TrainingRunQuerySet":
        return self.filter(status=TrainingRun.Status.RUNNING)


class TrainingRun(models.Model):
    """One retraining job: what it was asked to do, how far it got, and what it produced."""

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    UNFINISHED = (Status.QUEUED, Status.RUNNING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    class Executor(models.TextChoices):
        CELERY = "celery", "Celery worker"
        THREAD = "thread", "server thread"
        INLINE = "inline", "inline"

    # what was asked
    config = models.JSONField(help_text="The validated run config, including the full training config.")
    base_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="fine_tune_runs",
        help_text="The version fine-tuned from; empty when training from scratch.",
    )
    promote = models.BooleanField(default=False, help_text="Promote the result if it passes the gate.")
    executor = models.CharField(max_length=10, choices=Executor.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="training_runs"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    # where it is
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the process running it.")
    device = models.CharField(max_length=20, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    epoch = models.PositiveIntegerField(default=0)
    total_epochs = models.PositiveIntegerField(default=0)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    progress = models.FloatField(default=0.0, help_text="Share of the training steps done, 0..1.")
    eta_seconds = models.FloatField(null=True, blank=True)
    samples_per_second = models.FloatField(null=True, blank=True)

    # what happened
    history = models.JSONField(
        default=dict, blank=True,
        help_text='{"batches": [sampled batch loss, lr, samples/s], "epochs": [train/validation figures]}',
    )
    data = models.JSONField(default=dict, blank=True, help_text="What the run trained on: sizes and ids.")
    data_fingerprint = models.CharField(max_length=200, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Final figures: MNIST test, field set, validation.")
    promotion = models.JSONField(default=dict, blank=True, help_text="The gate's decision and its reason.")
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    result_version = models.OneToOneField(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="training_run"
    )

    objects = TrainingRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("start_training_run", "Can start a training run")]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "succeeded", "failed", "cancelled"]),
                name="training_run_status_known",
            ),
            # A version is registered only by a run that succeeded: never a half-registered result.
            models.CheckConstraint(
                condition=Q(result_version__isnull=True) | Q(status="succeeded"),
                name="training_run_version_only_when_succeeded",
            ),
            models.CheckConstraint(condition=Q(progress__gte=0, progress__lte=1), name="training_run_progress_0_1"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.arch}, {self.status})"

    @property
    def arch(self) -> str:
        return str((self.config or {}).get("arch", "?"))

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def group_name(self) -> str:
        return f"training.run.{self.pk}"
