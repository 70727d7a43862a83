"""Stored values as small pieces of admin HTML, shared by the registry's admin and ``training.admin``.

The HTML is in templates (``admin/classifier/display/``), which escape everything they are given.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.db.models import Model
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

from classifier.templatetags.confusion import render_confusion_matrix, square_matrix

def render_fragment(template_name: str, **context: Any) -> SafeString:
    """A template's HTML for a read-only field or list column, without the file's surrounding whitespace."""
    # The template engine escaped the values; stripping whitespace leaves the HTML as safe as it was.
    return mark_safe(render_to_string(template_name, context).strip())


def link(url: str, text: str, *, download: bool = False) -> SafeString:
    return render_fragment("admin/classifier/display/link.html", url=url, text=text, download=download)


def admin_change_link(obj: Model, text: str) -> SafeString:
    return link(reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk]), text)


def ten_floats(values: object) -> list[float] | None:
    """``values`` as ten floats, or None when the stored JSON is not that shape."""
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != 10:
        return None
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def format_metric(key: str, value: object) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2%}" if "accuracy" in key and 0.0 <= value <= 1.0 else f"{value:.4g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def metrics_table(metrics: dict[str, Any]) -> SafeString | None:
    """Named numbers as a two-column table, sorted by name; None when there are none."""
    if not metrics:
        return None
    rows = [(key, format_metric(key, value)) for key, value in sorted(metrics.items())]
    return render_fragment("admin/classifier/display/metrics.html", rows=rows)


def preformatted(value: object) -> SafeString:
    """Stored JSON, pretty-printed, or a text (a log) as it is."""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)
    return render_fragment("admin/classifier/display/preformatted.html", text=text)


def confusion_table(values: object) -> SafeString | None:
    """The site's one confusion-matrix table, or None when ``values`` is not a 10 x 10 matrix."""
    return None if square_matrix(values) is None else render_confusion_matrix(values)
