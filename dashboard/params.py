"""Reading the dashboard's request parameters: run and version ids from URLs and query strings."""
from __future__ import annotations

from typing import Any

MAX_RUN_ID = 2**63 - 1


def parse_run_id(value: Any) -> int | None:
    """A run (or model version) id from a URL or query string; None for anything that cannot be one."""
    text = str(value or "")
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    number = int(text)
    return number if 0 < number <= MAX_RUN_ID else None
