"""Admin for the model registry and the record of predictions.

A prediction is a record: everything on it is read-only except the label a person gives it.
Model versions are listed and annotated here; their lifecycle (upload, activate, roll back) is not,
so their status is read-only and they cannot be added or deleted from the admin.

Everything shown that comes from users or stored data goes through ``format_html`` (which escapes);
``mark_safe`` is only applied to fragments built here from constants and computed numbers.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import PurePosixPath

import numpy as np
from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from classifier.models import ModelVersion, Prediction

DIGITS = range(10)
INPUT_SIDE = 28


# --- helpers: stored data -> small pieces of HTML ---------------------------------------------


def input_png_data_url(pixels: bytes | memoryview | None) -> str | None:
    """The stored 28x28 input (784 bytes, ink = 255) as a ``data:`` URL of a PNG, or None when absent."""
    if pixels is None:
        return None
    raw = bytes(pixels)
    if len(raw) != INPUT_SIDE * INPUT_SIDE:
        return None
    # Imported here: preprocessing pulls in torch, which the admin should not load at start-up.
    from classifier.preprocessing import to_png_bytes

    image = np.frombuffer(raw, dtype=np.uint8).reshape(INPUT_SIDE, INPUT_SIDE).astype(np.float32) / 255.0
    return "data:image/png;base64," + base64.b64encode(to_png_bytes(image)).decode("ascii")


def drawing_url(prediction: Prediction) -> str | None:
    if not prediction.image:
        return None
    try:
        return prediction.image.url
    except ValueError:  # no file name
        return None


def ten_floats(values: object) -> list[float] | None:
    """``values`` as ten floats, or None when the stored JSON is not that shape."""
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != 10:
        return None
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def square_matrix(values: object, size: int = 10) -> list[list[int]] | None:
    """``values`` as a size x size matrix of ints, or None when the stored JSON is not that shape."""
    if not isinstance(values, Sequence) or len(values) != size:
        return None
    try:
        rows = [[int(cell) for cell in row] for row in values]
    except (TypeError, ValueError):
        return None
    return rows if all(len(row) == size for row in rows) else None


def admin_change_link(obj: ModelVersion, text: str) -> SafeString:
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text)


def probability_chart_svg(probabilities: list[float], *, digit: int, label: int | None) -> SafeString:
    """A bar per digit; the predicted digit's bar is highlighted and a given label is marked below."""
    bar_width, gap, plot_height, top, bottom = 28, 8, 120, 18, 22
    width = 10 * (bar_width + gap) + gap
    height = top + plot_height + bottom
    bars = []
    for d, p in enumerate(probabilities):
        p = min(max(p, 0.0), 1.0)
        x = gap + d * (bar_width + gap)
        h = p * plot_height
        classes = "prob-bar prob-bar--predicted" if d == digit else "prob-bar"
        digit_classes = "prob-digit prob-digit--label" if d == label else "prob-digit"
        bars.append(
            format_html(
                '<g><title>{d}: {pct}</title>'
                '<rect class="{classes}" x="{x}" y="{y}" width="{w}" height="{h}"></rect>'
                '<text class="prob-value" x="{cx}" y="{ty}">{short}</text>'
                '<text class="{digit_classes}" x="{cx}" y="{dy}">{d}</text></g>',
                d=d,
                pct=f"{p:.2%}",
                classes=classes,
                x=x,
                y=f"{top + plot_height - h:.1f}",
                w=bar_width,
                h=f"{h:.1f}",
                cx=x + bar_width // 2,
                ty=f"{top + plot_height - h - 4:.1f}",
                short=f"{p:.0%}" if p >= 0.005 else "",
                digit_classes=digit_classes,
                dy=top + plot_height + 16,
            )
        )
    return format_html(
        '<svg class="prob-chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
        'aria-label="probability of each digit">'
        '<line class="prob-axis" x1="0" y1="{base}" x2="{w}" y2="{base}"></line>{bars}</svg>',
        w=width,
        h=height,
        base=top + plot_height,
        bars=mark_safe("".join(bars)),
    )


