"""API tokens without the admin: ``POST /api/token/`` and the ``/account/token/`` page, and the login page
that lets people who are not staff reach it."""
from __future__ import annotations

import re

import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from mnistsite.accounts import TOKEN_THROTTLE, TokenThrottle

pytestmark = pytest.mark.django_db

TOKEN_API = "/api/token/"
PAGE = "/account/token/"
LOGIN = "/account/login/"
KEY = re.compile(r"[0-9a-f]{40}")


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    cache.clear()
    yield
    cache.clear()


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "detail"}
    assert body["error"]["code"] == code
    return body["error"]


def authorized(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


# ------------------------------------------------------------------ POST /api/token/


def test_credentials_get_a_token_that_authenticates(api_client, staff_user):
    response = api_client.post(TOKEN_API, {"username": "staff", "password": "pw-staff-123"}, format="json")

    assert response.status_code == 201, response.content
    key = response.json()["token"]
    assert KEY.fullmatch(key) and set(response.json()) == {"token"}
    assert "no-store" in response["Cache-Control"]
    assert Token.objects.get(user=staff_user).key == key
    assert authorized(key).get("/api/stats/").status_code == 200


def test_a_new_token_replaces_the_old_one(api_client, user):
    credentials = {"username": "alice", "password": "pw-alice-123"}
    first = api_client.post(TOKEN_API, credentials, format="json").json()["token"]
    second = api_client.post(TOKEN_API, credentials, format="json").json()["token"]

    assert first != second
    assert list(Token.objects.filter(user=user).values_list("key", flat=True)) == [second]
    assert_error(authorized(first).get("/api/stats/"), 401, "authentication_failed")
    assert_error(authorized(second).get("/api/stats/"), 403, "permission_denied")  # alice is not staff


@pytest.mark.parametrize("credentials", [
    {"username": "alice", "password": "wrong"},
    {"username": "nobody", "password": "pw-alice-123"},
    {"username": "alice", "password": "pw-alice-123 "},
])
def test_bad_credentials_are_400_invalid_credentials(api_client, user, credentials):
    error = assert_error(api_client.post(TOKEN_API, credentials, format="json"), 400, "invalid_credentials")

    assert error["detail"] is None and "alice" not in error["message"]
    assert not Token.objects.exists()


def test_inactive_accounts_get_no_token(api_client, user):
    user.is_active = False
    user.save()

    assert_error(api_client.post(TOKEN_API, {"username": "alice", "password": "pw-alice-123"}, format="json"),
                 400, "invalid_credentials")


@pytest.mark.parametrize("body", [{"username": "alice"}, {"password": "x"}, {}, {"username": "alice", "password": "x",
                                                                                  "scope": "all"}])
def test_incomplete_requests_are_400_invalid_request(api_client, user, body):
    assert_error(api_client.post(TOKEN_API, body, format="json"), 400, "invalid_request")


def test_only_post(api_client):
    assert_error(api_client.get(TOKEN_API), 405, "method_not_allowed")


def test_a_signed_in_browser_needs_no_csrf_token_the_password_is_the_credential(user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)

    response = client.post(TOKEN_API, {"username": "alice", "password": "pw-alice-123"}, format="json")

    assert response.status_code == 201, response.content


def test_guessing_is_throttled_with_a_proper_reason_phrase(api_client, user, monkeypatch):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"token": "2/min"})
    for _ in range(2):
        assert_error(api_client.post(TOKEN_API, {"username": "alice", "password": "guess"}, format="json"),
                     400, "invalid_credentials")

    response = api_client.post(TOKEN_API, {"username": "alice", "password": "pw-alice-123"}, format="json")

    error = assert_error(response, 429, "throttled")
    assert response.reason_phrase == "Too Many Requests"
    assert error["detail"]["retry_after_s"] > 0 and int(response["Retry-After"]) > 0
    assert not Token.objects.exists()


def test_the_throttle_has_a_rate_without_a_setting(monkeypatch):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"predict": "120/min"})
    throttle = TokenThrottle()
    throttle.scope = "token"

    assert throttle.get_rate() == TOKEN_THROTTLE


def test_the_endpoint_is_in_the_api_schema(api_client):
    assert TOKEN_API.encode() in api_client.get("/api/schema/").content


# ------------------------------------------------------------------ the login page


