"""A process holds at most DASHBOARD_MAX_SOCKETS sockets; one more is refused cleanly, not with an error."""
from __future__ import annotations

import pytest

from dashboard.consumers import CLOSE_TRY_AGAIN_LATER, SocketCount

from .conftest import ORIGIN, connect_to, receive

pytestmark = pytest.mark.django_db


def test_past_the_limit_a_socket_is_told_to_come_back_later(run_scenario, settings):
    settings.DASHBOARD_MAX_SOCKETS = 2

    async def scenario():
        first, second = connect_to("/ws/training/"), connect_to("/ws/training/")
        for socket in (first, second):
            assert (await socket.connect())[0]
            assert (await receive(socket))["type"] == "runs"
        third = connect_to("/ws/training/")
        accepted, _ = await third.connect()
        refusal = await receive(third)
        closed = await third.receive_output(timeout=2)
        counted = SocketCount.open
        await first.disconnect()  # (the consumers close the test's database connection when they end)
        await second.disconnect()
        return accepted, refusal, closed, counted

    open_before = SocketCount.open
    accepted, refusal, closed, counted = run_scenario(scenario)
    assert accepted and refusal["code"] == "too_many_sockets" and refusal["limit"] == 2
    assert closed["type"] == "websocket.close" and closed["code"] == CLOSE_TRY_AGAIN_LATER
    assert counted == open_before + 2  # the refused one was never counted
    assert SocketCount.open == open_before  # closed sockets give their place back


# ------------------------------------------------------------------ per client, and room for staff


def connect_as(address: str, path: str = "/ws/training/", *, cookie: bytes | None = None, forwarded_for: str = ""):
    """A socket whose peer is ``address`` (channels' communicator gives none by itself)."""
    from channels.testing import WebsocketCommunicator

    from mnistsite.asgi import application

    async def from_address(scope, receive, send):
        return await application({**scope, "client": [address, 50000]}, receive, send)

    headers = [ORIGIN]
    if cookie:
        headers.append((b"cookie", cookie))
    if forwarded_for:
        headers.append((b"x-forwarded-for", forwarded_for.encode()))
    return WebsocketCommunicator(from_address, path, headers=headers)


async def _first(socket) -> tuple[bool, dict, int | None]:
    """Accepted?, the first message, and the close code if the socket was closed right after it."""
    accepted, _ = await socket.connect()
    first = await receive(socket)
    closed = None
    if first["type"] == "error":
        output = await socket.receive_output(timeout=2)
        closed = output.get("code") if output["type"] == "websocket.close" else None
    return accepted, first, closed


def test_one_client_holds_at_most_its_share_whatever_header_it_sends(run_scenario, settings):
    settings.DASHBOARD_MAX_SOCKETS_PER_CLIENT = 2
    settings.TRUSTED_PROXIES = []

    async def scenario():
        held = [connect_as("203.0.113.9", forwarded_for=f"198.51.100.{i}") for i in range(2)]
        results = [await _first(socket) for socket in held]
        spoofed = connect_as("203.0.113.9", forwarded_for="198.51.100.99")
        results.append(await _first(spoofed))
        other = connect_as("203.0.113.10")
        results.append(await _first(other))
        counted = dict(SocketCount.by_client)
        for socket in (*held, other):
            await socket.disconnect()
        return results, counted

    results, counted = run_scenario(scenario)
    assert [first["type"] for _, first, _ in results] == ["runs", "runs", "error", "runs"]
    accepted, refusal, closed = results[2]
    assert accepted and refusal["code"] == "too_many_sockets_from_client" and refusal["limit"] == 2
    assert closed == CLOSE_TRY_AGAIN_LATER
    assert counted.get("203.0.113.9") == 2 and counted.get("203.0.113.10") == 1
    assert "203.0.113.9" not in SocketCount.by_client  # closed sockets give their place back


def test_an_ipv6_client_is_counted_by_its_slash_64(run_scenario, settings):
    settings.DASHBOARD_MAX_SOCKETS_PER_CLIENT = 1

    async def scenario():
        first = connect_as("2001:db8:1:2::1")
        results = [await _first(first), await _first(connect_as("2001:db8:1:2::beef")),
                   await _first(connect_as("2001:db8:1:3::1"))]
        await first.disconnect()
        return results

    results = run_scenario(scenario)
    assert [first.get("code", first["type"]) for _, first, _ in results] == [
        "runs", "too_many_sockets_from_client", "runs"]


def test_staff_get_a_socket_when_anonymous_ones_filled_the_process(run_scenario, settings, staff_cookie):
    settings.DASHBOARD_MAX_SOCKETS = 2
    settings.DASHBOARD_MAX_SOCKETS_PER_CLIENT = 1

    async def scenario():
        crowd = [connect_as(f"203.0.113.{i}") for i in range(2)]
        results = [await _first(socket) for socket in crowd]
        results.append(await _first(connect_as("203.0.113.50")))  # the process is full for the anonymous
        staff = [connect_as("203.0.113.0", cookie=staff_cookie) for _ in range(2)]  # staff share a crowd's address
        results += [await _first(socket) for socket in staff]
        for socket in (*crowd, *staff):
            await socket.disconnect()
        return results

    open_before = SocketCount.open
    results = run_scenario(scenario)
    assert [first.get("code", first["type"]) for _, first, _ in results] == [
        "runs", "runs", "too_many_sockets", "runs", "runs"]
    assert SocketCount.open == open_before
