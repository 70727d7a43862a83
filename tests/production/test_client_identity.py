"""Spoofed X-Forwarded-For against the real entry points (``python -m mnistsite.serve http``, ``site``, ``ws``):
the throttles and the sign-in lockout count the socket's peer, unless TRUSTED_PROXIES names it; the servers
never trust the header by themselves."""
from __future__ import annotations

import asyncio
import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.asyncio.client import connect

from tests.support.drawings import SEVEN, canvas, encode
from tests.support.http import post_json as post

pytestmark = pytest.mark.slow

DRAWING = {"image": encode(canvas(SEVEN))}


class Browser:
    """Cookies and CSRF tokens, as a browser posting the login form keeps them."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  _NoRedirect())

    def login(self, username: str, password: str, *, forwarded_for: str) -> tuple[int, str]:
        page = self.opener.open(f"{self.base}/account/login/", timeout=30).read().decode()
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        data = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": csrf,
                                       "next": "/account/token/"}).encode()
        request = urllib.request.Request(f"{self.base}/account/login/", data=data, method="POST",
                                         headers={"X-Forwarded-For": forwarded_for, "Referer": f"{self.base}/"})
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    @property
    def signed_in(self) -> bool:
        return any(cookie.name == "sessionid" for cookie in self.jar)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def stored_addresses(deployment) -> set[str]:
    """The client addresses predictions were stored with (PostgreSQL answers inet values as address objects)."""
    return {str(row[0]) for row in deployment.query("SELECT DISTINCT client_ip FROM classifier_prediction")}


def _spoofing(base: str) -> tuple[list[int], list[tuple[int, dict]]]:
    """8 predictions and 5 token requests, each with another made-up X-Forwarded-For."""
    predictions = [post(f"{base}/api/predict/", DRAWING, forwarded_for=f"198.51.100.{i}")[0] for i in range(8)]
    tokens = [post(f"{base}/api/token/", {"username": f"nobody{i}", "password": "guess"},
                   forwarded_for=f"198.51.100.{i}") for i in range(5)]
    return predictions, tokens


def _assert_throttled(predictions: list[int], tokens: list[tuple[int, dict]]) -> None:
    assert predictions == [200] * 5 + [429] * 3  # PREDICT_THROTTLE=5/min
    assert [status for status, _ in tokens] == [400] * 3 + [429] * 2  # TOKEN_THROTTLE=3/min
    assert tokens[-1][1]["error"]["code"] == "throttled"


def test_the_http_entry_point_counts_the_peer_unless_a_trusted_proxy_forwarded(deployment):
    deployment.shell("from django.contrib.auth import get_user_model\n"
                     "get_user_model().objects.create_user('alice', password='a-long-pass-phrase-41')")
    with deployment.serve("http", PREDICT_THROTTLE="5/min", TOKEN_THROTTLE="3/min") as base:
        predictions, tokens = _spoofing(base)
        guesser = Browser(base)
        guesses = [guesser.login("alice", f"guess-{i}", forwarded_for=f"198.51.100.{i}")[0] for i in range(30)]
        right, page = guesser.login("alice", "a-long-pass-phrase-41", forwarded_for="198.51.100.250")
    _assert_throttled(predictions, tokens)
    assert stored_addresses(deployment) == {"127.0.0.1"}  # the peer, not what the header said
    # 30 wrong passwords then the right one, each from a "different" address: locked out, not signed in
    assert guesses[:4] == [200] * 4 and set(guesses[4:]) == {429}  # the fifth failure locks (the default)
    assert right == 429 and "Too many failed sign-in attempts" in page and not guesser.signed_in
    attempts = deployment.query("SELECT ip_address, SUM(failures_since_start) FROM axes_accessattempt "
                                "WHERE username = 'alice' GROUP BY ip_address")
    assert [(str(address), int(total)) for address, total in attempts] == [("127.0.0.1", 5)]  # one client; the refused guesses were not even counted

    first = deployment.query("SELECT MAX(id) FROM classifier_prediction")[0][0]
    with deployment.serve("http", PREDICT_THROTTLE="3/min", TRUSTED_PROXIES="127.0.0.1") as base:
        # as nginx forwards them: each client has its own budget
        separate = [post(f"{base}/api/predict/", DRAWING, forwarded_for=f"203.0.113.{i}")[0] for i in range(5)]
        # one client writing its own header in front of the proxy's hop: still one client
        one = [post(f"{base}/api/predict/", DRAWING, forwarded_for=f"6.6.6.{i}, 203.0.113.200")[0]
               for i in range(5)]
    assert separate == [200] * 5
    assert one == [200] * 3 + [429] * 2
    stored = deployment.query("SELECT client_ip FROM classifier_prediction WHERE id > %s ORDER BY id", first)
    assert [str(row[0]) for row in stored] == [f"203.0.113.{i}" for i in range(5)] + ["203.0.113.200"] * 3


def test_the_one_process_site_ignores_a_made_up_forwarded_for(deployment):
    with deployment.serve("site", PREDICT_THROTTLE="5/min", TOKEN_THROTTLE="3/min") as base:
        predictions, tokens = _spoofing(base)
    _assert_throttled(predictions, tokens)
    assert stored_addresses(deployment) == {"127.0.0.1"}  # the peer, not what the header said


async def _socket_firsts(url: str, origin: str, headers: list[str]) -> list[dict]:
    """Open one dashboard socket per X-Forwarded-For value, all held open; each one's first message."""
    sockets, firsts = [], []
    for forwarded_for in headers:
        socket = await connect(url, origin=origin, ping_interval=None, open_timeout=20,
                               additional_headers={"X-Forwarded-For": forwarded_for})
        sockets.append(socket)
        firsts.append(json.loads(await asyncio.wait_for(socket.recv(), 20)))
    for socket in sockets:
        await socket.close()
    return firsts


@pytest.mark.parametrize(("trusted", "expected"), [
    ("", ["runs", "runs", "too_many_sockets_from_client"]),  # Daphne gives the peer; the header buys nothing
    ("127.0.0.1", ["runs", "runs", "runs"]),  # behind the proxy: three clients
])
def test_the_socket_server_caps_sockets_per_client_by_the_same_rule(deployment, trusted, expected):
    with deployment.serve("ws", DASHBOARD_MAX_SOCKETS_PER_CLIENT="2", TRUSTED_PROXIES=trusted) as base:
        url = "ws" + base.removeprefix("http") + "/ws/training/"
        with ThreadPoolExecutor(1) as thread:  # its own event loop (see test_sockets)
            firsts = thread.submit(asyncio.run, _socket_firsts(url, base, [f"198.51.100.{i}" for i in range(3)]))
            firsts = firsts.result()
    assert [first.get("code", first["type"]) for first in firsts] == expected
    assert deployment.log_problems() == []
