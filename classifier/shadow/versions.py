"""Which candidates are in shadow: the query, and this process's cached answer for the request path."""
from __future__ import annotations

import time

from django.conf import settings

from ..models import ModelVersion, ModelVersionQuerySet

__all__ = ["shadow_ids", "shadow_versions"]


def shadow_versions() -> ModelVersionQuerySet:
    """The candidates in shadow now, the longest in shadow first."""
    return ModelVersion.objects.in_shadow().order_by("shadow_since", "id")


class _ShadowIds:
    """Which versions are in shadow, as this process last read it (at most every MODEL_REFRESH_SECONDS):
    the request path asks this, so it costs one small query per process per refresh, not per request."""

    def __init__(self) -> None:
        self._ids: tuple[int, ...] = ()
        self._checked = float("-inf")

    def get(self) -> tuple[int, ...]:
        now = time.monotonic()
        if now - self._checked >= settings.MODEL_REFRESH_SECONDS:
            self._ids = tuple(shadow_versions().values_list("id", flat=True))
            self._checked = now
        return self._ids

    def expire(self) -> None:
        self._checked = float("-inf")


#: This process's cache of the ids of the versions in shadow; entering or leaving shadow expires it.
shadow_ids = _ShadowIds()
