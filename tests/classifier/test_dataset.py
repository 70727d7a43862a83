"""Taking the data away and back: export the labelled drawings as a zip (IDX files, original images, a
CSV manifest) from a command and from the admin, load it with the engine's reader, import it back."""
from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest
import torch
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from classifier.dataset import export_queryset, export_zip_chunks, import_drawings
from classifier.drawings import in_field_set
from classifier.labels import label_record
from classifier.models import Label, Prediction
from engine.data import load_idx_dataset, parse_idx, read_idx
from mnistsite.errors import ApplicationError
from tests.support.drawings import ONE, SEVEN, ZERO, canvas, encode

pytestmark = pytest.mark.django_db


@pytest.fixture
def drawings(staff_user, user):
    """Six real predictions (images in storage): four labelled (by staff and by a visitor), one marked
    not a digit, one unlabelled."""
    client = APIClient()
    shapes = [SEVEN, ONE, ZERO, SEVEN, ONE, ZERO]
    ids = []
    for i, shape in enumerate(shapes):
        body = client.post("/api/predict/", {"image": encode(canvas(shape, width=12 + 2 * i))}, format="json").json()
        ids.append(body["id"])
    rows = [Prediction.objects.get(pk=pk) for pk in ids]
    label_record(prediction=rows[0], value=7, by=staff_user, via=Label.Via.REVIEW)
    label_record(prediction=rows[1], value=1, by=user, via=Label.Via.ACCOUNT)
    label_record(prediction=rows[2], value=6, by=staff_user, via=Label.Via.REVIEW)  # a correction
    label_record(prediction=rows[3], value=7, by=None, via=Label.Via.LABEL_KEY, giver="key:x")
    label_record(prediction=rows[4], value="x", by=staff_user, via=Label.Via.REVIEW)
    return rows


def export_bytes(**filters) -> bytes:
    return b"".join(export_zip_chunks(export_queryset(**filters)))


def snapshot() -> list[tuple[bytes, int, bytes]]:
    """Every labelled drawing as (28x28 input, label, original image bytes), in a stable order."""
    rows = []
    for p in Prediction.objects.labelled().order_by("id"):
        with default_storage.open(p.image.name, "rb") as fh:
            rows.append((bytes(p.input_pixels), p.label, fh.read()))
    return sorted(rows)


