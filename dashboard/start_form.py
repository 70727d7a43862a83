"""The dashboard's start-a-run form, built from the one run spec (``training.spec.run_options``).

Each option marked for the dashboard becomes one field, "main" ones in the form and "more" ones under
"More options", with the spec's label, help and bounds. ``data-kind`` tells the page's script how to
read a field; the API checks the values again against the same spec.
"""
from __future__ import annotations

from dataclasses import fields as dataclass_fields
from decimal import Decimal
from typing import Any

from engine.nets import ARCHITECTURES
from engine.trainer import TrainConfig, recipe
from training.spec import RunOption, run_options

TRI_STATE = (("", "recipe default"), ("true", "on"), ("false", "off"))
INPUT_TYPES = {"int": "number", "float": "number", "version": "number", "text": "text", "object": "text"}


def architectures() -> list[dict[str, Any]]:
    """The architectures a run can train, each with its recipe's value of every option on the form.

    The page shows these as placeholders: an empty field takes the recipe's value.
    """
    on_form = {option.name for option in run_options() if option.dashboard} - {"arch"}
    in_recipe = on_form & {f.name for f in dataclass_fields(TrainConfig)}
    choices = []
    for name, arch in ARCHITECTURES.items():
        config = recipe(name)
        choices.append({"name": name, "description": arch.description,
                        "recipe": {key: getattr(config, key) for key in sorted(in_recipe)}})
    return choices


def html_number(value: float | None) -> str | None:
    """A bound as an HTML number attribute: ``1e-07`` as ``0.0000001``, ``10.0`` as ``10``."""
    if value is None:
        return None
    if float(value).is_integer():
        return str(int(value))
    return format(Decimal(repr(float(value))), "f")


def start_field(option: RunOption) -> dict[str, Any]:
    """What the template needs to draw one option as a form field."""
    field: dict[str, Any] = {"name": option.name, "kind": option.kind, "label": option.label, "help": option.help}
    if option.kind == "choice":
        descriptions = {name: arch.description for name, arch in ARCHITECTURES.items()} if option.name == "arch" else {}
        selected = option.default if option.default is not None else option.choices[0]
        field["widget"] = "select"
        field["choices"] = [
            (choice, f"{choice} — {descriptions[choice]}" if choice in descriptions else choice, choice == selected)
            for choice in option.choices
        ]
    elif option.kind == "bool" and option.default is None:  # unset: the recipe decides
        field["widget"] = "select"
        field["choices"] = [(value, text, value == "") for value, text in TRI_STATE]
    elif option.kind == "bool":
        field["widget"] = "checkbox"
        field["checked"] = bool(option.default)
    else:
        field["widget"] = "input"
        field["type"] = INPUT_TYPES[option.kind]
        field["placeholder"] = "" if option.default in (None, "") else str(option.default)
        if field["type"] == "number":
            field.update(min=html_number(option.minimum), max=html_number(option.maximum), step=option.step,
                         numeric=option.kind != "float")
        else:
            field["maxlength"] = option.max_length
    return field


def start_form() -> dict[str, list[dict[str, Any]]]:
    """The form's fields in the spec's order: ``main`` ones, and ``more`` ones under "More options"."""
    sections: dict[str, list[dict[str, Any]]] = {"main": [], "more": []}
    for option in run_options():
        if option.dashboard:
            sections[option.dashboard].append(start_field(option))
    return sections
