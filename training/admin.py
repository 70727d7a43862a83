"""Admin for training runs (start, cancel, follow) and the lifecycle audit log (read only).

Runs are records: nothing on them is editable. Starting and cancelling go through the services, like
the API does.
"""
from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from classifier.admin import admin_change_link, confusion_matrix_table, format_metric, square_matrix
from classifier.models import ModelVersion
from mnistsite.errors import ApplicationError
from training.engine.nets import ARCHITECTURES

from .models import LifecycleEvent, TrainingRun
from .services import training_run_cancel, training_run_start

TRI_STATE = [("", "recipe default"), ("true", "on"), ("false", "off")]


class StartRunForm(forms.Form):
    """The same options as ``POST /api/retrain/``; empty fields take the architecture's recipe."""

    arch = forms.ChoiceField(choices=[("", "— from the base version —")] + [(a, a) for a in ARCHITECTURES],
                             required=False, help_text="Required when training from scratch.")
    base_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.usable(), required=False, empty_label="— from scratch —",
        help_text="Fine-tune this version (its architecture and network config are kept).",
    )
    epochs = forms.IntegerField(min_value=1, max_value=200, required=False)
    batch_size = forms.IntegerField(min_value=2, max_value=8192, required=False)
    lr = forms.FloatField(min_value=1e-7, max_value=10, required=False, label="peak learning rate")
    seed = forms.IntegerField(min_value=0, initial=0, required=False)
    augment = forms.TypedChoiceField(choices=TRI_STATE, required=False, coerce=lambda v: v == "true", empty_value=None)
    use_drawings = forms.BooleanField(required=False, initial=True, label="use labelled drawings",
                                      help_text="Mix in the drawings users corrected (the field set is always held out).")
    extra_repeat = forms.IntegerField(min_value=0, max_value=100, initial=1, required=False,
                                      help_text="Times each labelled drawing is repeated per epoch.")
    mnist_limit = forms.IntegerField(min_value=1, max_value=60000, required=False,
                                     help_text="Train on the first N MNIST images only (quick runs).")
    val_size = forms.IntegerField(min_value=0, max_value=30000, required=False)
    device = forms.ChoiceField(choices=[("auto", "auto"), ("cpu", "cpu"), ("cuda", "cuda (GPU workers)")], initial="auto",
                               required=False)
    promote = forms.BooleanField(required=False, help_text="Promote the result if it passes the gate.")
    name = forms.CharField(max_length=100, required=False, help_text="Version name; default: the architecture.")

    def spec(self) -> dict:
        data = {k: v for k, v in self.cleaned_data.items() if v not in (None, "")}
        data["use_drawings"] = self.cleaned_data["use_drawings"]
        data["promote"] = self.cleaned_data["promote"]
        return data


