"""Checkpoint files in media storage: the only code that reads or writes them.

A version's checkpoint is written atomically (temp file + rename) *before* its row exists, and read
back through the engine's one loader (``weights_only=True``, sha256 verified) whenever a version is
served, fine-tuned, evaluated or activated.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from torch import nn

from engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint

from .models import ModelVersion

log = logging.getLogger(__name__)


def _local_path(name: str) -> Path | None:
    """The file system path behind a storage name, when media storage is a local (or mounted) folder."""
    try:
        return Path(default_storage.path(name))
    except NotImplementedError:  # object storage: no paths
        return None


def checkpoint_store(*, name: str, checkpoint: dict[str, Any]) -> tuple[str, str]:
    """Write ``checkpoint`` into media storage under ``name`` atomically; returns (storage name, sha256).

    On a file system (local or shared media folder) the file is written to a temp file next to its
    destination and renamed into place, so a reader or a crash never sees half a file. Other storages
    get the finished bytes in one upload.
    """
    path = _local_path(name)
    if path is not None:
        if path.exists():
            name = default_storage.get_available_name(name)
            path = Path(default_storage.path(name))
        sha = save_checkpoint(path, checkpoint)
        return name, sha
    with tempfile.TemporaryDirectory(prefix="mnistsite-checkpoint-") as scratch:
        local = Path(scratch) / Path(name).name
        sha = save_checkpoint(local, checkpoint)
        stored = default_storage.save(name, ContentFile(local.read_bytes()))
    return stored, sha


def checkpoint_discard(name: str) -> None:
    """Remove a checkpoint file that no version refers to (and any temp files left next to it)."""
    if not name or ModelVersion.objects.filter(checkpoint=name).exists():
        return
    try:
        default_storage.delete(name)
    except OSError:
        log.warning("could not delete orphan checkpoint %s", name, exc_info=True)
    path = _local_path(name)
    if path is not None and path.parent.is_dir():
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            tmp.unlink(missing_ok=True)


class CheckpointUnreadable(CheckpointError):
    """The file cannot be read (missing, no permission, storage down). ``str()`` says where and why, for
    the log and staff; ``public`` names no path."""

    public = "its checkpoint file cannot be read"


def _cache_path(sha256: str | None) -> Path | None:
    """Where this machine keeps a copy of a checkpoint held in object storage (None: local media, or no
    sha256 to name it by)."""
    if not sha256 or _local_path("checkpoints") is not None:
        return None
    return Path(settings.CHECKPOINT_CACHE_DIR) / f"{sha256.lower()}.pt"


def _cache_put(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError:  # a cache that cannot be written only costs a download next time
        log.warning("could not cache checkpoint %s", path.name, exc_info=True)


def checkpoint_read(*, name: str, sha256: str | None) -> dict[str, Any]:
    """A stored checkpoint, through the one loader; ``CheckpointError`` when missing, altered or invalid.

    With object storage, a checkpoint read once is kept on this machine under its sha256
    (``CHECKPOINT_CACHE_DIR``) and read from there next time; the loader checks the sha256 of every read,
    so a damaged cached copy is dropped and fetched again.
    """
    cached = _cache_path(sha256)
    if cached is not None and cached.is_file():
        try:
            return load_checkpoint(cached.read_bytes(), sha256=sha256)
        except (CheckpointError, OSError):
            log.warning("cached copy of checkpoint %s is damaged; reading it from storage again", name)
            cached.unlink(missing_ok=True)
    try:
        with default_storage.open(name, "rb") as fh:
            data = fh.read()
    except Exception as exc:  # noqa: BLE001 - any storage backend's failure to read (OSError, botocore errors)
        raise CheckpointUnreadable(f"checkpoint file {name} cannot be read: {type(exc).__name__}: {exc}") from None
    checkpoint = load_checkpoint(data, sha256=sha256)
    if cached is not None:
        _cache_put(cached, data)
    return checkpoint


def version_checkpoint(version: ModelVersion) -> dict[str, Any]:
    """A version's checkpoint, checked against its sha256."""
    return checkpoint_read(name=version.checkpoint.name, sha256=version.sha256)


def version_model(version: ModelVersion) -> nn.Module:
    return model_from_checkpoint(version_checkpoint(version))
