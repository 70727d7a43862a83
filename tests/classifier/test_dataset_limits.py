"""Hostile dataset zips: each is refused with a 400-style ``invalid_dataset`` naming the member and the
limit, stores nothing, and never costs more memory than a bound (tracemalloc's peak over the import).

The zips are built here, in memory: a gzip bomb inside the zip, a manifest of a million rows, an HTML
page saved as a .png, a symbolic link entry, a fifo, a zip of more entries than drawings."""
from __future__ import annotations

import io
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from classifier.dataset import export_queryset, export_zip_chunks, import_drawings
from classifier.labels import label_record
from classifier.models import Label, Prediction
from mnistsite.errors import ApplicationError
from tests.support.drawings import ONE, SEVEN, ZERO, canvas, encode

pytestmark = pytest.mark.django_db

# What an import of a few drawings may allocate at its peak (Python's allocations, tracemalloc). Before
# these limits the gzip bomb below took 300 MB and the manifest of a million rows 650 MB.
PEAK_BOUND = 64 * 1024 * 1024
IMPORT = "/admin/classifier/prediction/import/"
IDX_HEADER_4 = bytes([0, 0, 8, 3]) + (4).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2


@pytest.fixture
def exported(staff_user) -> bytes:
    """A real export of four labelled drawings (originals in storage)."""
    client = APIClient()
    for i, (shape, label) in enumerate([(SEVEN, 7), (ONE, 1), (ZERO, 0), (SEVEN, 7)]):
        body = client.post("/api/predict/", {"image": encode(canvas(shape, width=12 + 2 * i))}, format="json").json()
        label_record(prediction=Prediction.objects.get(pk=body["id"]), value=label, by=staff_user,
                     via=Label.Via.REVIEW)
    return b"".join(export_zip_chunks(export_queryset()))


def rebuilt(good: bytes, *, drop: tuple[str, ...] = (), add: tuple[zipfile.ZipInfo | tuple[str, bytes], ...] = (),
            **replace: bytes) -> bytes:
    """The export with members (named without the folder) replaced, dropped or added."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            short = name.removeprefix("drawings/")
            if short in drop:
                continue
            dst.writestr(name, replace.get(short, src.read(name)))
        for extra in add:
            if isinstance(extra, zipfile.ZipInfo):
                dst.writestr(extra, extra.comment)
            else:
                dst.writestr(*extra)
    return out.getvalue()


def gzip_bomb(header: bytes, inflated: int) -> bytes:
    """A gzip file of ``header`` followed by zeros, ``inflated`` bytes in all, built without holding them."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: the gzip container
    parts = [packer.compress(header)]
    zeros = bytes(1 << 20)
    left = inflated - len(header)
    while left > 0:
        parts.append(packer.compress(zeros[:min(left, len(zeros))]))
        left -= len(zeros)
    parts.append(packer.flush())
    return b"".join(parts)


def entry(name: str, mode: int, data: bytes) -> zipfile.ZipInfo:
    """A zip entry made on Unix with file mode ``mode`` (zip keeps it in the upper half of external_attr)."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    info.comment = data  # carried to writestr by rebuilt()
    return info


def image_names(good: bytes) -> list[str]:
    return sorted(n for n in zipfile.ZipFile(io.BytesIO(good)).namelist() if "/images/" in n)


def stored_drawings() -> set[str]:
    root = Path(default_storage.path("drawings"))
    return {str(path) for path in root.rglob("*") if path.is_file()} if root.exists() else set()


def refused(data: bytes, user) -> tuple[ApplicationError, int]:
    """Import ``data``: the error, and the peak of Python's allocations while it ran."""
    tracemalloc.start()
    try:
        with pytest.raises(ApplicationError) as caught:
            import_drawings(source=io.BytesIO(data), by=user)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.code == "invalid_dataset" and caught.value.status == 400
    return caught.value, peak


def test_a_gzip_bomb_inside_the_zip_is_refused_at_the_bytes_its_header_promises(exported, staff_user):
    bomb = gzip_bomb(IDX_HEADER_4, 300 * 1024 * 1024)  # 300 MB inflated: its header says 4 images
    assert len(bomb) < 2 * 1024 * 1024  # 1.4 MB, as the one the review sent
    data = rebuilt(exported, drop=("images-idx3-ubyte",), add=(("drawings/images-idx3-ubyte.gz", bomb),))
    Prediction.objects.all().delete()
    files = stored_drawings()

    error, peak = refused(data, staff_user)

    assert peak < PEAK_BOUND, f"{peak / 1e6:.0f} MB"
    assert error.message == ("drawings/images-idx3-ubyte.gz holds more bytes than its header promises "
                             "(4 images of 28x28).")
    assert Prediction.objects.count() == 0 and stored_drawings() == files


