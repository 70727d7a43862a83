"""Label poisoning against the automatic retraining loop, through the public API, on a site started as
``make run`` starts it.

Anonymous clients, each a fresh connection from its own loopback address (on Linux all of 127.0.0.0/8
is loopback: each client's socket is bound to its own 127.x.y.z, so the server sees distinct peers),
draw and label at scale while the retraining policy runs its cycles (small thresholds, a fine-tune
recipe that keeps MNIST). Then honest labels from a trusted source (a staff token) go the same way.

The drawings are recorded pen trajectories (``bench/strokes.py``: rendered as the canvas PNG a browser
sends). The writers of group ``uqb`` slash their zeros; half of them (by writer id) are the attackers'
and labellers' writers, the other half and the few slashed zeros of other groups are the *clean set*
nobody labels: "other writers' drawings of the attacked kind", scored before and after by the active
version through ``POST /api/predict/`` with ``"model"``.

Phases, on one fresh site (database, media folder, ``manage.py migrate``, a staff account and token,
``python -m mnistsite.serve site``):

1. ``blunt``: anonymous clients label ``--attack-labels`` drawings of 1 as "7" (a lie MNIST would
   notice), padded with ``--padding`` honest anonymous labels of other digits;
2. ``habit``: the same with slashed zeros labelled "8" (a habit MNIST lacks: the review's attack);
3. ``trusted``: the staff token labels ``--min-labels`` honest drawings (slashed zeros as 0 among
   them); the policy fine-tunes, shadows the candidate; live traffic arrives, attackers label
   slashed zeros in it as "8" meanwhile, and staff label ``--shadow-labels`` of it honestly; the gate
   decides.

After each phase: what the policy counted and did (``GET /api/policy/``), the runs (what each trained
on: ``data``), the gate's decision and figures, the active version and its accuracy on the clean set.

    python bench/poisoning.py [--phases blunt,habit,trusted] [--train-trust trusted|agreed|visitor]
        [--min-labels 200] [--shadow-labels 100] [--attack-labels 280] [--padding 120]
        [--run-options '{"epochs": 3, "mnist_limit": 60000}'] [--clients 8] [--json out.json]

Needs the MNIST files (``$MNIST_ROOT``) and the recorded digits (``--data``, default
``../shared/data/strokes-dev/strokes.json.gz``). Linux only (the 127.x.y.z source addresses).
"""
from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.predict_api import fresh_database, migrate_site, site_env, start_site  # noqa: E402
from bench.real_drawings import DEFAULT_DATA  # noqa: E402
from bench.strokes import load_strokes, render, variant_params  # noqa: E402
from tests.support.processes import stop  # noqa: E402

STAFF = "bench-staff"
SLASHING_GROUP = "uqb"  # these writers slash their zeros (two strokes)
REQUEST_TIMEOUT_S = 60
WAIT_S = 1800


# --------------------------------------------------------------------------- drawings


