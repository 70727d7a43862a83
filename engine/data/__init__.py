"""MNIST and MNIST-style data on disk, in plain Python + PyTorch (no Django).

One module per job: ``errors`` (the :class:`DataError` family), ``idx`` (the IDX format), ``checksums``
(known-good digests and checking files against them), ``mnist`` (the four archives, the raw folder,
loading a split), ``download`` (fetching the archives from mirrors) and ``datasets`` (a zip or folder of
two IDX files, such as the site's export of drawings). The names below are re-exported so
``from engine.data import load_mnist`` keeps working; a test that replaces a module attribute (the
resources table, the mirrors) replaces it in the module that reads it (``engine.data.mnist``,
``engine.data.download``).
"""
from __future__ import annotations

from .checksums import MnistResource, file_digests, verify_file
from .datasets import DATASET_IMAGES, DATASET_LABELS, load_idx_dataset
from .download import DEFAULT_MIRRORS, download_mnist
from .errors import ChecksumError, DataError, DownloadError, IdxFormatError, MnistNotFoundError
from .idx import idx_bytes, parse_idx, read_idx, write_idx
from .mnist import (
    MNIST_RESOURCES,
    SPLIT_FILES,
    MnistSplit,
    load_mnist,
    mnist_available,
    mnist_fingerprint,
    mnist_raw_dir,
)

__all__ = [
    "DEFAULT_MIRRORS",
    "MNIST_RESOURCES",
    "SPLIT_FILES",
    "ChecksumError",
    "DataError",
    "DownloadError",
    "IdxFormatError",
    "MnistNotFoundError",
    "MnistResource",
    "MnistSplit",
    "DATASET_IMAGES",
    "DATASET_LABELS",
    "download_mnist",
    "file_digests",
    "idx_bytes",
    "load_idx_dataset",
    "load_mnist",
    "mnist_available",
    "mnist_fingerprint",
    "mnist_raw_dir",
    "parse_idx",
    "read_idx",
    "verify_file",
    "write_idx",
]
