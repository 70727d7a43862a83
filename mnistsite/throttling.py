"""Throttles whose counters live in the cache, failing open when the cache cannot be reached.

Predictions need only the model and the database. When Redis (the cache) is down, a request is let
through unthrottled instead of failing, and the outage is logged at most once a minute; counting
resumes by itself when Redis is back (the client reconnects on its next use).

Every throttle counts clients by the project's one rule (``mnistsite.clients``): the socket's peer,
or, only behind a proxy named in ``TRUSTED_PROXIES``, the hop that proxy added to X-Forwarded-For; an
IPv6 client by its /64. DRF's own ``NUM_PROXIES`` is not used. This class is the base of every throttle.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle

from mnistsite.clients import client_key

log = logging.getLogger(__name__)

WARN_EVERY_SECONDS = 60.0
_last_warning = float("-inf")


class FailOpenScopedRateThrottle(ScopedRateThrottle):
    def get_ident(self, request: Request) -> str:
        """The client as counted (``mnistsite.clients``), never the header's say-so alone."""
        return client_key(request)

    def allow_request(self, request: Request, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as exc:
            _warn(exc)
            return True


def _warn(exc: Exception) -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= WARN_EVERY_SECONDS:
        _last_warning = now
        log.warning("throttle counters unavailable (%s: %s); requests are let through unthrottled",
                    type(exc).__name__, exc)
