"""Serializer building blocks shared by every app's API."""
from __future__ import annotations

from django.http import QueryDict
from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers


# The JSON type each scalar field takes from a JSON body (DRF would also take "3" for 3, 1 for true, 3 for "3").
_JSON_TYPES: tuple[tuple[type[serializers.Field], tuple[type, ...], str], ...] = (
    (serializers.BooleanField, (bool,), "true or false"),
    (serializers.IntegerField, (int,), "a whole number"),
    (serializers.FloatField, (int, float), "a number"),
    (serializers.CharField, (str,), "a string"),
)


def _json_type_errors(fields, data: dict) -> dict[str, list[str]]:
    errors = {}
    for name, value in data.items():
        field = fields.get(name)
        if field is None or value is None or field.read_only:
            continue
        for kind, types, words in _JSON_TYPES:
            if isinstance(field, kind):
                if not isinstance(value, types) or (isinstance(value, bool) and kind is not serializers.BooleanField):
                    errors[name] = [f"Must be {words}."]
                break
    return errors


class StrictSerializer(serializers.Serializer):
    """Unknown fields are an error, so a typo ("epoch") is not silently ignored; from a JSON body, each value
    must have its field's JSON type (the schema's), not one DRF would convert. A serializer of query
    parameters, all strings, sets ``json_types = False``."""

    json_types = True

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        if self.json_types and isinstance(data, dict) and not isinstance(data, QueryDict):
            errors = _json_type_errors(self.fields, data)
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A string and nothing else: DRF's ``CharField`` would turn a JSON number into its digits."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSerializerSchema(OpenApiSerializerExtension):
    """In the schema, a ``StrictSerializer`` is a closed object (``additionalProperties: false``), as it
    refuses unknown fields; a serializer's ``schema_constraints`` (JSON Schema keywords such as ``anyOf``)
    add what no single field says, e.g. that one of two fields is required."""

    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_basic_serializer(self.target, direction)
        schema["additionalProperties"] = False
        schema.update(getattr(self.target, "schema_constraints", {}))
        return schema
