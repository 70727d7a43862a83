"""What a newcomer's first hour with the site ran into, each fixed: the API docs' assets, the API's JSON
404 under DEBUG, one log line per failed request, a wrong label key, the predict command answering as the
API does, export/import counts, one login for the site's staff pages, and `make setup` saying what it does."""
from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings
from rest_framework.test import APIClient

from classifier.labels import label_record
from classifier.models import Label, Prediction
from tests.support.drawings import ONE, SEVEN, canvas, encode
from tests.support.html import foreign_urls

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "docs" / "examples" / "seven.png"


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "detail"}
    assert body["error"]["code"] == code
    return body["error"]


# ------------------------------------------------------------------ 1. the docs page's assets


def test_a_page_is_judged_by_the_hosts_it_links_not_by_its_text():
    token = '<input type="hidden" name="csrfmiddlewaretoken" value="xLTicwxcdn9Kq">'
    assert foreign_urls(f'<link rel="stylesheet" href="/static/ui.css">{token}<script src="/static/ui.js">') == []
    assert foreign_urls('<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist/ui.js"></script>') == [
        "https://cdn.jsdelivr.net/npm/swagger-ui-dist/ui.js"]
    assert foreign_urls('<link href="//unpkg.com/x.css" rel="stylesheet">') == ["//unpkg.com/x.css"]
    assert foreign_urls('<img srcset="/a.png 1x, https://cdn.example/b.png 2x">') == ["https://cdn.example/b.png"]


# ------------------------------------------------------------------ 2. JSON 404 under /api/, DEBUG or not


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [True, False])
def test_an_unknown_api_path_answers_the_error_shape(client, debug):
    with override_settings(DEBUG=debug):
        for method in ("get", "post", "delete"):
            error = assert_error(getattr(client, method)("/api/nope/"), 404, "not_found")
            assert error["detail"] == {"path": "/api/nope/"}
        assert_error(client.get("/api/models/99999/nothing/"), 404, "not_found")
        assert_error(client.get("/api/nope"), 404, "not_found")
        assert_error(client.get("/api/no%0Ape/"), 404, "not_found")  # a newline in the path too
        assert_error(client.put("/api/no%0Ape"), 404, "not_found")
        # An endpoint without its final slash: GET is redirected there (query kept); other methods are told.
        response = client.get("/api/model-status?x=1")
        assert response.status_code == 301 and response["Location"] == "/api/model-status/?x=1"
        assert client.get("/api/model-status/").status_code == 200
        error = assert_error(client.post("/api/predict", {}, content_type="application/json"), 404, "not_found")
        assert error["detail"] == {"path": "/api/predict", "did_you_mean": "/api/predict/"}
        # Outside /api/ a missing page is still a page.
        assert not client.get("/no-such-page/")["Content-Type"].startswith("application/json")


def test_the_catch_all_stays_out_of_the_schema(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    assert "api-not-found" not in schema.content.decode() and "/api/{" not in schema.content.decode()


# ------------------------------------------------------------------ 3. one log line per failed request


def _site_emissions(monkeypatch) -> list[tuple[str, str]]:
    """(handler class, message) for every record a handler of the site's logging config writes out, that is
    every handler but pytest's own capture."""
    emitted: list[tuple[str, str]] = []
    original = logging.Handler.handle

    def handle(self, record):
        done = original(self, record)
        if done and not type(self).__module__.startswith("_pytest"):
            emitted.append((type(self).__name__, record.getMessage()))
        return done

    monkeypatch.setattr(logging.Handler, "handle", handle)
    return emitted


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [True, False])
def test_a_failed_request_is_logged_once(client, caplog, monkeypatch, debug, settings):
    settings.DEBUG = debug  # Django's own console handler on "django" only writes while DEBUG is on
    emitted = _site_emissions(monkeypatch)
    with caplog.at_level(logging.INFO):
        client.get("/api/nope/")
        client.post("/api/predict/", {}, content_type="application/json")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("django.request", "Not Found: /api/nope/"), ("django.request", "Bad Request: /api/predict/")]
    assert [message for _, message in emitted] == ["Not Found: /api/nope/", "Bad Request: /api/predict/"]


# ------------------------------------------------------------------ 4. a wrong label key


@pytest.mark.django_db
def test_a_wrong_label_key_is_a_mismatch_not_missing_credentials():
    body = APIClient().post("/api/predict/", {"image": encode(canvas(SEVEN))}, format="json").json()
    url = f"/api/predictions/{body['id']}/label/"
    error = assert_error(APIClient().post(url, {"label": 7, "label_key": "x" * 32}, format="json"),
                         403, "label_key_mismatch")
    assert "label key" in error["message"]
    assert_error(APIClient().post(url, {"label": 7, "label_key": ""}, format="json"), 403, "label_key_mismatch")
    # No key at all: no credentials, as before.
    assert_error(APIClient().post(url, {"label": 7}, format="json"), 401, "not_authenticated")
    assert Prediction.objects.get(pk=body["id"]).label is None
    assert APIClient().post(url, {"label": 7, "label_key": body["label_key"]}, format="json").status_code == 200


# ------------------------------------------------------------------ 5. one way to make an answer


