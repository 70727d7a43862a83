"""``python manage.py recompute_labels``: re-apply the label rules (after changing LABELS_VISITOR_AGREEMENT)."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from classifier.labels import labels_recompute_all


class Command(BaseCommand):
    help = ("Recompute every drawing's effective label from its labels: staff over visitors, visitors as "
            "LABELS_VISITOR_AGREEMENT says. Run it after changing that setting.")

    def handle(self, *args: Any, **opts: Any) -> None:
        changed = labels_recompute_all()
        self.stdout.write(f"LABELS_VISITOR_AGREEMENT={settings.LABELS_VISITOR_AGREEMENT}: "
                          f"{changed} drawings changed their effective label")
