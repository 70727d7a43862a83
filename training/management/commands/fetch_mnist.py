"""``python manage.py fetch_mnist``: download and verify the MNIST archives."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from classifier.mnist_source import storage_name
from engine.data import (
    DEFAULT_MIRRORS,
    MNIST_RESOURCES,
    SPLIT_FILES,
    DataError,
    download_mnist,
    load_mnist,
    mnist_raw_dir,
)


class Command(BaseCommand):
    help = (
        "Download the MNIST archives into MNIST_ROOT/MNIST/raw/ (or --root), verifying "
        "their md5. Files already present and intact are left alone."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--root",
            type=Path,
            default=None,
            help="Dataset root (files go to ROOT/MNIST/raw/). Default: settings.MNIST_ROOT.",
        )
        parser.add_argument(
            "--mirror",
            action="append",
            dest="mirrors",
            metavar="URL",
            default=None,
            help=(
                "Base URL to fetch the .gz files from; repeat to try several in order. "
                f"Default: {' then '.join(DEFAULT_MIRRORS)}"
            ),
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=30.0,
            help="Network timeout in seconds per request (default 30).",
        )
        parser.add_argument(
            "--to-storage",
            action="store_true",
            help=("Then upload the verified archives into the media storage (datasets/MNIST/raw/), where "
                  "workers on other machines find them (MEDIA_STORAGE=s3)."),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        root = Path(options["root"] if options["root"] is not None else settings.MNIST_ROOT)
        raw = mnist_raw_dir(root)
        self.stdout.write(f"MNIST archives in {raw}")

        # One byte bar per file on the raw stream (tqdm redraws with "\r"); none when stderr is not a terminal.
        stream = self.stderr._out
        bar: tqdm | None = None
        current = ""

        def on_progress(name: str, done: int, total: int | None) -> None:
            nonlocal bar, current
            if bar is None or name != current or done < bar.n:  # a new file, or a retry from another mirror
                finish()
                current = name
                bar = tqdm(desc=f"  {name}", total=total, unit="B", unit_scale=True, unit_divisor=1024,
                           file=stream, dynamic_ncols=True, disable=None)
            bar.update(done - bar.n)

        def finish() -> None:
            nonlocal bar
            if bar is not None:
                bar.close()
                bar = None

        def on_file(path: Path, downloaded: bool) -> None:
            finish()
            status = "downloaded, md5 verified" if downloaded else "ok (already present)"
            self.stdout.write(f"  {path.name}: {status}")

        try:
            download_mnist(
                root,
                mirrors=options["mirrors"],
                progress=on_progress,
                timeout=options["timeout"],
                on_file=on_file,
            )
            counts = {split: len(load_mnist(root, split, verify=True)) for split in SPLIT_FILES}
        except DataError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            finish()

        summary = ", ".join(f"{split} {n} images" for split, n in counts.items())
        self.stdout.write(self.style.SUCCESS(f"MNIST ready in {raw}: {summary}"))
        if options["to_storage"]:
            for name in sorted(MNIST_RESOURCES):
                target = storage_name(name)
                if default_storage.exists(target) and default_storage.size(target) == (raw / name).stat().st_size:
                    self.stdout.write(f"  {target}: already in media storage")
                    continue
                with (raw / name).open("rb") as fh:
                    stored = default_storage.save(target, File(fh, name=name))
                if stored != target:
                    default_storage.delete(stored)
                    raise CommandError(f"{target} is in media storage with another size; remove it first")
                self.stdout.write(f"  {target}: uploaded")
