"""``python manage.py import_drawings IN.zip --user NAME``: a dataset zip (as exported) as labelled drawings."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.dataset import import_drawings
from mnistsite.errors import ApplicationError


class Command(BaseCommand):
    help = ("Import a dataset zip in the export format as labelled drawings, labelled by a staff user. "
            "A row is skipped as a duplicate when its drawing is already here: the site holds as many labelled "
            "drawings with that 28x28 input (same pixels) as the file has up to that row. Every row of an export "
            "is imported into an empty site; importing the same file again imports nothing.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", help="the zip file (as written by export_drawings or the admin)")
        parser.add_argument("--user", required=True, help="the staff account the labels are attributed to")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")

    def handle(self, *args: Any, **opts: Any) -> None:
        source = Path(opts["source"])
        if not source.is_file():
            raise CommandError(f"no such file: {source}")
        user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: opts["user"]}).first()
        if user is None or not (user.is_active and user.is_staff):
            raise CommandError(f"{opts['user']!r} is not an active staff account")
        try:
            summary = import_drawings(source=str(source), by=user)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        if opts["json"]:
            self.stdout.write(json.dumps(summary.as_dict()))
            return
        self.stdout.write(f"{summary.rows} drawings read: {summary.created} imported, "
                          f"{summary.duplicates} duplicates skipped ({len(summary.conflicts)} with another label here)")
