"""The start-a-run form for the admin, built from ``RunSpec`` (fields, defaults and bounds)."""
from __future__ import annotations

from typing import Any

from django import forms

from classifier.models import ModelVersion

from .spec import RunOption, run_options

TRI_STATE = [("", "recipe default"), ("true", "on"), ("false", "off")]


def _form_field(option: RunOption) -> forms.Field:
    common: dict[str, Any] = {"required": False, "label": option.label, "help_text": option.help}
    if option.kind == "int":
        return forms.IntegerField(min_value=option.minimum, max_value=option.maximum, initial=option.default, **common)
    if option.kind == "float":
        return forms.FloatField(min_value=option.minimum, max_value=option.maximum, initial=option.default, **common)
    if option.kind == "bool" and option.default is None:
        return forms.TypedChoiceField(choices=TRI_STATE, coerce=lambda v: v == "true", empty_value=None, **common)
    if option.kind == "bool":
        return forms.BooleanField(initial=option.default, **common)
    if option.kind == "choice":
        blank = [] if option.default is not None else [("", "— from the base version —")]
        return forms.ChoiceField(choices=blank + [(c, c) for c in option.choices], initial=option.default, **common)
    if option.kind == "version":
        return forms.ModelChoiceField(queryset=ModelVersion.objects.usable(), empty_label="— from scratch —", **common)
    if option.kind == "object":
        return forms.JSONField(**common)
    return forms.CharField(max_length=option.max_length, **common)


class StartRunForm(forms.Form):
    """The same options as ``POST /api/retrain/``; empty fields take the architecture's recipe."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for option in run_options():
            self.fields[option.name] = _form_field(option)

    def spec(self) -> dict[str, Any]:
        """The options as ``training_run_start`` takes them (booleans always given, blanks left out)."""
        data = {}
        for option in run_options():
            value = self.cleaned_data.get(option.name)
            if isinstance(value, ModelVersion):
                value = value.pk
            if option.kind == "bool" and option.default is not None:
                data[option.name] = bool(value)
            elif value not in (None, "", {}):
                data[option.name] = value
        return data
