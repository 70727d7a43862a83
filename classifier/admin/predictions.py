"""Admin for the record of predictions.

A prediction is a record: everything on it is read-only except the label a person gives it (a staff
label, recorded with its provenance by ``classifier.labels``; every label given is listed below it). Its
drawing, model input and probability chart are rendered by templates in ``admin/classifier/display/``.
The action "Export labelled drawings" streams the selected drawings' labelled ones as a dataset zip
(``classifier.dataset``); the list's "Import drawings" button reads such a zip back through the same
import as ``manage.py import_drawings``, for staff who may add predictions.
"""
from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from classifier.dataset import ImportSummary, export_queryset, export_zip_chunks, import_drawings
from classifier.labels import NOT_A_DIGIT, label_record, labels_clear
from classifier.models import Label, Prediction
from classifier.selectors import input_data_url
from mnistsite.errors import ApplicationError

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


def _label_choice(value: str) -> int | str | None:
    if value in ("", None):
        return None
    return NOT_A_DIGIT if value == NOT_A_DIGIT else int(value)


class PredictionLabelForm(ModelForm):
    """The one thing a person may change on a prediction: the digit it really is (or "not a digit")."""

    label = forms.TypedChoiceField(
        choices=[("", "unlabelled")] + [(d, str(d)) for d in DIGITS] + [(NOT_A_DIGIT, "not a digit")],
        coerce=_label_choice,
        empty_value=None,
        required=False,
        help_text="The digit that was really drawn, recorded as your (staff) label with who and when; it overrides "
                  "visitors' labels. \"Not a digit\" never trains. \"Unlabelled\" withdraws every label given.",
    )

    class Meta:
        model = Prediction
        fields = ["label"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.not_a_digit:
            self.initial["label"] = NOT_A_DIGIT

    def clean(self) -> dict:
        cleaned = super().clean()
        # Applied by the admin through classifier.labels, never written to the row by the form itself.
        self.label_choice = cleaned.pop("label", None)
        return cleaned


class DrawingsImportForm(forms.Form):
    """A dataset zip in the export format; its size is checked here, its content by ``classifier.dataset``."""

    dataset = forms.FileField(
        label="Dataset zip",
        help_text="A zip as the action \"Export labelled drawings\" or manage.py export_drawings writes it.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["dataset"].help_text += (  # the limits classifier.dataset applies (docs/operations/upload-limits.md)
            f" At most {settings.DRAWINGS_IMPORT_MAX_ROWS:,} drawings (DRAWINGS_IMPORT_MAX_ROWS), each original image "
            f"at most {filesizeformat(settings.PREDICT_MAX_IMAGE_BYTES)} (PREDICT_MAX_IMAGE_BYTES); only regular files."
        )

    def clean_dataset(self):
        upload = self.cleaned_data["dataset"]
        limit = settings.DRAWINGS_IMPORT_MAX_BYTES
        if upload.size > limit:
            raise forms.ValidationError(
                f"The file is {filesizeformat(upload.size)}; at most {filesizeformat(limit)} may be imported here "
                "(DRAWINGS_IMPORT_MAX_BYTES). Larger files: manage.py import_drawings."
            )
        return upload


def import_messages(summary: ImportSummary) -> list[tuple[int, str]]:
    """What an import did, as (level, text) for the admin's messages."""
    found = [(messages.SUCCESS, f"{summary.rows} drawings read: {summary.created} imported, "
                                f"{summary.duplicates} skipped as duplicates "
                                "(already here: for each, a labelled drawing here with the same pixels).")]
    conflicts = len(summary.conflicts)
    if conflicts:
        rows = ", ".join(str(c["index"]) for c in summary.conflicts[:20])
        more = f" and {conflicts - 20} more" if conflicts > 20 else ""
        found.append((messages.WARNING, f"{conflicts} of the duplicates {'is' if conflicts == 1 else 'are'} labelled "
                                        f"otherwise here; the label here was kept (manifest rows {rows}{more})."))
    return found


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    form = PredictionLabelForm
    actions = ["export_labelled_drawings"]
    change_list_template = "admin/classifier/prediction_change_list.html"
    import_template = "admin/classifier/prediction_import.html"
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
    list_filter = ("digit", "label", CorrectnessFilter, "not_a_digit", "label_by_staff", "model_version", "source",
                   "created_at")
    list_select_related = ("model_version",)
    search_fields = ("id__exact", "=session_key", "user__username", "=client_ip")
    search_help_text = "Prediction id, session key, username or client IP."
    date_hierarchy = "created_at"
    # A COUNT(*) over every prediction on each page load gets slow as the table grows.
    show_full_result_count = False
    fieldsets = (
        (None, {"fields": (("drawing_large", "input_large"), "probability_chart")}),
        ("Label", {"fields": ("label", "labelled_by", "labelled_at", "label_by_staff", "labels_given")}),
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
        "label_by_staff",
        "labels_given",
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
        choice = form.label_choice
        if choice is None:
            labels_clear(prediction=obj)
        else:
            label_record(prediction=obj, value=choice, by=request.user, via=Label.Via.ADMIN)

    # importing a dataset zip

    def get_urls(self) -> list[URLPattern]:
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="classifier_prediction_import"),
        ] + super().get_urls()

    def has_import_permission(self, request: HttpRequest) -> bool:
        """Importing creates predictions: staff holding the model's add permission (which the admin's own
        add form never uses, see ``has_add_permission``)."""
        user = request.user
        codename = get_permission_codename("add", self.opts)
        return bool(user.is_active and user.is_staff and user.has_perm(f"{self.opts.app_label}.{codename}"))

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        context = {"has_import_permission": self.has_import_permission(request), **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload a dataset zip and import it, all or nothing; a file that is refused is a form error."""
        if not self.has_import_permission(request):
            raise PermissionDenied
        posted = request.method == "POST"
        form = DrawingsImportForm(request.POST if posted else None, request.FILES if posted else None)
        if posted and form.is_valid():
            try:
                summary = import_drawings(source=form.cleaned_data["dataset"], by=request.user)
            except ApplicationError as exc:
                form.add_error("dataset", f"Nothing was imported. {exc.message}")
            else:
                for level, text in import_messages(summary):
                    messages.add_message(request, level, text)
                return HttpResponseRedirect(reverse("admin:classifier_prediction_changelist"))
        return TemplateResponse(request, self.import_template, {
            **self.admin_site.each_context(request), "opts": self.opts, "has_view_permission": True,
            "title": "Import drawings", "form": form,
            "max_size": filesizeformat(settings.DRAWINGS_IMPORT_MAX_BYTES),
        })

    @admin.action(description="Export labelled drawings (dataset zip)", permissions=["view"])
    def export_labelled_drawings(self, request: HttpRequest, queryset: QuerySet) -> StreamingHttpResponse:
        """The selected predictions' labelled drawings as a zip: IDX files, original images, a CSV manifest."""
        response = StreamingHttpResponse(export_zip_chunks(export_queryset(queryset=queryset)),
                                         content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="drawings-{timezone.now():%Y%m%d-%H%M%S}.zip"'
        return response

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

    @admin.display(description="labels given")
    def labels_given(self, obj: Prediction) -> SafeString | str:
        """Every label given on this drawing, newest first: what, who (staff or visitor), how, when."""
        labels = list(obj.labels.select_related("given_by")) if obj.pk else []
        if not labels:
            return "none"
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}: {} by {} ({}, {})</li>", (
            (f"{label.at:%Y-%m-%d %H:%M:%S}", "not a digit" if label.not_a_digit else label.digit,
             label.given_by.get_username() if label.given_by else "an anonymous visitor",
             "staff" if label.by_staff else "visitor", label.get_via_display())
            for label in labels
        )))

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
