"""``python manage.py export_drawings OUT.zip``: the labelled drawings as an MNIST-style dataset zip."""
from __future__ import annotations

import datetime
import os
import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from classifier.dataset import PARTS, export_queryset, export_zip_file
from engine.data import load_idx_dataset


def _date(value: str) -> datetime.datetime:
    try:
        day = datetime.date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"not a date (YYYY-MM-DD): {value!r}") from None
    return timezone.make_aware(datetime.datetime.combine(day, datetime.time()))


class Command(BaseCommand):
    help = ("Export the labelled drawings (or a subset) as a zip: MNIST-style IDX files (28x28 inputs + labels), "
            "the original images and a CSV manifest. Load it with engine.data.load_idx_dataset(path).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("out", help="the zip file to write (replaced atomically)")
        parser.add_argument("--part", choices=PARTS, default="all",
                            help="train: what training may use; field: the held-out field set (default: all)")
        parser.add_argument("--staff-only", action="store_true", help="only drawings labelled by staff")
        parser.add_argument("--since", help="created on or after this day (YYYY-MM-DD)")
        parser.add_argument("--until", help="created before this day (YYYY-MM-DD)")

    def handle(self, *args: Any, **opts: Any) -> None:
        out = Path(opts["out"])
        if not out.parent.is_dir():
            raise CommandError(f"no such folder: {out.parent}")
        queryset = export_queryset(
            staff_only=opts["staff_only"],
            since=_date(opts["since"]) if opts["since"] else None,
            until=_date(opts["until"]) if opts["until"] else None,
        )
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as target:
                export_zip_file(queryset, target, part=opts["part"])
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        drawings = len(load_idx_dataset(out).labels)  # counted in what was written
        self.stdout.write(f"{drawings:,} drawing{'' if drawings == 1 else 's'} "
                          f"({out.stat().st_size / 1e6:.1f} MB) written to {out}")
