"""Downloading the MNIST archives from mirrors, checked before they are moved into place."""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from .checksums import MnistResource, _is_valid, _remember_digests
from .errors import ChecksumError, DataError, DownloadError
from .mnist import _resources, mnist_raw_dir

__all__ = ["DEFAULT_MIRRORS", "ProgressCallback", "download_mnist"]

#: The mirrors torchvision uses, tried in order.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

ProgressCallback = Callable[[str, int, int | None], None]
_USER_AGENT = "mnistsite-fetch/1.0 (+python-urllib)"
_DOWNLOAD_CHUNK = 256 * 1024


def download_mnist(
    root: str | os.PathLike[str],
    *,
    mirrors: list[str] | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 30,
    resources: Mapping[str, MnistResource] | None = None,
    on_file: Callable[[Path, bool], None] | None = None,
) -> list[Path]:
    """Fetch every archive not already present with a good checksum.

    Each file is tried on each mirror in turn, streamed into a temporary file next
    to its destination, checked (byte count against Content-Length, md5 and sha256)
    and only then moved into place, so no partial or corrupt file is ever left.

    ``progress(filename, bytes_so_far, total_or_None)`` is called as data arrives;
    ``on_file(path, downloaded)`` once each file is settled. Returns the paths that
    were downloaded. Raises :class:`DownloadError` when a file fails on every mirror.
    """
    table = _resources(resources)
    mirror_list = list(DEFAULT_MIRRORS if mirrors is None else mirrors)
    if not mirror_list:
        raise ValueError("at least one mirror is required")
    raw = mnist_raw_dir(root)
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {raw}: {exc}") from exc

    downloaded: list[Path] = []
    for name, resource in table.items():
        dest = raw / name
        if dest.is_file() and _is_valid(dest, resource):
            if on_file is not None:
                on_file(dest, False)
            continue
        _download_resource(resource, dest, mirror_list, progress=progress, timeout=timeout)
        downloaded.append(dest)
        if on_file is not None:
            on_file(dest, True)
    return downloaded


def _download_resource(
    resource: MnistResource,
    dest: Path,
    mirrors: list[str],
    *,
    progress: ProgressCallback | None,
    timeout: float,
) -> None:
    failures: list[tuple[str, str]] = []
    for mirror in mirrors:
        url = mirror if mirror.endswith("/") else mirror + "/"
        url += resource.filename
        try:
            _download_one(url, dest, resource, progress=progress, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            failures.append((url, f"HTTP {exc.code} {exc.reason}"))
        except urllib.error.URLError as exc:
            failures.append((url, str(exc.reason)))
        except (OSError, http.client.HTTPException, ValueError, DataError) as exc:
            failures.append((url, str(exc) or type(exc).__name__))
        else:
            return
    lines = "\n".join(f"  - {url}: {reason}" for url, reason in failures)
    raise DownloadError(
        f"could not download {resource.filename} from any mirror:\n{lines}", failures=failures
    )


def _download_one(
    url: str,
    dest: Path,
    resource: MnistResource,
    *,
    progress: ProgressCallback | None,
    timeout: float,
) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        md5 = hashlib.md5(usedforsecurity=False)
        sha256 = hashlib.sha256()
        received = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            total = _content_length(resp)
            if progress is not None:
                progress(resource.filename, 0, total)
            while chunk := resp.read(_DOWNLOAD_CHUNK):
                out.write(chunk)
                md5.update(chunk)
                sha256.update(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(resource.filename, received, total)
        if total is not None and received != total:
            raise DownloadError(
                f"incomplete download of {resource.filename}: received {received} bytes, "
                f"expected {total}"
            )
        if md5.hexdigest() != resource.md5.lower():
            raise ChecksumError(
                dest, algorithm="md5", expected=resource.md5, actual=md5.hexdigest()
            )
        if resource.sha256 and sha256.hexdigest() != resource.sha256.lower():
            raise ChecksumError(
                dest, algorithm="sha256", expected=resource.sha256, actual=sha256.hexdigest()
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _remember_digests(dest, (md5.hexdigest(), sha256.hexdigest()))


def _content_length(resp: object) -> int | None:
    headers = getattr(resp, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        length = int(value) if value is not None else None
    except ValueError:
        return None
    return length if length is not None and length >= 0 else None
