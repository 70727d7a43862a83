"""Serializer building blocks shared by every app's API."""
from __future__ import annotations

from rest_framework import serializers


class StrictSerializer(serializers.Serializer):
    """Unknown fields are an error, so a typo ("epoch") is not silently ignored."""

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)