def test_a_header_beyond_the_row_limit_is_refused_before_anything_is_read(exported, staff_user, settings):
    header = bytes([0, 0, 8, 3]) + (10_000_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    data = rebuilt(exported, **{"images-idx3-ubyte": header})
    error, peak = refused(data, staff_user)
    assert "declares 10,000,000 images; at most 200,000" in error.message
    assert "DRAWINGS_IMPORT_MAX_ROWS" in error.message and peak < PEAK_BOUND
    settings.DRAWINGS_IMPORT_MAX_ROWS = 3  # the export holds 4
    error, _ = refused(exported, staff_user)
    assert "declares 4 images; at most 3" in error.message


def test_a_manifest_of_a_million_rows_is_refused_by_its_size(exported, staff_user):
    manifest = zipfile.ZipFile(io.BytesIO(exported)).read("drawings/manifest.csv")
    huge = manifest + b"x\n" * 1_000_000  # 2 MB that deflate to a few KB
    data = rebuilt(exported, **{"manifest.csv": huge})
    assert len(data) < len(exported) + 10_000

    error, peak = refused(data, staff_user)

    assert peak < PEAK_BOUND, f"{peak / 1e6:.0f} MB"
    assert error.message.startswith("drawings/manifest.csv unpacks to 2,00")
    assert "for 4 drawings at most 20,480 are accepted" in error.message


def test_manifest_rows_are_counted_as_they_are_read(exported, staff_user):
    manifest = zipfile.ZipFile(io.BytesIO(exported)).read("drawings/manifest.csv")
    extra_rows = rebuilt(exported, **{"manifest.csv": manifest + b"4,0,7,,,,,,,,,,,\n" * 5})  # small enough
    error, _ = refused(extra_rows, staff_user)
    assert error.message == "drawings/manifest.csv has more rows than the 4 images: one row per image is expected."
    long_line = rebuilt(exported, **{"manifest.csv": manifest + b"x" * 5000 + b"\n"})
    error, _ = refused(long_line, staff_user)
    assert "line 6 is longer than 4,096 characters" in error.message


def test_an_html_page_saved_as_a_png_is_refused_and_nothing_is_stored(exported, staff_user):
    last = image_names(exported)[-1].removeprefix("drawings/")
    page = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"
    data = rebuilt(exported, **{last: page})
    Prediction.objects.all().delete()
    files = stored_drawings()

    error, peak = refused(data, staff_user)

    assert error.message.startswith(f"Manifest row 3: drawings/{last} is not an image that may be imported")
    assert peak < PEAK_BOUND
    # the first three rows were stored before the fourth was refused: rolled back, files deleted
    assert Prediction.objects.count() == 0 and Label.objects.count() == 0 and stored_drawings() == files


def test_a_huge_image_is_refused_by_its_size_before_it_is_read(exported, staff_user, settings):
    settings.PREDICT_MAX_IMAGE_BYTES = 100  # the same limit as a drawing sent to the predict API
    Prediction.objects.all().delete()
    error, _ = refused(exported, staff_user)
    assert error.message.startswith("Manifest row 0: drawings/images/")
    assert "at most 100 are accepted per image (PREDICT_MAX_IMAGE_BYTES)" in error.message


@pytest.mark.parametrize("mode, words", [(0o120777, "is a symbolic link"), (0o010644, "is not a regular file")],
                         ids=["symlink", "fifo"])
def test_links_and_other_special_entries_are_refused(exported, staff_user, mode, words):
    name = image_names(exported)[0]
    data = rebuilt(exported, drop=(name.removeprefix("drawings/"),), add=(entry(name, mode, b"/etc/passwd"),))
    Prediction.objects.all().delete()
    error, _ = refused(data, staff_user)
    assert error.message == f"{name} {words}; only regular files are accepted in the zip."
    assert Prediction.objects.count() == 0
    # a regular file made on Unix (mode 0o100644) is fine
    fine = rebuilt(exported, drop=(name.removeprefix("drawings/"),),
                   add=(entry(name, 0o100644, zipfile.ZipFile(io.BytesIO(exported)).read(name)),))
    assert import_drawings(source=io.BytesIO(fine), by=staff_user).created == 4


def test_a_zip_of_more_entries_than_drawings_is_refused_before_it_is_listed(exported, staff_user, settings):
    settings.DRAWINGS_IMPORT_MAX_ROWS = 10
    data = rebuilt(exported, add=tuple((f"drawings/junk/{i}", b"") for i in range(30)))
    error, _ = refused(data, staff_user)
    assert error.message.startswith("The zip holds 38 entries; at most 26 are accepted")


def test_the_admin_form_shows_the_limits_and_the_refusal(admin_client, exported, settings):
    settings.DRAWINGS_IMPORT_MAX_ROWS = 5000
    assert "At most 5,000 drawings (DRAWINGS_IMPORT_MAX_ROWS)" in admin_client.get(IMPORT).content.decode()
    name = image_names(exported)[0]
    data = rebuilt(exported, drop=(name.removeprefix("drawings/"),), add=(entry(name, 0o120777, b"/etc/passwd"),))
    Prediction.objects.all().delete()
    response = admin_client.post(IMPORT, {"dataset": SimpleUploadedFile("d.zip", data, "application/zip")})
    (error,) = response.context["form"].errors["dataset"]
    assert error == f"Nothing was imported. {name} is a symbolic link; only regular files are accepted in the zip."
    assert Prediction.objects.count() == 0
