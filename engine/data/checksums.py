"""Known-good digests of a file (:class:`MnistResource`) and checking a file against them.

A file's md5 and sha256 are computed once per (path, mtime, size) and remembered.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import ChecksumError

__all__ = ["MnistResource", "file_digests", "verify_file"]


@dataclass(frozen=True)
class MnistResource:
    """One of the four MNIST archives and its known-good digests."""

    filename: str
    md5: str
    sha256: str | None = None


_CHUNK = 1 << 20
_digest_cache: dict[tuple[str, int, int], tuple[str, str]] = {}
_digest_lock = threading.Lock()


def _cache_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def _compute_digests(path: Path) -> tuple[str, str]:
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()


def file_digests(path: str | os.PathLike[str]) -> tuple[str, str]:
    """``(md5, sha256)`` hex digests of a file, cached per (path, mtime, size)."""
    path = Path(path)
    key = _cache_key(path)
    with _digest_lock:
        cached = _digest_cache.get(key)
    if cached is not None:
        return cached
    digests = _compute_digests(path)
    with _digest_lock:
        _digest_cache[key] = digests
    return digests


def verify_file(path: str | os.PathLike[str], resource: MnistResource) -> None:
    """Raise :class:`ChecksumError` unless ``path`` matches ``resource``'s digests."""
    path = Path(path)
    md5, sha256 = file_digests(path)
    if md5 != resource.md5.lower():
        raise ChecksumError(path, algorithm="md5", expected=resource.md5, actual=md5)
    if resource.sha256 and sha256 != resource.sha256.lower():
        raise ChecksumError(path, algorithm="sha256", expected=resource.sha256, actual=sha256)


def _is_valid(path: Path, resource: MnistResource) -> bool:
    try:
        verify_file(path, resource)
    except (OSError, ChecksumError):
        return False
    return True


def _remember_digests(path: Path, digests: tuple[str, str]) -> None:
    """Record ``(md5, sha256)`` of a file just written, so verifying it does not read it again."""
    with _digest_lock:
        _digest_cache[_cache_key(path)] = digests
