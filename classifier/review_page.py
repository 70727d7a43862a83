"""The staff review page: a static shell; drawings come from and labels go to the review API
(``/api/review/``) through ``static/classifier/review.js``, one key per label, no page loads."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.generic import TemplateView

from .pages import staff_required
from .review import review_counts

DIGITS = range(10)


@method_decorator([staff_required, ensure_csrf_cookie], name="dispatch")
class ReviewPageView(TemplateView):
    template_name = "classifier/review.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return super().get_context_data(digits=DIGITS, counts=review_counts(),
                                        train_trust=settings.LABELS_TRAIN_TRUST, **kwargs)
