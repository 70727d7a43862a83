"""Query-string filters of the training API's lists: a value that does not parse is a 400, never a 500."""
from __future__ import annotations

from django_filters import rest_framework as filters

from .models import TrainingRun


class TrainingRunFilter(filters.FilterSet):
    class Meta:
        model = TrainingRun
        fields = ["status"]
