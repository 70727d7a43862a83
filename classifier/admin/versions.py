"""Admin for model versions: the registry's list, each version's evaluation, lineage and audit log.

A version's status is never a form field: it changes only through the lifecycle services
(``classifier.lifecycle``: upload, activate, roll back, archive; ``classifier.shadow``: in and out of
shadow, promotion through the gate), which the admin offers as confirmation pages and list actions,
each recorded in the audit log. The HTML of its read-only
fields is in templates (``admin/classifier/display/``).
"""
from __future__ import annotations

from pathlib import PurePosixPath

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.safestring import SafeString

from classifier import lifecycle, shadow
from classifier.models import ModelVersion
from classifier.selectors import lifecycle_events
from mnistsite.errors import ApplicationError

from .display import (
    admin_change_link,
    confusion_table,
    link,
    metrics_table,
    preformatted,
    render_fragment,
    square_matrix,
    ten_floats,
)

DISPLAY = "admin/classifier/display/"

FIELD_TABLE_KEYS = ("field_per_class_accuracy", "field_confusion_matrix")


def per_class_accuracy_table(accuracies: list[float], matrix: list[list[int]] | None) -> SafeString:
    """Per-class accuracy as rows of digit, bar, percentage (and errors / images from the matrix)."""
    rows = []
    for digit, accuracy in enumerate(accuracies):
        support = sum(matrix[digit]) if matrix is not None else None
        rows.append({
            "digit": digit, "bar": f"{min(max(accuracy, 0.0), 1.0) * 100:.1f}", "accuracy": f"{accuracy:.2%}",
            "errors": "" if support is None else f"{support - matrix[digit][digit]:,} / {support:,}",
        })
    return render_fragment(DISPLAY + "per_class_accuracy.html", rows=rows, with_errors=matrix is not None)


class ReasonForm(forms.Form):
    reason = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why: recorded in the audit log with your name and the time.",
    )


class ForceReasonForm(forms.Form):
    reason = forms.CharField(
        required=True, max_length=2000, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Required: why this version must serve without passing the gate. Recorded in the audit log.",
    )