def test_export_then_import_is_lossless(drawings, staff_user, tmp_path):
    before = snapshot()
    assert len(before) == 4
    path = tmp_path / "drawings.zip"
    call_command("export_drawings", str(path), stdout=io.StringIO())

    Prediction.objects.all().delete()
    out = io.StringIO()
    call_command("import_drawings", str(path), "--user", staff_user.username, "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert (summary["rows"], summary["created"], summary["duplicates"], summary["conflicts"]) == (4, 4, 0, 0)

    assert snapshot() == before  # same pixels, same labels, same original images, same count
    imported = Prediction.objects.all()
    assert {p.source for p in imported} == {"import"}
    assert all(p.label_by_staff and p.labelled_by == staff_user for p in imported)
    assert set(Label.objects.values_list("via", "given_by", "by_staff")) == {("import", staff_user.pk, True)}
    # the model serving now answered each imported drawing
    assert all(len(p.probabilities) == 10 and p.digit == max(range(10), key=p.probabilities.__getitem__)
               for p in imported)


def test_the_idx_files_load_with_the_engines_reader(drawings, tmp_path):
    data = export_bytes()
    path = tmp_path / "drawings.zip"
    path.write_bytes(data)
    images, labels = load_idx_dataset(path).tensors  # the one line the README shows
    expected = list(Prediction.objects.labelled().order_by("id"))
    assert images.dtype == torch.uint8 and tuple(images.shape) == (len(expected), 28, 28)
    assert labels.tolist() == [p.label for p in expected]
    assert [images[i].numpy().tobytes() for i in range(len(expected))] == [bytes(p.input_pixels) for p in expected]

    with zipfile.ZipFile(path) as archive:  # extracted, the plain IDX reader reads each file as well
        archive.extractall(tmp_path / "out")
        manifest = list(csv.DictReader(io.StringIO(archive.read("drawings/manifest.csv").decode())))
        names = archive.namelist()
    folder = tmp_path / "out" / "drawings"
    assert torch.equal(read_idx(folder / "images-idx3-ubyte"), images)
    assert read_idx(folder / "labels-idx1-ubyte").tolist() == labels.tolist()
    assert torch.equal(load_idx_dataset(folder).images, images)
    assert [int(row["prediction_id"]) for row in manifest] == [p.pk for p in expected]
    assert [row["labelled_by"] for row in manifest] == ["staff", "alice", "staff", ""]
    assert [row["label_by_staff"] for row in manifest] == ["1", "0", "1", "0"]
    assert all(f"drawings/{row['image']}" in names for row in manifest)


def test_subsets(drawings, tmp_path):
    staff_only = load_idx_dataset_bytes(export_bytes(staff_only=True), tmp_path)
    assert staff_only.labels.tolist() == [7, 6]
    admin_pick = export_queryset(queryset=Prediction.objects.filter(pk__in=[drawings[1].pk, drawings[4].pk]))
    assert list(admin_pick) == [drawings[1]]  # "not a digit" is never exported
    field = [p.pk for p in drawings[:4] if in_field_set(p.pk)]
    field_zip = load_idx_dataset_bytes(b"".join(export_zip_chunks(export_queryset(), part="field")), tmp_path)
    train_zip = load_idx_dataset_bytes(b"".join(export_zip_chunks(export_queryset(), part="train")), tmp_path)
    assert len(field_zip) == len(field) and len(field_zip) + len(train_zip) == 4


def load_idx_dataset_bytes(data: bytes, tmp_path):
    path = tmp_path / "subset.zip"
    path.write_bytes(data)
    return load_idx_dataset(path)


def test_importing_twice_skips_exact_duplicates(drawings, staff_user, tmp_path):
    path = tmp_path / "drawings.zip"
    path.write_bytes(export_bytes())
    count = Prediction.objects.count()
    Prediction.objects.filter(pk=drawings[0].pk).update(label=3)  # here it is now labelled otherwise
    summary = import_drawings(source=str(path), by=staff_user)
    assert (summary.rows, summary.created, summary.duplicates, len(summary.conflicts)) == (4, 0, 4, 1)
    assert Prediction.objects.count() == count


def test_a_member_that_unpacks_too_large_is_refused_before_it_is_read(drawings, staff_user, settings):
    good = export_bytes()
    count = Prediction.objects.count()
    settings.DRAWINGS_IMPORT_MAX_MEMBER_BYTES = 1000  # the export's images file is 4 x 784 + 16 bytes
    with pytest.raises(ApplicationError) as refused:
        import_drawings(source=io.BytesIO(good), by=staff_user)
    assert refused.value.code == "invalid_dataset" and "unpacks to" in refused.value.message
    assert Prediction.objects.count() == count


def test_import_refuses_bad_files_and_non_staff(drawings, staff_user, user, tmp_path):
    good = export_bytes()
    with pytest.raises(ApplicationError) as denied:
        import_drawings(source=io.BytesIO(good), by=user)
    assert denied.value.status == 403

    def rebuilt(**replace) -> io.BytesIO:
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(out, "w") as dst:
            for name in src.namelist():
                short = name.removeprefix("drawings/")
                if short in replace:
                    if replace[short] is not None:
                        dst.writestr(name, replace[short])
                else:
                    dst.writestr(name, src.read(name))
        out.seek(0)
        return out

    manifest = zipfile.ZipFile(io.BytesIO(good)).read("drawings/manifest.csv").decode()
    bad_files = [
        io.BytesIO(b"not a zip"),
        rebuilt(**{"manifest.csv": None}),
        rebuilt(**{"labels-idx1-ubyte": b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02"}),  # 2 labels for 4 images
        rebuilt(**{"images-idx3-ubyte": b"garbage"}),
        rebuilt(**{"manifest.csv": manifest.replace(",7,images/", ",8,images/", 1)}),  # disagrees with the IDX
        rebuilt(**{"manifest.csv": manifest.replace("images/", "../../etc/", 1)}),
    ]
    Prediction.objects.all().delete()
    for bad in bad_files:
        with pytest.raises(ApplicationError) as refused:
            import_drawings(source=bad, by=staff_user)
        assert refused.value.code == "invalid_dataset" and refused.value.status == 400
    assert Prediction.objects.count() == 0  # all or nothing
    with pytest.raises(CommandError):
        call_command("import_drawings", "/nonexistent.zip", "--user", staff_user.username)
    path = tmp_path / "good.zip"
    path.write_bytes(good)
    with pytest.raises(CommandError):
        call_command("import_drawings", str(path), "--user", user.username)


def test_a_missing_original_is_exported_without_it_and_imported_as_its_input(drawings, staff_user):
    default_storage.delete(drawings[0].image.name)
    data = export_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        rows = list(csv.DictReader(io.StringIO(archive.read("drawings/manifest.csv").decode())))
    assert rows[0]["image"] == "" and all(row["image"] for row in rows[1:])
    pixels = bytes(drawings[0].input_pixels)
    Prediction.objects.all().delete()
    import_drawings(source=io.BytesIO(data), by=staff_user)
    assert Prediction.objects.filter(input_pixels=pixels, label=7).count() == 1


def test_the_admin_action_streams_the_zip(admin_client, drawings):
    response = admin_client.post("/admin/classifier/prediction/", {
        "action": "export_labelled_drawings", "_selected_action": [p.pk for p in drawings],
    })
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response.streaming and "attachment;" in response["Content-Disposition"]
    data = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        labels = read_idx_bytes(archive.read("drawings/labels-idx1-ubyte"))
    assert labels == [7, 1, 6, 7]


def read_idx_bytes(data: bytes) -> list[int]:
    return parse_idx(data).tolist()
