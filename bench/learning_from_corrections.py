"""Learning from corrections, end to end through the real API: does the site learn new writers?

For each held-out writer group (leave one group out: the drawings of the other groups are labelled,
the held-out group's never are), on a fresh site started as operators run production:

1. a fresh database (a new SQLite file, or a new database on ``--database-url``'s PostgreSQL), a
   fresh ``MEDIA_ROOT``, ``manage.py migrate`` (which registers the shipped models, the cnn active);
   a staff account (``manage.py createsuperuser --noinput``) and its API token (``POST /api/token/``);
2. the HTTP server (``python -m mnistsite.serve http``, Granian, WSGI) and a Celery worker
   (``python manage.py worker``), with Redis as the broker (``--redis-url``, else a private
   ``redis-server`` on a free port), everything on 127.0.0.1;
3. simulated users draw the labelled groups' digits: each recorded digit is rendered once as a
   280x280 canvas PNG (``bench/strokes.py``: the form, pen width, size and position of variant
   ``index % 3``) and sent as the drawing page sends it (``POST /api/predict/`` with
   ``{"image": "data:image/png;base64,..."}``), then corrected with its true digit
   (``POST /api/predictions/{id}/label/`` with the reply's ``label_key``), in an order shuffled with
   ``--seed``, so each curve point's corrections include the previous point's;
4. at each curve point staff fine-tune the active version on MNIST plus the labelled drawings
   (``POST /api/retrain/`` with ``base_version`` = the active version and nothing else: the API's
   default fine-tune recipe; ``--retrain-options`` adds explicit options), the Celery worker trains,
   the run is followed at ``GET /api/runs/{id}/`` until it ends, and its ``result_version`` is read;
5. the new version (never promoted: each point fine-tunes the same shipped flagship) scores the
   held-out group's drawings through ``POST /api/predict/`` with ``"model": <version id>``, the site's
   real path for asking a chosen version (the registry loads it by its checkpoint, sha256 checked,
   and serves it with its own temperature and test-time views). Point 0 is the active version.

About a fifth of the labelled drawings are the site's field set (chosen by a hash of the prediction
id) and never train, so "N corrections" trains on about 0.8 N drawings. Fine-tune wall time is the
run's ``finished_at - started_at`` as the API reports it (loading MNIST and the drawings, training,
evaluation on MNIST test and the field set, registration).

    python bench/learning_from_corrections.py [--holdout ced,val,uqb,tos] [--points 0,250,1000,all]
        [--variants 1] [--database-url postgres://postgres@127.0.0.1:5432/postgres] [--redis-url URL]
        [--web-workers 2] [--retrain-options '{"epochs": 2}'] [--seed 0] [--json out.json]

A quick run: ``--holdout tos --points 0,all``. Needs the MNIST files (``$MNIST_ROOT``) and the
recorded digits (``--data``, default ``../shared/data/strokes-dev/strokes.json.gz``).

``--question population`` asks what a deployed site faces instead: its corrections come from the people
who use it and its next visitors are *new writers of that same population*. One site; the writers of
every group are split in two (``bench.strokes.split_writers``, seeded by ``--seed``); the "users" half
draws and corrects (their digits, variant ``index % 3``, in a seeded order), and each version scores
the other half's writers in all three renderings, per group and pooled. ``--through policy`` lets the
site decide instead of staff: the retraining policy (Celery beat, ``make beat``) queues the fine-tune
once the corrections are in, the shadow process (``manage.py shadow``) runs the candidate beside the
active version on the users' further drawings, which are corrected too, and the gate promotes or keeps
it; the benchmark reports what it did and what the active version reads afterwards. There the
corrections go through a staff token (trusted labels, the site's defaults for what trains, docs/trust.md);
otherwise the users' own ``label_key`` corrections, with ``LABELS_TRAIN_TRUST=visitor``.

    python bench/learning_from_corrections.py --question population [--points 0,250,1000,all]
        [--through api|policy] [--retrain-options '{"epochs": 2}'] [--seed 0] [--json out.json]
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.poisoning import wait  # noqa: E402
from bench.predict_api import fresh_database, site_env  # noqa: E402
from bench.real_drawings import DEFAULT_DATA  # noqa: E402
from bench.strokes import load_strokes, render, split_writers, variant_params  # noqa: E402
from tests.support.processes import free_port, stop, wait_for_port  # noqa: E402

GROUPS = ("ced", "val", "uqb", "tos")
DEFAULT_POINTS = "0,250,1000,all"
RUN_TIMEOUT_S = 1800  # a fine-tune that takes longer than this is reported as failed
REQUEST_TIMEOUT_S = 60
STAFF = "bench-staff"


# --------------------------------------------------------------------------- drawings


@dataclass
class Drawing:
    index: int
    group: str
    label: int
    png: bytes

    @property
    def data_url(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def render_drawings(samples: Sequence[dict[str, Any]], indices: Sequence[int], *, seed: int,
                    variants: Sequence[int] | None = None) -> list[Drawing]:
    """The samples at ``indices`` as canvas PNGs: variant ``index % 3`` of each (or each of ``variants``)."""
    out = []
    for index in indices:
        for variant in (variants if variants is not None else (index % 3,)):
            image = render(samples[index], **variant_params(index, variant, seed=seed))
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            out.append(Drawing(index=index, group=samples[index]["writer"].split("/")[0],
                               label=int(samples[index]["label"]), png=buffer.getvalue()))
    return out


# --------------------------------------------------------------------------- HTTP


class ApiError(RuntimeError):
    pass


class Api:
    """The site's API over loopback, as a script uses it (a token, JSON bodies)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.token: str | None = None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, *, expect: int = 200) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        if status != expect:
            raise ApiError(f"{method} {path}: {status} {payload[:500]!r}")
        return json.loads(payload) if payload else {}