class CheckpointUploadForm(forms.Form):
    checkpoint = forms.FileField(help_text="A .pt file written by this project (loaded with weights_only=True).")
    name = forms.CharField(required=False, max_length=100, help_text="Version name; default: the architecture.")
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))

    def clean_checkpoint(self):
        upload = self.cleaned_data["checkpoint"]
        limit = settings.CHECKPOINT_UPLOAD_MAX_BYTES
        if upload.size > limit:
            raise forms.ValidationError(
                f"The file is {filesizeformat(upload.size)}; at most {filesizeformat(limit)} may be uploaded "
                "(CHECKPOINT_UPLOAD_MAX_BYTES)."
            )
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
    actions = ("activate_selected", "archive_selected", "shadow_selected", "unshadow_selected")
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
        ("Shadow", {"fields": ("shadow_panel",)}),
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
        "shadow_panel",
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
            path("<int:pk>/force-activate/", wrap(self.force_activate_view),
                 name="classifier_modelversion_force_activate"),
            path("<int:pk>/archive/", wrap(self.archive_view), name="classifier_modelversion_archive"),
            path("<int:pk>/shadow/", wrap(self.shadow_view), name="classifier_modelversion_shadow"),
            path("<int:pk>/unshadow/", wrap(self.unshadow_view), name="classifier_modelversion_unshadow"),
            path("<int:pk>/promote/", wrap(self.promote_view), name="classifier_modelversion_promote"),
        ] + super().get_urls()

    def _require_change(self, request: HttpRequest) -> None:
        if not self.has_change_permission(request):
            raise PermissionDenied

    def _page(self, request: HttpRequest, template: str, **context) -> TemplateResponse:
        return TemplateResponse(request, template, {
            **self.admin_site.each_context(request), "opts": self.model._meta, "has_view_permission": True, **context,
        })

    def _confirm(self, request: HttpRequest, *, title: str, version: ModelVersion | None, explanation: str,
                 button: str, perform, form_class: type[forms.Form] | None = None) -> HttpResponse:
        self._require_change(request)
        form = (form_class or ReasonForm)(request.POST if request.method == "POST" else None)
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
        explanation = (f"{version.label} will serve every prediction within a second, in every server process. "
                       + (f"{active.label} becomes a candidate again." if active else "No version is active now."))
        if not version.vetted:
            explanation = (f"{version.label} {lifecycle.why_not_vetted(version)}: it is activated through the promotion gate, "
                           "not here. Staff who must skip the gate use 'Force activation (past the gate)', with a reason.")
        return self._confirm(
            request, title=f"Activate {version.label}", version=version, button="Activate", explanation=explanation,
            perform=lambda reason: lifecycle.model_version_activate(version=version, by=request.user, reason=reason),
        )

    def force_activate_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = get_object_or_404(ModelVersion, pk=pk)
        accuracy = "" if version.test_accuracy is None else f" (MNIST test accuracy {version.test_accuracy:.2%})"
        return self._confirm(
            request, title=f"Force activation of {version.label}", version=version, button="Force activation",
            form_class=ForceReasonForm,
            explanation=f"{version.label}{accuracy} {lifecycle.why_not_vetted(version) or 'is vetted'}. "
            "Forcing it makes it serve every prediction within a second without the promotion gate's comparison "
            "with the active version. The audit log records it as forced, with your name and reason.",
            perform=lambda reason: lifecycle.model_version_activate(version=version, by=request.user, reason=reason,
                                                                    force=True),
        )

    def archive_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = get_object_or_404(ModelVersion, pk=pk)
        return self._confirm(
            request, title=f"Archive {version.label}", version=version, button="Archive",
            explanation=f"{version.label} will no longer be offered for predictions or comparisons; "
                        "it stays in the registry and can be activated again.",
            perform=lambda reason: lifecycle.model_version_archive(version=version, by=request.user, reason=reason),
        )

    def shadow_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = get_object_or_404(ModelVersion, pk=pk)
        return self._confirm(
            request, title=f"Put {version.label} in shadow", version=version, button="Put in shadow",
            explanation=f"{version.label} will answer every live drawing in the background, beside the active "
                        "version, in every server process: users' answers never change or wait for it. Its "
                        "answers are compared on the version page and the stats page.",
            perform=lambda reason: shadow.shadow_start(version=version, by=request.user, reason=reason),
        )

    def unshadow_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = get_object_or_404(ModelVersion, pk=pk)
        return self._confirm(
            request, title=f"Take {version.label} out of shadow", version=version, button="Take out of shadow",
            explanation=f"{version.label} stops answering live drawings; the answers it gave are kept.",
            perform=lambda reason: shadow.shadow_stop(version=version, by=request.user, reason=reason),
        )

    def promote_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = get_object_or_404(ModelVersion, pk=pk)

        def perform(reason: str) -> ModelVersion:
            decision = shadow.shadow_promote(version=version, by=request.user, reason=reason)
            if not decision.promote:
                raise ApplicationError("gate_refused", f"The gate refused: {decision.reason}", status=409)
            version.refresh_from_db()
            return version

        return self._confirm(
            request, title=f"Promote {version.label} through the gate", version=version, button="Run the gate",
            explanation=f"The gate compares {version.label} with the active version on the same images (MNIST "
                        "test, the field set and its shadow traffic) and makes it the active version only if it "
                        "passes; this takes a few seconds.",
            perform=perform,
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

    @admin.action(description="Put in shadow (candidates)", permissions=["change"])
    def shadow_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, "In shadow now", lambda version: shadow.shadow_start(
            version=version, by=request.user, reason="put in shadow from the admin list"))

    @admin.action(description="Take out of shadow", permissions=["change"])
    def unshadow_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, "Out of shadow now", lambda version: shadow.shadow_stop(
            version=version, by=request.user, reason="taken out of shadow from the admin list"))

    def _each(self, request: HttpRequest, queryset: QuerySet, done_text: str, perform) -> None:
        done, refused = [], []
        for version in queryset:
            try:
                done.append(perform(version).label)
            except ApplicationError as exc:
                refused.append(exc.message)
        if done:
            self.message_user(request, f"{done_text}: {', '.join(done)}.", messages.SUCCESS)
        for message in refused:
            self.message_user(request, message, messages.WARNING)

    @admin.display(description="shadow evaluation")
    def shadow_panel(self, obj: ModelVersion) -> SafeString | None:
        report = shadow.shadow_report(obj)
        if not report.answers and not report.in_shadow:
            return None
        return render_fragment(DISPLAY + "shadow_report.html", report=report.display(), version=obj,
                               required=settings.PROMOTION_SHADOW_MIN_LABELLED,
                               process_missing=report.in_shadow and shadow.shadow_process_missing())

    @admin.display(description="lifecycle")
    def lifecycle_actions(self, obj: ModelVersion) -> SafeString:
        links = []
        if obj.status != ModelVersion.Status.ACTIVE and obj.vetted:
            links.append(("activate", reverse("admin:classifier_modelversion_activate", args=[obj.pk]), "Activate…"))
        elif obj.status != ModelVersion.Status.ACTIVE:
            links.append(("force-activate", reverse("admin:classifier_modelversion_force_activate", args=[obj.pk]),
                          "Force activation (past the gate)…"))
        if obj.status == ModelVersion.Status.CANDIDATE:
            links.append(("archive", reverse("admin:classifier_modelversion_archive", args=[obj.pk]), "Archive…"))
            if obj.in_shadow:
                links.append(("unshadow", reverse("admin:classifier_modelversion_unshadow", args=[obj.pk]),
                              "Take out of shadow…"))
            else:
                links.append(("shadow", reverse("admin:classifier_modelversion_shadow", args=[obj.pk]),
                              "Put in shadow…"))
            links.append(("promote", reverse("admin:classifier_modelversion_promote", args=[obj.pk]),
                          "Promote through the gate…"))
        if obj.status == ModelVersion.Status.ACTIVE:
            links.append(("rollback", reverse("admin:classifier_modelversion_rollback"), "Roll back…"))
        if obj.checkpoint:
            links.append(("download", obj.checkpoint.url, "Download checkpoint"))
        return render_fragment(DISPLAY + "lifecycle_actions.html", links=links)

    @admin.display(description="training run")
    def training_run_link(self, obj: ModelVersion) -> SafeString | None:
        run = getattr(obj, "training_run", None)
        if run is None:
            return None
        return render_fragment(
            DISPLAY + "training_run.html", run=run,
            run_url=reverse("admin:training_trainingrun_change", args=[run.pk]),
            dashboard_url=f"{reverse('dashboard:index')}?version={obj.pk}",
        )

    @admin.display(description="children")
    def children_links(self, obj: ModelVersion) -> SafeString | None:
        children = list(obj.children.order_by("created_at")[:50])
        if not children:
            return None
        return render_fragment(DISPLAY + "version_links.html", versions=children)

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
        return confusion_table(metrics.get("field_confusion_matrix"))

    @admin.display(description="audit log")
    def lifecycle_history(self, obj: ModelVersion) -> SafeString | None:
        events = list(lifecycle_events(version=obj)[:50])
        return render_fragment(DISPLAY + "lifecycle_events.html", events=events) if events else None

    def has_delete_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        return False  # deleting could remove the active model; retiring a version is "archive"

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: ModelVersion) -> SafeString:
        known = obj.status in ModelVersion.Status.values
        return render_fragment(DISPLAY + "version_status.html", status=obj.status if known else "unknown",
                               text=obj.get_status_display())

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
        return link(obj.checkpoint.url, PurePosixPath(obj.checkpoint.name).name, download=True)

    @admin.display(description="other metrics")
    def metrics_table(self, obj: ModelVersion) -> SafeString | None:
        if not isinstance(obj.metrics, dict):
            return None
        shown = {  # test accuracy and the field set's tables have their own rows
            key: value for key, value in obj.metrics.items()
            if key != "test_accuracy" and key not in FIELD_TABLE_KEYS
        }
        return metrics_table(shown)

    @admin.display(description="per-class accuracy")
    def per_class_table(self, obj: ModelVersion) -> SafeString | None:
        accuracies = ten_floats(obj.per_class_accuracy)
        if accuracies is None:
            return None
        return per_class_accuracy_table(accuracies, square_matrix(obj.confusion_matrix))

    @admin.display(description="confusion matrix")
    def confusion_table(self, obj: ModelVersion) -> SafeString | None:
        return confusion_table(obj.confusion_matrix)

    @admin.display(description="training config")
    def training_config_json(self, obj: ModelVersion) -> SafeString | None:
        if not obj.training_config:
            return None
        return preformatted(obj.training_config)

    @admin.display(description="predictions")
    def predictions_link(self, obj: ModelVersion) -> SafeString:
        count = obj.predictions.count()
        url = reverse("admin:classifier_prediction_changelist") + f"?model_version__id__exact={obj.pk}"
        return link(url, f"{count:,} prediction{'' if count == 1 else 's'}")
