"""MNIST on disk: IDX parsing, checksum verification, loading and downloading.

The files use torchvision's raw layout, ``ROOT/MNIST/raw/<name>.gz``, so a folder
prepared by torchvision works unchanged. This module is plain Python + PyTorch and
does not depend on Django.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import struct
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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


# --------------------------------------------------------------------------- errors


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


# ------------------------------------------------------------------------ resources


@dataclass(frozen=True)
class MnistResource:
    """One of the four MNIST archives and its known-good digests."""

    filename: str
    md5: str
    sha256: str | None = None


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

#: The mirrors torchvision uses, tried in order.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

IMAGE_SIZE = 28
NUM_CLASSES = 10


def _resources(resources: Mapping[str, MnistResource] | None) -> Mapping[str, MnistResource]:
    return MNIST_RESOURCES if resources is None else resources


def mnist_raw_dir(root: str | os.PathLike[str]) -> Path:
    """The folder holding the archives: ``root/MNIST/raw``."""
    return Path(root) / "MNIST" / "raw"


# ------------------------------------------------------------------------------ IDX

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """Parse an IDX file (gzip-compressed or plain) into a tensor.

    Supports every IDX element type (uint8, int8, int16, int32, float32, float64)
    and any number of dimensions. The declared shape must account for exactly the
    bytes present; anything else raises :class:`IdxFormatError`.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxFormatError(f"{path}: corrupt gzip data ({exc})") from exc
    return _parse_idx(raw, source=path)


