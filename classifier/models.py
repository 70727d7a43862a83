"""The model registry (ModelVersion), its audit log (LifecycleEvent), every prediction (Prediction) and
every label a person gave one (Label)."""
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

    def in_shadow(self) -> "ModelVersionQuerySet":
        """Candidates in shadow: they answer live drawings in the background (``classifier.shadow``).
        Activating a version ends its shadow: one active since it entered is not in shadow any more."""
        return self.filter(status=ModelVersion.Status.CANDIDATE, shadow_since__isnull=False).filter(
            Q(activated_at__isnull=True) | Q(activated_at__lt=F("shadow_since")))

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
    shadow_since = models.DateTimeField(
        null=True, blank=True, db_index=True,
        help_text="In shadow since then: it answers live drawings in the background, beside the active version.",
    )

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

    @property
    def in_shadow(self) -> bool:
        """As ``ModelVersion.objects.in_shadow()`` says of this row."""
        return (self.status == self.Status.CANDIDATE and self.shadow_since is not None
                and (self.activated_at is None or self.activated_at < self.shadow_since))

    @property
    def vetted(self) -> bool:
        """As ``ModelVersion.objects.vetted()`` says of this row: active once, or shipped, and not archived."""
        return self.status != self.Status.ARCHIVED and (self.activated_at is not None or self.shipped)

    def as_ref(self) -> dict[str, Any]:
        """The one JSON shape of "a model version" wherever another object refers to one."""
        return {
            "id": self.pk, "name": self.name, "version": self.version, "arch": self.arch, "status": self.status,
            "test_accuracy": self.test_accuracy, "field_accuracy": (self.metrics or {}).get("field_accuracy"),
        }


class PredictionQuerySet(models.QuerySet):
    def labelled(self) -> "PredictionQuerySet":
        """Drawings with an effective digit label (what the statistics count, whoever gave it); a drawing
        marked "not a digit" has none. What trains and what judges a version is narrower: ``trusted_as``."""
        return self.filter(label__isnull=False)

    def trusted_as(self, minimum: str) -> "PredictionQuerySet":
        """Labelled drawings whose effective label is at least this trusted ("trusted", "agreed" or
        "visitor": see ``Prediction.Trust``)."""
        return self.labelled().filter(label_trust__in=Prediction.Trust.at_least(minimum))

    def for_training(self) -> "PredictionQuerySet":
        """Labelled drawings trusted enough to train (``LABELS_TRAIN_TRUST``)."""
        return self.trusted_as(settings.LABELS_TRAIN_TRUST)

    def for_evidence(self) -> "PredictionQuerySet":
        """Labelled drawings trusted enough to judge a version: the field set, shadow traffic
        (``LABELS_EVIDENCE_TRUST``)."""
        return self.trusted_as(settings.LABELS_EVIDENCE_TRUST)

    def decided(self) -> "PredictionQuerySet":
        """Drawings whose fate is known: an effective digit label, or marked "not a digit"."""
        return self.filter(Q(label__isnull=False) | Q(not_a_digit=True))

    def correct(self) -> "PredictionQuerySet":
        return self.labelled().filter(label=F("digit"))

    def wrong(self) -> "PredictionQuerySet":
        return self.labelled().exclude(label=F("digit"))


class Prediction(models.Model):
    class Trust(models.TextChoices):
        """How far the effective label can be trusted (``classifier.labels``), most trusted first."""

        TRUSTED = "trusted", "trusted (staff, review queue, trusted account)"
        AGREED = "agreed", "agreed by distinct clients"
        VISITOR = "visitor", "a visitor's word"
        NONE = "", "no label"

        @classmethod
        def at_least(cls, minimum: str) -> list[str]:
            """The levels at least as trusted as ``minimum``: "agreed" -> ["trusted", "agreed"]."""
            order = [cls.TRUSTED.value, cls.AGREED.value, cls.VISITOR.value]
            if minimum not in order:
                raise ValueError(f"a trust level is one of {order}, not {minimum!r}")
            return order[: order.index(minimum) + 1]

    class Source(models.TextChoices):
        SITE = "site", "site"
        API = "api", "API"
        IMPORT = "import", "import"  # a labelled drawing brought in from an exported dataset

    image = models.FileField(upload_to="drawings/%Y/%m/%d/", max_length=255, help_text="The drawing as received.")
    input_pixels = models.BinaryField(help_text="The 28x28 preprocessed input, 784 bytes (uint8, ink = 255).")
    input_sha256 = models.CharField(max_length=64, blank=True, db_index=True,
                                    help_text="sha256 of input_pixels: finds exact duplicates (dataset import).")
    probabilities = models.JSONField(help_text="Ten probabilities, digit 0 first.")
    digit = models.PositiveSmallIntegerField(db_index=True)
    confidence = models.FloatField()
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="predictions")
    latency_ms = models.FloatField(help_text="Decode + preprocess + model, in milliseconds.")
    source = models.CharField(max_length=6, choices=Source.choices, default=Source.API)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="predictions"
    )
    session_key = models.CharField(max_length=40, blank=True, db_index=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The effective label, derived from the drawing's Label rows by classifier.labels (trusted over
    # visitors), and how far it is trusted: LABELS_TRAIN_TRUST / LABELS_EVIDENCE_TRUST say what trains and
    # what judges a version; the statistics count every effective label.
    label = models.PositiveSmallIntegerField(null=True, blank=True, db_index=True, help_text="The correct digit, as told by a person.")
    not_a_digit = models.BooleanField(default=False, help_text="A person said this is not a digit: it never trains.")
    label_by_staff = models.BooleanField(default=False, help_text="The effective label (or 'not a digit') is staff's.")
    labelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    labelled_at = models.DateTimeField(null=True, blank=True)
    label_trust = models.CharField(
        max_length=7, choices=Trust.choices, default=Trust.NONE, blank=True, db_index=True,
        help_text="How far the effective label is trusted: a trusted source's, agreed by distinct clients, "
                  "or one visitor's word.",
    )
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
            models.CheckConstraint(condition=Q(not_a_digit=False) | Q(label__isnull=True),
                                   name="prediction_not_a_digit_has_no_label"),
        ]

    def __str__(self) -> str:
        if self.not_a_digit:
            return f"prediction {self.pk}: {self.digit} (not a digit)"
        return f"prediction {self.pk}: {self.digit}" + (f" (labelled {self.label})" if self.label is not None else "")

    @property
    def is_correct(self) -> bool | None:
        return None if self.label is None else self.label == self.digit


