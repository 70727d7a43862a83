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
import hashlib
import io
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

from engine.data import DATASET_IMAGES, DATASET_LABELS, DataError, idx_bytes, parse_idx
from engine.preprocessing import to_png_bytes
from mnistsite.errors import ApplicationError

from .drawings import in_field_set
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
MAX_IMPORT_ROWS = 1_000_000
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
    images: torch.Tensor
    labels: torch.Tensor
    manifest: list[dict[str, str]]
    read_image: Any  # name inside the folder -> bytes


def _read(archive: zipfile.ZipFile, name: str) -> bytes:
    """A member's bytes; a damaged, encrypted or oddly compressed member is a bad file, not a crash.

    A member that unpacks to more than ``DRAWINGS_IMPORT_MAX_MEMBER_BYTES`` is refused before it is read
    (a small zip can unpack to gigabytes); zipfile never returns more than the size a member declares.
    """
    limit = settings.DRAWINGS_IMPORT_MAX_MEMBER_BYTES
    size = archive.getinfo(name).file_size
    if size > limit:
        raise _bad(f"{name} unpacks to {size:,} bytes; at most {limit:,} are accepted per file.")
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise _bad(f"Cannot read {name} from the zip ({exc}).") from None


def _open(archive: zipfile.ZipFile) -> _Dataset:
    names = archive.namelist()
    manifests = [n for n in names if n.rsplit("/", 1)[-1] == "manifest.csv"]
    if len(manifests) != 1:
        raise _bad(f"Expected one manifest.csv in the zip, found {len(manifests)}.")
    base = manifests[0][: -len("manifest.csv")]

    def member(name: str) -> bytes:
        for candidate in (base + name, base + name + ".gz"):
            if candidate in names:
                return _read(archive, candidate)
        raise _bad(f"The zip has no {base + name}.")

    try:
        images = parse_idx(member(DATASET_IMAGES), source=DATASET_IMAGES)
        labels = parse_idx(member(DATASET_LABELS), source=DATASET_LABELS)
    except DataError as exc:
        raise _bad(str(exc)) from None
    try:
        text = _read(archive, manifests[0]).decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("manifest.csv is not UTF-8 text.") from None
    try:
        manifest = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as exc:
        raise _bad(f"manifest.csv is not a readable CSV file ({exc}).") from None

    def read_image(name: str) -> bytes:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or base + name not in names:
            raise _bad(f"The manifest names an image the zip does not hold: {name!r}.")
        return _read(archive, base + name)

    return _Dataset(images=images, labels=labels, manifest=manifest, read_image=read_image)


def _check(data: _Dataset) -> None:
    images, labels, manifest = data.images, data.labels, data.manifest
    if images.dtype != torch.uint8 or images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        raise _bad(f"{DATASET_IMAGES} must hold uint8 images [N,28,28], not {images.dtype} {list(images.shape)}.")
    if labels.dtype != torch.uint8 or labels.dim() != 1:
        raise _bad(f"{DATASET_LABELS} must hold uint8 labels [N], not {labels.dtype} {list(labels.shape)}.")
    if not len(images) == len(labels) == len(manifest):
        raise _bad(f"{len(images)} images, {len(labels)} labels and {len(manifest)} manifest rows: they must agree.")
    if len(images) > MAX_IMPORT_ROWS:
        raise _bad(f"At most {MAX_IMPORT_ROWS:,} drawings per import.")
    if labels.numel() and int(labels.max()) > 9:
        raise _bad(f"Label {int(labels.max())} is not a digit.")
    for index, (row, label, image) in enumerate(zip(manifest, labels.tolist(), images)):
        if row.get("label") not in (None, "") and row["label"] != str(label):
            raise _bad(f"Manifest row {index} says label {row['label']!r}, {DATASET_LABELS} says {label}.")
        digest = row.get("input_sha256")
        if digest and digest != hashlib.sha256(image.numpy().tobytes()).hexdigest():
            raise _bad(f"Manifest row {index}: the 28x28 input's sha256 differs from the manifest's.")


def import_drawings(*, source: str | IO[bytes], by: AbstractBaseUser) -> ImportSummary:
    """Import a dataset zip (a path or an open binary file) as labelled predictions labelled by ``by`` (staff).

    All or nothing: a malformed file (``invalid_dataset``, 400) imports nothing."""
    if not (by is not None and by.is_active and by.is_staff):
        raise ApplicationError("permission_denied", "Only staff may import labelled drawings.", status=403)
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
    pixels = [image.numpy().tobytes() for image in data.images]
    digests = [hashlib.sha256(raw).hexdigest() for raw in pixels]
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
                    prediction = _create(data, index, pixels[index], digests[index], probs, model.ref.id,
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
    image_name = (data.manifest[index].get("image") or "").strip()
    if image_name:
        extension = PurePosixPath(image_name).suffix.lstrip(".").lower()
        if extension not in IMAGE_EXTENSIONS:
            raise _bad(f"Manifest row {index}: {image_name!r} is not an image file name.")
        content = data.read_image(image_name)
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
