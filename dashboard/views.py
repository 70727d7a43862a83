"""The dashboard page: a shell with the run list; the sockets in ``consumers.py`` keep it live."""
from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.generic import TemplateView

from . import selectors
from .encoding import finite
from .params import parse_run_id
from .start_form import architectures, start_form


def url_template(name: str) -> str:
    """A URL with an id in it, for the page's script: ``/api/runs/{id}/cancel/``."""
    return reverse(name, args=[0]).replace("/0/", "/{id}/")


def selected_run(request: HttpRequest) -> tuple[int | None, bool]:
    """The run to show first, and whether the page should follow newer runs as they start.

    ``?run=<id>`` or ``?version=<model version id>`` (the run that produced it) pin a run;
    otherwise the current one is shown (running, else queued, else the newest) and newer runs are followed.
    """
    if "run" in request.GET:
        return parse_run_id(request.GET["run"]), False
    if "version" in request.GET:
        version_id = parse_run_id(request.GET["version"])
        return (selectors.run_for_version(version_id) if version_id else None), False
    return selectors.current_run_id(), True


@method_decorator(ensure_csrf_cookie, name="dispatch")
class DashboardView(TemplateView):
    """Runs and their live curves for everyone; the start form (from the run spec) and cancel button for staff."""

    template_name = "dashboard/dashboard.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        staff = bool(self.request.user.is_active and self.request.user.is_staff)
        run_id, follow = selected_run(self.request)
        initial = {
            "staff": staff,
            "runs": selectors.runs_snapshot(staff=staff),
            "selected": run_id,
            "follow": follow,
            "ws": {"runs": "/ws/training/", "run": "/ws/training/{id}/"},
            "api": {"retrain": reverse("training-retrain"), "cancel": url_template("training-run-cancel")},
            "admin_version": url_template("admin:classifier_modelversion_change") if staff else None,
        }
        if staff:
            initial["architectures"] = architectures()
        return super().get_context_data(initial=finite(initial), staff=staff,
                                        start_form=start_form() if staff else None, **kwargs)
