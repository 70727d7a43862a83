"""``python manage.py move_media --from /srv/mnistsite/media``: a one-box site's media into the bucket."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.template.defaultfilters import filesizeformat
from tqdm import tqdm

from classifier.media_move import media_copy, media_files_count, media_verify


class Command(BaseCommand):
    help = ("Copy every file of a local media folder (drawings, checkpoints, exports) into the configured media "
            "storage under the same names, then check that every row's file is there (checkpoints by sha256). "
            "Run it with MEDIA_STORAGE=s3 and the bucket's settings; it can be run again after an interruption.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="source", required=True, help="the old MEDIA_ROOT folder")
        parser.add_argument("--verify-only", action="store_true", help="only check the rows' files")

    def handle(self, *args: Any, **opts: Any) -> None:
        source = Path(opts["source"]).resolve()
        if not opts["verify_only"]:
            if not source.is_dir():
                raise CommandError(f"no such folder: {source}")
            if settings.MEDIA_STORAGE == "local" and source == Path(settings.MEDIA_ROOT).resolve():
                raise CommandError("the media storage is this same folder: set MEDIA_STORAGE=s3 and the bucket's "
                                   "settings first (docs/operations/object-storage.md)")
            total = media_files_count(source=source)
            with tqdm(total=total, unit="file", desc="copying", disable=opts["verbosity"] == 0) as bar:
                copied = media_copy(source=source, progress=lambda name: bar.update())
            self.stdout.write(f"{copied.copied} files copied ({filesizeformat(copied.bytes_copied)}), "
                              f"{copied.already_there} already there")
            for line in copied.skipped:
                self.stderr.write(f"  not copied: {line}")
        with tqdm(unit="file", desc="checking", disable=opts["verbosity"] == 0) as bar:
            checked = media_verify(progress=lambda name: bar.update())
        self.stdout.write(f"checked {checked.checkpoints} checkpoints and {checked.drawings} drawings: "
                          f"{len(checked.problems) or 'no'} problem{'s' if len(checked.problems) != 1 else ''}")
        for line in checked.problems:
            self.stderr.write(f"  {line}")
        if checked.problems:
            raise CommandError(f"{len(checked.problems)} row(s) point to files the storage does not have")
