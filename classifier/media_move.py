"""Moving a site's media from a local folder into the configured storage, and checking every row's file.

A one-box site keeps drawings and checkpoints under ``MEDIA_ROOT``. To grow to several machines it switches
to a bucket (``MEDIA_STORAGE=s3``); ``manage.py move_media`` then copies the old folder's files into the
bucket under the same names (so no row changes) and checks that every drawing and checkpoint a row refers
to can be read there, checkpoints against their sha256.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files import File
from django.core.files.storage import Storage, default_storage

from .models import ModelVersion, Prediction

# Folders of MEDIA_ROOT left out of the move. None by default: MNIST's archives in media/datasets/ go too,
# where workers on other machines find them (classifier.mnist_source).
SKIPPED_FOLDERS: tuple[str, ...] = ()


@dataclass
class CopySummary:
    copied: int = 0
    already_there: int = 0
    bytes_copied: int = 0
    skipped: list[str] = field(default_factory=list)


@dataclass
class VerifySummary:
    drawings: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)


def _media_files(source: Path, skip: tuple[str, ...]) -> Iterator[tuple[str, Path]]:
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        name = path.relative_to(source).as_posix()
        top = name.split("/", 1)[0]
        if top in skip or path.name.startswith(".") or name == "README.md":
            continue  # temp files of an atomic write, skipped folders, the folder's own README
        yield name, path


def media_files_count(*, source: Path, skip: tuple[str, ...] = SKIPPED_FOLDERS) -> int:
    return sum(1 for _ in _media_files(source, skip))


def media_copy(*, source: Path, storage: Storage | None = None, skip: tuple[str, ...] = SKIPPED_FOLDERS,
               progress: Callable[[str], None] = lambda name: None) -> CopySummary:
    """Copy every file under ``source`` into ``storage`` (default: the site's media storage) under the same
    name. A name already stored with the same size is left alone, so the copy can be run again after an
    interruption; one stored with another size is reported, never overwritten."""
    storage = storage or default_storage
    summary = CopySummary()
    for name, path in _media_files(source, skip):
        size = path.stat().st_size
        if storage.exists(name):
            if storage.size(name) == size:
                summary.already_there += 1
            else:
                summary.skipped.append(f"{name}: already in storage with another size; left as it is")
        else:
            with path.open("rb") as fh:
                stored = storage.save(name, File(fh, name=path.name))
            if stored != name:  # the storage renamed it: rows would point to the wrong object
                storage.delete(stored)
                summary.skipped.append(f"{name}: the storage would store it as {stored}; not copied")
            else:
                summary.copied += 1
                summary.bytes_copied += size
        progress(name)
    return summary


def _sha256(storage: Storage, name: str) -> str:
    digest = hashlib.sha256()
    with storage.open(name, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def media_verify(*, storage: Storage | None = None,
                 progress: Callable[[str], None] = lambda name: None) -> VerifySummary:
    """Check that every checkpoint (by sha256) and every drawing a row refers to is in ``storage``."""
    storage = storage or default_storage
    summary = VerifySummary()
    for pk, name, sha in ModelVersion.objects.order_by("id").values_list("id", "checkpoint", "sha256"):
        summary.checkpoints += 1
        try:
            actual = _sha256(storage, name)
        except Exception as exc:  # noqa: BLE001 - any backend's "cannot read"
            summary.problems.append(f"model version {pk}: checkpoint {name} cannot be read ({type(exc).__name__})")
        else:
            if sha and actual != sha:
                summary.problems.append(f"model version {pk}: checkpoint {name} has sha256 {actual[:12]}…, "
                                        f"the row says {sha[:12]}…")
        progress(name)
    drawings = Prediction.objects.exclude(image="").order_by("id").values_list("id", "image")
    for pk, name in drawings.iterator(chunk_size=2000):
        summary.drawings += 1
        if not storage.exists(name):
            summary.problems.append(f"prediction {pk}: drawing {name} is missing")
        progress(name)
    return summary