# --------------------------------------------------------------------------- the site


class Site:
    """A fresh site: database, media folder, migrations, a staff token, the HTTP server and a worker."""

    def __init__(self, args: argparse.Namespace, name: str) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix=f"mnistsite-lfc-{name}-"))
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.drop_database = lambda: None
        self.redis_url = args.redis_url
        self.policy = args.through == "policy"

    def start(self) -> Api:
        database_url, self.drop_database = fresh_database(self.args.database_url, self.tmp)
        if not self.redis_url:
            self.redis_url = self._start_redis()
        password = secrets.token_urlsafe(16)
        self.env = site_env(
            database_url,
            self.tmp,
            MNIST_ROOT=str(self.args.mnist_root),
            REDIS_URL=self.redis_url,
            TRAINING_EXECUTOR="celery",
            # this site's own queue: another worker on a shared Redis never takes these runs
            TRAINING_QUEUE=f"training-lfc-{secrets.token_hex(4)}",
            LABELS_TRAIN_TRUST="visitor",  # a user's correction trains at once (docs/trust.md)
            DJANGO_SUPERUSER_PASSWORD=password,
            RETRAIN_POLICY_ENABLED="false",
        )
        if self.policy:
            # the site's own trust defaults; staff-confirmed corrections; the policy decides
            self.env.pop("LABELS_TRAIN_TRUST")
            self.env.update(
                RETRAIN_POLICY_ENABLED="true",
                RETRAIN_POLICY_SCHEDULER="beat",
                RETRAIN_POLICY_MIN_LABELS=str(self.args.policy_min_labels),
                RETRAIN_POLICY_SHADOW_MIN_LABELS=str(self.args.shadow_labels),
                RETRAIN_POLICY_INTERVAL_SECONDS="5",
                RETRAIN_POLICY_RUN_OPTIONS=json.dumps(self.args.retrain_options),
            )
        if self.args.torch_threads:
            self.env["TRAINING_TORCH_THREADS"] = str(self.args.torch_threads)
        (self.tmp / "static").mkdir()
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=REPO, env=self.env, check=True)
        subprocess.run([*manage, "createsuperuser", "--noinput", "--username", STAFF, "--email", "staff@example.com"],
                       cwd=REPO, env=self.env, check=True, stdout=subprocess.DEVNULL)
        port = free_port()
        web = self._spawn("web", [sys.executable, "-m", "mnistsite.serve", "http", "--host", "127.0.0.1",
                                  "--port", str(port), "--workers", str(self.args.web_workers)])
        self._spawn("worker", [*manage, "worker", "--loglevel", "warning"])
        if self.policy:
            self._spawn("beat", [sys.executable, "-m", "celery", "-A", "mnistsite", "beat", "--loglevel", "warning",
                                 "--pidfile", str(self.tmp / "beat.pid"), "--schedule", str(self.tmp / "beat-schedule")])
            self._spawn("shadow", [*manage, "shadow", "--priority", "normal"])
        wait_for_port(port, web, timeout=90, name="web server", log=lambda: self._log("web"))
        api = Api(f"http://127.0.0.1:{port}")
        api.token = api.call("POST", "/api/token/", {"username": STAFF, "password": password}, expect=201)["token"]
        return api

    def _start_redis(self) -> str:
        executable = shutil.which("redis-server")
        if executable is None:
            raise SystemExit("no Redis: pass --redis-url (or set REDIS_URL), or install redis-server")
        port = free_port()
        process = subprocess.Popen(
            [executable, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1",
             "--dir", str(self.tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(process)
        wait_for_port(port, process, timeout=15, name="redis-server")
        return f"redis://127.0.0.1:{port}/0"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = self.tmp / f"{name}.log"
        self.logs.append(log)
        with open(log, "wb") as fh:
            process = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=fh, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def _log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def print_logs(self) -> None:
        for log in self.logs:
            if log.is_file():
                print(f"--- {log.name} (last lines)\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop(process, timeout=30)
        self.drop_database()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the loop


@dataclass
class Point:
    corrections: int
    version: int
    accuracy: float
    n: int
    run: int | None = None
    run_seconds: float | None = None
    trained_drawings: int | None = None
    field_set: int | None = None
    mnist_test: float | None = None
    config: dict[str, Any] = field(default_factory=dict)


def predict(api: Api, drawing: Drawing, version: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"image": drawing.data_url}
    if version is not None:
        body["model"] = version
    return api.call("POST", "/api/predict/", body)


def correct(api: Api, drawing: Drawing) -> bool:
    """One user's loop: draw, see the answer, give the right digit. Whether the answer was right."""
    answer = predict(api, drawing)
    labelled = api.call("POST", f"/api/predictions/{answer['id']}/label/",
                        {"label": drawing.label, "label_key": answer["label_key"]})
    return bool(labelled["correct"])


def score(api: Api, drawings: Sequence[Drawing], version: int, concurrency: int) -> float:
    return score_groups(api, drawings, version, concurrency)["pooled"]


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def fine_tune(api: Api, base: int, options: dict[str, Any]) -> dict[str, Any]:
    started = api.call("POST", "/api/retrain/", {"base_version": base, **options}, expect=202)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    path = f"/api/runs/{started['id']}/"
    while True:
        state = api.call("GET", path)
        if state["status"] in {"succeeded", "failed", "cancelled"}:
            break
        if time.monotonic() > deadline:
            api.call("POST", f"/api/runs/{started['id']}/cancel/", {})
            raise ApiError(f"run {started['id']} did not finish within {RUN_TIMEOUT_S} s")
        time.sleep(2.0)
    if state["status"] != "succeeded":
        raise ApiError(f"run {started['id']} {state['status']}: {state.get('error')}")
    return state


def play(args: argparse.Namespace, samples: list[dict[str, Any]], held: str, points: list[int | None]) -> list[Point]:
    groups = np.asarray([s["writer"].split("/")[0] for s in samples])
    labelled_pool = np.flatnonzero(groups != held)
    np.random.default_rng(args.seed).shuffle(labelled_pool)
    held_indices = np.flatnonzero(groups == held).tolist()
    variants = list(range(args.variants)) if args.variants > 1 else None
    t0 = time.perf_counter()
    held_out = render_drawings(samples, held_indices, seed=args.seed, variants=variants)
    print(f"[{held}] rendered {len(held_out)} held-out drawings ({len(held_indices)} digits) "
          f"in {time.perf_counter() - t0:.0f}s", flush=True)

    site = Site(args, held)
    results: list[Point] = []
    try:
        api = site.start()
        status = api.call("GET", "/api/model-status/")
        if not status.get("active"):
            raise ApiError(f"no active version: {status}")
        active = status["active"]["id"]
        print(f"[{held}] site up at {api.base} (active version {active}); fine-tune options: "
              f"{json.dumps(args.retrain_options) if args.retrain_options else 'the API defaults'}", flush=True)
        done = 0
        right_before = 0
        for target in points:
            target = len(labelled_pool) if target is None else min(target, len(labelled_pool))
            if target > done:
                t1 = time.perf_counter()
                drawings = render_drawings(samples, labelled_pool[done:target].tolist(), seed=args.seed)
                right_before += sum(correct(api, d) for d in drawings)
                print(f"[{held}] {target} corrections given ({target - done} new in {time.perf_counter() - t1:.0f}s; "
                      f"the active version had {100 * right_before / target:.1f}% of them right)", flush=True)
                done = target
            if target == 0:
                accuracy = score(api, held_out, active, args.concurrency)
                results.append(Point(corrections=0, version=active, accuracy=accuracy, n=len(held_out)))
            else:
                state = fine_tune(api, active, args.retrain_options)
                version = state["result_version"]["id"]
                accuracy = score(api, held_out, version, args.concurrency)
                metrics = state.get("metrics") or {}
                config = state["config"]
                results.append(Point(
                    corrections=target, version=version, accuracy=accuracy, n=len(held_out), run=state["id"],
                    run_seconds=_seconds(state.get("started_at"), state.get("finished_at")),
                    trained_drawings=(state.get("data") or {}).get("drawings"),
                    field_set=(state.get("data") or {}).get("field_set"),
                    mnist_test=100 * metrics["test_accuracy"] if metrics.get("test_accuracy") is not None else None,
                    config={k: config.get(k) for k in ("epochs", "lr", "extra_repeat", "mnist_limit", "augment")},
                ))
            p = results[-1]
            print(f"[{held}] after {p.corrections} corrections: version {p.version} {p.accuracy:.2f}% on {held} "
                  f"(n={p.n})" + (f"; run {p.run} {p.run_seconds:.0f}s, {p.trained_drawings} drawings trained, "
                                   f"MNIST test {p.mnist_test:.2f}%, {p.config}" if p.run else ""), flush=True)
    except Exception:
        site.print_logs()
        raise
    finally:
        site.stop()
    return results


# --------------------------------------------------------------------------- the same population


def population_split(samples: Sequence[dict[str, Any]], seed: int) -> tuple[list[int], list[int]]:
    """The users' digits in the order they correct them, and the other half's (the new visitors') digits."""
    users = split_writers([s["writer"] for s in samples], seed=seed)
    mine = [i for i, s in enumerate(samples) if s["writer"] in users]
    order = np.random.default_rng(seed).permutation(len(mine))
    return [mine[i] for i in order], [i for i, s in enumerate(samples) if s["writer"] not in users]


def score_groups(api: Api, drawings: Sequence[Drawing], version: int, concurrency: int) -> dict[str, float]:
    """Accuracy (%) per writer group and pooled, as the site serves ``version``."""
    def one(drawing: Drawing) -> bool:
        reply = predict(api, drawing, version)
        if reply["model_version"]["id"] != version:
            raise ApiError(f"asked version {version}, answered by {reply['model_version']['id']}")
        return reply["digit"] == drawing.label

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        right = list(pool.map(one, drawings))
    out = {}
    for group in GROUPS:
        mine = [r for r, d in zip(right, drawings) if d.group == group]
        if mine:
            out[group] = 100.0 * sum(mine) / len(mine)
    out["pooled"] = 100.0 * sum(right) / len(right)
    return out


def staff_correct(api: Api, drawing: Drawing, pause: float = 0.0) -> dict[str, Any]:
    """A user draws; ``pause`` s later the correction reaches the site as a trusted label (staff confirming it)."""
    answer = predict(api, drawing)
    time.sleep(pause)
    return api.call("POST", f"/api/predictions/{answer['id']}/label/", {"label": drawing.label})


def play_population(args: argparse.Namespace, samples: list[dict[str, Any]], points: list[int | None]) -> dict[str, Any]:
    corrections, visitors = population_split(samples, args.seed)
    t0 = time.perf_counter()
    visitor_drawings = render_drawings(samples, visitors, seed=args.seed, variants=[0, 1, 2])
    counts = {g: sum(d.group == g for d in visitor_drawings) for g in GROUPS}
    print(f"[population] {len(corrections)} users' digits to correct; {len(visitor_drawings)} renderings of the "
          f"other half's {len(visitors)} digits to score ({', '.join(f'{g} {n}' for g, n in counts.items())}), "
          f"rendered in {time.perf_counter() - t0:.0f}s", flush=True)
    if args.through == "policy" and not args.policy_min_labels:
        args.policy_min_labels = len(policy_first(corrections, args))
    site = Site(args, "population")
    out: dict[str, Any] = {"n": counts, "users_digits": len(corrections), "points": []}
    try:
        api = site.start()
        active = api.call("GET", "/api/model-status/")["active"]["id"]
        print(f"[population] site up at {api.base} (active version {active}); decided by "
              f"{'the policy' if site.policy else 'staff, POST /api/retrain/'}; fine-tune options: "
              f"{json.dumps(args.retrain_options) if args.retrain_options else 'the defaults'}", flush=True)
        before = score_groups(api, visitor_drawings, active, args.concurrency)
        out["points"].append({"corrections": 0, "version": active, "accuracy": before})
        print(f"[population] before any correction: {_fmt(before)}", flush=True)
        if site.policy:
            out["policy"] = through_policy(api, args, samples, corrections, visitor_drawings, active)
            return out
        done = 0
        for target in points:
            target = len(corrections) if target is None else min(target, len(corrections))
            if target <= done:
                continue
            drawings = render_drawings(samples, corrections[done:target], seed=args.seed)
            right = sum(correct(api, d) for d in drawings)
            print(f"[population] {target} corrections given ({right} of the {target - done} new ones the active "
                  f"version had right)", flush=True)
            done = target
            state = fine_tune(api, active, args.retrain_options)
            version = state["result_version"]["id"]
            accuracy = score_groups(api, visitor_drawings, version, args.concurrency)
            metrics = state.get("metrics") or {}
            point = {"corrections": target, "version": version, "accuracy": accuracy, "run": state["id"],
                     "run_seconds": _seconds(state.get("started_at"), state.get("finished_at")),
                     "trained_drawings": (state.get("data") or {}).get("drawings"),
                     "mnist_test": 100 * metrics["test_accuracy"] if metrics.get("test_accuracy") is not None else None,
                     "config": {k: state["config"].get(k) for k in ("epochs", "lr", "extra_repeat", "mnist_limit")}}
            out["points"].append(point)
            print(f"[population] after {target} corrections: version {version}: {_fmt(accuracy)}; run "
                  f"{point['run']} {point['run_seconds']:.0f}s, {point['trained_drawings']} drawings trained, MNIST "
                  f"test {point['mnist_test']:.2f}%, {point['config']}", flush=True)
    except Exception:
        site.print_logs()
        raise
    finally:
        site.stop()
    out["plateau"] = plateau(out["points"], counts)
    return out


def policy_first(corrections: list[int], args: argparse.Namespace) -> list[int]:
    """The corrections given before the policy's run: all but enough for the shadow phase."""
    return corrections[: len(corrections) - args.shadow_labels - 20]


def through_policy(api: Api, args: argparse.Namespace, samples: list[dict[str, Any]], corrections: list[int],
                   visitor_drawings: list[Drawing], active: int) -> dict[str, Any]:
    """All the users' corrections as trusted labels; the policy fine-tunes, shadows and decides by itself."""
    first = policy_first(corrections, args)
    later = corrections[len(first):]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        list(pool.map(lambda d: staff_correct(api, d), render_drawings(samples, first, seed=args.seed)))
    print(f"[policy] {len(first)} corrections given in {time.perf_counter() - started:.0f}s; waiting for the policy",
          flush=True)

    def candidate_in_shadow():
        state = api.call("GET", "/api/policy/")
        for event in state.get("events", []):
            if event["action"] == "failed":
                raise ApiError(f"the policy's run failed: {event}")
        return state if "in shadow" in state["status"] else None

    wait("the policy's fine-tune and its candidate in shadow", candidate_in_shadow, timeout=RUN_TIMEOUT_S)
    in_shadow_s = time.perf_counter() - started
    print(f"[policy] candidate in shadow after {in_shadow_s:.0f}s: {api.call('GET', '/api/policy/')['status']}",
          flush=True)

    def decided():
        return next((e for e in api.call("GET", "/api/policy/")["events"]
                     if e["action"] in {"promoted", "kept", "failed"}), None)

    # The users go on drawing (their remaining digits, then their others in the other renderings) and staff
    # confirm each; the candidate answers in shadow beside the active version where the shadow process has
    # room (it skips drawings while the CPUs are busy), so they draw until the gate has enough and decides.
    traffic = later + corrections
    sent, event = 0, None
    while event is None:
        if sent >= 3 * len(traffic):
            raise ApiError(f"no decision after {sent} drawings labelled in shadow")
        index, variant = traffic[sent % len(traffic)], (sent // len(traffic) + 1) % 3
        drawing = render_drawings(samples, [index], seed=args.seed, variants=[variant] if sent >= len(later) else None)[0]
        staff_correct(api, drawing, pause=0.1)  # the shadow process answers from the drawings it polls
        sent += 1
        if sent >= args.shadow_labels and sent % 10 == 0:
            event = decided()
    seconds = time.perf_counter() - started
    now_active = api.call("GET", "/api/model-status/")["active"]["id"]
    accuracy = score_groups(api, visitor_drawings, now_active, args.concurrency)
    runs = api.call("GET", "/api/runs/")
    runs = runs["results"] if isinstance(runs, dict) else runs
    run = next((r for r in runs if r["id"] == event.get("run")), None)
    print(f"[policy] the gate: {event['action']} ({event['reason']}) {seconds:.0f}s after the first correction; "
          f"active version {now_active}: {_fmt(accuracy)}", flush=True)
    return {"decision": {k: event.get(k) for k in ("action", "reason", "run", "version")},
            "corrections_before_run": len(first), "labelled_in_shadow": sent,
            "seconds_to_decision": round(seconds), "seconds_to_shadow": round(in_shadow_s),
            "active_before": active, "active_after": now_active, "accuracy_after": accuracy,
            "run": {k: run.get(k) for k in ("id", "status", "started_at", "finished_at", "data", "metrics")} if run else None}


def plateau(points: list[dict[str, Any]], counts: dict[str, int]) -> dict[str, int | None]:
    """Per group, the fewest corrections after which accuracy stays within one standard error of the last point."""
    out: dict[str, int | None] = {}
    if len(points) < 2:
        return out
    last = points[-1]["accuracy"]
    for group in last:
        final = last[group] / 100
        n = max(1, counts.get(group, sum(counts.values())))
        margin = 100 * (final * (1 - final) / n) ** 0.5
        reached = None
        for p in points:
            if all(q["accuracy"][group] >= last[group] - margin for q in points if q["corrections"] >= p["corrections"]):
                reached = p["corrections"]
                break
        out[group] = reached
    return out


def _fmt(accuracy: dict[str, float]) -> str:
    return "  ".join(f"{g} {v:.2f}%" for g, v in accuracy.items())


def report_population(result: dict[str, Any]) -> None:
    rows = result["points"]
    print("\naccuracy (%) on the other half's writers (three renderings each) after N corrections from the users' half")
    print(f"  {'group':<8}{'n':>6} " + " ".join(f"{p['corrections']:>8}" for p in rows))
    for group in [*GROUPS, "pooled"]:
        n = result["n"].get(group, sum(result["n"].values()))
        print(f"  {group:<8}{n:>6} " + " ".join(f"{p['accuracy'].get(group, float('nan')):>8.2f}" for p in rows))
    seconds = [p["run_seconds"] for p in rows if p.get("run_seconds") is not None]
    if seconds:
        print(f"  fine-tune in the worker: {', '.join(f'{s:.0f}' for s in seconds)} s")
    if result.get("plateau"):
        print("  plateau (fewest corrections within one standard error of the last point): "
              + ", ".join(f"{g} {c}" for g, c in result["plateau"].items()))


# --------------------------------------------------------------------------- report


def report(results: dict[str, list[Point]], points: list[int | None]) -> dict[str, Any]:
    labels = ["all" if p is None else str(p) for p in points]
    print("\naccuracy (%) on the held-out writer group after N corrections from the other groups")
    print(f"  {'held out':<10}{'n':>6} " + " ".join(f"{lab:>8}" for lab in labels) + f" {'fine-tune s':>12}")
    pooled: dict[str, list[tuple[float, int]]] = {lab: [] for lab in labels}
    for held, rows in results.items():
        cells, seconds = [], []
        for lab, p in zip(labels, rows):
            shown = f"{p.accuracy:.2f}" + (f"@{p.corrections}" if lab == "all" else "")
            cells.append(f"{shown:>8}")
            pooled[lab].append((p.accuracy, p.n))
            if p.run_seconds is not None:
                seconds.append(p.run_seconds)
        print(f"  {held:<10}{rows[0].n:>6} " + " ".join(cells)
              + f" {('max ' + format(max(seconds), '.0f')) if seconds else '-':>12}")
    total = {lab: sum(a * n for a, n in v) / sum(n for _, n in v) for lab, v in pooled.items() if v}
    n_all = sum(rows[0].n for rows in results.values())
    print(f"  {'pooled':<10}{n_all:>6} " + " ".join(f"{total[lab]:>8.2f}" for lab in labels))
    return {"points": labels, "pooled": total,
            "groups": {held: [vars(p) for p in rows] for held, rows in results.items()}}


def parse_points(text: str) -> list[int | None]:
    points: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        points.append(None if part == "all" else int(part))
    if any(p is not None and p < 0 for p in points):
        raise argparse.ArgumentTypeError("curve points are counts of corrections (>= 0) or 'all'")
    ordered = sorted(points, key=lambda p: float("inf") if p is None else p)
    return ordered


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="strokes.json.gz of the recorded digits")
    parser.add_argument("--holdout", default=",".join(GROUPS),
                        help="writer groups to hold out, one site each (comma-separated; default all four)")
    parser.add_argument("--points", type=parse_points, default=parse_points(DEFAULT_POINTS),
                        help="curve points: numbers of corrections, 'all' for every labelled drawing")
    parser.add_argument("--variants", type=int, default=1,
                        help="drawings scored per held-out digit (1: variant index %% 3, as labelled; up to 3)")
    parser.add_argument("--retrain-options", type=json.loads, default={},
                        help='explicit retrain options as JSON, e.g. \'{"epochs": 2, "extra_repeat": 4}\' '
                             "(default: none, the API's fine-tune recipe)")
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL server URL; a fresh database is created there per site and dropped "
                             "after (default: a fresh SQLite file)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""),
                        help="the broker (default REDIS_URL; unset: a private redis-server on a free port)")
    parser.add_argument("--mnist-root", type=Path, default=Path(os.environ.get("MNIST_ROOT", REPO / "media" / "datasets")))
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--torch-threads", type=int, default=0, help="TRAINING_TORCH_THREADS for the worker")
    parser.add_argument("--concurrency", type=int, default=2, help="parallel predict requests while scoring")
    parser.add_argument("--seed", type=int, default=0, help="drawing parameters, the order of corrections and "
                        "(--question population) the writers' split")
    parser.add_argument("--question", choices=("leave-one-out", "population"), default="leave-one-out",
                        help="score a writer group no correction came from, or new writers of the groups corrected")
    parser.add_argument("--through", choices=("api", "policy"), default="api",
                        help="population: staff fine-tune at each point (api), or the policy decides (policy)")
    parser.add_argument("--policy-min-labels", type=int, default=0,
                        help="--through policy: RETRAIN_POLICY_MIN_LABELS (labels that start the fine-tune; "
                             "default: all the corrections given before it)")
    parser.add_argument("--shadow-labels", type=int, default=200,
                        help="--through policy: RETRAIN_POLICY_SHADOW_MIN_LABELS (labels the gate waits for)")
    parser.add_argument("--keep", action="store_true", help="keep each site's folder (database, media, logs)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    held_out = [g.strip() for g in args.holdout.split(",") if g.strip()]
    unknown = sorted(set(held_out) - set(GROUPS))
    if unknown:
        parser.error(f"unknown writer group(s) {', '.join(unknown)}; known: {', '.join(GROUPS)}")
    if not 1 <= args.variants <= 3:
        parser.error("--variants must be 1, 2 or 3")
    if not args.data.is_file():
        print(f"error: no recorded digits at {args.data}; pass --data PATH to strokes.json.gz", file=sys.stderr)
        return 2
    samples = load_strokes(args.data)
    if args.question == "population":
        result = play_population(args, samples, args.points)
        if args.through == "api":
            report_population(result)
        if args.json:
            args.json.write_text(json.dumps({"args": {k: str(v) if isinstance(v, Path) else v
                                                      for k, v in vars(args).items()}, **result}, indent=2))
            print(f"wrote {args.json}")
        return 0
    results: dict[str, list[Point]] = {}
    for held in held_out:
        results[held] = play(args, samples, held, args.points)
        summary = report(results, args.points)
        if args.json:  # after each group, so an interrupted run keeps what it measured
            args.json.write_text(json.dumps({"args": {k: str(v) if isinstance(v, Path) else v
                                                      for k, v in vars(args).items()}, **summary}, indent=2))
            print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
