"""The site's HTML pages: the drawing page and the staff statistics page (and /favicon.ico).

The drawing page is a static shell; everything it shows comes from the JSON API through
``static/classifier/draw.js``. The statistics page reads its numbers from ``classifier.selectors`` and
``classifier.quality`` (quality over time, drawn by ``static/classifier/stats.js``) and ``classifier.shadow``
(the candidates in shadow);
its confusion matrix is the site's one table (``classifier.templatetags.confusion``).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.templatetags.static import static
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.generic import TemplateView

from classifier import quality, selectors, shadow
from classifier.models import Prediction

DIGITS = range(10)
GALLERY_SIZE = 24
QUALITY_DAYS = quality.QUALITY_DAYS  # the quality-over-time charts cover this many days at most


def staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The site's staff pages: a visitor not signed in goes to the site's own login (LOGIN_URL) and comes back
    (``?next=``); a signed-in account that is not staff gets 403 (the login would only send it back here)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
        if not (request.user.is_active and request.user.is_staff):
            raise PermissionDenied("This page is for staff.")
        return view(request, *args, **kwargs)

    return wrapped


@method_decorator(ensure_csrf_cookie, name="dispatch")
class DrawView(TemplateView):
    """Draw a digit and watch the model read it (the API calls need the CSRF cookie)."""

    template_name = "classifier/draw.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return super().get_context_data(digits=DIGITS, **kwargs)


@method_decorator(staff_required, name="dispatch")
class StatsPageView(TemplateView):
    """How the models do on the drawings people labelled."""

    template_name = "classifier/stats.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        stats = selectors.prediction_stats()
        recent = selectors.recent_predictions(limit=GALLERY_SIZE)
        checks = [_check_item(check) for check in quality.quality_checks()]
        return super().get_context_data(
            stats=stats,
            accuracy=_percent(stats["accuracy"]),
            per_version=[{**row, "accuracy_percent": _percent(row["accuracy"])} for row in stats["per_version"]],
            gallery=[_gallery_item(prediction) for prediction in recent],
            quality=quality.quality_over_time(days=QUALITY_DAYS),
            quality_days=QUALITY_DAYS,
            quality_by_drawings=quality.quality_by_drawings(),
            quality_checks=checks,
            quality_warnings=[check for check in checks if check["state"] == "warning"],
            shadows=[{"version": version, **report.display()} for version, report in shadow.shadow_reports()],
            shadow_required=settings.PROMOTION_SHADOW_MIN_LABELLED,
            shadow_process_missing=shadow.shadow_process_missing(),
            **kwargs,
        )


def favicon(request: HttpRequest) -> HttpResponseRedirect:
    """Browsers that ask for /favicon.ico get the site's SVG icon (pages name it in their head)."""
    response = HttpResponseRedirect(static("site/favicon.svg"))
    response["Cache-Control"] = "public, max-age=86400"
    return response


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100.0 * fraction


def _check_item(check: dict[str, Any]) -> dict[str, Any]:
    return {
        **check,
        "recent_percent": _percent(check["recent_accuracy"]),
        "field_percent": _percent(check["field_accuracy"]),
        "drop_points": _percent(check["drop"]),
        "margin_points": _percent(check["margin"]),
    }


def _gallery_item(prediction: Prediction) -> dict[str, Any]:
    return {
        "prediction": prediction,
        "drawing_url": prediction.image.url if prediction.image else None,
        "input_url": selectors.input_data_url(prediction.input_pixels),
        "correct": prediction.is_correct,
    }