def test_people_who_are_not_staff_can_sign_in(user):
    client = Client()
    page = client.get(LOGIN)
    assert page.status_code == 200 and 'name="csrfmiddlewaretoken"' in page.content.decode()

    wrong = client.post(LOGIN, {"username": "alice", "password": "nope"})
    assert wrong.status_code == 200 and 'data-testid="login-error"' in wrong.content.decode()

    response = client.post(LOGIN, {"username": "alice", "password": "pw-alice-123", "next": PAGE})
    assert response.status_code == 302 and response["Location"] == PAGE
    assert client.get(PAGE).status_code == 200


def test_the_login_page_refuses_posts_without_csrf(user):
    client = Client(enforce_csrf_checks=True)

    assert client.post(LOGIN, {"username": "alice", "password": "pw-alice-123"}).status_code == 403


def test_the_login_page_does_not_redirect_off_site(user):
    client = Client()
    response = client.post(LOGIN, {"username": "alice", "password": "pw-alice-123", "next": "https://evil.example/"})

    assert response.status_code == 302 and response["Location"] == "/"


def test_the_nav_links_the_token_page_for_signed_in_users(client, user):
    assert f'href="{PAGE}"' not in client.get("/").content.decode()
    assert f'href="{LOGIN}?next=/"' in client.get("/").content.decode()

    client.force_login(user)

    assert f'href="{PAGE}"' in client.get("/").content.decode()


# ------------------------------------------------------------------ /account/token/


@pytest.fixture
def signed_in(user) -> Client:
    """A signed-in browser that sends CSRF tokens, as a real one does, and is checked for them."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(PAGE)  # sets the CSRF cookie
    return client


def post(client: Client, action: str, **extra):
    return client.post(PAGE, {"action": action, "csrfmiddlewaretoken": client.cookies["csrftoken"].value}, **extra)


def test_the_page_is_for_signed_in_users(client):
    response = client.get(PAGE)

    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN}?next={PAGE}"
    assert client.post(PAGE, {"action": "create"}).status_code == 302
    assert not Token.objects.exists()


def test_create_shows_the_key_once_then_only_masked(signed_in, user):
    empty = signed_in.get(PAGE).content.decode()
    assert 'data-testid="token-none"' in empty

    created = post(signed_in, "create")

    assert created.status_code == 200
    key = Token.objects.get(user=user).key
    html = created.content.decode()
    assert f'value="{key}"' in html and 'data-testid="token-copy"' in html
    assert html.count(key) == 1
    assert "no-store" in created["Cache-Control"]

    later = signed_in.get(PAGE)
    html = later.content.decode()
    assert key not in html and key[4:12] not in html
    assert re.search(rf'data-testid="token-masked">{key[:4]}•+<', html)
    assert "no-store" in later["Cache-Control"]


def test_replace_gives_a_new_key_and_revoke_removes_it(signed_in, user):
    post(signed_in, "create")
    first = Token.objects.get(user=user).key

    post(signed_in, "create")
    second = Token.objects.get(user=user).key
    assert second != first and Token.objects.count() == 1

    revoked = post(signed_in, "revoke")
    assert revoked.status_code == 302 and revoked["Location"] == f"{PAGE}?revoked=1"
    assert not Token.objects.exists()
    page = signed_in.get(revoked["Location"]).content.decode()
    assert 'data-testid="token-revoked"' in page and 'data-testid="token-none"' in page


def test_forms_need_the_csrf_token(signed_in, user):
    assert signed_in.post(PAGE, {"action": "create"}).status_code == 403
    assert signed_in.post(PAGE, {"action": "revoke"}).status_code == 403
    assert not Token.objects.exists()


def test_unknown_actions_are_refused(signed_in):
    assert post(signed_in, "steal").status_code == 400
    assert signed_in.get(PAGE, {"action": "create"}).status_code == 200
    assert not Token.objects.exists()


def test_each_user_manages_only_their_own_token(signed_in, user, staff_user):
    staff_key = Token.objects.create(user=staff_user).key

    post(signed_in, "create")
    post(signed_in, "revoke")

    assert list(Token.objects.values_list("key", flat=True)) == [staff_key]


def test_anyone_signed_in_can_sign_out_and_it_takes_a_post_with_csrf(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    page = client.get("/").content.decode()
    assert 'action="/account/logout/"' in page

    assert client.post("/account/logout/", {"next": "/dashboard/"}).status_code == 403  # no CSRF token
    assert client.get("/account/logout/").status_code == 405
    token = client.cookies["csrftoken"].value
    response = client.post("/account/logout/", {"next": "/dashboard/", "csrfmiddlewaretoken": token})

    assert response.status_code == 302 and response["Location"] == "/dashboard/"
    assert client.get(PAGE).status_code == 302  # signed out
