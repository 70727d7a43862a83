"""The predictions admin's "Import drawings" form: a dataset zip in, through the same import as
``manage.py import_drawings``; who may use it; a bad file is a form error and imports nothing."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from classifier.dataset import export_queryset, export_zip_chunks
from classifier.labels import label_record
from classifier.models import Label, Prediction
from tests.support.drawings import ONE, SEVEN, ZERO, canvas, encode

pytestmark = pytest.mark.django_db

IMPORT = "/admin/classifier/prediction/import/"
CHANGELIST = "/admin/classifier/prediction/"


@pytest.fixture
def drawings(staff_user):
    """Three real predictions (originals in storage), labelled by staff."""
    client = APIClient()
    rows = []
    for i, (shape, label) in enumerate([(SEVEN, 7), (ONE, 1), (ZERO, 6)]):
        body = client.post("/api/predict/", {"image": encode(canvas(shape, width=12 + 2 * i))}, format="json").json()
        prediction = Prediction.objects.get(pk=body["id"])
        label_record(prediction=prediction, value=label, by=staff_user, via=Label.Via.REVIEW)
        rows.append(prediction)
    return rows


@pytest.fixture
def exported(drawings) -> bytes:
    return b"".join(export_zip_chunks(export_queryset()))


def snapshot() -> list[tuple[bytes, int, bytes]]:
    """Every labelled drawing as (28x28 input, label, original image bytes), in a stable order."""
    rows = []
    for p in Prediction.objects.labelled():
        with default_storage.open(p.image.name, "rb") as fh:
            rows.append((bytes(p.input_pixels), p.label, fh.read()))
    return sorted(rows)


def stored_drawings() -> set[str]:
    """Every file under the storage's drawings/ folder."""
    root = Path(default_storage.path("drawings"))
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def upload(data: bytes, name: str = "drawings.zip") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/zip")


