"""Where a process finds MNIST: its own folder, the site's media storage, or the checksummed download.

A worker on a fresh machine has no MNIST on its disk. ``mnist_ensure`` makes the four archives appear under
``MNIST_ROOT`` before a run or an evaluation reads them, trying in order:

1. ``MNIST_ROOT`` itself (a local or mounted folder): used as it is.
2. The media storage, under ``datasets/MNIST/raw/`` (where ``move_media`` puts a one-box site's
   ``media/datasets`` and ``fetch_mnist --to-storage`` uploads them): copied into ``MNIST_ROOT``.
3. With ``MNIST_DOWNLOAD=true``, the mirrors, as ``fetch_mnist`` downloads them.

Every copy is checked against the archives' known md5 and sha256 before it is used. When none of these
has the files, the error says how to fix it.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage

from engine.data import (
    MNIST_RESOURCES,
    ChecksumError,
    MnistNotFoundError,
    download_mnist,
    mnist_available,
    mnist_raw_dir,
    verify_file,
)

log = logging.getLogger(__name__)

STORAGE_FOLDER = "datasets/MNIST/raw"
_lock = threading.Lock()


def storage_name(filename: str) -> str:
    return f"{STORAGE_FOLDER}/{filename}"


def _from_storage(raw: Path) -> bool:
    """Copy the archives from media storage into ``raw``; whether all four are there now."""
    names = [name for name in MNIST_RESOURCES if not (raw / name).is_file()]
    try:
        if not all(default_storage.exists(storage_name(name)) for name in names):
            return False
    except Exception:  # noqa: BLE001 - a storage that cannot be asked is a source that is not there
        log.warning("could not look for MNIST in media storage", exc_info=True)
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for name in names:
        fd, tmp = tempfile.mkstemp(dir=raw, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out, default_storage.open(storage_name(name), "rb") as source:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    out.write(chunk)
            verify_file(tmp, MNIST_RESOURCES[name])
            os.replace(tmp, raw / name)
        finally:
            Path(tmp).unlink(missing_ok=True)
        log.info("copied MNIST's %s from media storage into %s", name, raw)
    return True


def mnist_ensure(root: str | os.PathLike[str] | None = None) -> Path:
    """``MNIST_ROOT`` (or ``root``) with the four archives in it; ``MnistNotFoundError`` saying how to fix it."""
    root = Path(settings.MNIST_ROOT if root is None else root)
    if mnist_available(root):
        return root
    raw = mnist_raw_dir(root)
    with _lock:  # one copy per process, whatever asks first
        if mnist_available(root):
            return root
        try:
            if _from_storage(raw):
                return root
        except ChecksumError as exc:
            raise MnistNotFoundError(f"MNIST in media storage ({STORAGE_FOLDER}/) is damaged: {exc}") from None
        if settings.MNIST_DOWNLOAD:
            download_mnist(root, mirrors=list(settings.MNIST_MIRRORS) or None)
            return root
    raise MnistNotFoundError(
        f"MNIST is not on this machine ({raw}) nor in media storage ({STORAGE_FOLDER}/). Fix one of: set "
        "MNIST_ROOT to a folder holding MNIST/raw/; upload it once with `python manage.py fetch_mnist "
        "--to-storage`; or set MNIST_DOWNLOAD=true so workers download it (checksummed) themselves.")
