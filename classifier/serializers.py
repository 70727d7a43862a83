"""Request validation and response shapes of the classifier API."""
from __future__ import annotations

import re

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from mnistsite.errors import ApplicationError
from mnistsite.serializers import StrictCharField, StrictSerializer

from .images import DecodedImage, decode_base64, decode_image, max_bytes
from .models import LifecycleEvent, ModelVersion, Prediction


class ReasonSerializer(StrictSerializer):
    reason = StrictCharField(max_length=2000, required=False, allow_blank=True, default="")


class ActivateRequestSerializer(ReasonSerializer):
    force = serializers.BooleanField(
        required=False, default=False,
        help_text="Activate an archived version, or one never active that did not ship, past the promotion gate. "
                  "Needs a `reason`; recorded in the audit log as `forced`.")


@extend_schema_field({"type": "string", "minLength": 1})  # base64 text in JSON; a file part in multipart/form-data
class ImageField(serializers.Field):
    """A drawing given as base64 (optionally a ``data:`` URL) in JSON, or as an uploaded file."""

    default_error_messages = {"invalid": "Send the image as a base64 string or as a file upload."}

    def to_internal_value(self, data) -> DecodedImage:
        if isinstance(data, UploadedFile):
            if data.size is not None and data.size > max_bytes():
                raise ApplicationError(
                    "image_too_large", f"The image is {data.size:,} bytes; at most {max_bytes():,} bytes are accepted.",
                    detail={"bytes": data.size, "max_bytes": max_bytes()}, status=413)
            return decode_image(data.read())
        if isinstance(data, str):
            return decode_image(decode_base64(data))
        self.fail("invalid")

    def to_representation(self, value):  # pragma: no cover - write-only
        return None


MODEL_HELP = ("A model version id; default: the active one. The public may name a vetted version (active once, "
              "or shipped, and not archived; otherwise 403 `model_not_public`), staff any.")


class PredictRequestSerializer(serializers.Serializer):
    image = ImageField(help_text="PNG/JPEG/GIF/WebP/BMP: base64 (with or without a data: URL prefix) or a file upload.")
    model = serializers.IntegerField(required=False, allow_null=True, help_text=MODEL_HELP)
    compare = serializers.BooleanField(required=False, default=False,
                                       help_text="Also answer with the newest usable version of every other architecture.")
    replaces = serializers.IntegerField(
        required=False, allow_null=True,
        help_text="The id of this client's previous, unlabelled prediction of the same drawing (live prediction "
                  "while drawing): it is removed once this one is stored, so a drawing is recorded once.")


class ImageListField(serializers.ListField):
    """At least one image, at most ``PREDICT_BATCH_MAX`` (read when a serializer is made, so the schema and the
    checks follow the setting)."""

    def __init__(self, **kwargs):
        super().__init__(**{"child": ImageField(), "allow_empty": False, "min_length": 1,
                            "max_length": settings.PREDICT_BATCH_MAX, **kwargs})


class PredictBatchRequestSerializer(serializers.Serializer):
    images = ImageListField(help_text="Images as `image` of POST /api/predict/ takes them (base64). More than "
                                      "`PREDICT_BATCH_MAX` (default 32): 413 `too_many_images`.")
    model = serializers.IntegerField(required=False, allow_null=True, help_text=MODEL_HELP)

    def to_internal_value(self, data):
        # Count before decoding anything, so an oversized batch costs nothing.
        images = data.get("images") if hasattr(data, "get") else None
        if isinstance(images, list) and len(images) > settings.PREDICT_BATCH_MAX:
            raise ApplicationError(
                "too_many_images", f"At most {settings.PREDICT_BATCH_MAX} images per request.",
                detail={"images": len(images), "max": settings.PREDICT_BATCH_MAX}, status=413)
        return super().to_internal_value(data)


# The label fields take any JSON value, so that every wrong one gets the same 400 invalid_label from
# classifier.labels.label_value; the schema says which values are right.
@extend_schema_field({"type": "integer", "minimum": 0, "maximum": 9})
class DigitLabelField(serializers.JSONField):
    pass


