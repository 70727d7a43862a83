"""Sign-in lockouts (``mnistsite.lockout``, django-axes): repeated failures lock an account per client, per
username and per client, before any password is hashed; the login pages, the admin's and ``POST /api/token/``
alike; staff unlock."""
from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.hashers import MD5PasswordHasher
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

LOGIN = "/account/login/"
ADMIN_LOGIN = "/admin/login/"
TOKEN_API = "/api/token/"


@pytest.fixture(autouse=True)
def limits(settings):
    """The defaults' shape, smaller numbers: 3 per username and client, 6 per username, 9 per client."""
    settings.AXES_ENABLED = True
    settings.LOGIN_LOCKOUT_FAILURES = settings.AXES_FAILURE_LIMIT = 3
    settings.LOGIN_LOCKOUT_FAILURES_PER_USERNAME = 6
    settings.LOGIN_LOCKOUT_FAILURES_PER_CLIENT = 9
    settings.AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "username", "ip_address"]
    settings.LOGIN_LOCKOUT_MINUTES = 15
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    settings.TRUSTED_PROXIES = []
    cache.clear()  # the token endpoint's throttle
    yield settings
    cache.clear()


@pytest.fixture
def hashing(monkeypatch) -> list[str]:
    """Every password hash computed with the test settings' hasher (checking a password encodes it once)."""
    calls: list[str] = []
    encode = MD5PasswordHasher.encode

    def counted_encode(self, password, salt):
        calls.append("hash")
        return encode(self, password, salt)

    monkeypatch.setattr(MD5PasswordHasher, "encode", counted_encode)
    return calls


def login(client: Client, password: str, *, username: str = "alice", path: str = LOGIN, address: str = "203.0.113.9",
          **headers: str):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=address, **headers)


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


# ------------------------------------------------------------------ the login page


def test_thirty_wrong_passwords_then_the_right_one_is_refused_and_said_plainly(user, hashing):
    client = Client()
    statuses = [login(client, f"guess-{i}").status_code for i in range(30)]
    hashed_by_guesses = len(hashing)
    right = login(client, "pw-alice-123")

    assert statuses[:2] == [200, 200] and set(statuses[2:]) == {429}  # the third failure locks
    assert hashed_by_guesses == 3  # only the three counted guesses were hashed; the 27 refused ones were not
    assert right.status_code == 429 and not signed_in(client)
    page = right.content.decode()
    assert 'data-testid="lockout-message"' in page and "Too many failed sign-in attempts" in page
    assert int(right["Retry-After"]) == 15 * 60


def test_a_locked_out_attempt_does_not_hash_the_password(user, hashing):
    client = Client()
    for i in range(3):
        login(client, f"guess-{i}")
    hashing.clear()

    assert login(client, "pw-alice-123").status_code == 429
    assert hashing == []


def test_a_made_up_forwarded_for_does_not_escape_the_lock(user):
    client = Client()
    statuses = [login(client, "guess", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code for i in range(5)]
    assert statuses == [200, 200, 429, 429, 429]


def test_the_lock_is_per_client_first_other_clients_still_sign_in(user):
    for i in range(3):
        login(Client(), f"guess-{i}", address="203.0.113.9")
    other = Client()
    assert login(other, "pw-alice-123", address="198.51.100.1").status_code == 302 and signed_in(other)


def test_guesses_spread_over_many_addresses_lock_the_username(user):
    for i in range(6):  # two failures each from three addresses: below the per-client lock each time
        login(Client(), f"guess-{i}", address=f"198.51.100.{i // 2}")
    fresh = Client()
    assert login(fresh, "pw-alice-123", address="192.0.2.77").status_code == 429 and not signed_in(fresh)


def test_one_address_trying_many_accounts_is_locked(user, django_user_model):
    for i in range(9):
        login(Client(), "password1", username=f"someone{i}")
    client = Client()
    assert login(client, "pw-alice-123").status_code == 429 and not signed_in(client)
    assert login(Client(), "pw-alice-123", address="198.51.100.1").status_code == 302  # others are not


def test_an_ipv6_client_is_one_client_across_its_slash_64(user):
    for i in range(3):
        login(Client(), f"guess-{i}", address=f"2001:db8:1:2::{i + 1}")
    assert login(Client(), "pw-alice-123", address="2001:db8:1:2::ff").status_code == 429


def test_the_admin_login_is_locked_the_same_way(staff_user, hashing):
    client = Client()
    statuses = [login(client, "guess", username="staff", path=ADMIN_LOGIN).status_code for _ in range(4)]
    hashing.clear()
    right = login(client, "pw-staff-123", username="staff", path=ADMIN_LOGIN)

    assert statuses == [200, 200, 429, 429]
    assert right.status_code == 429 and not signed_in(client) and hashing == []


def test_the_lock_ends_by_itself(user):
    client = Client()
    for i in range(3):
        login(client, f"guess-{i}")
    assert login(client, "pw-alice-123").status_code == 429
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16))

    assert login(client, "pw-alice-123").status_code == 302 and signed_in(client)


@pytest.mark.parametrize("command", [["axes_reset"], ["axes_reset_username", "alice"]])
def test_staff_unlock_with_a_command(user, command):
    client = Client()
    for i in range(3):
        login(client, f"guess-{i}")
    call_command(*command, verbosity=0)

    assert login(client, "pw-alice-123").status_code == 302 and signed_in(client)


def test_staff_see_and_lift_locks_in_the_admin(user, staff_user):
    for i in range(3):
        login(Client(), f"guess-{i}")
    admin = Client()
    admin.force_login(staff_user)
    staff_user.is_superuser = True
    staff_user.save()
    attempt = AccessAttempt.objects.get()

    assert "alice" in admin.get("/admin/axes/accessattempt/").content.decode()
    deleted = admin.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302 and not AccessAttempt.objects.exists()
    assert login(Client(), "pw-alice-123").status_code == 302


# ------------------------------------------------------------------ POST /api/token/


def token(client: APIClient, password: str, **extra: str):
    return client.post(TOKEN_API, {"username": "alice", "password": password}, format="json",
                       REMOTE_ADDR="203.0.113.9", **extra)


def test_the_token_api_counts_toward_the_lock_and_answers_in_json(user, hashing):
    client = APIClient()
    statuses = [token(client, "guess").status_code for _ in range(3)]
    hashing.clear()
    right = token(client, "pw-alice-123")

    assert statuses == [400, 400, 429]
    assert right.status_code == 429 and hashing == [] and not Token.objects.exists()
    body = right.json()
    assert body["error"]["code"] == "locked_out" and "Too many failed sign-in attempts" in body["error"]["message"]
    assert body["error"]["detail"] == {"retry_after_s": 900} and right["Retry-After"] == "900"


def test_failures_on_the_page_lock_the_api_too(user):
    for i in range(3):
        login(Client(), f"guess-{i}")
    assert token(APIClient(), "pw-alice-123").json()["error"]["code"] == "locked_out"


def test_the_token_api_keeps_its_throttle(user, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"token": "2/min"})
    client = APIClient()
    assert [token(client, "pw-alice-123").status_code for _ in range(3)] == [201, 201, 429]
    assert token(client, "pw-alice-123").json()["error"]["code"] == "throttled"
