"""Request validation for the training API (semantic checks live in the services)."""
from __future__ import annotations

from rest_framework import serializers

from mnistsite.serializers import StrictSerializer

from .models import TrainingRun
from .spec import RunOption, run_options


def _api_field(option: RunOption) -> serializers.Field:
    common = {"required": False, "help_text": option.help}
    nullable = {"allow_null": True} if option.default is None else {}
    if option.kind in {"int", "version"}:
        return serializers.IntegerField(min_value=option.minimum, max_value=option.maximum, **nullable, **common)
    if option.kind == "float":
        return serializers.FloatField(min_value=option.minimum, max_value=option.maximum, **nullable, **common)
    if option.kind == "bool":
        return serializers.BooleanField(**nullable, **common)
    if option.kind == "choice":
        return serializers.ChoiceField(choices=list(option.choices), **nullable, **common)
    if option.kind == "object":
        return serializers.DictField(**nullable, **common)
    return serializers.CharField(max_length=option.max_length, allow_blank=True, **common)


RetrainRequestSerializer = type(
    "RetrainRequestSerializer", (StrictSerializer,),
    {"__doc__": "A run request: the options of ``RunSpec``.",
     # From scratch a run needs an architecture; fine-tuning takes it from the base version.
     "schema_constraints": {"anyOf": [{"required": ["arch"], "properties": {"arch": {"type": "string"}}},
                                      {"required": ["base_version"], "properties": {"base_version": {"type": "integer"}}}]},
     **{option.name: _api_field(option) for option in run_options()}},
)


class RunStartedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=TrainingRun.Status.choices)
    url = serializers.URLField()
    ws_url = serializers.CharField()
