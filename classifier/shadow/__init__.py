"""Shadow evaluation: a candidate answers live drawings in the background, beside the active version.

Staff (or an automatic policy) put a candidate *in shadow* (``shadow_start``) and take it out
(``shadow_stop``); both are in the audit log. While it is in shadow, the drawings the active version
answered (``POST /api/predict/``, its batch form, the drawing page) are answered by the candidate too,
in one of two places (``SHADOW_WORKER``): ``process``, a process of its own (``python manage.py shadow``,
``ShadowPoller``), or ``thread``, a daemon thread in each web process (``ShadowWorker``). Either way each
answer is stored as a ``ShadowPrediction`` beside the prediction, and a candidate answers only drawings
made since it entered shadow. ``shadow_report`` compares a candidate with the version that answered the
users, ``shadow_evidence`` is that comparison as an evidence set, and ``shadow_gate`` runs the promotion
gate on a candidate with it.

One module per job, each importing only those before it:

- ``versions``: which candidates are in shadow (the query, and this process's cached ids);
- ``reports``: what the shadow shows (``ShadowReport``, ``shadow_report(s)``, ``shadow_evidence``);
- ``lifecycle``: in and out of shadow, and the gate for a candidate in shadow (``shadow_gate``,
  ``shadow_promote``);
- ``answers``: answering and storing (``ShadowAnswers``), and the in-process worker (``ShadowWorker``,
  ``shadow_submit``, ``shadow_reset``);
- ``process``: the shadow in a process of its own (``ShadowPoller``, its heartbeat, ``CpuGauge``).
"""
from __future__ import annotations

from .answers import Item, Shadowed, ShadowWorker, shadow_reset, shadow_submit, shadow_worker
from .lifecycle import shadow_gate, shadow_promote, shadow_start, shadow_stop
from .process import HEARTBEAT_KEY, CpuGauge, ShadowPoller, shadow_process_missing, shadow_process_seen
from .reports import SHADOW_EVIDENCE, SHADOW_TITLE, ShadowReport, shadow_evidence, shadow_report, shadow_reports
from .versions import shadow_versions

__all__ = [
    "HEARTBEAT_KEY",
    "SHADOW_EVIDENCE",
    "SHADOW_TITLE",
    "CpuGauge",
    "Item",
    "ShadowPoller",
    "ShadowReport",
    "ShadowWorker",
    "Shadowed",
    "shadow_evidence",
    "shadow_gate",
    "shadow_process_missing",
    "shadow_process_seen",
    "shadow_promote",
    "shadow_report",
    "shadow_reports",
    "shadow_reset",
    "shadow_start",
    "shadow_stop",
    "shadow_submit",
    "shadow_versions",
    "shadow_worker",
]
