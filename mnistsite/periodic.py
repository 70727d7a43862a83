"""A daemon thread that calls a function now and then every N seconds, at most one per process."""
from __future__ import annotations

import threading
from collections.abc import Callable


class PeriodicThread:
    """``start(every)`` runs ``job`` at once and then every ``every`` seconds until ``stop()``."""

    def __init__(self, job: Callable[[], object], *, name: str) -> None:
        self.job = job
        self.name = name
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self, every: float) -> bool:
        """Start the thread unless it runs already or ``every`` is not positive; whether it was started."""
        if every <= 0:
            return False
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, args=(every,), name=self.name, daemon=True)
            self._thread.start()
        return True

    def stop(self, timeout: float) -> None:
        """Stop the thread and wait up to ``timeout`` seconds for it (tests; an exiting process needs nothing)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None:
            thread.join(timeout)

    def _run(self, every: float) -> None:
        self.job()
        while not self._stop.wait(every):
            self.job()
