"""The model registry (ModelVersion), its audit log (LifecycleEvent) and every prediction (Prediction)."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class ModelVersionQuerySet(models.QuerySet):
    def active(self) -> "ModelVersionQuerySet":
        return self.filter(status=ModelVersion.Status.ACTIVE)

    def usable(self) -> "ModelVersionQuerySet":
        """Versions that may serve predictions (everything not archived)."""
        return self.exclude(status=ModelVersion.Status.ARCHIVED)

    def vetted(self) -> "ModelVersionQuerySet":
        """Usable versions that earned a public place: active once, or shipped with the code."""
        return self.usable().filter(Q(activated_at__isnull=False) | Q(shipped=True))


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "active"
        CANDIDATE = "candidate", "candidate"
        ARCHIVED = "archived", "archived"

    name = models.CharField(max_length=100, help_text="Human name, e.g. 'cnn' or 'cnn-retrained'.")
    version = models.PositiveIntegerField(help_text="Increments per name.")
    arch = models.CharField("architecture", max_length=50)
    checkpoint = models.FileField(upload_to="checkpoints/", max_length=255)
    sha256 = models.CharField(max_length=64)
    num_parameters = models.PositiveIntegerField(default=0)
    test_accuracy = models.FloatField(null=True, blank=True, help_text="MNIST test set, 10,000 images.")
    per_class_accuracy = models.JSONField(default=list, blank=True)
    confusion_matrix = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Further figures (validation, field set...).")
    preprocessing = models.CharField(max_length=50, blank=True)
    data_fingerprint = models.CharField(max_length=100, blank=True)
    training_config = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CANDIDATE, db_index=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    shipped = models.BooleanField(default=False, help_text="Shipped with the code (training/shipped/).")

    objects = ModelVersionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="active"), name="at_most_one_active_model_version"
            ),
            models.UniqueConstraint(fields=["name", "version"], name="unique_model_name_version"),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version} ({self.arch}, {self.status})"

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def as_ref(self) -> dict[str, Any]:
        """The one JSON shape of "a model version" wherever another object refers to one."""
        return {
            "id": self.pk, "name": self.name, "version": self.version, "arch": self.arch, "status": self.status,
            "test_accuracy": self.test_accuracy, "field_accuracy": (self.metrics or {}).get("field_accuracy"),
        }


class PredictionQuerySet(models.QuerySet):
    def labelled(self) -> "PredictionQuerySet":
        return self.filter(label__isnull=False)

    def correct(self) -> "PredictionQuerySet":
        return self.labelled().filter(label=F("digit"))

    def wrong(self) -> "PredictionQuerySet":
        return self.labelled().exclude(label=F("digit"))


class Prediction(models.Model):
    class Source(models.TextChoices):
        SITE = "site", "site"
        API = "api", "API"

    image = models.FileField(upload_to="drawings/%Y/%m/%d/", max_length=255, help_text="The drawing as received.")
    input_pixels = models.BinaryField(help_text="The 28x28 preprocessed input, 784 bytes (uint8, ink = 255).")
    probabilities = models.JSONField(help_text="Ten probabilities, digit 0 first.")
    digit = models.PositiveSmallIntegerField(db_index=True)
    confidence = models.FloatField()
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="predictions")
    latency_ms = models.FloatField(help_text="Decode + preprocess + model, in milliseconds.")
    source = models.CharField(max_length=4, choices=Source.choices, default=Source.API)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="predictions"
    )
    session_key = models.CharField(max_length=40, blank=True, db_index=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    label = models.PositiveSmallIntegerField(null=True, blank=True, db_index=True, help_text="The correct digit, as told by a person.")
    labelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    labelled_at = models.DateTimeField(null=True, blank=True)
    label_key_digest = models.CharField(
        max_length=64, blank=True,
        help_text="sha256 of the secret given once in the predict reply; whoever holds it may label this prediction.",
    )

    objects = PredictionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(digit__gte=0, digit__lte=9), name="prediction_digit_0_9"),
            models.CheckConstraint(
                condition=Q(label__isnull=True) | Q(label__gte=0, label__lte=9), name="prediction_label_0_9"
            ),
        ]

    def __str__(self) -> str:
        return f"prediction {self.pk}: {self.digit}" + (f" (labelled {self.label})" if self.label is not None else "")

    @property
    def is_correct(self) -> bool | None:
        return None if self.label is None else self.label == self.digit


class LifecycleEvent(models.Model):
    """The audit log of the model lifecycle: who moved which version where, when and why."""

    class Action(models.TextChoices):
        REGISTER = "register", "registered"
        ACTIVATE = "activate", "activated"
        PROMOTE = "promote", "promoted by the gate"
        ROLLBACK = "rollback", "rolled back"
        ARCHIVE = "archive", "archived"

    # Actions that change which version is active.
    SWITCHES = (Action.ACTIVATE, Action.PROMOTE, Action.ROLLBACK)

    action = models.CharField(max_length=10, choices=Action.choices, db_index=True)
    from_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="For activations: the version that was active before.",
    )
    to_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="lifecycle_events",
        help_text="The version acted on (the newly active one for activations).",
    )
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The training run that caused it (register / promote), by id: the registry knows nothing of runs.
    run_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    reason = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.to_version_id} at {self.at:%Y-%m-%d %H:%M:%S}"
