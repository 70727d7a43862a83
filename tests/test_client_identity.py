"""Who the client is (``mnistsite.clients``): the socket's peer, unless a trusted proxy forwarded the request;
every throttle counts clients by that rule, so a made-up X-Forwarded-For buys nothing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from rest_framework.throttling import ScopedRateThrottle

from mnistsite import serve
from mnistsite.clients import (
    client_address,
    client_address_from_scope,
    client_network,
    is_trusted_proxy,
    parse_trusted_proxies,
    resolve_client,
)
from tests.support.drawings import SEVEN, canvas, encode

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def behind_proxy(settings):
    settings.TRUSTED_PROXIES = parse_trusted_proxies("127.0.0.1,10.0.0.0/8,fd00::/8")
    return settings


# ------------------------------------------------------------------ the rule


def test_without_trusted_proxies_the_header_is_ignored(settings):
    settings.TRUSTED_PROXIES = []
    assert resolve_client("203.0.113.9", "198.51.100.1") == "203.0.113.9"
    assert client_address({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "198.51.100.1"}) == "127.0.0.1"


def test_a_peer_that_is_not_a_trusted_proxy_is_the_client_whatever_it_says(behind_proxy):
    assert resolve_client("203.0.113.9", "198.51.100.1, 10.0.0.1") == "203.0.113.9"


@pytest.mark.parametrize(("forwarded_for", "client"), [
    ("198.51.100.7", "198.51.100.7"),  # nginx added the client it saw
    ("1.1.1.1, 198.51.100.7", "198.51.100.7"),  # the client wrote 1.1.1.1 itself: not believed
    ("1.1.1.1, 198.51.100.7, 10.1.2.3", "198.51.100.7"),  # two trusted proxies, the inner one skipped
    ("198.51.100.7:51234", "198.51.100.7"),  # a port, as some proxies add
    ("[2001:db8::5]:443, 10.0.0.2", "2001:db8::5"),
    ("not-an-address, 10.0.0.2", "10.0.0.2"),  # garbage: the last address known
    ("10.0.0.3, 10.0.0.2", "10.0.0.3"),  # only proxies: the outermost of them
    ("", "127.0.0.1"),  # the proxy's own request (a health check)
])
def test_behind_a_trusted_proxy_the_first_untrusted_hop_from_the_right_is_the_client(behind_proxy, forwarded_for,
                                                                                      client):
    assert resolve_client("127.0.0.1", forwarded_for) == client


def test_whether_a_peer_is_a_trusted_proxy(behind_proxy):
    assert is_trusted_proxy("127.0.0.1") and is_trusted_proxy("10.200.0.1") and is_trusted_proxy("fd00::1")
    assert not is_trusted_proxy("203.0.113.9") and not is_trusted_proxy("") and not is_trusted_proxy(None)
    behind_proxy.TRUSTED_PROXIES = []
    assert not is_trusted_proxy("127.0.0.1")


def test_ipv4_mapped_peers_are_ipv4_and_unknown_peers_are_empty(behind_proxy):
    assert resolve_client("::ffff:127.0.0.1", "198.51.100.7") == "198.51.100.7"
    assert resolve_client("::ffff:203.0.113.9", None) == "203.0.113.9"
    assert resolve_client(None, "198.51.100.7") == ""


def test_channels_scopes_follow_the_same_rule(behind_proxy):
    headers = [(b"x-forwarded-for", b"1.1.1.1"), (b"X-Forwarded-For", b"198.51.100.7")]
    assert client_address_from_scope({"client": ["127.0.0.1", 5000], "headers": headers}) == "198.51.100.7"
    assert client_address_from_scope({"client": ("203.0.113.9", 5000), "headers": headers}) == "203.0.113.9"
    assert client_address_from_scope({"headers": headers}) == ""  # no peer (channels' test communicator)


def test_a_client_is_an_ipv4_address_or_an_ipv6_slash_64():
    assert client_network("203.0.113.9") == "203.0.113.9"
    assert client_network("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == client_network("2001:db8:1:2::1") == "2001:db8:1:2::"
    assert client_network("2001:db8:1:3::1") != client_network("2001:db8:1:2::1")
    assert client_network("") == ""


@pytest.mark.parametrize(("value", "message"), [
    ("1", "a number of proxies is no longer accepted"),
    ("127.0.0.1,proxy.internal", "is not an IP address or network"),
])
def test_bad_trusted_proxies_are_refused(value, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        parse_trusted_proxies(value)


def test_the_old_numeric_setting_stops_the_site_with_the_new_form_named():
    result = subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='mnistsite.settings'; "
                               "django.setup()"],
        cwd=REPO, env={"PATH": "/usr/bin:/bin", "TRUSTED_PROXIES": "1"}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0 and "TRUSTED_PROXIES=127.0.0.1" in result.stderr


# ------------------------------------------------------------------ the throttles use it


@pytest.fixture
def predict_rate(monkeypatch, shipped_versions):
    cache.clear()
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"predict": "3/min", "token": "3/min"})
    yield
    cache.clear()


def _predict(api_client, forwarded_for: str, peer: str = "203.0.113.9") -> int:
    return api_client.post("/api/predict/", {"image": encode(canvas(SEVEN))}, format="json",
                           REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded_for).status_code


@pytest.mark.django_db
def test_a_rotating_forwarded_for_does_not_escape_the_predict_throttle(api_client, predict_rate, settings):
    settings.TRUSTED_PROXIES = []
    statuses = [_predict(api_client, f"198.51.100.{i}") for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


@pytest.mark.django_db
def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(api_client, predict_rate, behind_proxy):
    statuses = [_predict(api_client, f"6.6.6.6, 198.51.100.{i}", peer="127.0.0.1") for i in range(5)]
    assert statuses == [200] * 5
    # ...and what the client wrote left of the proxy's hop changes nothing
    statuses = [_predict(api_client, f"6.6.6.{i}, 198.51.100.200", peer="127.0.0.1") for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


@pytest.mark.django_db
def test_one_ipv6_client_is_its_slash_64(api_client, predict_rate, settings):
    settings.TRUSTED_PROXIES = []
    statuses = [_predict(api_client, "", peer=f"2001:db8:1:2::{i:x}") for i in range(1, 5)]
    assert statuses == [200, 200, 200, 429]
    assert _predict(api_client, "", peer="2001:db8:1:3::1") == 200


@pytest.mark.django_db
def test_a_rotating_forwarded_for_does_not_escape_the_token_throttle(api_client, user, predict_rate, settings):
    settings.TRUSTED_PROXIES = []
    statuses = [api_client.post("/api/token/", {"username": f"nobody{i}", "password": "guess"}, format="json",
                                HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code for i in range(5)]
    assert statuses == [400, 400, 400, 429, 429]


@pytest.mark.django_db
def test_predictions_record_the_client_by_the_same_rule(api_client, shipped_versions, behind_proxy):
    from classifier.models import Prediction

    cache.clear()
    assert _predict(api_client, "6.6.6.6, 198.51.100.42", peer="10.0.0.5") == 200
    assert _predict(api_client, "6.6.6.6", peer="203.0.113.9") == 200
    assert list(Prediction.objects.order_by("pk").values_list("client_ip", flat=True)) == ["198.51.100.42", "203.0.113.9"]


def test_no_server_of_the_entry_point_rewrites_the_client_from_headers():
    commands = [serve.http_command(host="127.0.0.1", port=8000, workers=2),
                serve.site_command(host="127.0.0.1", port=8000), serve.ws_command(host="127.0.0.1", port=8001)]
    for argv in commands:  # Daphne's --proxy-headers would set scope["client"] from X-Forwarded-For
        assert not [arg for arg in argv if "proxy" in arg.lower() or "forwarded" in arg.lower()], argv