def percent_bar_table(accuracies: list[float], matrix: list[list[int]] | None) -> SafeString:
    """Per-class accuracy as rows of digit, bar, percentage (and errors / support from the matrix)."""
    rows = []
    for d, accuracy in enumerate(accuracies):
        errors = ""
        if matrix is not None:
            support = sum(matrix[d])
            errors = f"{support - matrix[d][d]:,} / {support:,}"
        rows.append(
            format_html(
                '<tr><th scope="row">{}</th><td class="mv-bar-cell"><span class="mv-bar" style="width: {}%">'
                "</span></td><td class=\"mv-num\">{}</td><td class=\"mv-num\">{}</td></tr>",
                d,
                f"{min(max(accuracy, 0.0), 1.0) * 100:.1f}",
                f"{accuracy:.2%}",
                errors,
            )
        )
    head = '<tr><th scope="col">digit</th><th scope="col" colspan="2">accuracy</th>'
    head += '<th scope="col">errors / images</th></tr>' if matrix is not None else "<th></th></tr>"
    return format_html(
        '<table class="mv-per-class"><thead>{}</thead><tbody>{}</tbody></table>',
        mark_safe(head),
        mark_safe("".join(rows)),
    )


def confusion_matrix_table(matrix: list[list[int]]) -> SafeString:
    """The confusion matrix as a shaded table: rows are the true digit, columns the predicted one.

    The diagonal is shaded by the share of its row it holds; off the diagonal, each cell is shaded
    against the largest error so that the few confusions stand out next to the large diagonal.
    """
    largest_error = max((matrix[t][p] for t in DIGITS for p in DIGITS if t != p), default=0)
    head = format_html_join("", '<th scope="col">{}</th>', ((p,) for p in DIGITS))
    body = []
    for t in DIGITS:
        support = sum(matrix[t])
        cells = []
        for p in DIGITS:
            count = matrix[t][p]
            share = count / support if support else 0.0
            if t == p:
                kind, alpha = "hit", share
            else:
                kind, alpha = "miss", (0.15 + 0.85 * count / largest_error) if count and largest_error else 0.0
            cells.append(
                format_html(
                    '<td class="cm-{kind}{strong}" style="--cm-alpha: {alpha}" '
                    'title="true {t}, predicted {p}: {count} ({share})">{count_text}</td>',
                    kind=kind,
                    strong=" cm-strong" if alpha > 0.55 else "",
                    alpha=f"{alpha:.3f}",
                    t=t,
                    p=p,
                    count=f"{count:,}",
                    share=f"{share:.1%}",
                    count_text=f"{count:,}" if count else "",
                )
            )
        body.append(format_html('<tr><th scope="row">{}</th>{}</tr>', t, mark_safe("".join(cells))))
    return format_html(
        '<table class="mv-confusion">'
        '<caption>rows: true digit; columns: predicted digit</caption>'
        '<thead><tr><th class="cm-corner">true \\ predicted</th>{}</tr></thead>'
        "<tbody>{}</tbody></table>",
        head,
        mark_safe("".join(body)),
    )