def _parse_idx(buf: bytes, *, source: Path) -> torch.Tensor:
    if len(buf) < 4:
        raise IdxFormatError(f"{source}: truncated IDX header ({len(buf)} bytes)")
    zero, code, ndim = buf[:2], buf[2], buf[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES:
        raise IdxFormatError(f"{source}: bad IDX magic number 0x{buf[:4].hex()}")
    header_len = 4 + 4 * ndim
    if len(buf) < header_len:
        raise IdxFormatError(
            f"{source}: truncated IDX header (declares {ndim} dimensions, "
            f"file has {len(buf)} bytes)"
        )
    shape = struct.unpack(f">{ndim}I", buf[4:header_len])
    dtype = _IDX_DTYPES[code]
    count = math.prod(shape)
    expected = count * dtype.itemsize
    actual = len(buf) - header_len
    if actual < expected:
        raise IdxFormatError(
            f"{source}: truncated IDX data (shape {list(shape)} needs {expected} bytes, "
            f"found {actual})"
        )
    if actual > expected:
        raise IdxFormatError(
            f"{source}: {actual - expected} unexpected bytes after IDX data of shape {list(shape)}"
        )
    array = np.frombuffer(buf, dtype=dtype, count=count, offset=header_len)
    # astype always copies: the result is writable and in native byte order.
    array = array.astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    return torch.from_numpy(array)


def parse_idx(data: bytes, *, source: str = "<bytes>") -> torch.Tensor:
    """:func:`read_idx` for bytes already in memory (gzip-compressed or plain)."""
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxFormatError(f"{source}: corrupt gzip data ({exc})") from exc
    return _parse_idx(data, source=Path(source))


def idx_bytes(tensor: torch.Tensor) -> bytes:
    """A tensor as an IDX file: magic (element type, number of dimensions), big-endian sizes, the data
    big-endian. Element types: uint8, int8, int16, int32, float32, float64 (those IDX knows)."""
    array = tensor.detach().cpu().contiguous().numpy()
    codes = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise IdxFormatError(f"IDX has no element type for {array.dtype}")
    if array.ndim > 255 or any(size >= 2**32 for size in array.shape):
        raise IdxFormatError(f"shape {list(array.shape)} does not fit an IDX header")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(_IDX_DTYPES[code], copy=False).tobytes()


def write_idx(path: str | os.PathLike[str], tensor: torch.Tensor, *, compress: bool = False) -> Path:
    """Write ``tensor`` as an IDX file (gzip-compressed with ``compress``), atomically (temp file + rename)."""
    path = Path(path)
    data = idx_bytes(tensor)
    if compress:
        data = gzip.compress(data, mtime=0)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


# ------------------------------------------------------------------------ checksums

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


# -------------------------------------------------------------------------- loading


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


# ---------------------------------------------------------------------- downloading

ProgressCallback = Callable[[str, int, int | None], None]
_USER_AGENT = "mnistsite-fetch/1.0 (+python-urllib)"
_DOWNLOAD_CHUNK = 256 * 1024


def download_mnist(
    root: str | os.PathLike[str],
    *,
    mirrors: list[str] | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 30,
    resources: Mapping[str, MnistResource] | None = None,
    on_file: Callable[[Path, bool], None] | None = None,
) -> list[Path]:
    """Fetch every archive not already present with a good checksum.

    Each file is tried on each mirror in turn, streamed into a temporary file next
    to its destination, checked (byte count against Content-Length, md5 and sha256)
    and only then moved into place, so no partial or corrupt file is ever left.

    ``progress(filename, bytes_so_far, total_or_None)`` is called as data arrives;
    ``on_file(path, downloaded)`` once each file is settled. Returns the paths that
    were downloaded. Raises :class:`DownloadError` when a file fails on every mirror.
    """
    table = _resources(resources)
    mirror_list = list(DEFAULT_MIRRORS if mirrors is None else mirrors)
    if not mirror_list:
        raise ValueError("at least one mirror is required")
    raw = mnist_raw_dir(root)
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {raw}: {exc}") from exc

    downloaded: list[Path] = []
    for name, resource in table.items():
        dest = raw / name
        if dest.is_file() and _is_valid(dest, resource):
            if on_file is not None:
                on_file(dest, False)
            continue
        _download_resource(resource, dest, mirror_list, progress=progress, timeout=timeout)
        downloaded.append(dest)
        if on_file is not None:
            on_file(dest, True)
    return downloaded


def _download_resource(
    resource: MnistResource,
    dest: Path,
    mirrors: list[str],
    *,
    progress: ProgressCallback | None,
    timeout: float,
) -> None:
    failures: list[tuple[str, str]] = []
    for mirror in mirrors:
        url = mirror if mirror.endswith("/") else mirror + "/"
        url += resource.filename
        try:
            _download_one(url, dest, resource, progress=progress, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            failures.append((url, f"HTTP {exc.code} {exc.reason}"))
        except urllib.error.URLError as exc:
            failures.append((url, str(exc.reason)))
        except (OSError, http.client.HTTPException, ValueError, DataError) as exc:
            failures.append((url, str(exc) or type(exc).__name__))
        else:
            return
    lines = "\n".join(f"  - {url}: {reason}" for url, reason in failures)
    raise DownloadError(
        f"could not download {resource.filename} from any mirror:\n{lines}", failures=failures
    )


def _download_one(
    url: str,
    dest: Path,
    resource: MnistResource,
    *,
    progress: ProgressCallback | None,
    timeout: float,
) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        md5 = hashlib.md5(usedforsecurity=False)
        sha256 = hashlib.sha256()
        received = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            total = _content_length(resp)
            if progress is not None:
                progress(resource.filename, 0, total)
            while chunk := resp.read(_DOWNLOAD_CHUNK):
                out.write(chunk)
                md5.update(chunk)
                sha256.update(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(resource.filename, received, total)
        if total is not None and received != total:
            raise DownloadError(
                f"incomplete download of {resource.filename}: received {received} bytes, "
                f"expected {total}"
            )
        if md5.hexdigest() != resource.md5.lower():
            raise ChecksumError(
                dest, algorithm="md5", expected=resource.md5, actual=md5.hexdigest()
            )
        if resource.sha256 and sha256.hexdigest() != resource.sha256.lower():
            raise ChecksumError(
                dest, algorithm="sha256", expected=resource.sha256, actual=sha256.hexdigest()
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with _digest_lock:
        _digest_cache[_cache_key(dest)] = (md5.hexdigest(), sha256.hexdigest())


def _content_length(resp: object) -> int | None:
    headers = getattr(resp, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        length = int(value) if value is not None else None
    except ValueError:
        return None
    return length if length is not None and length >= 0 else None
