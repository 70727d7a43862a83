"""Admin for the model registry and the record of predictions.

A prediction is a record: everything on it is read-only except the label a person gives it.
Model versions are listed and annotated here; their status is never a form field: it changes only
through the lifecycle services (``classifier.lifecycle``: upload, activate, roll back, archive), which
the admin offers as confirmation pages and actions, each recorded in the audit log.

Everything shown that comes from users or stored data goes through ``format_html`` (which escapes);
``mark_safe`` is only applied to fragments built here from constants and computed numbers.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import PurePosixPath

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from classifier import lifecycle
from classifier.models import LifecycleEvent, ModelVersion, Prediction
from classifier.selectors import input_data_url, lifecycle_events
from mnistsite.errors import ApplicationError

DIGITS = range(10)


# --- helpers: stored data -> small pieces of HTML ---------------------------------------------


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
        url = input_data_url(obj.input_pixels)
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
        url = input_data_url(obj.input_pixels)
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

FIELD_TABLE_KEYS = ("field_per_class_accuracy", "field_confusion_matrix")


class ReasonForm(forms.Form):
    reason = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why: recorded in the audit log with your name and the time.",
    )


class CheckpointUploadForm(forms.Form):
    checkpoint = forms.FileField(help_text="A .pt file written by this project (loaded with weights_only=True).")
    name = forms.CharField(required=False, max_length=100, help_text="Version name; default: the architecture.")
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))

    MAX_BYTES = 200 * 1024 * 1024

    def clean_checkpoint(self):
        upload = self.cleaned_data["checkpoint"]
        if upload.size > self.MAX_BYTES:
            raise forms.ValidationError(f"The file is larger than {self.MAX_BYTES // (1024 * 1024)} MB.")
        return upload


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "version",
        "arch",
        "status_badge",
        "test_accuracy_percent",
        "field_accuracy_percent",
        "parameters",
        "created_at",
        "activated_at",
    )
    list_filter = ("status", "arch")
    search_fields = ("name", "sha256", "notes")
    change_list_template = "admin/classifier/modelversion_change_list.html"
    actions = ("activate_selected", "archive_selected")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name",
                    "version",
                    "arch",
                    "status_badge",
                    "lifecycle_actions",
                    "parent_link",
                    "training_run_link",
                    "children_links",
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
        ("Field set (held-out labelled drawings)", {"fields": ("field_accuracy_percent", "field_confusion_table")}),
        ("Training", {"fields": ("training_config_json",)}),
        ("Lifecycle history", {"fields": ("lifecycle_history",)}),
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
        "lifecycle_actions",
        "training_run_link",
        "children_links",
        "field_accuracy_percent",
        "field_confusion_table",
        "lifecycle_history",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions come from training or a checkpoint upload, not a form

    # lifecycle pages: upload, activate, roll back, archive (each a confirmation with a reason)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("upload/", wrap(self.upload_view), name="classifier_modelversion_upload"),
            path("rollback/", wrap(self.rollback_view), name="classifier_modelversion_rollback"),
            path("<int:pk>/activate/", wrap(self.activate_view), name="classifier_modelversion_activate"),
            path("<int:pk>/archive/", wrap(self.archive_view), name="classifier_modelversion_archive"),
        ] + super().get_urls()

    def _require_change(self, request: HttpRequest) -> None:
        if not self.has_change_permission(request):
            raise PermissionDenied

    def _page(self, request: HttpRequest, template: str, **context) -> TemplateResponse:
        return TemplateResponse(request, template, {
            **self.admin_site.each_context(request), "opts": self.model._meta, "has_view_permission": True, **context,
        })

    def _confirm(self, request: HttpRequest, *, title: str, version: ModelVersion | None, explanation: str,
                 button: str, perform) -> HttpResponse:
        self._require_change(request)
        form = ReasonForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                result = perform(form.cleaned_data["reason"])
            except ApplicationError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"{title}: done. {result.label} is now {result.status}.")
                return HttpResponseRedirect(reverse("admin:classifier_modelversion_change", args=[result.pk]))
        return self._page(request, "admin/classifier/confirm.html", title=title, version=version, form=form,
                          explanation=explanation, button=button)

    def activate_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = get_object_or_404(ModelVersion, pk=pk)
        active = ModelVersion.objects.active().first()
        return self._confirm(
            request, title=f"Activate {version.label}", version=version, button="Activate",
            explanation=f"{version.label} will serve every prediction within a second, in every server process. "
            + (f"{active.label} becomes a candidate again." if active else "No version is active now."),
            perform=lambda reason: lifecycle.model_version_activate(version=version, by=request.user, reason=reason),
        )

    def archive_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = get_object_or_404(ModelVersion, pk=pk)
        return self._confirm(
            request, title=f"Archive {version.label}", version=version, button="Archive",
            explanation=f"{version.label} will no longer be offered for predictions or comparisons; "
                        "it stays in the registry and can be activated again.",
            perform=lambda reason: lifecycle.model_version_archive(version=version, by=request.user, reason=reason),
        )

    def rollback_view(self, request: HttpRequest) -> HttpResponse:
        active = ModelVersion.objects.active().first()
        target = lifecycle.previous_active_version()
        if target is None:
            explanation = "There is no earlier active version to roll back to."
        else:
            explanation = (f"{target.label} (active before {active.label}) will serve every prediction again "
                           f"within a second; {active.label} becomes a candidate.")
        return self._confirm(
            request, title="Roll back", version=target, button="Roll back", explanation=explanation,
            perform=lambda reason: lifecycle.model_version_rollback(by=request.user, reason=reason),
        )

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        self._require_change(request)
        posted = request.method == "POST"
        form = CheckpointUploadForm(request.POST if posted else None, request.FILES if posted else None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data["checkpoint"].read()
            try:
                version = lifecycle.model_version_upload(
                    data=data, name=form.cleaned_data["name"], by=request.user, notes=form.cleaned_data["notes"]
                )
            except ApplicationError as exc:
                form.add_error("checkpoint", f"Refused: {exc.message}")
            else:
                messages.success(
                    request, f"Registered {version.label} as a candidate: MNIST test accuracy "
                    f"{version.test_accuracy:.2%}.",
                )
                return HttpResponseRedirect(reverse("admin:classifier_modelversion_change", args=[version.pk]))
        return self._page(request, "admin/classifier/upload.html", title="Upload a checkpoint", form=form)

    @admin.action(description="Activate the selected version (exactly one)", permissions=["change"])
    def activate_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.WARNING)
            return
        try:
            version = lifecycle.model_version_activate(version=queryset.get(), by=request.user,
                                                       reason="activated from the admin list")
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(request, f"{version.label} is now active.", messages.SUCCESS)

    @admin.action(description="Archive the selected versions", permissions=["change"])
    def archive_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        done, refused = [], []
        for version in queryset:
            try:
                done.append(lifecycle.model_version_archive(version=version, by=request.user,
                                                            reason="archived from the admin list").label)
            except ApplicationError as exc:
                refused.append(exc.message)
        if done:
            self.message_user(request, f"Archived {', '.join(done)}.", messages.SUCCESS)
        for message in refused:
            self.message_user(request, message, messages.WARNING)

    @admin.display(description="lifecycle")
    def lifecycle_actions(self, obj: ModelVersion) -> SafeString:
        links = []
        if obj.status != ModelVersion.Status.ACTIVE:
            links.append(("activate", reverse("admin:classifier_modelversion_activate", args=[obj.pk]), "Activate…"))
        if obj.status == ModelVersion.Status.CANDIDATE:
            links.append(("archive", reverse("admin:classifier_modelversion_archive", args=[obj.pk]), "Archive…"))
        if obj.status == ModelVersion.Status.ACTIVE:
            links.append(("rollback", reverse("admin:classifier_modelversion_rollback"), "Roll back…"))
        if obj.checkpoint:
            links.append(("download", obj.checkpoint.url, "Download checkpoint"))
        return format_html_join(
            " ", '<a class="button mv-action mv-action--{}" href="{}">{}</a>', links
        )

    @admin.display(description="training run")
    def training_run_link(self, obj: ModelVersion) -> SafeString | None:
        run = getattr(obj, "training_run", None)
        if run is None:
            return None
        url = reverse("admin:training_trainingrun_change", args=[run.pk])
        dashboard = f"{reverse('dashboard:index')}?version={obj.pk}"
        return format_html('<a href="{}">run {}</a> ({}) · <a href="{}">its curves on the live dashboard</a>',
                           url, run.pk, "fine-tuned from its parent" if run.base_version_id else "trained from scratch",
                           dashboard)

    @admin.display(description="children")
    def children_links(self, obj: ModelVersion) -> SafeString | None:
        children = list(obj.children.order_by("created_at")[:50])
        if not children:
            return None
        return format_html_join(", ", "{}", ((admin_change_link(child, child.label),) for child in children))

    @admin.display(description="field-set accuracy")
    def field_accuracy_percent(self, obj: ModelVersion) -> str | None:
        metrics = obj.metrics if isinstance(obj.metrics, dict) else {}
        accuracy, n = metrics.get("field_accuracy"), metrics.get("field_n")
        if accuracy is None:
            return "no field set when evaluated" if n == 0 else None
        return f"{accuracy:.2%} (n={n:,})" if isinstance(n, int) else f"{accuracy:.2%}"

    @admin.display(description="field-set confusion matrix")
    def field_confusion_table(self, obj: ModelVersion) -> SafeString | None:
        metrics = obj.metrics if isinstance(obj.metrics, dict) else {}
        matrix = square_matrix(metrics.get("field_confusion_matrix"))
        return None if matrix is None else confusion_matrix_table(matrix)

    @admin.display(description="audit log")
    def lifecycle_history(self, obj: ModelVersion) -> SafeString | None:
        rows = []
        for event in lifecycle_events(version=obj)[:50]:
            rows.append((
                f"{event.at:%Y-%m-%d %H:%M:%S}", event.get_action_display(),
                event.from_version.label if event.from_version else "—",
                event.to_version.label if event.to_version else "—",
                event.by.get_username() if event.by else "system", event.reason,
            ))
        if not rows:
            return None
        body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
        return format_html(
            '<table class="mv-events"><thead><tr><th>when</th><th>action</th><th>from</th><th>to</th><th>by</th>'
            "<th>why</th></tr></thead><tbody>{}</tbody></table>", body,
        )

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
        shown = {  # test accuracy and the field set's tables have their own rows
            key: value for key, value in obj.metrics.items()
            if key != "test_accuracy" and key not in FIELD_TABLE_KEYS
        }
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


@admin.register(LifecycleEvent)
class LifecycleEventAdmin(admin.ModelAdmin):
    list_display = ("at", "action", "from_link", "to_link", "by", "run_link", "reason")
    list_filter = ("action",)
    list_select_related = ("from_version", "to_version", "by")
    search_fields = ("reason", "by__username")
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LifecycleEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: LifecycleEvent | None = None) -> bool:
        return False  # an audit log is append-only

    @admin.display(description="from")
    def from_link(self, obj: LifecycleEvent) -> SafeString | None:
        return admin_change_link(obj.from_version, obj.from_version.label) if obj.from_version else None

    @admin.display(description="to")
    def to_link(self, obj: LifecycleEvent) -> SafeString | None:
        return admin_change_link(obj.to_version, obj.to_version.label) if obj.to_version else None

    @admin.display(description="run")
    def run_link(self, obj: LifecycleEvent) -> str | None:
        return None if obj.run_id is None else f"run {obj.run_id}"
