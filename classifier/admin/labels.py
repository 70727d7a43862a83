"""Admin for labels: every word given on a drawing, with its client network, giver, path and trust.

Staff find a burst of suspicious labels here (the busiest clients, a time window) and undo it with the
"Withdraw selected labels" action: the rows are deleted and their drawings' effective labels recomputed
(``classifier.labels.labels_withdraw``), so the labels neither train nor judge a version any more.
Filter by one client and a time window, select all, withdraw.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.safestring import SafeString

from classifier.labels import labels_withdraw
from classifier.models import Label

from .display import admin_change_link, link

BUSIEST = 20  # clients listed in the client filter
WINDOWS = (("last 15 minutes", timedelta(minutes=15)), ("last hour", timedelta(hours=1)),
           ("last 6 hours", timedelta(hours=6)), ("last 24 hours", timedelta(days=1)),
           ("last 7 days", timedelta(days=7)))


class ClientFilter(admin.SimpleListFilter):
    """The clients (networks) with the most labels, busiest first, with their counts: bursts stand out."""

    title = "client (busiest first)"
    parameter_name = "client"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        rows = (Label.objects.exclude(client="").values("client").annotate(n=Count("id")).order_by("-n", "client")
                [:BUSIEST])
        choices = [(row["client"], f"{row['client']} ({row['n']})") for row in rows]
        current = self.value()
        if current and current not in {value for value, _ in choices}:
            choices.insert(0, (current, current))
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Label]) -> QuerySet[Label]:
        return queryset.filter(client=self.value()) if self.value() else queryset


def _moment(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = parse_datetime(text.strip().replace(" ", "T"))
    if moment is None:
        raise IncorrectLookupParameters(f"not a date and time: {text!r} (e.g. 2026-12-04T23:00)")
    return timezone.make_aware(moment, timezone.get_current_timezone()) if timezone.is_naive(moment) else moment


class TimeWindowFilter(admin.ListFilter):
    """Labels given from ``since`` until ``until`` (either may be left out): a recent window in one click,
    or any window typed in (UTC)."""

    title = "time window"
    template = "admin/classifier/label/window_filter.html"
    parameters = ("since", "until")

    def __init__(self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        for name in self.parameters:
            if name in params:
                value = params.pop(name)
                self.used_parameters[name] = value[-1] if isinstance(value, list) else value

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str]:
        return list(self.parameters)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Label]) -> QuerySet[Label]:
        since, until = _moment(self.used_parameters.get("since")), _moment(self.used_parameters.get("until"))
        if since is not None:
            queryset = queryset.filter(at__gte=since)
        if until is not None:
            queryset = queryset.filter(at__lt=until)
        return queryset

    def choices(self, changelist: Any) -> Iterator[dict[str, Any]]:
        used = self.used_parameters
        yield {"selected": not used, "display": "any time",
               "query_string": changelist.get_query_string(remove=list(self.parameters))}
        now = timezone.now().replace(microsecond=0)
        for title, span in WINDOWS:
            since = (now - span).strftime("%Y-%m-%dT%H:%M")
            yield {"selected": False, "display": title,
                   "query_string": changelist.get_query_string({"since": since}, remove=["until"])}
        keep = {k: v for k, v in changelist.params.items() if k not in {*self.parameters, "p", "e"}}
        yield {"form": True, "since": used.get("since", ""), "until": used.get("until", ""),
               "hidden": [(k, v[-1] if isinstance(v, list) else v) for k, v in keep.items()]}


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin):
    list_display = ("at", "value_display", "prediction_link", "client_link", "giver", "via", "trusted", "by_staff",
                    "given_by")
    list_filter = ("trusted", "via", ClientFilter, TimeWindowFilter, "by_staff")
    list_select_related = ("given_by",)
    search_fields = ("client", "giver")
    date_hierarchy = "at"
    actions = ["withdraw_labels"]
    list_per_page = 100
    readonly_fields = ("prediction", "digit", "not_a_digit", "given_by", "by_staff", "trusted", "giver", "via",
                       "client", "at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # labels are given on drawings, not typed in here

    def has_change_permission(self, request: HttpRequest, obj: Label | None = None) -> bool:
        return False  # a label is never edited: a new word is a new row

    def has_delete_permission(self, request: HttpRequest, obj: Label | None = None) -> bool:
        return False  # only withdrawn (the action below), so that the drawings' labels follow

    def has_withdraw_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("classifier.delete_label")

    @admin.display(description="label")
    def value_display(self, obj: Label) -> str:
        return "not a digit" if obj.not_a_digit else str(obj.digit)

    @admin.display(description="drawing", ordering="prediction")
    def prediction_link(self, obj: Label) -> SafeString:
        return admin_change_link(obj.prediction, f"prediction {obj.prediction_id}")

    @admin.display(description="client", ordering="client")
    def client_link(self, obj: Label) -> SafeString | str:
        """The client; the link lists that client's labels only."""
        return link(f"?client={obj.client}", obj.client) if obj.client else "–"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Label]:
        return super().get_queryset(request).select_related("prediction")

    @admin.action(description="Withdraw selected labels (their drawings' labels are recomputed)",
                  permissions=["withdraw"])
    def withdraw_labels(self, request: HttpRequest, queryset: QuerySet[Label]) -> None:
        outcome = labels_withdraw(labels=queryset, by=request.user, reason="admin action")
        self.message_user(request, f"{outcome}.", messages.SUCCESS)
