"""Where the time of one ``POST /api/predict/`` goes, in one process (no server, no sockets).

Sets up the site in this process with production settings (DEBUG off, a fresh database and media
folder, no throttle, as ``bench/predict_api.py`` starts it), then times, in alternating rounds, the
whole request through Django's test client (middleware, DRF, validation, the service, the reply) and
its parts on their own: decoding the PNG, preprocessing, the served model's views, storing the row and
the file, encoding the 28x28 input for the reply. The drawing is the real pen-drawn 7 the predict
benchmark sends. Prints the fastest and the median round of each (the fastest is the least disturbed
by other work on the machine), and for each part the median time it took inside the whole requests
(the same functions, timed while the requests call them): a part shares the caches with the rest of
the request there, so it is slower than on its own.

    python bench/request_parts.py [--strokes PATH] [--database-url URL] [--rounds 7] [--calls 40]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.predict_api import drawing, fresh_database, site_env  # noqa: E402
from tests.support.drawings import encode  # noqa: E402

WHOLE = "whole request (Django test client)"
DEFAULT_STROKES = REPO.parent / "shared" / "data" / "strokes-dev" / "strokes.json.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strokes", type=Path, default=DEFAULT_STROKES if DEFAULT_STROKES.exists() else None,
                        help="a strokes.json.gz to take the pen-drawn 7 from (default: the test 7 if absent)")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL (default: a fresh SQLite file)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=40, help="calls of each part per round")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mnistsite-bench-parts-"))
    database_url, drop_database = fresh_database(args.database_url, tmp)
    os.environ.update(site_env(database_url, tmp, ALLOWED_HOSTS="testserver"))
    try:
        report(measure(args, drawing(args.strokes)), args)
    finally:
        from django.db import connections

        connections.close_all()
        drop_database()


@contextlib.contextmanager
def timed(targets: dict[str, tuple[Any, str]], totals: dict[str, float]) -> Iterator[None]:
    """While inside, each ``(owner, attribute)`` of ``targets`` is wrapped so that its time adds to ``totals``."""
    originals = {name: getattr(owner, attribute) for name, (owner, attribute) in targets.items()}

    def wrapper(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - started
        return call

    for name, (owner, attribute) in targets.items():
        setattr(owner, attribute, wrapper(name, originals[name]))
    try:
        yield
    finally:
        for name, (owner, attribute) in targets.items():
            setattr(owner, attribute, originals[name])


def measure(args: argparse.Namespace, image) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from classifier import serializers, services, views
    from classifier.images import decode_base64, decode_image
    from classifier.inference import ServingModel, registry
    from engine.preprocessing import to_png_bytes

    call_command("migrate", verbosity=0)
    picture = encode(image)
    body = json.dumps({"image": picture})
    data = decode_base64(picture)
    decoded = decode_image(data)
    tensor = services._prepare(decoded)
    model = registry.serving()
    answer = services.ModelAnswer(model=model, probabilities=model.probabilities(tensor.unsqueeze(0))[0].tolist())
    client = Client()

    def request() -> None:
        response = client.post("/api/predict/", body, content_type="application/json")
        assert response.status_code == 200, response.content

    model_part = f"model ({model.ref.arch}, test-time views: {model.tta})"
    parts = {
        WHOLE: request,
        "decode the PNG": lambda: decode_image(data),
        "preprocess to 28x28": lambda: services._prepare(decoded),
        model_part: lambda: model.probabilities(tensor.unsqueeze(0)),
        "store the row and the file": lambda: services._store(decoded, tensor, answer, 1.0, services.Client(), "x"),
        "28x28 input as PNG for the reply": lambda: to_png_bytes(tensor),
    }
    # Where the request calls each part (the names as the calling modules hold them).
    inside_targets = {
        "decode the PNG": (serializers, "decode_image"),
        "preprocess to 28x28": (services, "_prepare"),
        model_part: (ServingModel, "probabilities"),
        "store the row and the file": (services, "_store"),
        "28x28 input as PNG for the reply": (views, "to_png_bytes"),
    }
    for part in parts.values():  # warm-up: models loaded, caches hot
        for _ in range(10):
            part()
    times: dict[str, list[float]] = {name: [] for name in parts}
    inside: dict[str, list[float]] = {name: [] for name in inside_targets}
    for _ in range(args.rounds):
        for name, part in parts.items():
            started = time.perf_counter()
            for _ in range(args.calls):
                part()
            times[name].append((time.perf_counter() - started) / args.calls * 1000)
        totals = dict.fromkeys(inside_targets, 0.0)
        with timed(inside_targets, totals):
            for _ in range(args.calls):
                request()
        for name, total in totals.items():
            inside[name].append(total / args.calls * 1000)
    return times, inside


def report(measured: tuple[dict[str, list[float]], dict[str, list[float]]], args: argparse.Namespace) -> None:
    times, inside = measured
    print(f"POST /api/predict/ in one process, {args.rounds} rounds of {args.calls} calls; ms per call")
    print(f"{'':40s} {'fastest':>8s} {'median':>8s} {'inside a request (median)':>26s}")
    for name, values in times.items():
        within = f"{statistics.median(inside[name]):26.3f}" if name in inside else f"{'':26s}"
        print(f"{name:40s} {min(values):8.3f} {statistics.median(values):8.3f} {within}")


if __name__ == "__main__":
    main()
