"""Accounts: signing in and out, and API tokens without the admin.

Every user may hold one API token (DRF's ``authtoken``), sent as ``Authorization: Token <key>``.
Scripts get one from ``POST /api/token/`` with a username and password; people manage theirs on
``/account/token/``. A token's key is shown in full once, in the answer that created it; afterwards
only its first characters. Issuing a token replaces the one the user had, so an old key stops working
the moment a new one exists.
"""
from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.views import LoginView, LogoutView
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import permissions, serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mnistsite.errors import ApplicationError
from mnistsite.lockout import LOCKED_OUT, lockout_message, lockout_seconds
from mnistsite.schema import errors
from mnistsite.serializers import StrictSerializer
from mnistsite.throttling import FailOpenScopedRateThrottle

# Requests per client (mnistsite.clients); a "token" entry in DEFAULT_THROTTLE_RATES overrides it. Failed
# passwords are also locked out per account and client (mnistsite.lockout), as on the login pages.
TOKEN_THROTTLE = "10/min"
SHOWN_PREFIX = 4  # characters of a stored key shown on the page, enough to tell two keys apart

# ---------------------------------------------------------------------------- writes


@transaction.atomic
def token_issue(*, user: AbstractBaseUser) -> Token:
    """A new token for ``user``, replacing the one they had."""
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)


def token_revoke(*, user: AbstractBaseUser) -> bool:
    """Delete ``user``'s token; whether there was one."""
    deleted, _ = Token.objects.filter(user=user).delete()
    return deleted > 0


# ---------------------------------------------------------------------------- the API


class TokenRequestSerializer(StrictSerializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, write_only=True,
                                     style={"input_type": "password"})


class TokenThrottle(FailOpenScopedRateThrottle):
    """Per client address; the rate is ``TOKEN_THROTTLE`` unless the settings name one for "token"."""

    def get_rate(self) -> str | None:
        return self.THROTTLE_RATES.get(self.scope, TOKEN_THROTTLE)


class TokenObtainView(APIView):
    """Username and password in, a new token out. The credentials are the authentication, so the
    session and any old token are not looked at (and no CSRF token is needed)."""

    authentication_classes: list[type] = []
    permission_classes = [permissions.AllowAny]
    throttle_classes = [TokenThrottle]
    throttle_scope = "token"

    @extend_schema(
        summary="Get an API token for a username and password",
        description="The key is shown in full only in this answer. A new token replaces the caller's "
                    "previous one. Send it as `Authorization: Token <key>`.",
        request=TokenRequestSerializer,
        responses={201: inline_serializer("TokenIssued", {"token": serializers.CharField()}),
                   **errors(400, 415, 429,
                            s400="Wrong username or password (`invalid_credentials`), or a malformed body.",
                            s429="Too many attempts from this address (`throttled`), or sign-ins locked out "
                                 "after repeated failures (`locked_out`).")},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # Through authenticate(request=...), as the login pages, so the lockout counts and refuses these too.
        user = authenticate(request=request._request, **serializer.validated_data)
        if getattr(request._request, "axes_locked_out", False):
            raise ApplicationError(LOCKED_OUT, lockout_message(), {"retry_after_s": lockout_seconds()}, status=429)
        if user is None:
            raise ApplicationError("invalid_credentials", "Unable to sign in with that username and password.")
        token = token_issue(user=user)
        return Response({"token": token.key}, status=status.HTTP_201_CREATED,
                        headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------------------- pages


class AccountLoginView(LoginView):
    """Signing in for everyone (the admin's login page only takes staff)."""

    template_name = "account/login.html"
    redirect_authenticated_user = True
    next_page = "/"


class AccountLogoutView(LogoutView):
    """Signing out (POST, with the CSRF token) for everyone; the admin's own logout only serves staff."""

    next_page = "/"


LOGIN_URL = reverse_lazy("account-login")


@method_decorator([never_cache, login_required(login_url=LOGIN_URL)], name="dispatch")
class TokenPageView(View):
    """See whether you have a token, create one (its key shown once) or revoke it."""

    template_name = "account/token.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._page(request)

    def post(self, request: HttpRequest) -> HttpResponse:
        action = request.POST.get("action")
        if action == "create":
            return self._page(request, created=token_issue(user=request.user))
        if action == "revoke":
            token_revoke(user=request.user)
            return redirect(f"{request.path}?revoked=1")
        return HttpResponseBadRequest("Unknown action.")

    def _page(self, request: HttpRequest, *, created: Token | None = None) -> HttpResponse:
        token = created or Token.objects.filter(user=request.user).first()
        context: dict[str, Any] = {
            "token": token,
            "created": created,
            "masked": f"{token.key[:SHOWN_PREFIX]}{'•' * 8}" if token else None,
            "revoked": created is None and token is None and request.GET.get("revoked") == "1",
            "token_api": "/api/token/",
            "site_url": request.build_absolute_uri("/").rstrip("/"),
        }
        return render(request, self.template_name, context)
