"""The one confusion-matrix rendering: ``{% confusion_matrix matrix %}`` and ``render_confusion_matrix``.

Both fill ``templates/includes/confusion_matrix.html``, on the statistics page, in the admin (model
versions, training runs) and on the dashboard (sent rendered with a finished run's state). One shading
rule: a cell's level is its share of its row (the images of that true digit), bucketed by
``SHADE_STEPS``; ``static/site/confusion-matrix.css`` colours the levels, green on the diagonal, red off it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import template
from django.template.loader import render_to_string
from django.utils.safestring import SafeString

TEMPLATE = "includes/confusion_matrix.html"
# A cell with any count is level 1; each step of its row's share it reaches adds a level (up to 6).
SHADE_STEPS = (0.005, 0.02, 0.05, 0.2, 0.5)

register = template.Library()


def square_matrix(values: object, size: int = 10) -> list[list[int]] | None:
    """``values`` as a size x size matrix of ints, or None when the stored JSON is not that shape."""
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != size:
        return None
    try:
        rows = [[int(cell) for cell in row] for row in values]
    except (TypeError, ValueError):
        return None
    return rows if all(len(row) == size for row in rows) else None


def shade_level(count: int, total: int) -> int:
    """0 for an empty cell, else 1 plus the number of ``SHADE_STEPS`` its share of the row reaches."""
    if count <= 0 or total <= 0:
        return 0
    share = count / total
    return 1 + sum(share >= step for step in SHADE_STEPS)


def confusion_matrix_context(values: object) -> dict[str, Any]:
    """The table's rows (true digits) and cells (predicted digits); no rows when ``values`` is not a matrix."""
    matrix = square_matrix(values)
    if matrix is None:
        return {"digits": [], "rows": []}
    rows = []
    for true, counts in enumerate(matrix):
        total = sum(counts)
        cells = [
            {
                "predicted": predicted,
                "count": f"{count:,}",
                "share": f"{count / total:.1%}" if total else "–",
                "kind": "hit" if predicted == true else "miss",
                "level": shade_level(count, total),
            }
            for predicted, count in enumerate(counts)
        ]
        correct = f"{counts[true] / total:.1%}" if total else "–"
        rows.append({"digit": true, "cells": cells, "total": f"{total:,}", "correct": correct})
    return {"digits": range(len(matrix)), "rows": rows}


def render_confusion_matrix(values: object) -> SafeString:
    """The table as HTML (empty when ``values`` is not a matrix)."""
    context = confusion_matrix_context(values)
    return render_to_string(TEMPLATE, context) if context["rows"] else SafeString("")


@register.inclusion_tag(TEMPLATE)
def confusion_matrix(values: object) -> dict[str, Any]:
    return confusion_matrix_context(values)