@extend_schema_field({"oneOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "string", "enum": ["x"]}]})
class ReviewLabelField(serializers.JSONField):
    pass


class LabelRequestSerializer(serializers.Serializer):
    label = DigitLabelField(allow_null=True, help_text="The correct digit, 0-9.")
    label_key = StrictCharField(required=False, max_length=100, write_only=True,
                                      help_text="The prediction's label key, from the predict reply (clients "
                                                "without the predicting session or user).")


class ReviewLabelRequestSerializer(StrictSerializer):
    label = ReviewLabelField(allow_null=True,  # null is refused as invalid_label, with the others
                             help_text='The digit drawn, 0-9, or "x": not a digit (it will never train).')


# At most 500 ids, each a positive whole number below 2**63 (18 digits at most), no leading zero; or blank.
SKIP_IDS = r"^[1-9][0-9]{0,17}(,[1-9][0-9]{0,17}){0,499}$"


class ReviewQueryParamsSerializer(StrictSerializer):
    json_types = False  # a query string's values

    skip = serializers.RegexField(SKIP_IDS, required=False, allow_blank=True, max_length=4000, default="",
                                  trim_whitespace=False,  # " 1" is not what the pattern says
                                  error_messages={"invalid": "Comma-separated prediction ids, at most 500."},
                                  help_text="Comma-separated ids this reviewer skipped (at most 500).")
    count = serializers.IntegerField(required=False, min_value=1, max_value=10, default=3,
                                     help_text="How many drawings to send (the next one and a few to prefetch).")

    def validate_skip(self, value: str) -> list[int]:
        if value and not re.fullmatch(SKIP_IDS, value):  # the field's check lets "$" match before a final newline
            raise serializers.ValidationError("Comma-separated prediction ids, at most 500.")
        return [int(part) for part in value.split(",") if part]


class ModelVersionRefSerializer(serializers.Serializer):
    """The schema of ``ModelVersion.as_ref()``: a model version wherever another object refers to one."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.IntegerField()
    arch = serializers.CharField()
    status = serializers.ChoiceField(choices=ModelVersion.Status.choices)
    test_accuracy = serializers.FloatField(allow_null=True)
    field_accuracy = serializers.FloatField(allow_null=True)


class ModelAnswerSerializer(serializers.Serializer):
    model_version = ModelVersionRefSerializer()
    vetted = serializers.BooleanField(help_text="Active once, or shipped with the code; false: a fresh candidate "
                                                "nobody promoted (shown to staff only).")
    digit = serializers.IntegerField()
    confidence = serializers.FloatField()
    probabilities = serializers.ListField(child=serializers.FloatField(), min_length=10, max_length=10)


class PredictionResultSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    digit = serializers.IntegerField()
    confidence = serializers.FloatField()
    probabilities = serializers.ListField(child=serializers.FloatField(), min_length=10, max_length=10)
    model_version = ModelVersionRefSerializer()
    preprocessed = serializers.CharField(help_text="Base64 PNG of the 28x28 input the model saw.")
    latency_ms = serializers.FloatField()
    label_key = serializers.CharField(help_text="A secret, shown once: send it as `label_key` to "
                                                "POST /api/predictions/{id}/label/ to tell the correct digit.")
    compare = ModelAnswerSerializer(many=True, required=False)


class PredictBatchResultSerializer(serializers.Serializer):
    results = PredictionResultSerializer(many=True)


class ModelVersionSerializer(serializers.ModelSerializer):
    parent = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    checkpoint_url = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "id", "name", "version", "arch", "status", "num_parameters", "test_accuracy", "per_class_accuracy",
            "confusion_matrix", "metrics", "preprocessing", "data_fingerprint", "training_config", "sha256",
            "parent", "notes", "created_at", "activated_at", "checkpoint_url",
        ]

    def get_checkpoint_url(self, obj: ModelVersion) -> str | None:
        request = self.context.get("request")
        if not obj.checkpoint or request is None or not request.user.is_staff:
            return None
        return request.build_absolute_uri(obj.checkpoint.url)


class PredictionSerializer(serializers.ModelSerializer):
    model_version = serializers.SerializerMethodField()
    image_url = serializers.SerializerMethodField()
    correct = serializers.BooleanField(source="is_correct", read_only=True, allow_null=True)

    class Meta:
        model = Prediction
        fields = [
            "id", "digit", "confidence", "probabilities", "model_version", "latency_ms", "source", "label",
            "correct", "labelled_at", "created_at", "image_url", "session_key", "client_ip", "user",
        ]

    @extend_schema_field(ModelVersionRefSerializer)
    def get_model_version(self, obj: Prediction) -> dict:
        return obj.model_version.as_ref()

    def get_image_url(self, obj: Prediction) -> str | None:
        request = self.context.get("request")
        return request.build_absolute_uri(obj.image.url) if request and obj.image else None


class LabelResultSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    label = serializers.IntegerField()
    digit = serializers.IntegerField()
    correct = serializers.BooleanField()


# ---------------------------------------------------------------------------- GET /api/stats/ (schema only)
# The statistics are plain dicts built by classifier.selectors and classifier.quality; these serializers
# describe them for the API documentation.


class StatsPerVersionSerializer(serializers.Serializer):
    model_version = ModelVersionRefSerializer()
    predictions = serializers.IntegerField()
    labelled = serializers.IntegerField()
    correct = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)


class QualitySwitchSerializer(serializers.Serializer):
    """A change of the active version: activated, promoted by the gate, or rolled back to."""

    at = serializers.DateTimeField()
    action = serializers.ChoiceField(choices=[action.value for action in LifecycleEvent.SWITCHES])
    action_display = serializers.CharField()
    version = serializers.CharField(help_text='The version that became active, e.g. "cnn v2".')
    from_version = serializers.CharField(allow_null=True, help_text="The version active before, if any.")


class QualityDaySwitchSerializer(QualitySwitchSerializer):
    day = serializers.DateField(help_text="The day it happened (local time), one of `days`.")


class QualityDaySeriesSerializer(serializers.Serializer):
    """One version's numbers per day; every list is aligned with ``days``."""

    id = serializers.IntegerField()
    label = serializers.CharField()
    status = serializers.ChoiceField(choices=ModelVersion.Status.choices)
    field_accuracy = serializers.FloatField(allow_null=True)
    predictions = serializers.ListField(child=serializers.IntegerField())
    labelled = serializers.ListField(child=serializers.IntegerField())
    correct = serializers.ListField(child=serializers.IntegerField())
    accuracy = serializers.ListField(child=serializers.FloatField(allow_null=True),
                                     help_text="null on a day without labelled drawings")
    mean_confidence = serializers.ListField(child=serializers.FloatField(allow_null=True),
                                            help_text="of every answer that day; null on a day without any")
    confidence_histogram = serializers.ListField(child=serializers.IntegerField(), min_length=10, max_length=10,
                                                 help_text="answers per confidence band of the period (see `bins`)")
    total_predictions = serializers.IntegerField()
    total_labelled = serializers.IntegerField()
    total_correct = serializers.IntegerField()
    accuracy_overall = serializers.FloatField(allow_null=True)


class QualityOverTimeSerializer(serializers.Serializer):
    days = serializers.ListField(child=serializers.DateField(),
                                 help_text="From the first day with a prediction (60 days at most) to today.")
    versions = QualityDaySeriesSerializer(many=True)
    switches = QualityDaySwitchSerializer(many=True)
    bins = serializers.ListField(child=serializers.FloatField(), help_text="The 11 edges of the confidence bands.")


class QualityBucketSerializer(serializers.Serializer):
    """``labelled`` consecutive labelled drawings of one version."""

    index = serializers.IntegerField(help_text="1 = the version's first bucket")
    first = serializers.IntegerField(help_text="position of its first drawing among all labelled drawings, "
                                               "in the order drawn (1 = the oldest)")
    last = serializers.IntegerField(help_text="position of its last drawing")
    first_at = serializers.DateTimeField()
    last_at = serializers.DateTimeField()
    labelled = serializers.IntegerField()
    correct = serializers.IntegerField()
    accuracy = serializers.FloatField()
    mean_confidence = serializers.FloatField()
    full = serializers.BooleanField(help_text="false for a version's last bucket when it holds fewer than `bucket`")


class QualityDrawingsSeriesSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    label = serializers.CharField()
    status = serializers.ChoiceField(choices=ModelVersion.Status.choices)
    labelled = serializers.IntegerField()
    correct = serializers.IntegerField()
    accuracy = serializers.FloatField()
    points = QualityBucketSerializer(many=True)


class QualityDrawingsSwitchSerializer(QualitySwitchSerializer):
    position = serializers.IntegerField(help_text="labelled drawings drawn before it")


class QualityByDrawingsSerializer(serializers.Serializer):
    bucket = serializers.IntegerField(help_text="drawings per point (the QUALITY_BUCKET setting)")
    total = serializers.IntegerField(help_text="labelled drawings, all versions")
    versions = QualityDrawingsSeriesSerializer(many=True)
    switches = QualityDrawingsSwitchSerializer(many=True)


class QualityCheckSerializer(serializers.Serializer):
    model_version = ModelVersionRefSerializer()
    window = serializers.IntegerField(help_text="labelled drawings compared (the QUALITY_WINDOW setting)")
    margin = serializers.FloatField(help_text="accuracy it may lose before the warning (QUALITY_WARNING_MARGIN)")
    n = serializers.IntegerField(help_text="its labelled drawings in the window (fewer than `window`: no verdict)")
    correct = serializers.IntegerField()
    recent_accuracy = serializers.FloatField(allow_null=True)
    field_accuracy = serializers.FloatField(allow_null=True, help_text="measured on the field set when registered")
    field_n = serializers.IntegerField(allow_null=True)
    drop = serializers.FloatField(allow_null=True, help_text="field_accuracy - recent_accuracy")
    state = serializers.ChoiceField(
        choices=["warning", "ok", "too_few_labels", "no_field_accuracy"],
        help_text="warning: recent accuracy is below the field-set accuracy by more than `margin`; "
                  "too_few_labels: fewer than `window` labelled drawings, no verdict yet",
    )


class StatsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    labelled = serializers.IntegerField()
    correct = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)
    per_version = StatsPerVersionSerializer(many=True)
    confusion_matrix = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField()),
        help_text="10x10: rows are the labels, columns the digits the model read",
    )
    quality = QualityOverTimeSerializer(help_text="Quality over time, per day and model version.")
    quality_by_drawings = QualityByDrawingsSerializer(help_text="Accuracy per `bucket` labelled drawings.")
    quality_checks = QualityCheckSerializer(many=True, help_text="Each version's recent labelled drawings against "
                                                                 "its field-set accuracy, the active version first.")
