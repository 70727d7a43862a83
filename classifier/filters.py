"""Query-string filters of the registry API's lists: a value that does not parse is a 400, never a 500."""
from __future__ import annotations

from django import forms
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from .models import Prediction


class IntegerFilter(filters.NumberFilter):
    """A whole number: ``NumberFilter`` would take ``7.5``; what ``int()`` refuses (``²``) is a 400."""

    field_class = forms.IntegerField


class PredictionFilter(filters.FilterSet):
    digit = IntegerFilter(min_value=0, max_value=9, help_text="The digit the model answered.")
    label = IntegerFilter(min_value=0, max_value=9, help_text="The digit a person said it is.")
    model_version = IntegerFilter(min_value=1, max_value=2**63 - 1, help_text="A model version's id.")  # a bigint
    labelled = extend_schema_field(OpenApiTypes.BOOL)(filters.TypedChoiceFilter(
        field_name="label", lookup_expr="isnull", exclude=True, choices=[("true", "true"), ("false", "false")],
        coerce=lambda value: value == "true", help_text="true: told its digit by a person; false: not yet.",
    ))  # strict: anything but true/false is a 400 (a BooleanFilter would quietly not filter)

    class Meta:
        model = Prediction
        fields = ["digit", "label", "model_version", "source", "labelled"]