class Label(models.Model):
    """One person's word on one drawing: a digit, or "not a digit". Never edited; a new word is a new row.

    A drawing may collect several (its client, other visitors, staff); ``classifier.labels`` derives the
    prediction's effective label from them. ``giver`` tells visitors apart when their labels are compared
    ("user:<id>", "session:<key>" or "key:<prediction id>" for the holder of the prediction's label key),
    ``client`` is the network the label came from (an IPv4 address, an IPv6 /64), ``trusted`` whether the
    source is trusted (staff, or an account holding the ``classifier.trusted_labeller`` permission).
    """

    class Via(models.TextChoices):
        SESSION = "session", "browser session"
        LABEL_KEY = "label_key", "label key"
        ACCOUNT = "account", "account (API token or session)"
        REVIEW = "review", "review queue"
        ADMIN = "admin", "admin"
        IMPORT = "import", "dataset import"
        BACKFILL = "backfill", "recorded before label provenance"

    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="labels")
    digit = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Null when not a digit.")
    not_a_digit = models.BooleanField(default=False)
    given_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    by_staff = models.BooleanField(default=False, db_index=True)
    giver = models.CharField(max_length=64, blank=True, help_text="Who, to tell visitors apart.")
    via = models.CharField(max_length=10, choices=Via.choices)
    client = models.CharField(
        max_length=64, blank=True, db_index=True,
        help_text="The network it came from: the IPv4 address, or the IPv6 /64 (its first address).")
    trusted = models.BooleanField(default=False, db_index=True,
                                  help_text="Given by staff or an account staff trust (classifier.trusted_labeller).")
    at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-at", "-id"]
        permissions = [("trusted_labeller", "Labels are trusted: they train and judge versions at once")]
        constraints = [
            models.CheckConstraint(
                condition=Q(not_a_digit=True, digit__isnull=True) | Q(not_a_digit=False, digit__gte=0, digit__lte=9),
                name="label_digit_or_not_a_digit",
            ),
        ]

    def __str__(self) -> str:
        what = "not a digit" if self.not_a_digit else str(self.digit)
        who = "staff" if self.by_staff else "trusted" if self.trusted else "visitor"
        return f"{what} for prediction {self.prediction_id} ({who})"

    @property
    def value(self) -> int | str:
        """The digit, or ``"x"`` for "not a digit"."""
        return "x" if self.not_a_digit else int(self.digit)


class ShadowPrediction(models.Model):
    """A shadowed candidate's answer to a live drawing, stored beside the answer the user got."""

    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="shadow_predictions")
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="shadow_predictions")
    digit = models.PositiveSmallIntegerField()
    confidence = models.FloatField()
    probabilities = models.JSONField(help_text="Ten probabilities, digit 0 first.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["prediction", "version"], name="unique_shadow_prediction_version"),
            models.CheckConstraint(condition=Q(digit__gte=0, digit__lte=9), name="shadow_prediction_digit_0_9"),
        ]

    def __str__(self) -> str:
        return f"shadow answer {self.digit} of version {self.version_id} for prediction {self.prediction_id}"


class LifecycleEvent(models.Model):
    """The audit log of the model lifecycle: who moved which version where, when and why."""

    class Action(models.TextChoices):
        REGISTER = "register", "registered"
        ACTIVATE = "activate", "activated"
        PROMOTE = "promote", "promoted by the gate"
        ROLLBACK = "rollback", "rolled back"
        ARCHIVE = "archive", "archived"
        SHADOW = "shadow", "entered shadow"
        UNSHADOW = "unshadow", "left shadow"
        FORCED = "forced", "activated by force, past the gate"

    # Actions that change which version is active.
    SWITCHES = (Action.ACTIVATE, Action.PROMOTE, Action.ROLLBACK, Action.FORCED)

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
    actor = models.CharField(max_length=20, blank=True,
                             help_text="'policy' for automatic actions; empty when a person (by) acted")
    # The training run that caused it (register / promote), by id: the registry knows nothing of runs.
    run_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    reason = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.to_version_id} at {self.at:%Y-%m-%d %H:%M:%S}"
