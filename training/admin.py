"""Admin for training runs (start, cancel, follow) and the automatic retraining policy (thresholds, pause).

Runs are records: nothing on them is editable. Starting and cancelling go through the services, like
the API does. The HTML of the read-only fields is in templates (``admin/training/display/`` and the
registry's shared ``admin/classifier/display/``).
"""
from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.safestring import SafeString

from classifier.admin import display
from classifier.admin.display import admin_change_link, render_fragment
from classifier.promotion import decision_rows
from mnistsite.errors import ApplicationError

from .forms import StartRunForm
from .models import RetrainPolicy, RetrainPolicyEvent, TrainingRun
from .policy import policy_get, policy_pause, policy_resume, policy_status, policy_update
from .services import training_run_cancel, training_run_start

DISPLAY = "admin/training/display/"


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("id", "status_badge", "arch_name", "progress_percent", "epochs_done", "created_by", "created_at",
                    "finished_at", "result_link", "promoted")
    list_filter = ("status", "trigger", "executor", "promote")
    list_select_related = ("created_by", "result_version")
    search_fields = ("id__exact", "created_by__username", "error")
    change_list_template = "admin/training/trainingrun_change_list.html"
    actions = ("cancel_selected",)
    fieldsets = (
        (None, {"fields": ("status_badge", "progress_bar", "error", "cancel_requested", "result_link",
                           "promotion_reason", "promotion_evidence", "base_link")}),
        ("Results", {"fields": ("metrics_table", "field_confusion", "epochs_table")}),
        ("Run", {"fields": ("trigger", "config_json", "data_fingerprint", "data_json", "executor", "worker", "device",
                            "created_by", "created_at", "started_at", "heartbeat_at", "finished_at")}),
        ("Log", {"fields": ("log_text",)}),
    )
    readonly_fields = (
        "status_badge", "progress_bar", "error", "cancel_requested", "result_link", "promotion_reason",
        "promotion_evidence", "base_link",
        "metrics_table", "field_confusion", "epochs_table", "trigger", "config_json", "data_fingerprint", "data_json",
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
        return TemplateResponse(request, "admin/training/start_run.html", {
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
        return render_fragment(DISPLAY + "run_status.html", status=obj.status)

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

    @admin.display(description="gate's evidence")
    def promotion_evidence(self, obj: TrainingRun) -> SafeString | None:
        figures = ((obj.promotion or {}).get("gate") or {}).get("figures")
        rows = decision_rows(figures)
        if not rows:
            return None
        return render_fragment("admin/classifier/display/gate_evidence.html", rows=rows,
                               rule_text=figures.get("rule_text"), alpha=figures.get("alpha"))

    @admin.display(description="progress")
    def progress_bar(self, obj: TrainingRun) -> SafeString:
        return render_fragment(
            DISPLAY + "progress.html", run=obj, value=f"{obj.progress:.4f}", percent=f"{obj.progress:.1%}",
            steps=f"{obj.step:,}/{obj.total_steps:,}",
            rate=f"{obj.samples_per_second:,.0f}" if obj.samples_per_second else None,
            eta=f"{obj.eta_seconds:.0f}" if obj.eta_seconds and not obj.is_finished else None,
        )

    @admin.display(description="final metrics")
    def metrics_table(self, obj: TrainingRun) -> SafeString | None:
        return display.metrics_table({k: v for k, v in (obj.metrics or {}).items() if not isinstance(v, list)})

    @admin.display(description="field-set confusion matrix")
    def field_confusion(self, obj: TrainingRun) -> SafeString | None:
        return display.confusion_table((obj.metrics or {}).get("field_confusion_matrix"))

    @admin.display(description="epochs")
    def epochs_table(self, obj: TrainingRun) -> SafeString | None:
        epochs = (obj.history or {}).get("epochs") or []
        if not epochs:
            return None
        rows = [
            (e.get("epoch"), f"{e.get('train_loss', 0):.4f}", _percent(e.get("train_accuracy")),
             "" if e.get("val_loss") is None else f"{e['val_loss']:.4f}", _percent(e.get("val_accuracy")),
             f"{e.get('lr', 0):.5f}", f"{e.get('seconds', 0):.1f} s")
            for e in epochs
        ]
        return render_fragment(DISPLAY + "epochs.html", rows=rows)

    @admin.display(description="config")
    def config_json(self, obj: TrainingRun) -> SafeString:
        return display.preformatted(obj.config)

    @admin.display(description="data")
    def data_json(self, obj: TrainingRun) -> SafeString | None:
        if not obj.data:
            return None
        shown = {k: v for k, v in obj.data.items() if k != "drawing_ids"}
        return display.preformatted(shown)

    @admin.display(description="log")
    def log_text(self, obj: TrainingRun) -> SafeString | None:
        return display.preformatted(obj.log) if obj.log else None


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


# ---------------------------------------------------------------------------- the retraining policy


@admin.register(RetrainPolicy)
class RetrainPolicyAdmin(admin.ModelAdmin):
    """One row: its list opens the row. Saving goes through the policy's services (audit log included)."""

    fieldsets = (
        (None, {"fields": ("status_line", "paused", "pause_reason", "min_new_labels", "shadow_min_labels")}),
        ("State", {"fields": ("last_run_link", "decided_run_link", "label_watermark", "last_checked_at",
                              "last_outcome", "schedule")}),
        ("Recent actions", {"fields": ("recent_events",)}),
    )
    readonly_fields = ("status_line", "last_run_link", "decided_run_link", "label_watermark", "last_checked_at",
                       "last_outcome", "schedule", "recent_events")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: RetrainPolicy | None = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        policy = policy_get()
        return HttpResponseRedirect(reverse("admin:training_retrainpolicy_change", args=[policy.pk]))

    def save_model(self, request: HttpRequest, obj: RetrainPolicy, form, change: bool) -> None:
        try:
            if "paused" in form.changed_data:
                if obj.paused:
                    policy_pause(by=request.user, reason=obj.pause_reason)
                else:
                    policy_resume(by=request.user, reason=obj.pause_reason)
            policy_update(by=request.user, min_new_labels=obj.min_new_labels, shadow_min_labels=obj.shadow_min_labels)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.WARNING)

    @admin.display(description="status")
    def status_line(self, obj: RetrainPolicy) -> str:
        return policy_status(obj)

    @admin.display(description="latest automatic run")
    def last_run_link(self, obj: RetrainPolicy) -> SafeString | None:
        return admin_change_link(obj.last_run, f"run {obj.last_run.pk} ({obj.last_run.status})") if obj.last_run else None

    @admin.display(description="latest settled run")
    def decided_run_link(self, obj: RetrainPolicy) -> SafeString | None:
        return admin_change_link(obj.decided_run, f"run {obj.decided_run.pk}") if obj.decided_run else None

    @admin.display(description="schedule")
    def schedule(self, obj: RetrainPolicy) -> str:
        where = {"beat": "by Celery beat (make beat)", "thread": "by a thread of each serving process",
                 "off": "by nothing (RETRAIN_POLICY_SCHEDULER=off)"}[settings.RETRAIN_POLICY_SCHEDULER]
        return f"checked every {settings.RETRAIN_POLICY_INTERVAL_SECONDS:g} s {where}"

    @admin.display(description="latest actions")
    def recent_events(self, obj: RetrainPolicy) -> SafeString | None:
        events = list(RetrainPolicyEvent.objects.select_related("by", "run", "version")[:20])
        if not events:
            return None
        return render_fragment(DISPLAY + "policy_events.html", events=events)


@admin.register(RetrainPolicyEvent)
class RetrainPolicyEventAdmin(admin.ModelAdmin):
    """The policy's audit log: read-only."""

    list_display = ("at", "action", "who", "run", "version", "reason")
    list_filter = ("action", "actor")
    list_select_related = ("by", "run", "version")
    search_fields = ("reason", "by__username")
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RetrainPolicyEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: RetrainPolicyEvent | None = None) -> bool:
        return False  # an audit log is append-only

    @admin.display(description="by")
    def who(self, obj: RetrainPolicyEvent) -> str:
        return obj.actor or getattr(obj.by, "username", "") or ""
