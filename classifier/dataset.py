"""Labelled drawings as a dataset to take away, and back: export to a zip, import from one.

The zip holds one folder, ``drawings/``::

    drawings/images-idx3-ubyte   the 28x28 model inputs, uint8 [N,28,28], ink = 255 (MNIST's IDX format)
    drawings/labels-idx1-ubyte   their labels, uint8 [N]
    drawings/manifest.csv        one row per drawing, in the same order (columns: MANIFEST_COLUMNS)
    drawings/images/...          the original drawings as received (PNG/JPEG/...), named in the manifest
    drawings/README.txt          what is what, and how to load it

Only drawings with an effective digit label are exported (a drawing marked "not a digit" never trains,
so it has no place in a digit dataset). ``engine.data.load_idx_dataset("drawings.zip")`` loads the zip.

Import reads the same format and creates one labelled prediction per row: the original drawing (or, if
the row names none, a PNG of the 28x28 input), the input itself, the answer of the model serving now,
source "import", and a staff label by the importing user. Duplicates are counted as a multiset of 28x28
inputs (sha256 of the pixels): a row is skipped when the site already holds as many labelled drawings
with that input as the rows before it and itself in the file that have it. So every row of an export
is imported into an empty site (two drawings with pixel-identical inputs are still two drawings), and
importing the same file again imports nothing; a skipped row whose label none of the drawings here
with that input has is counted as a conflict too.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import struct
import time
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import IO, Any

import torch
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from engine.data import DATASET_IMAGES, DATASET_LABELS, idx_bytes
from engine.preprocessing import to_png_bytes
from mnistsite.errors import ApplicationError

from .drawings import in_field_set
from .images import decode_image
from .images import max_bytes as image_max_bytes
from .inference import registry
from .labels import label_record
from .models import Label, Prediction

FOLDER = "drawings"
PIXELS = 28 * 28
MANIFEST_COLUMNS = (
    "index", "prediction_id", "label", "image", "input_sha256", "model_digit", "model_confidence", "model_version",
    "source", "labelled_by", "label_by_staff", "labelled_at", "created_at", "field_set",
)
IMAGE_EXTENSIONS = {"png", "jpg", "jpeg", "gif", "webp", "bmp"}
README = """Labelled drawings exported from mnistsite ({count} drawings, {when}).

images-idx3-ubyte  the 28x28 model inputs, uint8 [N,28,28], ink = 255, MNIST's IDX format
labels-idx1-ubyte  their labels (the digit a person said it is), uint8 [N]
manifest.csv       one row per drawing, in the same order: where it came from, who labelled it
images/            the original drawings as the site received them

With the site's engine (plain PyTorch):

    from engine.data import load_idx_dataset
    images, labels = load_idx_dataset("this.zip").tensors   # uint8 [N,28,28], int64 [N]

The IDX files are MNIST's own format, so any MNIST reader loads them too.
"""


PARTS = ("all", "train", "field")


def export_queryset(
    *,
    queryset: QuerySet[Prediction] | None = None,
    staff_only: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[Prediction]:
    """The labelled drawings to export, oldest first: all, or those of ``queryset`` (e.g. an admin
    selection), narrowed to staff-labelled ones and to a period of creation."""
    qs = (Prediction.objects.all() if queryset is None else queryset).labelled()
    if staff_only:
        qs = qs.filter(label_by_staff=True)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if until is not None:
        qs = qs.filter(created_at__lt=until)
    return qs.select_related("model_version", "labelled_by").order_by("id")


class _Sink(io.RawIOBase):
    """An unseekable file that keeps what is written until taken: zipfile writes into it as it goes."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = bytes(data)
        self._chunks.append(data)
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks = []
        return data


@dataclass
class _Row:
    prediction: Prediction
    pixels: bytes
    image_name: str  # inside the zip, "" when the original is missing
    image_path: str  # in storage


