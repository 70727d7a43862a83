"""Schemathesis hooks of the contract test (loaded by the `st` process through its config file).

An image the schema allows is any non-empty string, but only a picture of a drawing can be recognized;
no JSON Schema says "a decodable PNG with ink on it". So every request that schemathesis generates as
*valid* for the predict operations carries a real drawing (a PNG, as a browser's canvas makes it),
and the positive checks hold the API to answering it with 2xx. Requests generated as invalid keep
what was generated, and must be refused with a 4xx.
"""
from __future__ import annotations

import schemathesis

from tests.support.drawings import SEVEN, canvas, encode

DRAWING = encode(canvas(SEVEN), data_url=False)
PREDICT_PATHS = {"/api/predict/", "/api/predict/batch/"}


def _positive(case) -> bool:
    meta = case.meta
    return bool(meta is not None and meta.generation.mode.is_positive)


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path not in PREDICT_PATHS or not _positive(case) or not isinstance(case.body, dict):
        return
    if isinstance(case.body.get("image"), str):
        case.body["image"] = DRAWING
    if isinstance(case.body.get("images"), list):
        case.body["images"] = [DRAWING for _ in case.body["images"]]


@schemathesis.hook
def filter_case(context, case):
    """Leave out requests that repeat a query parameter (`?page=1&page=x`). Django reads the last value of a
    repeated parameter, as most frameworks do, and no query parameter of this API is a list; the contract
    is about the values a parameter takes, not about sending it twice."""
    query = case.query if isinstance(case.query, dict) else {}
    return not any(isinstance(value, list) for value in query.values())
