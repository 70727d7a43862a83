"""MNIST on disk: the four archives and their digests, the raw folder, loading a split.

The files use torchvision's raw layout, ``ROOT/MNIST/raw/<name>.gz``, so a folder
prepared by torchvision works unchanged.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .checksums import MnistResource, _is_valid, file_digests, verify_file
from .errors import IdxFormatError, MnistNotFoundError
from .idx import read_idx

__all__ = [
    "MNIST_RESOURCES",
    "SPLIT_FILES",
    "MnistSplit",
    "load_mnist",
    "mnist_available",
    "mnist_fingerprint",
    "mnist_raw_dir",
]


def _table(*resources: MnistResource) -> dict[str, MnistResource]:
    return {r.filename: r for r in resources}


#: The four archives, keyed by file name. Looked up at call time, so it can be replaced.
MNIST_RESOURCES: dict[str, MnistResource] = _table(
    MnistResource(
        "train-images-idx3-ubyte.gz",
        md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
        sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    MnistResource(
        "train-labels-idx1-ubyte.gz",
        md5="d53e105ee54ea40749a09fcbcd1e9432",
        sha256="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    MnistResource(
        "t10k-images-idx3-ubyte.gz",
        md5="9fb629c4189551a2d022fa330f9573f3",
        sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    MnistResource(
        "t10k-labels-idx1-ubyte.gz",
        md5="ec29112dd5afa0611ce80d1b7f02629c",
        sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
)

#: split -> (images file, labels file)
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

IMAGE_SIZE = 28
NUM_CLASSES = 10


def _resources(resources: Mapping[str, MnistResource] | None) -> Mapping[str, MnistResource]:
    return MNIST_RESOURCES if resources is None else resources


def mnist_raw_dir(root: str | os.PathLike[str]) -> Path:
    """The folder holding the archives: ``root/MNIST/raw``."""
    return Path(root) / "MNIST" / "raw"


@dataclass(frozen=True)
class MnistSplit:
    """One split of MNIST: ``images`` uint8 ``[N, 28, 28]``, ``labels`` int64 ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)``."""
        return self.images, self.labels


def _not_found_message(raw: Path, detail: str) -> str:
    return (
        f"MNIST data not found in {raw}: {detail}. Run `python manage.py fetch_mnist` "
        f"or set MNIST_ROOT to a folder containing MNIST/raw/ with "
        f"{', '.join(sorted(MNIST_RESOURCES))}."
    )


def _require_files(root: Path, names: Iterable[str]) -> list[Path]:
    raw = mnist_raw_dir(root)
    if not raw.is_dir():
        raise MnistNotFoundError(_not_found_message(raw, "the folder does not exist"))
    paths = [raw / name for name in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise MnistNotFoundError(_not_found_message(raw, f"missing {', '.join(missing)}"))
    return paths


def load_mnist(
    root: str | os.PathLike[str],
    split: str = "train",
    verify: bool = True,
    *,
    resources: Mapping[str, MnistResource] | None = None,
) -> MnistSplit:
    """Load the ``"train"`` (60k) or ``"test"`` (10k) split from ``root/MNIST/raw``.

    With ``verify`` the archives' md5 (and sha256, when known) are checked first;
    the result is cached per file state, so repeated loads only pay for parsing.
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown MNIST split {split!r}; expected one of {sorted(SPLIT_FILES)}")
    table = _resources(resources)
    root = Path(root)
    images_path, labels_path = _require_files(root, SPLIT_FILES[split])
    if verify:
        for path in (images_path, labels_path):
            verify_file(path, table[path.name])

    images = read_idx(images_path)
    labels = read_idx(labels_path)
    return _checked_split(images, labels, images_path, labels_path, what=f"{split} split")


def _checked_split(images: torch.Tensor, labels: torch.Tensor, images_path: Path, labels_path: Path, *,
                   what: str) -> MnistSplit:
    """uint8 ``[N,28,28]`` images and uint8 ``[N]`` labels in 0..9, as a :class:`MnistSplit`."""
    if images.dtype != torch.uint8 or images.dim() != 3 or tuple(images.shape[1:]) != (
        IMAGE_SIZE,
        IMAGE_SIZE,
    ):
        raise IdxFormatError(
            f"{images_path}: expected uint8 images of shape [N, {IMAGE_SIZE}, {IMAGE_SIZE}], "
            f"got {images.dtype} {list(images.shape)}"
        )
    if labels.dtype != torch.uint8 or labels.dim() != 1:
        raise IdxFormatError(
            f"{labels_path}: expected uint8 labels of shape [N], "
            f"got {labels.dtype} {list(labels.shape)}"
        )
    if images.shape[0] != labels.shape[0]:
        raise IdxFormatError(
            f"{what}: {images.shape[0]} images but {labels.shape[0]} labels "
            f"({images_path.name}, {labels_path.name})"
        )
    if labels.numel() and int(labels.max()) >= NUM_CLASSES:
        raise IdxFormatError(f"{labels_path}: label {int(labels.max())} is outside 0..9")
    return MnistSplit(images=images, labels=labels.to(torch.int64))


def mnist_available(
    root: str | os.PathLike[str],
    *,
    verify: bool = False,
    resources: Mapping[str, MnistResource] | None = None,
) -> bool:
    """Whether all four archives are present (and, with ``verify``, intact)."""
    table = _resources(resources)
    raw = mnist_raw_dir(root)
    for name, resource in table.items():
        path = raw / name
        if not path.is_file():
            return False
        if verify and not _is_valid(path, resource):
            return False
    return True


def mnist_fingerprint(
    root: str | os.PathLike[str],
    *,
    resources: Mapping[str, MnistResource] | None = None,
) -> str:
    """A short id of the exact files on disk, e.g. ``"mnist:3f2a9c0d1e4b"``.

    Derived from the md5 of each archive, so identical data gives the same id on
    any machine and any change to a file changes it.
    """
    table = _resources(resources)
    paths = _require_files(Path(root), sorted(table))
    h = hashlib.sha256()
    for path in paths:
        md5, _ = file_digests(path)
        h.update(f"{path.name}:{md5}\n".encode())
    return "mnist:" + h.hexdigest()[:12]