def texts(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def rebuilt(good: bytes, **replace: bytes) -> bytes:
    """The exported zip with some members (named without the folder) replaced."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, replace.get(name.removeprefix("drawings/"), src.read(name)))
    return out.getvalue()


def damaged(good: bytes, name: str) -> bytes:
    """The zip with one byte of a member's compressed data flipped (it no longer inflates, or fails its CRC)."""
    info = zipfile.ZipFile(io.BytesIO(good)).getinfo(name)
    data = bytearray(good)
    data[info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 10] ^= 0xFF
    return bytes(data)


def test_the_changelist_has_the_button_and_the_form_renders(admin_client):
    assert reverse("admin:classifier_prediction_import") == IMPORT
    html = admin_client.get(CHANGELIST).content.decode()
    assert f'href="{IMPORT}"' in html and "Import drawings" in html
    page = admin_client.get(IMPORT)
    html = page.content.decode()
    assert page.status_code == 200 and 'enctype="multipart/form-data"' in html and 'name="dataset"' in html
    assert "csrfmiddlewaretoken" in html and "200.0\xa0MB" in html  # the documented limit, in words


def test_export_delete_import_through_the_admin_gives_the_same_drawings(admin_client, admin_user, exported):
    before = snapshot()
    assert len(before) == 3
    Prediction.objects.all().delete()

    response = admin_client.post(IMPORT, {"dataset": upload(exported)}, follow=True)

    assert response.redirect_chain == [(CHANGELIST, 302)]
    assert texts(response) == ["3 drawings read: 3 imported, 0 skipped as duplicates (already here: for each, a "
                               "labelled drawing here with the same pixels)."]
    assert snapshot() == before  # same count, pixels, labels and original images
    imported = Prediction.objects.all()
    assert {p.source for p in imported} == {"import"}
    assert all(p.label_by_staff and p.labelled_by == admin_user for p in imported)

    # the same file again: every row is a duplicate, one of them now labelled otherwise here
    Prediction.objects.filter(label=6).update(label=0)
    response = admin_client.post(IMPORT, {"dataset": upload(exported)}, follow=True)
    assert texts(response) == [
        "3 drawings read: 0 imported, 3 skipped as duplicates (already here: for each, a labelled drawing here "
        "with the same pixels).",
        "1 of the duplicates is labelled otherwise here; the label here was kept (manifest rows 2).",
    ]
    assert Prediction.objects.count() == 3


def test_bad_files_are_form_errors_and_import_nothing(admin_client, exported, settings):
    manifest = zipfile.ZipFile(io.BytesIO(exported)).read("drawings/manifest.csv").decode()
    rows = manifest.splitlines()
    bad_files = {  # what is wrong: (the file, a part of the error it gets)
        "not a zip": (b"this is not a zip file", "Not a readable zip file"),
        "manifest without rows": (rebuilt(exported, **{"manifest.csv": b"index,label\n"}), "0 manifest rows"),
        "manifest disagrees with the labels": (rebuilt(exported, **{
            "manifest.csv": manifest.replace(",7,images/", ",8,images/", 1).encode()}), "says label '8'"),
        # the first rows are fine and stored before the last one is refused: rolled back
        "last image not an image": (rebuilt(exported, **{
            "manifest.csv": "\n".join(rows[:-1] + [rows[-1].replace(".png,", ".txt,", 1)]).encode() + b"\n"}),
            "is not an image file name"),
        "damaged member": (damaged(exported, "drawings/images-idx3-ubyte"), "Cannot read drawings/images-idx3-ubyte"),
    }
    Prediction.objects.all().delete()
    files_before = stored_drawings()
    for what, (data, expected) in bad_files.items():
        response = admin_client.post(IMPORT, {"dataset": upload(data)})
        assert response.status_code == 200, what
        (error,) = response.context["form"].errors["dataset"]
        assert error.startswith("Nothing was imported.") and expected in error, (what, error)
        assert 'class="errorlist' in response.content.decode(), what
    response = admin_client.post(IMPORT, {"dataset": upload(b"")})
    assert response.context["form"].errors["dataset"] == ["The submitted file is empty."]
    assert Prediction.objects.count() == 0 and Label.objects.count() == 0  # all or nothing
    assert stored_drawings() == files_before  # no stored drawing left behind

    settings.DRAWINGS_IMPORT_MAX_BYTES = len(exported) - 1
    response = admin_client.post(IMPORT, {"dataset": upload(exported)})
    (error,) = response.context["form"].errors["dataset"]
    assert "DRAWINGS_IMPORT_MAX_BYTES" in error and Prediction.objects.count() == 0

    response = admin_client.post(IMPORT, {})
    assert response.context["form"].errors["dataset"] == ["This field is required."]


def test_who_may_import(client, django_user_model, exported):
    Prediction.objects.all().delete()
    visitor = django_user_model.objects.create_user(username="visitor", password="pw")
    client.force_login(visitor)
    response = client.post(IMPORT, {"dataset": upload(exported)})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]  # not staff: to the login

    # staff who may look at predictions but not add them: no button, and the form is refused
    clerk = django_user_model.objects.create_user(username="clerk", password="pw", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_prediction"))
    client.force_login(clerk)
    assert "Import drawings" not in client.get(CHANGELIST).content.decode()
    assert client.get(IMPORT).status_code == 403
    assert client.post(IMPORT, {"dataset": upload(exported)}).status_code == 403
    assert Prediction.objects.count() == 0

    # with the add permission
    clerk.user_permissions.add(Permission.objects.get(codename="add_prediction"))
    clerk = django_user_model.objects.get(pk=clerk.pk)  # a fresh permission cache
    client.force_login(clerk)
    assert "Import drawings" in client.get(CHANGELIST).content.decode()
    response = client.post(IMPORT, {"dataset": upload(exported)})
    assert response.status_code == 302 and Prediction.objects.filter(labelled_by=clerk).count() == 3


def test_the_form_needs_the_csrf_token(admin_user, exported):
    Prediction.objects.all().delete()
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post(IMPORT, {"dataset": upload(exported)}).status_code == 403
    assert Prediction.objects.count() == 0
