"""Downloading MNIST (download_mnist) and the fetch_mnist command, against a local server."""
from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.engine.test_data import gz_payloads, idx_bytes, make_fake_arrays, resources_for
from engine.data import mnist
from engine.data import (
    DownloadError,
    download_mnist,
    load_mnist,
    mnist_fingerprint,
    mnist_raw_dir,
)

NAMES = list(make_fake_arrays())


@dataclass
class Route:
    body: bytes
    status: int = 200
    content_length: int | None = None  # declared length; defaults to len(body)


@dataclass
class FakeMirrorServer:
    """Serves ``routes`` (URL path -> Route); anything else is a 404."""

    base: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def url(self, prefix: str) -> str:
        return f"{self.base}/{prefix}/"

    def serve(self, prefix: str, payloads: dict[str, bytes]) -> str:
        for name, blob in payloads.items():
            self.routes[f"/{prefix}/{name}"] = Route(blob)
        return self.url(prefix)


def _handler(server_state: FakeMirrorServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            server_state.requests.append(self.path)
            route = server_state.routes.get(self.path)
            if route is None:
                self.send_error(404, "Not Found")
                return
            length = route.content_length if route.content_length is not None else len(route.body)
            self.send_response(route.status)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(route.body)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


@pytest.fixture
def mirror_server():
    state = FakeMirrorServer(base="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def fake_payloads(monkeypatch) -> dict[str, bytes]:
    payloads = gz_payloads(make_fake_arrays())
    monkeypatch.setattr(mnist, "MNIST_RESOURCES", resources_for(payloads))
    return payloads


def leftovers(root: Path) -> list[str]:
    raw = mnist_raw_dir(root)
    return sorted(p.name for p in raw.iterdir()) if raw.is_dir() else []


# -------------------------------------------------------------------- download


def test_download_success(tmp_path, mirror_server, fake_payloads):
    url = mirror_server.serve("m", fake_payloads)
    events: list[tuple[str, int, int | None]] = []
    settled: list[tuple[str, bool]] = []
    root = tmp_path / "datasets"  # created on demand

    paths = download_mnist(
        root,
        mirrors=[url],
        progress=lambda name, done, total: events.append((name, done, total)),
        on_file=lambda path, downloaded: settled.append((path.name, downloaded)),
    )

    raw = mnist_raw_dir(root)
    assert paths == [raw / name for name in NAMES]
    assert leftovers(root) == sorted(NAMES)
    for name, blob in fake_payloads.items():
        assert (raw / name).read_bytes() == blob
        name_events = [e for e in events if e[0] == name]
        assert name_events[0] == (name, 0, len(blob))
        assert name_events[-1] == (name, len(blob), len(blob))
    assert settled == [(name, True) for name in NAMES]
    assert len(load_mnist(root, "train")) == 6
    assert len(load_mnist(root, "test")) == 4
    assert mnist_fingerprint(root).startswith("mnist:")


def test_download_skips_files_already_present(tmp_path, mirror_server, fake_payloads):
    url = mirror_server.serve("m", fake_payloads)
    download_mnist(tmp_path, mirrors=[url])
    mirror_server.requests.clear()

    settled: list[tuple[str, bool]] = []
    assert download_mnist(
        tmp_path, mirrors=[url], on_file=lambda p, d: settled.append((p.name, d))
    ) == []
    assert mirror_server.requests == []
    assert settled == [(name, False) for name in NAMES]


def test_download_fetches_only_missing_or_corrupt(tmp_path, mirror_server, fake_payloads):
    url = mirror_server.serve("m", fake_payloads)
    raw = mnist_raw_dir(tmp_path)
    raw.mkdir(parents=True)
    (raw / NAMES[0]).write_bytes(fake_payloads[NAMES[0]])
    (raw / NAMES[1]).write_bytes(b"corrupt")

    paths = download_mnist(tmp_path, mirrors=[url])

    assert [p.name for p in paths] == NAMES[1:]
    assert (raw / NAMES[1]).read_bytes() == fake_payloads[NAMES[1]]
    assert f"/m/{NAMES[0]}" not in mirror_server.requests


def test_download_bad_checksum_leaves_nothing(tmp_path, mirror_server, fake_payloads):
    url = mirror_server.serve("m", fake_payloads)
    name = "train-labels-idx1-ubyte.gz"
    bad = gzip.compress(idx_bytes(np.zeros((6,), dtype=np.uint8)), mtime=0)
    mirror_server.routes[f"/m/{name}"] = Route(bad)

    with pytest.raises(DownloadError) as info:
        download_mnist(tmp_path, mirrors=[url])

    message = str(info.value)
    assert name in message and "md5 mismatch" in message
    assert mnist.MNIST_RESOURCES[name].md5 in message
    assert name not in leftovers(tmp_path)
    assert not [n for n in leftovers(tmp_path) if n.endswith(".part")]
    # Files before the failing one were kept; it is retried next time.
    assert leftovers(tmp_path) == ["train-images-idx3-ubyte.gz"]


def test_download_partial_response_leaves_nothing(tmp_path, mirror_server, fake_payloads):
    name = "train-images-idx3-ubyte.gz"
    blob = fake_payloads[name]
    url = mirror_server.serve("m", fake_payloads)
    mirror_server.routes[f"/m/{name}"] = Route(blob[:-100], content_length=len(blob))

    with pytest.raises(DownloadError) as info:
        download_mnist(tmp_path, mirrors=[url])

    message = str(info.value)
    assert name in message
    assert f"received {len(blob) - 100} bytes, expected {len(blob)}" in message
    assert leftovers(tmp_path) == []


def test_download_falls_back_to_next_mirror(tmp_path, mirror_server, fake_payloads):
    good = mirror_server.serve("good", fake_payloads)
    missing = mirror_server.url("missing")  # every file 404s here

    paths = download_mnist(tmp_path, mirrors=[missing, good.rstrip("/")])

    assert len(paths) == 4
    assert f"/missing/{NAMES[0]}" in mirror_server.requests
    assert f"/good/{NAMES[0]}" in mirror_server.requests
    assert len(load_mnist(tmp_path, "test")) == 4


def test_download_all_mirrors_fail(tmp_path, mirror_server, fake_payloads):
    missing = mirror_server.url("missing")
    truncated = mirror_server.serve("short", fake_payloads)
    for name, blob in fake_payloads.items():
        mirror_server.routes[f"/short/{name}"] = Route(blob[:10], content_length=len(blob))

    with pytest.raises(DownloadError) as info:
        download_mnist(tmp_path, mirrors=[missing, truncated], timeout=5)

    err = info.value
    assert [url for url, _ in err.failures] == [missing + NAMES[0], truncated + NAMES[0]]
    message = str(err)
    assert "HTTP 404" in message and "incomplete download" in message
    assert missing in message and truncated in message
    assert leftovers(tmp_path) == []


def test_download_unreachable_mirror(tmp_path, mirror_server, fake_payloads):
    good = mirror_server.serve("m", fake_payloads)
    closed = "http://127.0.0.1:9/mnist/"  # discard port: nothing listens
    assert len(download_mnist(tmp_path, mirrors=[closed, good], timeout=5)) == 4


def test_download_from_file_url(tmp_path, fake_payloads):
    source = tmp_path / "source"
    source.mkdir()
    for name, blob in fake_payloads.items():
        (source / name).write_bytes(blob)
    root = tmp_path / "dest"
    assert len(download_mnist(root, mirrors=[source.as_uri() + "/"])) == 4
    assert len(load_mnist(root, "train")) == 6


def test_download_requires_a_mirror(tmp_path):
    with pytest.raises(ValueError):
        download_mnist(tmp_path, mirrors=[])


# --------------------------------------------------------------------- command


class Terminal(StringIO):
    """Captured output that says it is a terminal, as an interactive shell's stderr is."""

    def isatty(self) -> bool:
        return True


def run_fetch(*args: str, terminal: bool = False) -> tuple[str, str]:
    out, err = StringIO(), Terminal() if terminal else StringIO()
    call_command("fetch_mnist", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_command_downloads_then_skips(tmp_path, mirror_server, fake_payloads):
    url = mirror_server.serve("m", fake_payloads)

    out, err = run_fetch("--root", str(tmp_path), "--mirror", url, terminal=True)
    for name in NAMES:
        assert f"{name}: downloaded, md5 verified" in out
        assert name in err  # progress line
    assert "100%" in err
    assert str(mnist_raw_dir(tmp_path)) in out
    assert "train 6 images" in out and "test 4 images" in out

    out, _ = run_fetch("--root", str(tmp_path), "--mirror", url)
    for name in NAMES:
        assert f"{name}: ok (already present)" in out
    assert "train 6 images" in out


def test_command_draws_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path, mirror_server, fake_payloads):
    out, err = run_fetch("--root", str(tmp_path), "--mirror", mirror_server.serve("m", fake_payloads))
    assert out.count("downloaded, md5 verified") == 4
    assert err == ""  # pipes and CI logs get the result lines on stdout, not a redrawn bar


def test_command_repeated_mirror_option(tmp_path, mirror_server, fake_payloads):
    good = mirror_server.serve("good", fake_payloads)
    out, _ = run_fetch(
        "--root", str(tmp_path), "--mirror", mirror_server.url("nope"), "--mirror", good
    )
    assert out.count("downloaded, md5 verified") == 4
    assert f"/nope/{NAMES[0]}" in mirror_server.requests


def test_command_uses_settings_root(tmp_path, mirror_server, fake_payloads, settings):
    settings.MNIST_ROOT = tmp_path / "from-settings"
    url = mirror_server.serve("m", fake_payloads)
    out, _ = run_fetch("--mirror", url)
    assert str(mnist_raw_dir(settings.MNIST_ROOT)) in out
    assert len(load_mnist(settings.MNIST_ROOT, "train")) == 6


def test_command_failure_is_a_clean_command_error(tmp_path, mirror_server, fake_payloads):
    url = mirror_server.url("missing")
    with pytest.raises(CommandError) as info:
        run_fetch("--root", str(tmp_path), "--mirror", url)
    message = str(info.value)
    assert "could not download" in message
    assert "HTTP 404" in message and url in message
    assert leftovers(tmp_path) == []