def format_metric(key: str, value: object) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2%}" if "accuracy" in key and 0.0 <= value <= 1.0 else f"{value:.4g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


# --- predictions ------------------------------------------------------------------------------


class CorrectnessFilter(admin.SimpleListFilter):
    title = "correctness"
    parameter_name = "correctness"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("correct", "correct"), ("wrong", "wrong"), ("unlabelled", "unlabelled")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        match self.value():
            case "correct":
                return queryset.correct()
            case "wrong":
                return queryset.wrong()
            case "unlabelled":
                return queryset.filter(label__isnull=True)
        return queryset


class PredictionLabelForm(ModelForm):
    """The one thing a person may change on a prediction: the digit it really is."""

    label = forms.TypedChoiceField(
        choices=[("", "unlabelled")] + [(d, str(d)) for d in DIGITS],
        coerce=int,
        empty_value=None,
        required=False,
        help_text="The digit that was really drawn. Saving records who labelled it and when.",
    )

    class Meta:
        model = Prediction
        fields = ["label"]


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    form = PredictionLabelForm
    list_display = (
        "id",
        "drawing_thumbnail",
        "input_thumbnail",
        "digit",
        "confidence_percent",
        "label",
        "correctness",
        "model_version_link",
        "source",
        "latency",
        "created_at",
    )
    list_display_links = ("id", "drawing_thumbnail")
    list_filter = ("digit", "label", CorrectnessFilter, "model_version", "source", "created_at")
    list_select_related = ("model_version",)
    search_fields = ("id__exact", "=session_key", "user__username", "=client_ip")
    search_help_text = "Prediction id, session key, username or client IP."
    date_hierarchy = "created_at"
    # A COUNT(*) over every prediction on each page load gets slow as the table grows.
    show_full_result_count = False
    fieldsets = (
        (None, {"fields": (("drawing_large", "input_large"), "probability_chart")}),
        ("Label", {"fields": ("label", "labelled_by", "labelled_at")}),
        (
            "Prediction",
            {
                "fields": (
                    "digit",
                    "confidence_percent",
                    "model_version_link",
                    "latency",
                    "source",
                    "created_at",
                    "image",
                )
            },
        ),
        ("Client", {"fields": ("user", "session_key", "client_ip")}),
    )
    readonly_fields = (
        "drawing_large",
        "input_large",
        "probability_chart",
        "labelled_by",
        "labelled_at",
        "digit",
        "confidence_percent",
        "model_version_link",
        "latency",
        "source",
        "created_at",
        "image",
        "user",
        "session_key",
        "client_ip",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # predictions are made by the model, not typed in

    def save_model(self, request: HttpRequest, obj: Prediction, form: forms.ModelForm, change: bool) -> None:
        if "label" not in form.changed_data:
            return
        if obj.label is None:
            obj.labelled_by, obj.labelled_at = None, None
        else:
            obj.labelled_by, obj.labelled_at = request.user, timezone.now()
        obj.save(update_fields=["label", "labelled_by", "labelled_at"])

    # list columns

    @admin.display(description="drawing")
    def drawing_thumbnail(self, obj: Prediction) -> SafeString | None:
        url = drawing_url(obj)
        if url is None:
            return None
        return format_html(
            '<img class="mnist-drawing mnist-thumb" src="{}" width="56" height="56" alt="drawing {}" loading="lazy">',
            url,
            obj.pk,
        )

    @admin.display(description="input")
    def input_thumbnail(self, obj: Prediction) -> SafeString | None:
        url = input_png_data_url(obj.input_pixels)
        if url is None:
            return None
        return format_html(
            '<img class="mnist-input mnist-thumb" src="{}" width="56" height="56" alt="28x28 input {}">',
            url,
            obj.pk,
        )

    @admin.display(description="confidence", ordering="confidence")
    def confidence_percent(self, obj: Prediction) -> str:
        return f"{obj.confidence:.1%}"

    @admin.display(description="correct", boolean=True)
    def correctness(self, obj: Prediction) -> bool | None:
        return obj.is_correct

    @admin.display(description="model version", ordering="model_version")
    def model_version_link(self, obj: Prediction) -> SafeString:
        return admin_change_link(obj.model_version, obj.model_version.label)

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, obj: Prediction) -> str:
        return f"{obj.latency_ms:.1f} ms"

    # detail

    @admin.display(description="drawing (as received)")
    def drawing_large(self, obj: Prediction) -> SafeString | None:
        url = drawing_url(obj)
        if url is None:
            return None
        return format_html(
            '<a href="{0}"><img class="mnist-drawing mnist-large" src="{0}" alt="drawing {1}"></a>', url, obj.pk
        )

    @admin.display(description="model input (28x28)")
    def input_large(self, obj: Prediction) -> SafeString | None:
        url = input_png_data_url(obj.input_pixels)
        if url is None:
            return None
        return format_html(
            '<img class="mnist-input mnist-large" src="{}" width="280" height="280" alt="28x28 input {}">',
            url,
            obj.pk,
        )

    @admin.display(description="probabilities")
    def probability_chart(self, obj: Prediction) -> SafeString | None:
        probabilities = ten_floats(obj.probabilities)
        if probabilities is None:
            return None
        return probability_chart_svg(probabilities, digit=obj.digit, label=obj.label)


# --- model versions ---------------------------------------------------------------------------


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "version",
        "arch",
        "status_badge",
        "test_accuracy_percent",
        "parameters",
        "created_at",
        "activated_at",
    )
    list_filter = ("status", "arch")
    search_fields = ("name", "sha256", "notes")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name",
                    "version",
                    "arch",
                    "status_badge",
                    "parent_link",
                    "created_by",
                    "created_at",
                    "activated_at",
                    "notes",
                )
            },
        ),
        (
            "Checkpoint",
            {"fields": ("checkpoint_download", "sha256", "parameters", "preprocessing", "data_fingerprint")},
        ),
        ("Evaluation", {"fields": ("test_accuracy_percent", "metrics_table", "per_class_table", "confusion_table")}),
        ("Training", {"fields": ("training_config_json",)}),
        ("Use", {"fields": ("predictions_link",)}),
    )
    # Status changes go through the lifecycle (one active version at a time), never a form field.
    readonly_fields = (
        "name",
        "version",
        "arch",
        "status_badge",
        "parent_link",
        "created_by",
        "created_at",
        "activated_at",
        "checkpoint_download",
        "sha256",
        "parameters",
        "preprocessing",
        "data_fingerprint",
        "test_accuracy_percent",
        "metrics_table",
        "per_class_table",
        "confusion_table",
        "training_config_json",
        "predictions_link",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions come from training or a checkpoint upload, not a form

    def has_delete_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        return False  # deleting could remove the active model; retiring a version is "archive"

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: ModelVersion) -> SafeString:
        known = obj.status in ModelVersion.Status.values
        return format_html(
            '<span class="mv-status mv-status--{}">{}</span>',
            obj.status if known else "unknown",
            obj.get_status_display(),
        )

    @admin.display(description="test accuracy", ordering="test_accuracy")
    def test_accuracy_percent(self, obj: ModelVersion) -> str | None:
        return None if obj.test_accuracy is None else f"{obj.test_accuracy:.2%}"

    @admin.display(description="parameters", ordering="num_parameters")
    def parameters(self, obj: ModelVersion) -> str:
        return f"{obj.num_parameters:,}"

    @admin.display(description="parent")
    def parent_link(self, obj: ModelVersion) -> SafeString | None:
        return None if obj.parent is None else admin_change_link(obj.parent, obj.parent.label)

    @admin.display(description="checkpoint")
    def checkpoint_download(self, obj: ModelVersion) -> SafeString | None:
        if not obj.checkpoint:
            return None
        return format_html(
            '<a href="{}" download>{}</a>', obj.checkpoint.url, PurePosixPath(obj.checkpoint.name).name
        )

    @admin.display(description="other metrics")
    def metrics_table(self, obj: ModelVersion) -> SafeString | None:
        if not isinstance(obj.metrics, dict):
            return None
        shown = {key: value for key, value in obj.metrics.items() if key != "test_accuracy"}  # has its own row
        if not shown:
            return None
        rows = format_html_join(
            "",
            '<tr><th scope="row">{}</th><td class="mv-num">{}</td></tr>',
            ((key, format_metric(key, value)) for key, value in sorted(shown.items())),
        )
        return format_html('<table class="mv-metrics"><tbody>{}</tbody></table>', rows)

    @admin.display(description="per-class accuracy")
    def per_class_table(self, obj: ModelVersion) -> SafeString | None:
        accuracies = ten_floats(obj.per_class_accuracy)
        if accuracies is None:
            return None
        return percent_bar_table(accuracies, square_matrix(obj.confusion_matrix))

    @admin.display(description="confusion matrix")
    def confusion_table(self, obj: ModelVersion) -> SafeString | None:
        matrix = square_matrix(obj.confusion_matrix)
        return None if matrix is None else confusion_matrix_table(matrix)

    @admin.display(description="training config")
    def training_config_json(self, obj: ModelVersion) -> SafeString | None:
        if not obj.training_config:
            return None
        return format_html('<pre class="mv-json">{}</pre>', json.dumps(obj.training_config, indent=2, sort_keys=True))

    @admin.display(description="predictions")
    def predictions_link(self, obj: ModelVersion) -> SafeString:
        count = obj.predictions.count()
        url = reverse("admin:classifier_prediction_changelist") + f"?model_version__id__exact={obj.pk}"
        return format_html('<a href="{}">{} prediction{}</a>', url, f"{count:,}", "" if count == 1 else "s")
