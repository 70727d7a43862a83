"""Admin for the record of predictions.

A prediction is a record: everything on it is read-only except the label a person gives it. Its
drawing, model input and probability chart are rendered by templates in ``admin/classifier/display/``.
"""
from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.utils import timezone
from django.utils.safestring import SafeString

from classifier.models import Prediction
from classifier.selectors import input_data_url

from .display import admin_change_link, render_fragment, ten_floats

DIGITS = range(10)
IMAGE_TEMPLATE = "admin/classifier/display/image.html"


def drawing_url(prediction: Prediction) -> str | None:
    if not prediction.image:
        return None
    try:
        return prediction.image.url
    except ValueError:  # no file name
        return None


def probability_chart_svg(probabilities: list[float], *, digit: int, label: int | None) -> SafeString:
    """A bar per digit; the predicted digit's bar is highlighted and a given label is marked below."""
    bar_width, gap, plot_height, top, bottom = 28, 8, 120, 18, 22
    base = top + plot_height
    bars = []
    for d, p in enumerate(probabilities):
        p = min(max(p, 0.0), 1.0)
        x = gap + d * (bar_width + gap)
        h = p * plot_height
        bars.append({
            "digit": d, "percent": f"{p:.2%}", "short": f"{p:.0%}" if p >= 0.005 else "",
            "predicted": d == digit, "label": d == label,
            "x": x, "y": f"{base - h:.1f}", "height": f"{h:.1f}", "center": x + bar_width // 2,
            "value_y": f"{base - h - 4:.1f}",
        })
    return render_fragment(
        "admin/classifier/display/probability_chart.html", bars=bars, bar_width=bar_width,
        width=10 * (bar_width + gap) + gap, height=base + bottom, base=base, digit_y=base + 16,
    )


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
        return render_fragment(IMAGE_TEMPLATE, url=url, classes="mnist-drawing mnist-thumb", size=56,
                               alt=f"drawing {obj.pk}", lazy=True)

    @admin.display(description="input")
    def input_thumbnail(self, obj: Prediction) -> SafeString | None:
        url = input_data_url(obj.input_pixels)
        if url is None:
            return None
        return render_fragment(IMAGE_TEMPLATE, url=url, classes="mnist-input mnist-thumb", size=56,
                               alt=f"28x28 input {obj.pk}")

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
        return render_fragment(IMAGE_TEMPLATE, url=url, classes="mnist-drawing mnist-large", alt=f"drawing {obj.pk}",
                               linked=True)

    @admin.display(description="model input (28x28)")
    def input_large(self, obj: Prediction) -> SafeString | None:
        url = input_data_url(obj.input_pixels)
        if url is None:
            return None
        return render_fragment(IMAGE_TEMPLATE, url=url, classes="mnist-input mnist-large", size=280,
                               alt=f"28x28 input {obj.pk}")

    @admin.display(description="probabilities")
    def probability_chart(self, obj: Prediction) -> SafeString | None:
        probabilities = ten_floats(obj.probabilities)
        if probabilities is None:
            return None
        return probability_chart_svg(probabilities, digit=obj.digit, label=obj.label)
