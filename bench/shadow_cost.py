"""What one candidate in shadow costs ``POST /api/predict/``: the same site, the same run, shadow off and on.

Starts the site as ``bench/predict_api.py`` does (``python -m mnistsite.serve http``: Granian, WSGI,
``--workers`` processes, a fresh database and media folder, every prediction stored) and registers a
candidate that costs as much as a retrained flagship: the shipped cnn's weights as a new version
(``--candidate cnn``), or a shipped version by name. Then ``--rounds`` times, alternately with no
candidate in shadow and with that one in shadow (``classifier.shadow``, as staff would put it there):
concurrency 1 and concurrency 16, bounded in requests and seconds, after a warm-up. Prints each
round, the medians, and the median of each round's own on-minus-off difference (the halves of a round
run back to back, in alternating order, so drift between rounds cancels) against the targets (p50 at 1
up by at most 0.5 ms, throughput at 16 down by at most 10%), and how many of the drawings answered
while in shadow got a shadow answer (under heavy traffic the shadow answers a sample:
``SHADOW_CPU_SHARE``).

Where the shadow runs is the site's own setting (``SHADOW_WORKER``): with a broker configured
(``REDIS_URL``, the production layout) a process of its own, started here as the README tells
operators to (``python manage.py shadow``, at the idle CPU priority) for the whole run; otherwise a
thread in each web process. ``--shadow-worker`` chooses explicitly.

Wall-clock figures on a machine other work is loading swing by more than the half millisecond in
question, so the CPU time is measured too. With the shadow process: its CPU time (from /proc) per
shadow answer and, in the concurrency-16 halves with the candidate in shadow, as a share of the web
processes' CPU time. With the thread (after the server stopped, in one process through Django's test
client): the request thread's CPU time per predict without and with the candidate in shadow, and the
shadow worker thread's CPU time per drawing; when the CPUs are the limit (concurrency 16), the share
of the worker's time is the throughput the shadow takes.

    python bench/shadow_cost.py [--workers 2] [--rounds 9] [--requests 1000] [--seconds 10]
                                [--candidate cnn|lenet5|mlp|logreg] [--database-url URL] [--cpu-requests 500]
                                [--shadow-worker process|thread] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.loadgen import LoadResult, cpu_seconds, run_load  # noqa: E402
from bench.predict_api import drawing, fresh_database, migrate_site, server_command, site_env  # noqa: E402
from tests.support.drawings import encode  # noqa: E402
from tests.support.processes import free_port, stop, wait_for_port  # noqa: E402

TARGETS = {"c1_p50_ms_increase": 0.5, "c16_throughput_drop": 0.10}

# Run by ``manage.py shell`` in the benchmark's database: register the candidate, move it in and out
# of shadow, count the shadow answers.
REGISTER = """
from pathlib import Path
from engine.checkpoint import load_checkpoint, save_checkpoint
from classifier.lifecycle import model_version_register_file
from classifier.models import ModelVersion
name, folder = {name!r}, Path({folder!r})
if name == "cnn":  # the flagship's weights as a new candidate: as costly as a retrained cnn
    checkpoint = load_checkpoint(Path("training/shipped/cnn.pt"))
    checkpoint["created_at"] = "shadow benchmark copy"
    save_checkpoint(folder / "cnn-candidate.pt", checkpoint)
    version = model_version_register_file(path=folder / "cnn-candidate.pt", name="cnn-shadow-bench")
else:
    version = ModelVersion.objects.filter(name=name, status="candidate").order_by("-version").first()
print("VERSION", version.pk, version.arch, version.label)
"""
TOGGLE = """
from classifier.models import ModelVersion, Prediction, ShadowPrediction
from classifier.shadow import shadow_start, shadow_stop
version = ModelVersion.objects.get(pk={pk})
if {on} and not version.in_shadow:
    shadow_start(version=version, reason="shadow benchmark")
elif not {on} and version.in_shadow:
    shadow_stop(version=version, reason="shadow benchmark")