@dataclass(frozen=True)
class Drawing:
    sample: int
    writer: str
    truth: int
    png: bytes

    @property
    def data_url(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def draw(samples: Sequence[dict[str, Any]], index: int, variant: int, seed: int) -> Drawing:
    image = render(samples[index], **variant_params(index, variant, seed=seed))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return Drawing(sample=index, writer=samples[index]["writer"], truth=int(samples[index]["label"]),
                   png=buffer.getvalue())


def renderings(samples: Sequence[dict[str, Any]], indices: Sequence[int], count: int, *, seed: int) -> list[Drawing]:
    """``count`` drawings cycling through ``indices``, each pass with new rendering parameters."""
    out = []
    for k in range(count):
        index = indices[k % len(indices)]
        rounds = k // len(indices)
        out.append(draw(samples, index, rounds % 3, seed + 1000 * (rounds // 3)))
    return out


@dataclass
class Sets:
    attack_zeros: list[int]  # slashed zeros of the attackers' writers
    attack_ones: list[int]
    clean_zeros: list[int]  # other writers' slashed zeros: never labelled by anyone
    clean_ones: list[int]
    honest: list[int]  # the attackers' writers' and the other groups' digits, for honest labels


def split(samples: Sequence[dict[str, Any]], seed: int) -> Sets:
    writers = sorted({s["writer"] for s in samples if s["writer"].split("/")[0] == SLASHING_GROUP})
    rng = np.random.default_rng(seed)
    rng.shuffle(writers)
    clean_writers = set(writers[: len(writers) // 2])
    slashed = [i for i, s in enumerate(samples) if s["label"] == 0 and len(s["strokes"]) >= 2]
    ones = [i for i, s in enumerate(samples) if s["label"] == 1]
    clean = lambda i: samples[i]["writer"] in clean_writers  # noqa: E731
    other_groups_slashed = [i for i in slashed if samples[i]["writer"].split("/")[0] != SLASHING_GROUP]
    honest = [i for i in range(len(samples)) if not clean(i) and i not in set(other_groups_slashed)]
    rng.shuffle(honest)
    return Sets(
        attack_zeros=[i for i in slashed if not clean(i) and i not in set(other_groups_slashed)],
        attack_ones=[i for i in ones if not clean(i)],
        clean_zeros=[i for i in slashed if clean(i)] + other_groups_slashed,
        clean_ones=[i for i in ones if clean(i)],
        honest=honest,
    )


# --------------------------------------------------------------------------- HTTP


class ApiError(RuntimeError):
    pass


class Client:
    """One HTTP client of the site from a source address of its own (a fresh connection per request)."""

    def __init__(self, port: int, source: str = "127.0.0.1", token: str | None = None) -> None:
        self.port, self.source, self.token = port, source, token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, *, expect: int = 200) -> dict[str, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S,
                                                source_address=(self.source, 0))
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        try:
            connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            response = connection.getresponse()
            status, payload = response.status, response.read()
        finally:
            connection.close()
        if status != expect:
            raise ApiError(f"{method} {path} from {self.source}: {status} {payload[:300]!r}")
        return json.loads(payload) if payload else {}


def source_address(n: int) -> str:
    """The n-th client's own loopback address: 127.1.0.1, 127.1.0.2, ... (never 127.0.0.1), 16 million of them."""
    a, rest = divmod(n % (254 ** 3), 254 * 254)
    b, c = divmod(rest, 254)
    return f"127.{a + 1}.{b}.{c + 1}"


class Crowd:
    """Anonymous clients, each from its own address, each drawing once and labelling with its label key."""

    def __init__(self, port: int, concurrency: int) -> None:
        self.port, self.concurrency, self.next = port, concurrency, 0

    def label(self, drawings: Sequence[Drawing], labels: Sequence[int]) -> list[int]:
        first = self.next
        self.next += len(drawings)

        def one(k: int) -> int:
            client = Client(self.port, source_address(first + k))
            reply = client.call("POST", "/api/predict/", {"image": drawings[k].data_url})
            client.call("POST", f"/api/predictions/{reply['id']}/label/",
                        {"label": int(labels[k]), "label_key": reply["label_key"]})
            return reply["id"]

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, range(len(drawings))))


# --------------------------------------------------------------------------- the site


class Site:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="mnistsite-poisoning-"))
        self.process: subprocess.Popen | None = None
        self.drop_database: Callable[[], None] = lambda: None

    def start(self) -> Client:
        database_url, self.drop_database = fresh_database(self.args.database_url, self.tmp)
        password = secrets.token_urlsafe(16)
        self.env = site_env(
            database_url, self.tmp,
            MNIST_ROOT=str(self.args.mnist_root),
            RETRAIN_POLICY_ENABLED="true",
            RETRAIN_POLICY_MIN_LABELS=str(self.args.min_labels),
            RETRAIN_POLICY_SHADOW_MIN_LABELS=str(self.args.shadow_labels),
            RETRAIN_POLICY_INTERVAL_SECONDS=str(self.args.interval),
            RETRAIN_POLICY_RUN_OPTIONS=json.dumps(self.args.run_options),
            LABELS_TRAIN_TRUST=self.args.train_trust,
            DJANGO_SUPERUSER_PASSWORD=password,
        )
        for name in ("REDIS_URL", "TRAINING_EXECUTOR", "LABELS_EVIDENCE_TRUST", "LABELS_VISITOR_AGREEMENT"):
            self.env.pop(name, None)  # the one-process layout of `make run`, the site's defaults
        if self.args.evidence_trust:
            self.env["LABELS_EVIDENCE_TRUST"] = self.args.evidence_trust
        migrate_site(self.env, self.tmp)
        subprocess.run([sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", STAFF,
                        "--email", "staff@example.com"], cwd=REPO, env=self.env, check=True,
                       stdout=subprocess.DEVNULL)
        self.process, url = start_site("default", 1, self.env, name="site")
        self.port = int(url.split(":")[2].split("/")[0])
        token = Client(self.port).call("POST", "/api/token/", {"username": STAFF, "password": password},
                                       expect=201)["token"]
        return Client(self.port, token=token)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=30)
        self.drop_database()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- measuring


