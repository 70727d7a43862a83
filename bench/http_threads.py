"""``make run`` with one HTTP thread against two (``HTTP_THREADS``), side by side in alternating rounds.

Starts the default run (``python -m mnistsite.serve site``, as ``make run`` does) once per thread count,
each with its own fresh database and media folder and production settings (``bench/predict_api.py``'s
``site_env``), all up at the same time but loaded one at a time: each round loads every server in turn
(the order reversed every other round) at concurrency 16, then at concurrency 1, with the real pen-drawn
7 of ``bench/predict_api.py``. The machine's speed drifts between minutes, so the verdict is the median
of each round's own ratio (throughput at 16) and difference (p50 at 1) against the first count given.

    python bench/http_threads.py [--threads 1,2] [--rounds 6] [--seconds 5] [--strokes PATH]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.loadgen import run_load  # noqa: E402
from bench.predict_api import drawing, fresh_database, migrate_site, site_env, start_site  # noqa: E402
from tests.support.drawings import encode  # noqa: E402
from tests.support.processes import stop  # noqa: E402

DEFAULT_STROKES = REPO.parent / "shared" / "data" / "strokes-dev" / "strokes.json.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="HTTP_THREADS values to compare (the first is the baseline)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0, help="per load at concurrency 16 (at 1: 0.8 of it)")
    parser.add_argument("--strokes", type=Path, default=DEFAULT_STROKES if DEFAULT_STROKES.exists() else None)
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    body = json.dumps({"image": encode(drawing(args.strokes))}).encode()

    servers: dict[int, tuple[subprocess.Popen, str]] = {}
    try:
        for threads in counts:
            folder = Path(tempfile.mkdtemp(prefix="mnistsite-bench-threads-"))
            database_url, _ = fresh_database(None, folder)
            env = site_env(database_url, folder, HTTP_THREADS=str(threads), LOG_LEVEL="ERROR")
            migrate_site(env, folder)
            process, url = start_site("default", 1, env, name=f"HTTP_THREADS={threads}")
            servers[threads] = process, url
            run_load(url, body, concurrency=4, max_requests=200, max_seconds=20)  # warm-up

        rps: dict[int, list[float]] = {t: [] for t in counts}
        p50: dict[int, list[float]] = {t: [] for t in counts}
        for round_ in range(args.rounds):
            order = counts if round_ % 2 == 0 else counts[::-1]
            for threads in order:
                url = servers[threads][1]
                busy = run_load(url, body, concurrency=16, max_requests=100_000, max_seconds=args.seconds)
                single = run_load(url, body, concurrency=1, max_requests=100_000, max_seconds=args.seconds * 0.8)
                rps[threads].append(busy.throughput)
                p50[threads].append(single.percentile(50))
            print(f"round {round_ + 1}: " + ", ".join(
                f"HTTP_THREADS={t} {rps[t][-1]:.0f}/s at 16, p50 {p50[t][-1]:.2f} ms at 1" for t in counts), flush=True)
    finally:
        for process, _ in servers.values():
            stop(process, timeout=30)

    base = counts[0]
    for threads in counts[1:]:
        ratios = [b / a for a, b in zip(rps[base], rps[threads])]
        diffs = [b - a for a, b in zip(p50[base], p50[threads])]
        print(f"\nHTTP_THREADS={threads} against {base}: throughput at 16 median {statistics.median(ratios):.2f}x "
              f"(rounds {min(ratios):.2f}-{max(ratios):.2f}x); p50 at 1 median {statistics.median(diffs):+.2f} ms "
              f"(rounds {min(diffs):+.2f} to {max(diffs):+.2f} ms)")


if __name__ == "__main__":
    main()