def _status_badge(status: str) -> SafeString:
    return format_html('<span class="run-status run-status--{}">{}</span>', status, status)


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("id", "status_badge", "arch_name", "progress_percent", "epochs_done", "created_by", "created_at",
                    "finished_at", "result_link", "promoted")
    list_filter = ("status", "executor", "promote")
    list_select_related = ("created_by", "result_version")
    search_fields = ("id__exact", "created_by__username", "error")
    change_list_template = "admin/lifecycle/trainingrun_change_list.html"
    actions = ("cancel_selected",)
    fieldsets = (
        (None, {"fields": ("status_badge", "progress_bar", "error", "cancel_requested", "result_link",
                           "promotion_reason", "base_link")}),
        ("Results", {"fields": ("metrics_table", "field_confusion", "epochs_table")}),
        ("Run", {"fields": ("config_json", "data_fingerprint", "data_json", "executor", "worker", "device",
                            "created_by", "created_at", "started_at", "heartbeat_at", "finished_at")}),
        ("Log", {"fields": ("log_text",)}),
    )
    readonly_fields = (
        "status_badge", "progress_bar", "error", "cancel_requested", "result_link", "promotion_reason", "base_link",
        "metrics_table", "field_confusion", "epochs_table", "config_json", "data_fingerprint", "data_json",
        "executor", "worker", "device", "created_by", "created_at", "started_at", "heartbeat_at", "finished_at",
        "log_text",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs are started with the start form (start/), not typed in

    def has_delete_permission(self, request: HttpRequest, obj: TrainingRun | None = None) -> bool:
        return False  # runs are the lineage of model versions

    def has_start_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff  # as the API: staff may start runs

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        from .services import training_runs_reap

        training_runs_reap()
        extra = {"can_start_run": self.has_start_permission(request), **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)

    def get_urls(self):
        return [
            path("start/", self.admin_site.admin_view(self.start_view), name="training_trainingrun_start"),
        ] + super().get_urls()

    def start_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_start_permission(request):
            raise PermissionDenied
        form = StartRunForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                run = training_run_start(spec=form.spec(), by=request.user)
            except ApplicationError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"Run {run.pk} is {run.status}.")
                return HttpResponseRedirect(reverse("admin:training_trainingrun_change", args=[run.pk]))
        return TemplateResponse(request, "admin/lifecycle/start_run.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta, "title": "Start a training run",
            "form": form, "has_view_permission": True,
        })

    @admin.action(description="Cancel the selected runs", permissions=["change"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        for run in queryset:
            try:
                run = training_run_cancel(run=run, by=request.user)
            except ApplicationError as exc:
                self.message_user(request, exc.message, messages.WARNING)
            else:
                state = "cancelled" if run.status == TrainingRun.Status.CANCELLED else "asked to stop"
                self.message_user(request, f"Run {run.pk} {state}.", messages.SUCCESS)

    # columns and fields

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: TrainingRun) -> SafeString:
        return _status_badge(obj.status)

    @admin.display(description="architecture")
    def arch_name(self, obj: TrainingRun) -> str:
        return obj.arch

    @admin.display(description="progress", ordering="progress")
    def progress_percent(self, obj: TrainingRun) -> str:
        return f"{obj.progress:.0%}"

    @admin.display(description="epoch")
    def epochs_done(self, obj: TrainingRun) -> str:
        return f"{obj.epoch}/{obj.total_epochs}"

    @admin.display(description="promoted", boolean=True)
    def promoted(self, obj: TrainingRun) -> bool | None:
        return (obj.promotion or {}).get("promoted") if obj.promotion else None

    @admin.display(description="model version")
    def result_link(self, obj: TrainingRun) -> SafeString | None:
        return None if obj.result_version is None else admin_change_link(obj.result_version, obj.result_version.label)

    @admin.display(description="fine-tuned from")
    def base_link(self, obj: TrainingRun) -> SafeString | str:
        return "from scratch" if obj.base_version is None else admin_change_link(obj.base_version, obj.base_version.label)

    @admin.display(description="promotion")
    def promotion_reason(self, obj: TrainingRun) -> str | None:
        return (obj.promotion or {}).get("reason")

    @admin.display(description="progress")
    def progress_bar(self, obj: TrainingRun) -> SafeString:
        eta = f", about {obj.eta_seconds:.0f} s left" if obj.eta_seconds and not obj.is_finished else ""
        rate = f", {obj.samples_per_second:,.0f} samples/s" if obj.samples_per_second else ""
        return format_html(
            '<progress max="1" value="{}"></progress> {} — epoch {}/{}, step {:,}/{:,}{}{}',
            f"{obj.progress:.4f}", f"{obj.progress:.1%}", obj.epoch, obj.total_epochs, obj.step, obj.total_steps,
            rate, eta,
        )

    @admin.display(description="final metrics")
    def metrics_table(self, obj: TrainingRun) -> SafeString | None:
        shown = {k: v for k, v in (obj.metrics or {}).items() if not isinstance(v, list)}
        if not shown:
            return None
        rows = format_html_join("", '<tr><th scope="row">{}</th><td class="mv-num">{}</td></tr>',
                                ((k, format_metric(k, v)) for k, v in sorted(shown.items())))
        return format_html('<table class="mv-metrics"><tbody>{}</tbody></table>', rows)

    @admin.display(description="field-set confusion matrix")
    def field_confusion(self, obj: TrainingRun) -> SafeString | None:
        matrix = square_matrix((obj.metrics or {}).get("field_confusion_matrix"))
        return None if matrix is None else confusion_matrix_table(matrix)

    @admin.display(description="epochs")
    def epochs_table(self, obj: TrainingRun) -> SafeString | None:
        epochs = (obj.history or {}).get("epochs") or []
        if not epochs:
            return None

        def pct(value):
            return "" if value is None else f"{value:.2%}"

        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (e.get("epoch"), f"{e.get('train_loss', 0):.4f}", pct(e.get("train_accuracy")),
             "" if e.get("val_loss") is None else f"{e['val_loss']:.4f}", pct(e.get("val_accuracy")),
             f"{e.get('lr', 0):.5f}", f"{e.get('seconds', 0):.1f} s")
            for e in epochs
        ))
        return format_html(
            '<table class="mv-metrics"><thead><tr><th>epoch</th><th>train loss</th><th>train acc.</th><th>val. loss</th>'
            "<th>val. acc.</th><th>lr</th><th>time</th></tr></thead><tbody>{}</tbody></table>", rows,
        )

    @admin.display(description="config")
    def config_json(self, obj: TrainingRun) -> SafeString:
        return format_html('<pre class="mv-json">{}</pre>', json.dumps(obj.config, indent=2, sort_keys=True))

    @admin.display(description="data")
    def data_json(self, obj: TrainingRun) -> SafeString | None:
        if not obj.data:
            return None
        shown = {k: v for k, v in obj.data.items() if k != "drawing_ids"}
        return format_html('<pre class="mv-json">{}</pre>', json.dumps(shown, indent=2, sort_keys=True))

    @admin.display(description="log")
    def log_text(self, obj: TrainingRun) -> SafeString | None:
        return format_html('<pre class="mv-json">{}</pre>', obj.log) if obj.log else None


@admin.register(LifecycleEvent)
class LifecycleEventAdmin(admin.ModelAdmin):
    list_display = ("at", "action", "from_link", "to_link", "by", "run_link", "reason")
    list_filter = ("action",)
    list_select_related = ("from_version", "to_version", "by", "run")
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
    def run_link(self, obj: LifecycleEvent) -> SafeString | None:
        if obj.run_id is None:
            return None
        return format_html('<a href="{}">run {}</a>', reverse("admin:training_trainingrun_change", args=[obj.run_id]),
                           obj.run_id)
