"""Signing in is locked after repeated failures (django-axes), before any password is hashed.

Every password check goes through ``django.contrib.auth.authenticate(request=...)``: the account
login page, the admin's, and ``POST /api/token/``. ``axes.backends.AxesStandaloneBackend``, first in
``AUTHENTICATION_BACKENDS``, refuses a locked-out attempt before ``ModelBackend`` hashes anything; a
failed attempt is recorded in the database (``axes.models.AccessAttempt``), the client counted by the
project's one rule (``mnistsite.clients``).

A failure counts toward three locks, each with its own limit (settings, from the environment):

- this username from this client: ``LOGIN_LOCKOUT_FAILURES`` (default 5);
- this username from anywhere: ``LOGIN_LOCKOUT_FAILURES_PER_USERNAME`` (default 20), against guesses
  spread over many addresses;
- this client, whatever the username: ``LOGIN_LOCKOUT_FAILURES_PER_CLIENT`` (default 50; 0 turns it
  off), against one address trying one password on many accounts.

A lock lasts ``LOGIN_LOCKOUT_MINUTES`` (default 15) from the failure that caused it; attempts while
locked are refused (HTTP 429: a page, or the API's JSON error ``locked_out``) and not counted. Staff
unlock earlier in the admin ("Access attempts": delete the rows) or with ``manage.py axes_reset``
(``axes_reset_username NAME``, ``axes_reset_ip ADDRESS``).
"""
from __future__ import annotations

from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_lockout_parameters
from django.conf import settings
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from mnistsite.clients import client_key
from mnistsite.errors import error_body

LOCKED_OUT = "locked_out"


def _limit_of(parameter: Any) -> int:
    if parameter == "username":
        return settings.LOGIN_LOCKOUT_FAILURES_PER_USERNAME
    if parameter == "ip_address":
        return settings.LOGIN_LOCKOUT_FAILURES_PER_CLIENT
    return settings.LOGIN_LOCKOUT_FAILURES


class LockoutHandler(AxesDatabaseHandler):
    """axes' database handler with one limit per lock instead of one for all.

    ``get_failures`` answers the username-and-client count, raised to ``AXES_FAILURE_LIMIT`` (that
    lock's limit) when another lock has reached its own limit, so axes' single comparison locks out
    when any lock is reached.
    """

    def get_failures(self, request: HttpRequest, credentials: dict | None = None) -> int:
        parameters = get_lockout_parameters(request, credentials)
        counts = [
            attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
            for attempts in self.get_user_attempts(request, credentials)
        ]
        combination = counts[0] if counts else 0
        for parameter, count in zip(parameters, counts):
            limit = _limit_of(parameter)
            if limit and count >= limit:
                return max(combination, settings.AXES_FAILURE_LIMIT)
        return combination


def client_ip(request: HttpRequest) -> str:
    """``AXES_CLIENT_IP_CALLABLE``: the client as every other limit counts it."""
    return client_key(request) or "0.0.0.0"  # axes stores an address; a peer-less request is one unknown client


def lockout_seconds() -> int:
    """How long a lock lasts, at most (it began at the failure that caused it)."""
    return int(settings.LOGIN_LOCKOUT_MINUTES * 60)


def lockout_message() -> str:
    minutes = settings.LOGIN_LOCKOUT_MINUTES
    return (f"Too many failed sign-in attempts: signing in is locked for up to {minutes:g} minutes. "
            "Try again later, or ask a member of staff to unlock your account.")


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict | None = None) -> HttpResponse:
    """``AXES_LOCKOUT_CALLABLE``: HTTP 429 with a plain message; the API's JSON error shape under /api/."""
    retry_after = lockout_seconds()
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse(
            error_body(LOCKED_OUT, lockout_message(), {"retry_after_s": retry_after}), status=429)
    else:
        response = render(request, "account/locked_out.html", {"message": lockout_message()}, status=429)
    response["Retry-After"] = str(retry_after)
    response["Cache-Control"] = "no-store"
    return response
