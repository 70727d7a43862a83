"""Serializer building blocks shared by every app's API."""
from __future__ import annotations

from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers


class StrictSerializer(serializers.Serializer):
    """Unknown fields are an error, so a typo ("epoch") is not silently ignored."""

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
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
