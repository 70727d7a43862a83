"""Who the client is: one rule for every throttle, lockout and cap that counts clients.

The client's address is the socket's peer (``REMOTE_ADDR``, or ``scope["client"]`` for Channels) unless
that peer is one of the proxies named in ``TRUSTED_PROXIES``. Only then is ``X-Forwarded-For`` read,
and only the hops the trusted proxies added: the header is walked from the right, trusted proxies are
skipped, and the first address that is not a trusted proxy is the client. Anything further left was
written by the client itself and is never believed. With ``TRUSTED_PROXIES`` empty (a site exposed
directly, the default) the header is ignored altogether.

Counting uses ``client_network(address)``: an IPv4 address as it is, an IPv6 address as its /64 (one
household or server usually holds a whole /64 and may pick any address in it).

The servers started by ``mnistsite.serve`` give the socket's peer: Granian (``http``, ``site``) never
rewrites the client from headers, and Daphne (``ws``) only does with ``--proxy-headers``, which
``mnistsite.serve`` does not pass.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, Union

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

IPV6_CLIENT_PREFIX = 64  # the block one IPv6 client is counted by
MAX_HOPS = 32  # X-Forwarded-For entries looked at, at most (from the right)


def parse_trusted_proxies(value: str | Iterable[str]) -> list[str]:
    """``TRUSTED_PROXIES`` as given (``"127.0.0.1,10.0.0.0/8"`` or a list), checked and normalised.

    The old form, a number of proxies (``TRUSTED_PROXIES=1``), is refused: a count trusts whatever
    connects directly, so it is replaced by the proxies' addresses.
    """
    items = [item.strip() for item in (value.split(",") if isinstance(value, str) else value)]
    items = [item for item in items if item]
    networks = []
    for item in items:
        if item.isdigit():
            raise ImproperlyConfigured(
                f"TRUSTED_PROXIES={item!r}: a number of proxies is no longer accepted; name the proxies' "
                "addresses or networks instead, e.g. TRUSTED_PROXIES=127.0.0.1 (the nginx of deploy/nginx.conf) "
                "or TRUSTED_PROXIES=127.0.0.1,10.0.0.0/8. Leave it unset when clients connect directly.")
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ImproperlyConfigured(
                f"TRUSTED_PROXIES: {item!r} is not an IP address or network; expected e.g. "
                "TRUSTED_PROXIES=127.0.0.1,10.0.0.0/8") from None
    return networks


@lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in trusted)


def _trusted_networks() -> tuple[Network, ...]:
    return _networks(tuple(getattr(settings, "TRUSTED_PROXIES", None) or ()))


def _address(text: str) -> IPAddress | None:
    """An address from a peer or a header hop (``1.2.3.4``, ``1.2.3.4:5678``, ``[::1]:80``, ``::1``)."""
    text = text.strip().strip('"')
    if text.startswith("["):  # [IPv6]:port
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # IPv4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:1.2.3.4, as a dual-stack socket reports IPv4 peers
    return address


def _is_trusted(address: IPAddress, networks: tuple[Network, ...]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def in_networks(address: str | None, networks: Iterable[str]) -> bool:
    """Whether ``address`` lies in one of ``networks`` (addresses or networks as text, parsed once)."""
    parsed = _address(address or "")
    return parsed is not None and _is_trusted(parsed, _networks(tuple(networks)))


def is_trusted_proxy(address: str | None) -> bool:
    """Whether ``address`` (a peer such as ``REMOTE_ADDR``) is one of the proxies ``TRUSTED_PROXIES`` names:
    only such a peer's forwarded headers (X-Forwarded-For, X-Request-ID, ...) may be believed."""
    return in_networks(address, getattr(settings, "TRUSTED_PROXIES", None) or ())


def resolve_client(peer: str | None, forwarded_for: str | None) -> str:
    """The client's address from the socket's peer and the X-Forwarded-For header (the rule above).

    ``""`` when the peer is unknown (a Unix socket, a test client that gives none).
    """
    address = _address(peer or "")
    if address is None:
        return (peer or "").strip()
    networks = _trusted_networks()
    if not networks or not _is_trusted(address, networks) or not forwarded_for:
        return str(address)
    client = address
    for hop in reversed(forwarded_for.split(",")[-MAX_HOPS:]):
        hop_address = _address(hop)
        if hop_address is None:
            break  # garbage left of the trusted hops: the last address known is the client
        client = hop_address
        if not _is_trusted(hop_address, networks):
            break
    return str(client)


def client_address(request_or_meta: Any) -> str:
    """The client's address for a Django or DRF request, or a ``request.META``-like mapping."""
    meta: Mapping[str, Any] = request_or_meta if isinstance(request_or_meta, Mapping) else request_or_meta.META
    return resolve_client(meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR"))


def client_address_from_scope(scope: Mapping[str, Any]) -> str:
    """The client's address for an ASGI scope (Channels consumers): ``scope["client"]`` is the peer."""
    client = scope.get("client")
    peer = str(client[0]) if client else ""
    forwarded = [value.decode("latin-1") for name, value in scope.get("headers", ())
                 if name.lower() == b"x-forwarded-for"]
    return resolve_client(peer, ",".join(forwarded))


def client_network(address: str) -> str:
    """What one client is, for counting: an IPv4 address as it is; an IPv6 address's /64, written as the
    first address of that block (``2001:db8:1:2::``), so the result is always a valid IP address (it fits
    a ``GenericIPAddressField``). Anything that is not an address (``""``) comes back unchanged.

    Two requests come from the same client when their ``client_network(client_address(...))`` are equal.
    """
    parsed = _address(address)
    if parsed is None:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_CLIENT_PREFIX}", strict=False).network_address)
    return str(parsed)


def client_key(request_or_meta: Any) -> str:
    """The client as counted (``client_network`` of ``client_address``): throttles, lockouts."""
    return client_network(client_address(request_or_meta))


def client_key_from_scope(scope: Mapping[str, Any]) -> str:
    """The client as counted, for an ASGI scope: the dashboard's socket caps."""
    return client_network(client_address_from_scope(scope))
