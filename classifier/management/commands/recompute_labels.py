"""``python manage.py recompute_labels``: re-apply the label rule to every drawing (after changing
LABELS_AGREEMENT_CLIENTS, or after upgrading from the time before labels carried their trust)."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from classifier.labels import label_trust_counts, labels_recompute_all


class Command(BaseCommand):
    help = ("Recompute every drawing's effective label and its trust from its labels: a trusted source's label "
            "over visitors', \"agreed\" when LABELS_AGREEMENT_CLIENTS distinct clients agree. Run it after "
            "changing that setting.")

    def handle(self, *args: Any, **opts: Any) -> None:
        changed = labels_recompute_all()
        counts = ", ".join(f"{level} {n}" for level, n in label_trust_counts().items())
        self.stdout.write(f"LABELS_AGREEMENT_CLIENTS={settings.LABELS_AGREEMENT_CLIENTS}: {changed} drawings "
                          f"changed their effective label; drawings by trust: {counts} "
                          f"(training takes {settings.LABELS_TRAIN_TRUST} and above, the gate's evidence "
                          f"{settings.LABELS_EVIDENCE_TRUST} and above)")
