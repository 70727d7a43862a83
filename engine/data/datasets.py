"""MNIST-style datasets other than MNIST itself: a zip or a folder of two IDX files, such as the site's
export of labelled drawings."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

from .errors import IdxFormatError, MnistNotFoundError
from .idx import parse_idx, read_idx
from .mnist import MnistSplit, _checked_split

__all__ = ["DATASET_IMAGES", "DATASET_LABELS", "load_idx_dataset"]

#: The two IDX files of an exported drawings dataset (optionally with ``.gz``).
DATASET_IMAGES = "images-idx3-ubyte"
DATASET_LABELS = "labels-idx1-ubyte"


def load_idx_dataset(path: str | os.PathLike[str]) -> MnistSplit:
    """Load an MNIST-style dataset — a ``.zip`` or a folder holding ``images-idx3-ubyte`` and
    ``labels-idx1-ubyte`` (either may end in ``.gz``; in a zip, in any one folder), such as the site's
    export of labelled drawings — as uint8 images ``[N,28,28]`` (ink = 255) and int64 labels ``[N]``::

        images, labels = load_idx_dataset("drawings.zip").tensors
    """
    path = Path(path)
    if path.is_dir():
        found = {}
        for name in (DATASET_IMAGES, DATASET_LABELS):
            candidates = [path / name, path / f"{name}.gz"]
            hit = next((p for p in candidates if p.is_file()), None)
            if hit is None:
                raise MnistNotFoundError(f"{path}: no {name} (or {name}.gz) in this folder")
            found[name] = hit
        images, labels = read_idx(found[DATASET_IMAGES]), read_idx(found[DATASET_LABELS])
        return _checked_split(images, labels, found[DATASET_IMAGES], found[DATASET_LABELS], what=str(path))
    if not path.is_file():
        raise MnistNotFoundError(f"{path}: no such file or folder")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise IdxFormatError(f"{path}: not a zip file or a folder ({exc})") from None
    with archive:
        members = {}
        for name in (DATASET_IMAGES, DATASET_LABELS):
            hits = [m for m in archive.namelist() if m.rsplit("/", 1)[-1] in (name, f"{name}.gz")]
            if len(hits) != 1:
                raise MnistNotFoundError(f"{path}: expected one {name} in the zip, found {len(hits)}")
            members[name] = hits[0]
        images = parse_idx(archive.read(members[DATASET_IMAGES]), source=f"{path}:{members[DATASET_IMAGES]}")
        labels = parse_idx(archive.read(members[DATASET_LABELS]), source=f"{path}:{members[DATASET_LABELS]}")
    return _checked_split(images, labels, Path(members[DATASET_IMAGES]), Path(members[DATASET_LABELS]),
                          what=str(path))
