"""The errors of engine.data: one base class, :class:`DataError`, and one subclass per kind of problem."""
from __future__ import annotations

from pathlib import Path

__all__ = ["ChecksumError", "DataError", "DownloadError", "IdxFormatError", "MnistNotFoundError"]


class DataError(Exception):
    """Base class for every problem with the MNIST files."""


class MnistNotFoundError(DataError):
    """The MNIST folder or one of its files is missing."""


class ChecksumError(DataError):
    """A file's digest differs from the known-good one."""

    def __init__(self, path: Path, *, algorithm: str, expected: str, actual: str) -> None:
        self.path = Path(path)
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{self.path.name}: {algorithm} mismatch (expected {expected}, got {actual}) "
            f"in {self.path}"
        )


class IdxFormatError(DataError):
    """A file is not valid IDX data (bad magic, truncated, unexpected shape)."""


class DownloadError(DataError):
    """A file could not be fetched from any mirror."""

    def __init__(self, message: str, *, failures: list[tuple[str, str]] | None = None) -> None:
        self.failures = list(failures or [])
        super().__init__(message)
