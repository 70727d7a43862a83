"""The process-manager examples in deploy/ start commands that exist, with arguments they accept."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class

from mnistsite import serve

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _commands() -> list[tuple[str, list[str]]]:
    found = []
    for unit in sorted(DEPLOY.glob("*.service")):
        for line in unit.read_text().splitlines():
            if line.startswith(("ExecStart=", "ExecStartPre=")):
                found.append((unit.name, shlex.split(line.split("=", 1)[1])[1:]))  # without the interpreter
    return found


def test_every_process_of_the_production_layout_has_a_unit():
    units = {unit for unit, _ in _commands()}
    assert units == {"mnistsite-web.service", "mnistsite-ws.service", "mnistsite-worker.service",
                     "mnistsite-shadow.service", "mnistsite-beat.service", "mnistsite-release.service"}


@pytest.mark.parametrize(("unit", "argv"), _commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_each_unit_command_parses(unit, argv):
    if argv[:2] == ["-m", "mnistsite.serve"]:
        command = serve.command(argv[2:])
        assert Path(command[0]).name in {"granian", "daphne"}
        return
    if argv[:2] == ["-m", "celery"]:
        assert argv[2:5] == ["-A", "mnistsite", "beat"], f"{unit}: {argv}"
        return
    assert argv[0] == "manage.py", f"{unit}: {argv}"
    name, *options = argv[1:]
    commands = get_commands()
    assert name in commands, f"{unit}: no management command {name!r}"
    parser = load_command_class(commands[name], name).create_parser("manage.py", name)
    parser.parse_args(options)  # exits (SystemExit) on an option the command does not take
