"""Plain HTTP calls to a site the tests started, as an API client would make them."""
from __future__ import annotations

import json
import urllib.error
import urllib.request


def post_json(url: str, body: dict, token: str | None = None, *, forwarded_for: str | None = None) -> tuple[int, dict]:
    """POST ``body`` as JSON (with a DRF token, and an ``X-Forwarded-For`` header, when given); the status and
    the decoded reply, errors included."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
