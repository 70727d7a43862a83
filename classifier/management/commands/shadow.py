"""``python manage.py shadow``: the process in which candidates in shadow answer live drawings.

With ``SHADOW_WORKER=process`` (the default when a broker is configured) the web processes do nothing
for the shadow; this process looks for the predictions stored since its last look every
``SHADOW_POLL_SECONDS`` and has every candidate in shadow answer the newest of them
(``classifier.shadow.process.ShadowPoller``). It runs at the kernel's idle CPU priority (``SCHED_IDLE`` on
Linux): it gets a CPU only when no web process, database or worker wants it, so under heavy traffic
it answers fewer drawings rather than take time from requests. One per deployment is enough; a
second one only answers the same drawings again (the answers are stored once).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from classifier.shadow.process import CpuGauge, ShadowPoller
from mnistsite.checks import require_migrated

log = logging.getLogger("classifier.shadow")


def lower_priority(priority: str) -> str:
    """Make this process (and the threads it starts later) yield the CPU: ``idle`` is the kernel's
    SCHED_IDLE policy, ``low`` niceness 19, ``normal`` leaves it. Returns what was applied."""
    if priority == "idle":
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return "idle (SCHED_IDLE)"
        except (AttributeError, OSError) as exc:  # not Linux, or not allowed: fall back to niceness
            log.warning("SCHED_IDLE not available (%s): using niceness 19", exc)
            priority = "low"
    if priority == "low":
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 19)
            return "low (niceness 19)"
        except (AttributeError, OSError) as exc:
            log.warning("could not lower the CPU priority: %s", exc)
    return "normal"


class Command(BaseCommand):
    help = (
        "Run the shadow evaluation process: candidates in shadow answer the drawings the active version "
        "answered, at the idle CPU priority (SHADOW_WORKER=process, the default with a broker)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--priority", choices=["idle", "low", "normal"], default="idle",
                            help="CPU priority: idle (SCHED_IDLE, default), low (niceness 19), normal")
        parser.add_argument("--poll-seconds", type=float, default=None,
                            help=f"seconds between looks (default SHADOW_POLL_SECONDS, {settings.SHADOW_POLL_SECONDS})")
        parser.add_argument("--batch-max", type=int, default=None,
                            help=f"newest drawings per look (default SHADOW_BATCH_MAX, {settings.SHADOW_BATCH_MAX})")
        parser.add_argument("--looks", type=int, default=0, help="stop after this many looks (default: run until stopped)")

    def handle(self, *args: Any, **opts: Any) -> None:
        require_migrated()  # migrations are a release step (`make release`)
        if settings.SHADOW_WORKER != "process":
            self.stderr.write(self.style.WARNING(
                "SHADOW_WORKER is 'thread': the web processes answer for the shadow themselves, so this process "
                "would answer the same drawings again. Set SHADOW_WORKER=process for the web processes and this one."))
        applied = lower_priority(opts["priority"])
        poll = opts["poll_seconds"] if opts["poll_seconds"] is not None else settings.SHADOW_POLL_SECONDS
        poller = ShadowPoller(batch_max=opts["batch_max"] or settings.SHADOW_BATCH_MAX)
        stopping = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.set())
        self.stdout.write(f"shadow process {os.getpid()}: CPU priority {applied}, a look every {poll:g} s, "
                          f"at most {poller.batch_max} drawings each, at most {100 * settings.SHADOW_CPU_SHARE:g}% "
                          f"of a core, none while the CPUs are over {100 * settings.SHADOW_MAX_BUSY:g}% busy")
        self.stdout.flush()
        share = min(1.0, max(0.001, settings.SHADOW_CPU_SHARE))
        gauge, skipped, failing = CpuGauge(), 0, False
        gauge.busy()
        while not stopping.is_set():
            started, cpu_started = time.monotonic(), time.process_time()
            busy = gauge.busy()
            if busy is not None and busy > settings.SHADOW_MAX_BUSY:
                skipped += 1  # the requests need the CPUs now: this look's drawings are left out
                if skipped % 60 == 1:
                    log.info("shadow process: CPUs %.0f%% busy (over SHADOW_MAX_BUSY %.0f%%): %s looks skipped so far",
                             100 * busy, 100 * settings.SHADOW_MAX_BUSY, skipped)
            else:
                try:
                    close_old_connections()
                    poller.poll()
                    if failing:
                        log.warning("shadow process: looking again after a failure")
                    failing = False
                except Exception:  # the database away for a while, a checkpoint gone: log once, keep looking
                    if not failing:
                        log.exception("shadow process: a look failed (trying again every %s s)", poll)
                    failing = True
                    close_old_connections()
            poller.heartbeat(skipped=skipped)
            if opts["looks"] and poller.looks + skipped >= opts["looks"]:
                break
            # The budget: at most SHADOW_CPU_SHARE of one core, whatever the traffic.
            used = time.process_time() - cpu_started
            stopping.wait(max(poll - (time.monotonic() - started), used * (1.0 / share - 1.0)))
        stats = poller.stats()
        self.stdout.write(f"shadow process {os.getpid()} stopping: {poller.looks} looks ({skipped} skipped, CPUs busy), "
                          f"{int(stats['answered'])} answers stored, {int(stats['failed'])} failed, "
                          f"{stats['cpu_ms']:.0f} ms of CPU")
