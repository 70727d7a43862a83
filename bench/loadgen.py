"""A small keep-alive HTTP/1.1 load generator for loopback benchmarks (bounded in requests and time).

Each of ``concurrency`` connections sends the same pre-built request, waits for the whole response,
and records the latency. Plain asyncio sockets keep the client's own CPU cost low.
"""
from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    server_cpu_s: float | None = None  # the server's processes' CPU time during the run, where measured

    @property
    def cpu_ms_per_request(self) -> float | None:
        return self.server_cpu_s / self.requests * 1000 if self.server_cpu_s is not None and self.requests else None

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        data = sorted(self.latencies_ms)
        if not data:
            return float("nan")
        index = min(len(data) - 1, max(0, int(round(q / 100 * len(data) + 0.5)) - 1))
        return data[index]

    def summary(self) -> dict[str, float]:
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "throughput_rps": round(self.throughput, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p90_ms": round(self.percentile(90), 2),
            "p99_ms": round(self.percentile(99), 2),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 2) if self.latencies_ms else float("nan"),
            "server_cpu_ms_per_request": (round(self.cpu_ms_per_request, 3) if self.cpu_ms_per_request is not None
                                          else float("nan")),
        }


def build_request(url: str, body: bytes, content_type: str = "application/json") -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise ValueError("load tests only target this machine (127.0.0.1 / localhost)")
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    return host, port, head + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    keep_alive = not head.startswith(b"HTTP/1.0")
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection":
            keep_alive = value.strip().lower() != b"close"
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, keep_alive


async def _worker(host, port, payload, deadline, budget, latencies, errors):
    writer = None
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            start = time.perf_counter()
            if writer is None:  # (re)connect, as a client must when the server closes: counted in latency
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(payload)
            status, keep_alive = await _read_response(reader)
            latencies.append((time.perf_counter() - start) * 1000)
            if status != 200:
                errors[0] += 1
            if not keep_alive:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


async def _run(url, body, concurrency, max_requests, max_seconds) -> LoadResult:
    host, port, payload = build_request(url, body)
    latencies: list[float] = []
    errors = [0]
    budget = [max_requests]
    start = time.perf_counter()
    await asyncio.gather(*(
        _worker(host, port, payload, start + max_seconds, budget, latencies, errors) for _ in range(concurrency)
    ))
    return LoadResult(concurrency, len(latencies), errors[0], time.perf_counter() - start, latencies)


def run_load(url: str, body: bytes, *, concurrency: int, max_requests: int, max_seconds: float,
             server_pid: int | None = None) -> LoadResult:
    """Run the load; with ``server_pid``, also the CPU time that process and its children spent meanwhile."""
    before = cpu_seconds(server_pid, children=True) if server_pid else None
    result = asyncio.run(_run(url, body, concurrency, max_requests, max_seconds))
    if before is not None:
        result.server_cpu_s = cpu_seconds(server_pid, children=True) - before
    return result


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU time of a process (and, with ``children``, of every process under it), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total, pids = 0.0, [pid]
    while pids:
        current = pids.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            if children:
                for task in Path(f"/proc/{current}/task").iterdir():
                    pids += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total