@pytest.mark.django_db
def test_the_predict_command_answers_as_the_api_does():
    from classifier.inference import registry

    api = APIClient().post("/api/predict/", {"image": EXAMPLE.open("rb")}, format="multipart")
    assert api.status_code == 200, api.content
    api = api.json()
    out, err = io.StringIO(), io.StringIO()
    call_command("predict", str(EXAMPLE), "--json", stdout=out, stderr=err)
    command = json.loads(out.getvalue())
    assert command["digit"] == api["digit"] == 7
    assert command["probabilities"] == pytest.approx(api["probabilities"], abs=2e-6)
    assert command["confidence"] == pytest.approx(api["confidence"], abs=2e-6)
    served = registry.serving()
    assert f"model: {served.ref.label}" in err.getvalue()
    # The test means something only where the served answer differs from a plain softmax of the network.
    import torch
    from engine.preprocessing import preprocess
    from PIL import Image

    with Image.open(EXAMPLE) as image, torch.inference_mode():
        plain = served.module(preprocess(image).unsqueeze(0)).softmax(dim=1)[0].tolist()
    assert max(abs(a - b) for a, b in zip(plain, api["probabilities"])) > 1e-3

    # The table form says the same, to a tenth of a percent.
    out = io.StringIO()
    call_command("predict", str(EXAMPLE), stdout=out, stderr=io.StringIO())
    shown = [float(p) for p in re.findall(r"\d:\s*([\d.]+)%", out.getvalue().split("   ", 1)[1])]
    assert shown == pytest.approx([100 * p for p in api["probabilities"]], abs=0.051)


@pytest.mark.django_db
def test_the_predict_command_serves_a_checkpoint_file_with_its_calibration(shipped_dir):
    from engine.checkpoint import load_checkpoint
    from engine.serving import checkpoint_temperature, checkpoint_tta

    checkpoint = load_checkpoint(shipped_dir / "cnn.pt")
    err = io.StringIO()
    call_command("predict", str(EXAMPLE), "--json", "--checkpoint", str(shipped_dir / "cnn.pt"),
                 stdout=io.StringIO(), stderr=err)
    assert f"T={checkpoint_temperature(checkpoint):.3g}, views: {checkpoint_tta(checkpoint)}" in err.getvalue()


# ------------------------------------------------------------------ 10. export and import counts


@pytest.mark.django_db
def test_an_export_imports_whole_into_an_empty_site_and_again_adds_nothing(staff_user, tmp_path):
    client = APIClient()
    same = encode(canvas(SEVEN))
    ids = [client.post("/api/predict/", {"image": image}, format="json").json()["id"]
           for image in (same, same, encode(canvas(ONE)))]
    for pk in ids:
        label_record(prediction=Prediction.objects.get(pk=pk), value=Prediction.objects.get(pk=pk).digit,
                     by=staff_user, via=Label.Via.REVIEW)
    rows = Prediction.objects.filter(pk__in=ids)
    assert len({bytes(p.input_pixels) for p in rows}) == 2  # two of the three are pixel-identical

    path = tmp_path / "drawings.zip"
    out = io.StringIO()
    call_command("export_drawings", str(path), stdout=out)
    assert re.fullmatch(rf"3 drawings \(\d+\.\d MB\) written to {re.escape(str(path))}\n", out.getvalue())

    Prediction.objects.all().delete()
    out = io.StringIO()
    call_command("import_drawings", str(path), "--user", staff_user.username, "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert (summary["rows"], summary["created"], summary["duplicates"], summary["conflicts"]) == (3, 3, 0, 0)
    assert Prediction.objects.count() == 3

    out = io.StringIO()
    call_command("import_drawings", str(path), "--user", staff_user.username, "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert (summary["rows"], summary["created"], summary["duplicates"]) == (3, 0, 3)
    assert Prediction.objects.count() == 3

    # One of the identical pair gone: importing again brings back that one, not both.
    Prediction.objects.order_by("id").first().delete()  # manifest row 0, one of the pair
    out = io.StringIO()
    call_command("import_drawings", str(path), "--user", staff_user.username, "--json", stdout=out)
    assert json.loads(out.getvalue())["created"] == 1 and Prediction.objects.count() == 3


# ------------------------------------------------------------------ 12. one login for the site


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["/stats/", "/review/"])
def test_staff_pages_send_visitors_to_the_sites_own_login_and_back(client, user, staff_user, page):
    response = client.get(page)
    assert response.status_code == 302
    assert response["Location"] == f"/account/login/?next={page}"
    login = client.post(response["Location"], {"username": "staff", "password": "pw-staff-123"})
    assert login.status_code == 302 and login["Location"] == page
    assert client.get(page).status_code == 200

    client.logout()
    client.force_login(user)  # signed in but not staff: refused, not sent to a login that would send it back
    assert client.get(page).status_code == 403


# ------------------------------------------------------------------ 14. make setup says what it installs


def test_make_setup_shows_what_it_installs_and_its_progress():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("$(BIN)/.installed: requirements.txt\n", 1)[1].split("\n\n", 1)[0]
    install = next(line for line in recipe.splitlines() if "pip install" in line)
    assert "--quiet" not in install and "-q " not in install and "--progress-bar on" in install
    said = " ".join(line for line in recipe.splitlines() if line.strip().startswith("@echo"))
    assert "requirements.txt" in said and "MB" in said and "minute" in said
    assert recipe.index("@echo") < recipe.index("pip install")