def accuracy(staff: Client, version: int, drawings: Sequence[Drawing], concurrency: int) -> float:
    def one(d: Drawing) -> bool:
        reply = staff.call("POST", "/api/predict/", {"image": d.data_url, "model": version})
        return reply["digit"] == d.truth

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, drawings))
    return 100.0 * sum(results) / len(results)


def wait(what: str, probe: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ApiError(f"timed out waiting for {what}")
        time.sleep(1.0)


def policy(staff: Client) -> dict[str, Any]:
    return staff.call("GET", "/api/policy/")


def runs(staff: Client) -> list[dict[str, Any]]:
    body = staff.call("GET", "/api/runs/")
    return body["results"] if isinstance(body, dict) and "results" in body else body


def settled_check(staff: Client, interval: float) -> dict[str, Any]:
    """The policy's state after two more checks than now (it has seen every label given so far)."""
    before = policy(staff)["last_checked_at"]
    wait("a policy check", lambda: policy(staff)["last_checked_at"] != before, timeout=60 + 5 * interval)
    time.sleep(interval * 1.5)
    return policy(staff)


@dataclass
class Clean:
    zeros: list[Drawing]
    ones: list[Drawing]


def snapshot(staff: Client, clean: Clean, concurrency: int) -> dict[str, Any]:
    active = staff.call("GET", "/api/model-status/")["active"]
    return {"active": {"id": active["id"], "name": f"{active['name']} v{active['version']}"},
            "clean_slashed_zeros": accuracy(staff, active["id"], clean.zeros, concurrency),
            "clean_ones": accuracy(staff, active["id"], clean.ones, concurrency)}


POISONED: set[int] = set()  # the predictions the attackers labelled with a lie


def describe_runs(staff: Client, clean: "Clean | None" = None, concurrency: int = 8) -> list[dict[str, Any]]:
    """Each run: what it trained on (drawings, of them poisoned), its figures, the gate's decision, and its
    version's accuracy on the clean set (what promoting it would have done)."""
    out = []
    for run in sorted(runs(staff), key=lambda r: r["id"]):
        state = staff.call("GET", f"/api/runs/{run['id']}/")
        metrics = state.get("metrics") or {}
        data = dict(state.get("data") or {})
        trained = set(data.pop("drawing_ids", None) or [])
        gate = (state.get("promotion") or {}).get("gate") or {}
        out.append({"id": state["id"], "status": state["status"], "base": (state.get("base") or {}).get("id"),
                    "result_version": (state.get("result_version") or {}).get("id"),
                    "trained_drawings": data.get("drawings"), "trained_poisoned": len(trained & POISONED),
                    "mnist_train_images": data.get("mnist_train_images"), "field_set": data.get("field_set"),
                    "mnist_test": metrics.get("test_accuracy"), "field_accuracy": metrics.get("field_accuracy"),
                    "promoted": (state.get("promotion") or {}).get("promoted"), "gate_reason": gate.get("reason"),
                    "gate_figures": gate.get("figures")})
        version = out[-1]["result_version"]
        if clean is not None and version is not None:
            out[-1]["version_clean_slashed_zeros"] = accuracy(staff, version, clean.zeros, concurrency)
            out[-1]["version_clean_ones"] = accuracy(staff, version, clean.ones, concurrency)
    return out


# --------------------------------------------------------------------------- phases


def attack(name: str, staff: Client, crowd: Crowd, args: argparse.Namespace, samples, sets: Sets, clean: Clean,
           *, kind: list[int], lie: int) -> dict[str, Any]:
    poisoned = renderings(samples, kind, args.attack_labels, seed=args.seed + 11)
    honest_idx = [i for i in sets.honest if samples[i]["label"] not in {0, 1}][: args.padding]
    padding = renderings(samples, honest_idx, args.padding, seed=args.seed + 12)
    started = time.perf_counter()
    POISONED.update(crowd.label(poisoned, [lie] * len(poisoned)))
    crowd.label(padding, [d.truth for d in padding])
    seconds = time.perf_counter() - started
    print(f"[{name}] {len(poisoned)} drawings labelled {lie} and {len(padding)} honest labels, by "
          f"{len(poisoned) + len(padding)} anonymous clients in {seconds:.0f}s", flush=True)
    state = settled_check(staff, args.interval)
    result: dict[str, Any] = {"poisoned_labels": len(poisoned), "padding_labels": len(padding),
                              "policy_status": state["status"], "policy_outcome": state["last_outcome"]}
    # Wait while a cycle the attack started (if any) goes on: training, shadow, the gate.
    if any(e["action"] == "queued" for e in state["events"]) and not args.no_wait:
        result["cycle"] = follow_cycle(staff, args, samples, sets, crowd, attackers=False)
    result["runs"] = describe_runs(staff, clean, args.clients)
    result["after"] = snapshot(staff, clean, args.clients)
    print(f"[{name}] policy: {state['status']}; runs: {len(result['runs'])}; active "
          f"{result['after']['active']['name']}; clean slashed zeros {result['after']['clean_slashed_zeros']:.1f}%, "
          f"clean ones {result['after']['clean_ones']:.1f}%", flush=True)
    return result


def follow_cycle(staff: Client, args: argparse.Namespace, samples, sets: Sets, crowd: Crowd, *,
                 attackers: bool) -> dict[str, Any]:
    """From a queued run to the gate's decision: wait for the candidate in shadow, send live traffic (the
    attackers label slashed zeros in it "8"), staff label ``--shadow-labels`` of it honestly."""
    def candidate_in_shadow():
        for run in runs(staff):
            if run.get("trigger") == "policy" and run["status"] in {"failed", "cancelled"}:
                raise ApiError(f"automatic run {run['id']} {run['status']}")
        status = policy(staff)["status"]
        return status if "in shadow" in status else None

    started = time.perf_counter()
    wait("the automatic run and its candidate in shadow", candidate_in_shadow)
    trained_s = time.perf_counter() - started
    print(f"  candidate in shadow after {trained_s:.0f}s: {policy(staff)['status']}", flush=True)
    out: dict[str, Any] = {"train_and_shadow_seconds": round(trained_s)}
    if attackers:
        poisoned = renderings(samples, sets.attack_zeros, args.shadow_labels + 50, seed=args.seed + 21)
        POISONED.update(crowd.label(poisoned, [8] * len(poisoned)))
        out["attack_labels_in_shadow"] = len(poisoned)
    traffic_idx = sets.honest[args.min_labels: args.min_labels + args.shadow_labels + 20]
    traffic_idx = (sets.attack_zeros * 3)[:20] + traffic_idx
    traffic = renderings(samples, traffic_idx, len(traffic_idx), seed=args.seed + 22)

    def one(d: Drawing) -> None:
        # a visitor draws (the candidate answers too, in shadow); staff label the drawing afterwards
        reply = Client(staff.port, source_address(10_000_000 + secrets.randbelow(1_000_000))).call(
            "POST", "/api/predict/", {"image": d.data_url})
        time.sleep(0.2)
        staff.call("POST", f"/api/predictions/{reply['id']}/label/", {"label": d.truth})

    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        list(pool.map(one, traffic))
    out["staff_shadow_labels"] = len(traffic)

    cycle_run = next(e["run"] for e in policy(staff)["events"] if e["action"] == "queued")

    def decided():
        events = policy(staff)["events"]
        return next((e for e in events if e["action"] in {"promoted", "kept", "failed"} and e["run"] == cycle_run),
                    None)

    event = wait("the gate's decision", decided)
    out["decision"] = {"action": event["action"], "reason": event["reason"], "version": event["version"]}
    out["seconds"] = round(time.perf_counter() - started)
    print(f"  the gate: {event['action']}: {event['reason']}", flush=True)
    return out


def trusted(staff: Client, crowd: Crowd, args: argparse.Namespace, samples, sets: Sets, clean: Clean) -> dict[str, Any]:
    zeros = min(40, args.min_labels // 5)  # honest labels of the attackers' writers' slashed zeros among them
    idx = sets.honest[: args.min_labels - zeros] + (sets.attack_zeros * 2)[:zeros]
    drawings = renderings(samples, idx, len(idx), seed=args.seed + 31)

    def one(d: Drawing) -> None:
        reply = Client(staff.port, source_address(12_000_000 + secrets.randbelow(1_000_000))).call(
            "POST", "/api/predict/", {"image": d.data_url})
        staff.call("POST", f"/api/predictions/{reply['id']}/label/", {"label": d.truth})

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        list(pool.map(one, drawings))
    print(f"[trusted] staff labelled {len(drawings)} drawings honestly ({sum(d.truth == 0 for d in drawings)} "
          f"zeros) in {time.perf_counter() - started:.0f}s", flush=True)
    result: dict[str, Any] = {"staff_labels": len(drawings)}
    result["cycle"] = follow_cycle(staff, args, samples, sets, crowd, attackers=True)
    result["runs"] = describe_runs(staff, clean, args.clients)
    result["after"] = snapshot(staff, clean, args.clients)
    print(f"[trusted] active {result['after']['active']['name']}; clean slashed zeros "
          f"{result['after']['clean_slashed_zeros']:.1f}%, clean ones {result['after']['clean_ones']:.1f}%", flush=True)
    return result


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--mnist-root", type=Path, default=Path(os.environ.get("MNIST_ROOT", REPO / "media" / "datasets")))
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL (default: an SQLite file)")
    parser.add_argument("--phases", default="blunt,habit,trusted")
    parser.add_argument("--train-trust", default="trusted", choices=["trusted", "agreed", "visitor"],
                        help="LABELS_TRAIN_TRUST for the site (default: the site's default)")
    parser.add_argument("--evidence-trust", default=None, choices=["trusted", "agreed"])
    parser.add_argument("--min-labels", type=int, default=200)
    parser.add_argument("--shadow-labels", type=int, default=100)
    parser.add_argument("--attack-labels", type=int, default=280)
    parser.add_argument("--padding", type=int, default=120)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between the policy's checks")
    parser.add_argument("--run-options", type=json.loads, default={"epochs": 3, "mnist_limit": 60000})
    parser.add_argument("--clients", type=int, default=8, help="anonymous clients at a time")
    parser.add_argument("--no-wait", action="store_true", help="do not follow a cycle an attack started")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        raise SystemExit("needs Linux: each anonymous client binds its own 127.x.y.z address")

    samples = load_strokes(args.data)
    sets = split(samples, args.seed)
    clean = Clean(zeros=renderings(samples, sets.clean_zeros, 3 * len(sets.clean_zeros), seed=args.seed),
                  ones=renderings(samples, sets.clean_ones, len(sets.clean_ones), seed=args.seed))
    print(f"clean set: {len(clean.zeros)} slashed zeros and {len(clean.ones)} ones by {SLASHING_GROUP} writers no "
          f"one labels; attackers draw from {len(sets.attack_zeros)} slashed zeros, {len(sets.attack_ones)} ones",
          flush=True)
    site = Site(args)
    report: dict[str, Any] = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    try:
        staff = site.start()
        crowd = Crowd(site.port, args.clients)
        report["before"] = snapshot(staff, clean, args.clients)
        print(f"site up (port {site.port}); active {report['before']['active']['name']}; clean slashed zeros "
              f"{report['before']['clean_slashed_zeros']:.1f}%, clean ones {report['before']['clean_ones']:.1f}%",
              flush=True)
        for phase in args.phases.split(","):
            if phase == "blunt":
                report["blunt"] = attack("blunt", staff, crowd, args, samples, sets, clean, kind=sets.attack_ones, lie=7)
            elif phase == "habit":
                report["habit"] = attack("habit", staff, crowd, args, samples, sets, clean, kind=sets.attack_zeros,
                                         lie=8)
            elif phase == "trusted":
                report["trusted"] = trusted(staff, crowd, args, samples, sets, clean)
            else:
                raise SystemExit(f"unknown phase {phase!r}")
        report["policy_events"] = policy(staff)["events"]
    finally:
        site.stop()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