def _rows(queryset: QuerySet[Prediction], part: str) -> list[_Row]:
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, not {part!r}")
    rows = []
    for prediction in queryset.iterator(chunk_size=2000):
        if part != "all" and in_field_set(prediction.pk) != (part == "field"):
            continue
        pixels = bytes(prediction.input_pixels or b"")
        if len(pixels) != PIXELS:
            continue  # not a 28x28 input; never expected
        index = len(rows)
        stored = prediction.image.name if prediction.image else ""
        extension = PurePosixPath(stored).suffix.lstrip(".").lower()
        present = bool(stored) and extension in IMAGE_EXTENSIONS and default_storage.exists(stored)
        name = f"images/{index:06d}-{prediction.pk}.{extension}" if present else ""
        rows.append(_Row(prediction=prediction, pixels=pixels, image_name=name, image_path=stored if present else ""))
    return rows


def _manifest(rows: list[_Row]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for index, row in enumerate(rows):
        p = row.prediction
        writer.writerow([
            index, p.pk, p.label, row.image_name, hashlib.sha256(row.pixels).hexdigest(), p.digit,
            f"{p.confidence:.6f}", p.model_version.label, p.source,
            p.labelled_by.get_username() if p.labelled_by else "", int(p.label_by_staff),
            p.labelled_at.isoformat() if p.labelled_at else "", p.created_at.isoformat(), int(in_field_set(p.pk)),
        ])
    return out.getvalue().encode()


def export_zip_chunks(queryset: QuerySet[Prediction], *, part: str = "all") -> Iterator[bytes]:
    """The zip of these labelled drawings (of ``part``: ``"all"``, ``"train"``, what training may use, or
    ``"field"``, the held-out field set), produced piece by piece (for a streamed download or a file)."""
    rows = _rows(queryset, part)
    sink = _Sink()
    images = torch.frombuffer(bytearray(b"".join(r.pixels for r in rows)), dtype=torch.uint8).view(len(rows), 28, 28) \
        if rows else torch.zeros((0, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([r.prediction.label for r in rows], dtype=torch.uint8)
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{FOLDER}/README.txt", README.format(count=len(rows), when=timezone.now().isoformat()))
        archive.writestr(f"{FOLDER}/{DATASET_IMAGES}", idx_bytes(images))
        archive.writestr(f"{FOLDER}/{DATASET_LABELS}", idx_bytes(labels))
        archive.writestr(f"{FOLDER}/manifest.csv", _manifest(rows))
        yield sink.take()
        for row in rows:
            if not row.image_name:
                continue
            # Already compressed formats are stored as they are.
            with default_storage.open(row.image_path, "rb") as source, \
                    archive.open(zipfile.ZipInfo(f"{FOLDER}/{row.image_name}", _zip_time(row.prediction)), "w") as target:
                while chunk := source.read(1 << 16):
                    target.write(chunk)
            yield sink.take()
    yield sink.take()


def _zip_time(prediction: Prediction) -> tuple[int, int, int, int, int, int]:
    when = timezone.localtime(prediction.created_at) if prediction.created_at else timezone.localtime()
    return (max(when.year, 1980), when.month, when.day, when.hour, when.minute, when.second)


def export_zip_file(queryset: QuerySet[Prediction], target: IO[bytes], *, part: str = "all") -> None:
    """Write the zip into an open binary file."""
    for chunk in export_zip_chunks(queryset, part=part):
        target.write(chunk)


# ---------------------------------------------------------------------------- import


@dataclass
class ImportSummary:
    rows: int = 0
    created: int = 0
    duplicates: int = 0
    conflicts: list[dict[str, Any]] = field(default_factory=list)  # duplicates whose label differs here
    ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "created": self.created, "duplicates": self.duplicates,
                "conflicts": len(self.conflicts), "ids": self.ids}


def _bad(message: str, detail: Any = None) -> ApplicationError:
    return ApplicationError("invalid_dataset", message, detail=detail, status=400)


@dataclass
class _Dataset:
    images: torch.Tensor  # uint8 [N,28,28]
    labels: torch.Tensor  # uint8 [N]
    manifest: list[tuple[str, str, str]]  # per row: label, image, input_sha256 (as written, "" when absent)
    read_image: Any  # (row index, name inside the folder) -> (bytes, file extension)
    digests: list[str] = field(default_factory=list)  # sha256 of each row's 28x28 input (by _check)

    def pixels(self, index: int) -> bytes:
        return self.images[index].numpy().tobytes()


# The IDX headers an import reads: magic (0, 0, element type uint8, number of dimensions), then the sizes.
_IMAGES_MAGIC = b"\x00\x00\x08\x03"
_LABELS_MAGIC = b"\x00\x00\x08\x01"
_GZIP_MAGIC = b"\x1f\x8b"
# manifest.csv: a row as exported is about 250 bytes; a line (and a whole row) may have this many.
MANIFEST_ROW_BYTES = 4096
_KEPT = ("label", "image", "input_sha256")  # the manifest's columns the import reads
_S_IFMT, _S_IFREG, _S_IFDIR, _S_IFLNK = 0o170000, 0o100000, 0o040000, 0o120000


def _max_rows() -> int:
    return int(settings.DRAWINGS_IMPORT_MAX_ROWS)


def _entries_declared(source: str | IO[bytes]) -> int | None:
    """How many entries the zip's end record says it holds, read before ``zipfile`` lists them all
    (a small file can declare millions of tiny entries, each a Python object once listed)."""
    try:
        if isinstance(source, str):
            with open(source, "rb") as fh:
                end = zipfile._EndRecData(fh)  # the stdlib's own reader of the end record
        else:
            position = source.tell()
            try:
                end = zipfile._EndRecData(source)
            finally:
                source.seek(position)
    except (OSError, ValueError):
        return None  # zipfile.ZipFile says what is wrong
    return None if end is None else int(end[zipfile._ECD_ENTRIES_TOTAL])


def _check_members(archive: zipfile.ZipFile) -> None:
    """Every entry is a regular file or a folder: a symbolic link (zip keeps the Unix mode in the upper
    half of ``external_attr``; its data is the target's path), a device or a pipe is refused, as is an
    encrypted entry."""
    for info in archive.infolist():
        if info.flag_bits & 0x1:
            raise _bad(f"{info.filename} is encrypted; an import reads plain zip files only.")
        mode = info.external_attr >> 16
        kind = mode & _S_IFMT
        if info.create_system == 3 and kind and kind not in (_S_IFREG, _S_IFDIR):
            what = "a symbolic link" if kind == _S_IFLNK else "not a regular file"
            raise _bad(f"{info.filename} is {what}; only regular files are accepted in the zip.")


def _member(archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """A member's entry, refused when it declares more than ``DRAWINGS_IMPORT_MAX_MEMBER_BYTES`` unpacked
    (zipfile never returns more than the size a member declares)."""
    info = archive.getinfo(name)
    limit = settings.DRAWINGS_IMPORT_MAX_MEMBER_BYTES
    if info.file_size > limit:
        raise _bad(f"{name} unpacks to {info.file_size:,} bytes; at most {limit:,} are accepted per file "
                   "(DRAWINGS_IMPORT_MAX_MEMBER_BYTES).")
    return info


_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError)


def _read(archive: zipfile.ZipFile, name: str) -> bytes:
    """A member's bytes; a damaged, encrypted or oddly compressed member is a bad file, not a crash."""
    _member(archive, name)
    try:
        return archive.read(name)
    except _READ_ERRORS as exc:
        raise _bad(f"Cannot read {name} from the zip ({exc}).") from None


class _Stream:
    """A member read piece by piece, gunzipped as it goes when it is gzip-compressed: never more in
    memory than what the caller asked for."""

    def __init__(self, archive: zipfile.ZipFile, name: str) -> None:
        _member(archive, name)
        self.name = name
        try:
            raw = archive.open(name)
            self._file: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if raw.peek(2)[:2] == _GZIP_MAGIC else raw
        except _READ_ERRORS as exc:
            raise _bad(f"Cannot read {name} from the zip ({exc}).") from None

    def read_into(self, target: bytearray | memoryview) -> int:
        """Fill ``target``; the number of bytes there were (fewer at the end of the member)."""
        view = memoryview(target)
        done = 0
        try:
            while done < len(view):
                chunk = self._file.read(min(len(view) - done, 1 << 20))
                if not chunk:
                    break
                view[done:done + len(chunk)] = chunk
                done += len(chunk)
        except _READ_ERRORS as exc:
            raise _bad(f"Cannot read {self.name} from the zip ({exc}).") from None
        return done

    def exactly(self, count: int, what: str) -> bytearray:
        data = bytearray(count)
        found = self.read_into(data)
        if found < count:
            raise _bad(f"{self.name} is truncated: {what} needs {count:,} bytes, the file has {found:,}.")
        return data

    def at_end(self, what: str) -> None:
        """Refuse a member with more bytes than its header promised (reading one more byte also checks
        the member's CRC)."""
        if self.read_into(bytearray(1)):
            raise _bad(f"{self.name} holds more bytes than its header promises ({what}).")

    def close(self) -> None:
        self._file.close()


def _idx_header(stream: _Stream, magic: bytes, dims: int, shape_words: str) -> tuple[int, ...]:
    head = stream.exactly(4 + 4 * dims, "the IDX header")
    if bytes(head[:4]) != magic:
        raise _bad(f"{stream.name} is not an IDX file of {shape_words} (its magic number is 0x{bytes(head[:4]).hex()}).")
    return struct.unpack(f">{dims}I", head[4:])


def _read_manifest(archive: zipfile.ZipFile, name: str, rows: int) -> list[tuple[str, str, str]]:
    """The manifest's rows, read line by line: at most ``rows`` of them (one per image), each line at most
    ``MANIFEST_ROW_BYTES`` long; only the columns the import uses are kept."""
    info = _member(archive, name)
    limit = MANIFEST_ROW_BYTES * (rows + 1)
    if info.file_size > limit:
        raise _bad(f"{name} unpacks to {info.file_size:,} bytes; for {rows:,} drawings at most {limit:,} are "
                   f"accepted ({MANIFEST_ROW_BYTES:,} per row).")
    kept: list[tuple[str, str, str]] = []
    try:
        with archive.open(name) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
            def lines() -> Iterator[str]:
                while line := text.readline(MANIFEST_ROW_BYTES + 1):
                    if len(line) > MANIFEST_ROW_BYTES:
                        raise _bad(f"{name}: line {len(kept) + 2} is longer than {MANIFEST_ROW_BYTES:,} characters.")
                    yield line

            reader = csv.reader(lines())
            header = next(reader, None) or []
            columns = [header.index(column) if column in header else None for column in _KEPT]
            for row in reader:
                if not row:
                    continue  # a blank line, as csv.DictReader skips it
                if len(kept) >= rows:
                    raise _bad(f"{name} has more rows than the {rows:,} images: one row per image is expected.")
                values = tuple(row[i] if i is not None and i < len(row) else "" for i in columns)
                if any(len(value) > 255 for value in values):
                    raise _bad(f"{name}: row {len(kept)} has a label, image name or sha256 over 255 characters.")
                kept.append(values)  # type: ignore[arg-type]
    except UnicodeDecodeError:
        raise _bad(f"{name} is not UTF-8 text.") from None
    except csv.Error as exc:
        raise _bad(f"{name} is not a readable CSV file ({exc}).") from None
    except _READ_ERRORS as exc:
        raise _bad(f"Cannot read {name} from the zip ({exc}).") from None
    return kept


def _open(archive: zipfile.ZipFile) -> _Dataset:
    """Read the dataset, every size bounded before anything is read: the images' IDX header says how many
    drawings there are (at most ``DRAWINGS_IMPORT_MAX_ROWS``), which bounds the labels, the manifest
    (one row per image) and how many bytes each file may hold; then exactly those bytes are read."""
    _check_members(archive)
    names = archive.namelist()
    manifests = [n for n in names if n.rsplit("/", 1)[-1] == "manifest.csv"]
    if len(manifests) != 1:
        raise _bad(f"Expected one manifest.csv in the zip, found {len(manifests)}.")
    base = manifests[0][: -len("manifest.csv")]

    def member(name: str) -> str:
        for candidate in (base + name, base + name + ".gz"):
            if candidate in names:
                return candidate
        raise _bad(f"The zip has no {base + name}.")

    images_file = _Stream(archive, member(DATASET_IMAGES))
    labels_file = _Stream(archive, member(DATASET_LABELS))
    try:
        count, height, width = _idx_header(images_file, _IMAGES_MAGIC, 3, "uint8 images [N,28,28]")
        if (height, width) != (28, 28):
            raise _bad(f"{images_file.name} must hold uint8 images [N,28,28], not [{count}, {height}, {width}].")
        if count > _max_rows():
            raise _bad(f"{images_file.name} declares {count:,} images; at most {_max_rows():,} are accepted per "
                       "import (DRAWINGS_IMPORT_MAX_ROWS).")
        (label_count,) = _idx_header(labels_file, _LABELS_MAGIC, 1, "uint8 labels [N]")
        if label_count != count:
            raise _bad(f"{count} images and {label_count} labels: they must agree.")
        manifest = _read_manifest(archive, manifests[0], count)
        if len(manifest) != count:  # before the images are read
            raise _bad(f"{count} images, {label_count} labels and {len(manifest)} manifest rows: they must agree.")
        pixels = images_file.exactly(count * PIXELS, f"{count:,} images of 28x28")
        images_file.at_end(f"{count:,} images of 28x28")
        label_bytes = labels_file.exactly(count, f"{count:,} labels")
        labels_file.at_end(f"{count:,} labels")
    finally:
        images_file.close()
        labels_file.close()
    images = torch.frombuffer(pixels, dtype=torch.uint8).view(count, 28, 28) if count \
        else torch.zeros((0, 28, 28), dtype=torch.uint8)
    labels = torch.frombuffer(label_bytes, dtype=torch.uint8).clone() if count else torch.zeros(0, dtype=torch.uint8)

    def read_image(index: int, name: str) -> tuple[bytes, str]:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or base + name not in names:
            raise _bad(f"The manifest names an image the zip does not hold: {name!r}.")
        size = archive.getinfo(base + name).file_size
        if size > image_max_bytes():
            raise _bad(f"Manifest row {index}: {base + name} is {size:,} bytes; at most {image_max_bytes():,} are "
                       "accepted per image (PREDICT_MAX_IMAGE_BYTES).")
        data = _read(archive, base + name)
        try:
            decoded = decode_image(data)
        except ApplicationError as exc:
            raise _bad(f"Manifest row {index}: {base + name} is not an image that may be imported: {exc.message}") \
                from None
        return data, decoded.extension

    return _Dataset(images=images, labels=labels, manifest=manifest, read_image=read_image)


def _check(data: _Dataset) -> None:
    images, labels, manifest = data.images, data.labels, data.manifest
    if not len(images) == len(labels) == len(manifest):
        raise _bad(f"{len(images)} images, {len(labels)} labels and {len(manifest)} manifest rows: they must agree.")
    if labels.numel() and int(labels.max()) > 9:
        raise _bad(f"Label {int(labels.max())} is not a digit.")
    flat = images.numpy().reshape(-1)  # the inputs hashed in place, not copied row by row
    data.digests = []
    for index, ((given, _, digest), label) in enumerate(zip(manifest, labels.tolist())):
        if given != "" and given != str(label):
            raise _bad(f"Manifest row {index} says label {given!r}, {DATASET_LABELS} says {label}.")
        actual = hashlib.sha256(flat[index * PIXELS:(index + 1) * PIXELS]).hexdigest()
        if digest and digest != actual:
            raise _bad(f"Manifest row {index}: the 28x28 input's sha256 differs from the manifest's.")
        data.digests.append(actual)


def import_drawings(*, source: str | IO[bytes], by: AbstractBaseUser) -> ImportSummary:
    """Import a dataset zip (a path or an open binary file) as labelled predictions labelled by ``by`` (staff).

    All or nothing: a malformed or oversized file (``invalid_dataset``, 400, naming the member and the
    limit) imports nothing and stores nothing. Memory is bounded by ``DRAWINGS_IMPORT_MAX_ROWS``: every
    size is checked against the headers before the data is read (docs/operations/upload-limits.md)."""
    if not (by is not None and by.is_active and by.is_staff):
        raise ApplicationError("permission_denied", "Only staff may import labelled drawings.", status=403)
    entries = _entries_declared(source)
    if entries is not None and entries > _max_rows() + 16:
        raise _bad(f"The zip holds {entries:,} entries; at most {_max_rows() + 16:,} are accepted (one image per "
                   "drawing, DRAWINGS_IMPORT_MAX_ROWS, and the dataset's own files).")
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _bad(f"Not a readable zip file ({exc}).") from None
    with archive:
        data = _open(archive)
        _check(data)
        return _import(data, by=by)


def _import(data: _Dataset, *, by: AbstractBaseUser) -> ImportSummary:
    summary = ImportSummary(rows=len(data.labels))
    digests = data.digests
    here: dict[str, list[int | None]] = {}  # input digest -> the labels of the drawings here with that input
    unique = sorted(set(digests))
    for i in range(0, len(unique), 1000):
        existing = Prediction.objects.decided().filter(input_sha256__in=unique[i:i + 1000])
        for digest, label in existing.values_list("input_sha256", "label"):
            here.setdefault(digest, []).append(label)
    labels = data.labels.tolist()
    new: list[int] = []
    seen: dict[str, int] = {}  # input digest -> rows of this file with that input so far
    for index, (digest, label) in enumerate(zip(digests, labels)):
        seen[digest] = seen.get(digest, 0) + 1
        if seen[digest] <= len(here.get(digest, ())):  # this row's drawing is (already) here
            summary.duplicates += 1
            if label not in here[digest]:
                summary.conflicts.append({"index": index, "label": label, "here": here[digest][0]})
            continue
        new.append(index)
    if not new:
        return summary

    model = registry.serving()
    saved: list[str] = []
    try:
        with transaction.atomic():
            for start in range(0, len(new), 256):
                chunk = new[start:start + 256]
                began = time.perf_counter()
                batch = data.images[chunk].float().div(255).unsqueeze(1)
                probabilities = model.probabilities(batch).tolist()
                latency_ms = (time.perf_counter() - began) * 1000 / len(chunk)
                for index, probs in zip(chunk, probabilities):
                    prediction = _create(data, index, data.pixels(index), digests[index], probs, model.ref.id,
                                         latency_ms, by, saved)
                    label_record(prediction=prediction, value=labels[index], by=by, via=Label.Via.IMPORT)
                    summary.ids.append(prediction.pk)
    except BaseException:
        for name in saved:
            default_storage.delete(name)
        raise
    summary.created = len(summary.ids)
    return summary


def _create(data: _Dataset, index: int, pixels: bytes, digest: str, probabilities: list[float], version_id: int,
            latency_ms: float, by: AbstractBaseUser, saved: list[str]) -> Prediction:
    image_name = data.manifest[index][1].strip()
    if image_name:
        extension = PurePosixPath(image_name).suffix.lstrip(".").lower()
        if extension not in IMAGE_EXTENSIONS:
            raise _bad(f"Manifest row {index}: {image_name!r} is not an image file name.")
        content, extension = data.read_image(index, image_name)  # stored under the format it really is
    else:
        extension = "png"
        content = to_png_bytes(torch.frombuffer(bytearray(pixels), dtype=torch.uint8).view(28, 28).float().div(255))
    day = timezone.now()
    name = default_storage.save(f"drawings/{day:%Y/%m/%d}/{uuid.uuid4().hex}.{extension}", ContentFile(content))
    saved.append(name)
    rounded = [round(p, 6) for p in probabilities]
    digit = max(range(10), key=rounded.__getitem__)
    return Prediction.objects.create(
        image=name, input_pixels=pixels, input_sha256=digest, probabilities=rounded, digit=digit,
        confidence=rounded[digit], model_version_id=version_id, latency_ms=latency_ms,
        source=Prediction.Source.IMPORT, user=by,
    )
