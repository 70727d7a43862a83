"""Training runs: what was asked, how far it got, what it produced; the automatic retraining policy."""
from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator
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

    class Trigger(models.TextChoices):
        PERSON = "person", "started by a person"
        POLICY = "policy", "automatic retraining policy"

    # what was asked
    config = models.JSONField(help_text="The validated run config, including the full training config.")
    base_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="fine_tune_runs",
        help_text="The version fine-tuned from; empty when training from scratch.",
    )
    promote = models.BooleanField(default=False, help_text="Promote the result if it passes the gate.")
    executor = models.CharField(max_length=10, choices=Executor.choices)
    trigger = models.CharField(
        max_length=10, choices=Trigger.choices, default=Trigger.PERSON, db_index=True,
        help_text="Who asked for it: a person (API, admin, dashboard) or the automatic retraining policy.",
    )
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


def _policy_min_new_labels() -> int:
    return settings.RETRAIN_POLICY_MIN_LABELS


def _policy_shadow_min_labels() -> int:
    return settings.RETRAIN_POLICY_SHADOW_MIN_LABELS


class RetrainPolicy(models.Model):
    """The automatic retraining policy: one row (``pk=1``), created on first use from the settings.

    Its cycle: enough new labels -> a fine-tune of the active version -> the result in shadow -> the
    gate decides on the shadow evidence -> promoted, or left as a candidate with the gate's reason.
    The steps are in ``training.policy``; staff edit the thresholds and pause it in the admin.
    """

    SINGLETON = 1

    paused = models.BooleanField(default=False, help_text="Paused: the policy takes no action until resumed.")
    paused_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    paused_at = models.DateTimeField(null=True, blank=True)
    pause_reason = models.TextField(blank=True)
    min_new_labels = models.PositiveIntegerField(
        default=_policy_min_new_labels, validators=[MinValueValidator(1)],
        help_text="Queue a fine-tune once this many drawings got a usable label since the last automatic run.",
    )
    shadow_min_labels = models.PositiveIntegerField(
        default=_policy_shadow_min_labels, validators=[MinValueValidator(1)],
        help_text="Ask the gate once the candidate in shadow has answered this many drawings that were then labelled.",
    )
    label_watermark = models.BigIntegerField(
        default=0, help_text="The newest label (Label id) already counted: labels after it are new.",
    )
    last_run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The policy's latest automatic run.",
    )
    decided_run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The latest automatic run whose outcome the policy has settled (promoted, kept as a candidate, failed).",
    )
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.TextField(blank=True, help_text="What the latest check found or did.")

    class Meta:
        verbose_name = "retraining policy"
        verbose_name_plural = "retraining policy"
        constraints = [models.CheckConstraint(condition=Q(id=1), name="retrain_policy_singleton")]

    def __str__(self) -> str:
        return "automatic retraining policy"


class RetrainPolicyEvent(models.Model):
    """The policy's audit log: everything it did by itself (actor "policy") and what staff did to it."""

    class Action(models.TextChoices):
        QUEUED = "queued", "queued a run"
        SHADOW = "shadow", "put the result in shadow"
        PROMOTED = "promoted", "promoted the result"
        KEPT = "kept", "left the result a candidate"
        FAILED = "failed", "the run ended without a version"
        PAUSED = "paused", "paused"
        RESUMED = "resumed", "resumed"
        CHANGED = "changed", "settings changed"

    POLICY = "policy"

    action = models.CharField(max_length=10, choices=Action.choices, db_index=True)
    actor = models.CharField(max_length=20, blank=True,
                             help_text="'policy' for automatic actions; empty when a person (by) acted.")
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    run = models.ForeignKey(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="policy_events")
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        who = self.actor or getattr(self.by, "username", None) or "?"
        return f"{self.get_action_display()} by {who} at {self.at:%Y-%m-%d %H:%M:%S}"