print("COUNTS", Prediction.objects.count(), ShadowPrediction.objects.filter(version=version).count())
"""
# CPU time, which other load on the machine barely changes: the request path's (this thread's, per
# request through Django's test client) without and with the candidate in shadow, and the shadow
# worker's per drawing (its own thread's).
CPU = """
import time
from pathlib import Path
from django.test import Client
from classifier import shadow
from classifier.models import ModelVersion
body, n = Path({body!r}).read_bytes(), {n}
version = ModelVersion.objects.get(pk={pk})
client = Client()
def per_request(count):
    started = time.thread_time()
    for _ in range(count):
        assert client.post("/api/predict/", body, content_type="application/json").status_code == 200
    return (time.thread_time() - started) * 1000 / count
worker = shadow.shadow_worker()
per_request(30)
shadow.shadow_start(version=version, reason="shadow benchmark (CPU)")
per_request(30)  # the candidate loaded
worker.join(120)
shadow.shadow_stop(version=version, reason="shadow benchmark (CPU)")
clock = time.pthread_getcpuclockid(worker._thread.ident)  # the worker thread's CPU clock, batch in flight included
off = on = during = 0.0
answered = batches = cpu = 0
for _ in range(4):  # alternated, so that a change in the machine's other load touches both alike
    off += per_request(n // 4) / 4
    shadow.shadow_start(version=version, reason="shadow benchmark (CPU)")
    before, started = worker.stats(), time.clock_gettime(clock)
    on += per_request(n // 4) / 4
    during += (time.clock_gettime(clock) - started) * 1000  # while requests ran flat out, as at concurrency 16
    worker.join(120)
    after = worker.stats()
    shadow.shadow_stop(version=version, reason="shadow benchmark (CPU)")
    answered += after["answered"] - before["answered"]
    batches += after["batches"] - before["batches"]
    cpu += after["cpu_ms"] - before["cpu_ms"]
print("CPU", off, on, cpu / max(answered, 1), answered, batches, worker.stats()["dropped"], during / (on * 4 * (n // 4)))
"""


def shell(env: dict[str, str], code: str) -> list[str]:
    out = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1].split()


class CpuAccount:
    """The shadow process's and the web processes' CPU time during the concurrency-16 halves in shadow."""

    def __init__(self, site: int, shadow: int | None) -> None:
        self.site, self.shadow = site, shadow
        self.web = self.shadow_cpu = self.shadow_total = self.shadow_start = 0.0

    def measure(self, url: str, body: bytes, args: argparse.Namespace, on: bool) -> dict[str, LoadResult]:
        run_load(url, body, concurrency=4, max_requests=100, max_seconds=10)  # warm-up (and the candidate loaded)
        results = {"c1": run_load(url, body, concurrency=1, max_requests=args.requests, max_seconds=args.seconds)}
        web, shadow = cpu_seconds(self.site, children=True), cpu_seconds(self.shadow) if self.shadow else 0.0
        results["c16"] = run_load(url, body, concurrency=16, max_requests=args.requests * 2, max_seconds=args.seconds)
        if on and self.shadow:
            self.web += cpu_seconds(self.site, children=True) - web
            self.shadow_cpu += cpu_seconds(self.shadow) - shadow
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9,
                        help="off/on pairs, alternated; medians of the levels and of the paired differences")
    parser.add_argument("--requests", type=int, default=1000, help="per run at concurrency 1 (x2 at 16)")
    parser.add_argument("--seconds", type=float, default=10.0, help="time bound per run")
    parser.add_argument("--candidate", default="cnn", help="cnn (a copy of the flagship), or a shipped candidate")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL (default: a fresh SQLite file)")
    parser.add_argument("--cpu-requests", type=int, default=500,
                        help="thread mode: requests per CPU-time measurement (0: none)")
    parser.add_argument("--shadow-worker", choices=["process", "thread"], default=None,
                        help="where the shadow runs (default: the site's own choice, process with a broker)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    body = json.dumps({"image": encode(drawing(None))}).encode()
    tmp = Path(tempfile.mkdtemp(prefix="mnistsite-bench-shadow-"))
    database_url, drop_database = fresh_database(args.database_url, tmp)
    env = site_env(database_url, tmp, **({"SHADOW_WORKER": args.shadow_worker} if args.shadow_worker else {}))
    args.shadow_worker = shell(env, "from django.conf import settings; print(settings.SHADOW_WORKER)")[0]
    migrate_site(env, tmp)
    _, pk, arch, *name = shell(env, REGISTER.format(name=args.candidate, folder=str(tmp)))
    label = " ".join(name)

    rounds: list[dict[str, dict[str, LoadResult]]] = []
    shadowed = answered_in_shadow = 0
    port = free_port()
    site = subprocess.Popen(server_command("production", port, args.workers), cwd=REPO, env=env)
    shadow = None
    if args.shadow_worker == "process":  # as `make shadow` and deploy/mnistsite-shadow.service start it
        shadow = subprocess.Popen([sys.executable, "manage.py", "shadow"], cwd=REPO, env=env)
    account = CpuAccount(site.pid, shadow.pid if shadow else None)
    url = f"http://127.0.0.1:{port}/api/predict/"
    try:
        wait_for_port(port, site, timeout=60, name="site")
        if shadow is not None:
            time.sleep(3)  # its start-up (Django, torch) is not the shadow's cost
            account.shadow_start = cpu_seconds(shadow.pid)
        for number in range(args.rounds):
            results = {}
            for on in (False, True) if number % 2 == 0 else (True, False):
                _, predictions, shadow_answers = shell(env, TOGGLE.format(pk=pk, on=on))
                time.sleep(1.5)  # every process re-reads who is in shadow within MODEL_REFRESH_SECONDS
                results["on" if on else "off"] = account.measure(url, body, args, on)
                if on:
                    time.sleep(2)  # let the shadow finish what is queued before counting
                    _, after, after_shadow = shell(env, TOGGLE.format(pk=pk, on=True))
                    answered_in_shadow += int(after) - int(predictions)
                    shadowed += int(after_shadow) - int(shadow_answers)
            rounds.append(results)
            print_round(number + 1, results)
        shell(env, TOGGLE.format(pk=pk, on=False))
        if shadow is not None:
            assert shadow.poll() is None, "the shadow process stopped"
            account.shadow_total = cpu_seconds(shadow.pid) - account.shadow_start
    finally:
        stop(site, timeout=30)
        if shadow is not None:
            stop(shadow, timeout=30)
    cpu = None
    try:
        if args.cpu_requests and args.shadow_worker == "thread":
            (tmp / "body.json").write_bytes(body)
            cpu = [float(x) for x in shell({**env, "ALLOWED_HOSTS": "testserver"}, CPU.format(
                body=str(tmp / "body.json"), n=args.cpu_requests, pk=pk))[1:]]
    finally:
        drop_database()
    summary = report(args, label, arch, rounds, shadowed, answered_in_shadow, cpu,
                     account if shadow is not None else None)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


def print_round(number: int, results: dict[str, dict[str, LoadResult]]) -> None:
    for state in ("off", "on"):
        for conc, result in results[state].items():
            s = result.summary()
            print(f"round {number} shadow {state:3} {conc:>3}: {s['requests']:>5} requests, {s['errors']} errors, "
                  f"{s['throughput_rps']:7.0f}/s, p50 {s['p50_ms']:6.2f} ms, p99 {s['p99_ms']:6.2f} ms", flush=True)


def report(args, label, arch, rounds, shadowed, answered_in_shadow, cpu, account) -> dict:
    def median(state: str, conc: str, what: str) -> float:
        values = [r[state][conc].percentile(50) if what == "p50" else r[state][conc].throughput for r in rounds]
        return statistics.median(values)

    p50_off, p50_on = median("off", "c1", "p50"), median("on", "c1", "p50")
    rps_off, rps_on = median("off", "c16", "rps"), median("on", "c16", "rps")
    # The verdict reads the median of each round's own difference: the two halves of a round ran back
    # to back (in alternating order), so a machine that drifts between rounds cancels out of it.
    increase = statistics.median(r["on"]["c1"].percentile(50) - r["off"]["c1"].percentile(50) for r in rounds)
    drop = statistics.median((r["off"]["c16"].throughput - r["on"]["c16"].throughput) / r["off"]["c16"].throughput
                             for r in rounds)
    errors = sum(r[s][c].errors for r in rounds for s in r for c in r[s])
    print(f"\nPOST /api/predict/, {args.workers} worker processes, "
          f"{'PostgreSQL' if args.database_url else 'SQLite'}; candidate in shadow: {label} ({arch}), "
          f"answering in {'a process of its own' if args.shadow_worker == 'process' else 'a thread of each web process'}; "
          f"medians of {len(rounds)} rounds")
    print(f"  concurrency 1,  p50:        off {p50_off:6.2f} ms   on {p50_on:6.2f} ms   paired difference {increase:+.2f} ms "
          f"(target <= +{TARGETS['c1_p50_ms_increase']} ms: {'met' if increase <= TARGETS['c1_p50_ms_increase'] else 'MISSED'})")
    print(f"  concurrency 16, throughput: off {rps_off:6.0f}/s    on {rps_on:6.0f}/s    paired change {-100 * drop:+.1f}% "
          f"(target >= -{100 * TARGETS['c16_throughput_drop']:.0f}%: {'met' if drop <= TARGETS['c16_throughput_drop'] else 'MISSED'})")
    left_out = ("the rest left out: each look takes the newest SHADOW_BATCH_MAX, at idle CPU priority"
                if account else "the rest dropped: SHADOW_CPU_SHARE and a full queue")
    print(f"  shadow answers: {shadowed} for the {answered_in_shadow} drawings answered while in shadow "
          f"({left_out}); errors: {errors}")
    process_cpu = None
    if account:
        process_cpu = {"shadow_s_c16_on": account.shadow_cpu, "web_s_c16_on": account.web,
                       "shadow_s_total": account.shadow_total,
                       "shadow_ms_per_answer": 1000 * account.shadow_total / max(shadowed, 1)}
        print(f"  CPU time (/proc): the shadow process {process_cpu['shadow_ms_per_answer']:.2f} ms per answer "
              f"({account.shadow_total:.1f} s in all over the rounds, idle looks included); in the concurrency-16 "
              f"halves in shadow it used {account.shadow_cpu:.2f} s against the web processes' {account.web:.1f} s "
              f"({100 * account.shadow_cpu / max(account.web, 1e-9):.2f}%)")
    if cpu:
        off, on, shadow_ms, answered, batches, dropped, ratio = cpu
        share = ratio / (1 + ratio)
        print(f"  CPU time (thread CPU time, {args.cpu_requests} requests each way, alternated): request path "
              f"{off:.2f} ms per request without shadow, {on:.2f} ms with ({on - off:+.3f} ms); shadow worker "
              f"{shadow_ms:.2f} ms per drawing it answered ({int(answered)} of {args.cpu_requests} in {int(batches)} "
              f"batches, {int(dropped)} dropped). While requests ran flat out it used {100 * ratio:.1f}% of their "
              f"CPU time (SHADOW_CPU_SHARE), so when the CPUs are the limit throughput falls by about "
              f"{100 * share:.1f}% (target <= "
              f"{100 * TARGETS['c16_throughput_drop']:.0f}%: {'met' if share <= TARGETS['c16_throughput_drop'] else 'MISSED'})")
    return {
        "shadow_worker": args.shadow_worker, "shadow_process_cpu": process_cpu,
        "cpu_ms_per_drawing": None if not cpu else {
            "request_off": cpu[0], "request_on": cpu[1], "shadow_worker": cpu[2], "answered": cpu[3],
            "shadow_share_of_request_cpu": cpu[6]},
        "candidate": label, "workers": args.workers, "rounds": [
            {state: {conc: res.summary() for conc, res in r[state].items()} for state in r} for r in rounds],
        "c1_p50_ms": {"off": p50_off, "on": p50_on, "increase": increase, "increase_of_medians": p50_on - p50_off},
        "c16_rps": {"off": rps_off, "on": rps_on, "drop": drop, "drop_of_medians": (rps_off - rps_on) / rps_off},
        "shadow_answers": shadowed, "answered_in_shadow": answered_in_shadow, "errors": errors,
    }


if __name__ == "__main__":
    main()
