"""IDX parsing, MNIST loading, checksums and fingerprints (engine.data)."""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data import checksums, mnist
from engine.data import (
    ChecksumError,
    DataError,
    DownloadError,
    IdxFormatError,
    MnistNotFoundError,
    MnistResource,
    MnistSplit,
    load_mnist,
    mnist_available,
    mnist_fingerprint,
    mnist_raw_dir,
    read_idx,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

_IDX_CODES = {
    np.dtype("u1"): 0x08,
    np.dtype("i1"): 0x09,
    np.dtype("i2"): 0x0B,
    np.dtype("i4"): 0x0C,
    np.dtype("f4"): 0x0D,
    np.dtype("f8"): 0x0E,
}


# ----------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` as IDX (big-endian, as the format requires)."""
    code = _IDX_CODES[array.dtype.newbyteorder("=")]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    payload = idx_bytes(array)
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def make_fake_arrays(n_train: int = 6, n_test: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny MNIST-shaped arrays keyed by archive name."""
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, (n_train,), dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, (n_test,), dtype=np.uint8),
    }


def gz_payloads(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    return {name: gzip.compress(idx_bytes(a), mtime=0) for name, a in arrays.items()}


def resources_for(payloads: dict[str, bytes]) -> dict[str, MnistResource]:
    return {
        name: MnistResource(
            name,
            md5=hashlib.md5(blob).hexdigest(),
            sha256=hashlib.sha256(blob).hexdigest(),
        )
        for name, blob in payloads.items()
    }


def write_dataset(root: Path, payloads: dict[str, bytes]) -> Path:
    raw = mnist_raw_dir(root)
    raw.mkdir(parents=True, exist_ok=True)
    for name, blob in payloads.items():
        (raw / name).write_bytes(blob)
    return raw


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A tiny dataset on disk, with the expected checksums patched to match it."""
    arrays = make_fake_arrays()
    payloads = gz_payloads(arrays)
    monkeypatch.setattr(mnist, "MNIST_RESOURCES", resources_for(payloads))
    root = tmp_path / "datasets"
    write_dataset(root, payloads)
    return root, arrays


# -------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_uint8_images(tmp_path, suffix):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    path = write_idx(tmp_path / f"images-idx3-ubyte{suffix}", images)
    tensor = read_idx(path)
    assert tensor.dtype == torch.uint8
    assert tuple(tensor.shape) == (3, 4, 5)
    assert torch.equal(tensor, torch.from_numpy(images))


def test_read_idx_labels_and_str_path(tmp_path):
    labels = np.array([5, 0, 4, 1, 9], dtype=np.uint8)
    path = write_idx(tmp_path / "labels-idx1-ubyte.gz", labels)
    tensor = read_idx(str(path))
    assert tensor.tolist() == [5, 0, 4, 1, 9]


def test_read_idx_detects_gzip_by_content_not_name(tmp_path):
    labels = np.array([1, 2, 3], dtype=np.uint8)
    path = write_idx(tmp_path / "labels.idx", labels, compress=True)
    assert read_idx(path).tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    ("dtype", "torch_dtype"),
    [
        ("i1", torch.int8),
        ("i2", torch.int16),
        ("i4", torch.int32),
        ("f4", torch.float32),
        ("f8", torch.float64),
    ],
)
def test_read_idx_other_dtypes_are_big_endian(tmp_path, dtype, torch_dtype):
    values = np.array([[-3, 0, 7], [1000 if dtype != "i1" else 100, -1, 2]], dtype=dtype)
    if dtype.startswith("f"):
        values = values + np.array(0.25, dtype=dtype)
    path = write_idx(tmp_path / f"values-{dtype}.gz", values)
    tensor = read_idx(path)
    assert tensor.dtype == torch_dtype
    assert tensor.shape == (2, 3)
    assert torch.equal(tensor, torch.from_numpy(values.astype(values.dtype.newbyteorder("="))))


def test_read_idx_four_dims_and_scalar(tmp_path):
    cube = np.arange(2 * 3 * 2 * 2, dtype=np.int32).reshape(2, 3, 2, 2)
    assert torch.equal(read_idx(write_idx(tmp_path / "cube", cube)), torch.from_numpy(cube))
    scalar = np.array(42, dtype=np.int32)
    assert read_idx(write_idx(tmp_path / "scalar", scalar)).item() == 42


def test_read_idx_result_is_writable(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.zeros((2, 2), dtype=np.uint8))
    tensor = read_idx(path)
    tensor[0, 0] = 7  # would warn/fail on a read-only buffer
    assert tensor[0, 0] == 7


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(IdxFormatError, match="magic"):
        read_idx(path)


def test_read_idx_unknown_type_code(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x00\x00\x0a\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(IdxFormatError, match="magic"):
        read_idx(path)


def test_read_idx_truncated_data(tmp_path):
    blob = idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(blob[:-10]))
    with pytest.raises(IdxFormatError, match="truncated"):
        read_idx(path)


def test_read_idx_truncated_header(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">I", 4))  # 3 dims declared, 1 given
    with pytest.raises(IdxFormatError, match="truncated"):
        read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(IdxFormatError, match="truncated"):
        read_idx(path)


def test_read_idx_trailing_bytes(tmp_path):
    path = tmp_path / "long"
    path.write_bytes(idx_bytes(np.zeros((3,), dtype=np.uint8)) + b"\x00\x00")
    with pytest.raises(IdxFormatError, match="unexpected bytes"):
        read_idx(path)


def test_read_idx_corrupt_gzip(tmp_path):
    blob = gzip.compress(idx_bytes(np.zeros((100,), dtype=np.uint8)))
    path = tmp_path / "cut.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(IdxFormatError, match="gzip"):
        read_idx(path)


def test_idx_format_error_is_a_data_error():
    assert issubclass(IdxFormatError, DataError)
    assert issubclass(ChecksumError, DataError)
    assert issubclass(MnistNotFoundError, DataError)
    assert issubclass(DownloadError, DataError)


# ---------------------------------------------------------------------- loading


@pytest.mark.parametrize(
    ("split", "prefix"), [("train", "train"), ("test", "t10k")]
)
def test_load_mnist_fake(fake_mnist, split, prefix):
    root, arrays = fake_mnist
    loaded = load_mnist(root, split)
    assert isinstance(loaded, MnistSplit)
    images = arrays[f"{prefix}-images-idx3-ubyte.gz"]
    labels = arrays[f"{prefix}-labels-idx1-ubyte.gz"]
    assert len(loaded) == len(images)
    assert loaded.images.dtype == torch.uint8
    assert loaded.labels.dtype == torch.int64
    assert tuple(loaded.images.shape) == (len(images), 28, 28)
    assert torch.equal(loaded.images, torch.from_numpy(images))
    assert loaded.labels.tolist() == labels.tolist()


def test_mnist_split_is_frozen(fake_mnist):
    root, _ = fake_mnist
    loaded = load_mnist(root, "test")
    with pytest.raises(AttributeError):
        loaded.images = torch.zeros(1)  # type: ignore[misc]


def test_load_mnist_unknown_split(fake_mnist):
    root, _ = fake_mnist
    with pytest.raises(ValueError, match="split"):
        load_mnist(root, "validation")


def test_load_mnist_checksum_mismatch(fake_mnist):
    root, _ = fake_mnist
    path = mnist_raw_dir(root) / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((6,), dtype=np.uint8)), mtime=0))
    expected = mnist.MNIST_RESOURCES[path.name].md5
    actual = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(ChecksumError) as info:
        load_mnist(root, "train")
    message = str(info.value)
    assert path.name in message and expected in message and actual in message
    assert info.value.expected == expected and info.value.actual == actual
    # The other split is unaffected, and verification can be switched off.
    assert len(load_mnist(root, "test")) == 4
    assert load_mnist(root, "train", verify=False).labels.tolist() == [0] * 6


def test_load_mnist_sha256_mismatch(fake_mnist):
    root, _ = fake_mnist
    name = "t10k-images-idx3-ubyte.gz"
    good = mnist.MNIST_RESOURCES[name]
    table = dict(mnist.MNIST_RESOURCES)
    table[name] = MnistResource(name, md5=good.md5, sha256="0" * 64)
    with pytest.raises(ChecksumError, match="sha256"):
        load_mnist(root, "test", resources=table)


def test_load_mnist_missing_folder(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(MnistNotFoundError) as info:
        load_mnist(root, "train")
    message = str(info.value)
    assert "python manage.py fetch_mnist" in message
    assert "MNIST_ROOT" in message
    assert str(mnist_raw_dir(root)) in message


def test_load_mnist_missing_file(fake_mnist):
    root, _ = fake_mnist
    (mnist_raw_dir(root) / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MnistNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        load_mnist(root, "test")
    assert len(load_mnist(root, "train")) == 6


def _rewrite(root: Path, monkeypatch, arrays: dict[str, np.ndarray]) -> None:
    payloads = gz_payloads(arrays)
    monkeypatch.setattr(mnist, "MNIST_RESOURCES", resources_for(payloads))
    write_dataset(root, payloads)


def test_load_mnist_count_mismatch(fake_mnist, monkeypatch):
    root, arrays = fake_mnist
    arrays["train-labels-idx1-ubyte.gz"] = arrays["train-labels-idx1-ubyte.gz"][:5]
    _rewrite(root, monkeypatch, arrays)
    with pytest.raises(IdxFormatError, match="6 images but 5 labels"):
        load_mnist(root, "train")


def test_load_mnist_wrong_image_shape(fake_mnist, monkeypatch):
    root, arrays = fake_mnist
    arrays["t10k-images-idx3-ubyte.gz"] = np.zeros((4, 14, 14), dtype=np.uint8)
    _rewrite(root, monkeypatch, arrays)
    with pytest.raises(IdxFormatError, match=r"\[N, 28, 28\]"):
        load_mnist(root, "test")


def test_load_mnist_label_out_of_range(fake_mnist, monkeypatch):
    root, arrays = fake_mnist
    arrays["t10k-labels-idx1-ubyte.gz"] = np.array([1, 2, 10, 3], dtype=np.uint8)
    _rewrite(root, monkeypatch, arrays)
    with pytest.raises(IdxFormatError, match="outside 0..9"):
        load_mnist(root, "test")


def test_verification_is_cached_per_file_state(fake_mnist, monkeypatch):
    root, _ = fake_mnist
    calls: list[str] = []
    real = checksums._compute_digests

    def counting(path):
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(checksums, "_compute_digests", counting)
    load_mnist(root, "train")
    load_mnist(root, "train")
    load_mnist(root, "train")
    assert sorted(calls) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]

    # Touching a file (new mtime) makes it be hashed again.
    path = mnist_raw_dir(root) / "train-labels-idx1-ubyte.gz"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    calls.clear()
    load_mnist(root, "train")
    assert calls == ["train-labels-idx1-ubyte.gz"]


def test_mnist_available(fake_mnist, tmp_path):
    root, _ = fake_mnist
    assert mnist_available(root)
    assert mnist_available(root, verify=True)
    assert not mnist_available(tmp_path / "empty")
    (mnist_raw_dir(root) / "train-images-idx3-ubyte.gz").write_bytes(b"junk")
    assert mnist_available(root)  # present ...
    assert not mnist_available(root, verify=True)  # ... but not intact
    (mnist_raw_dir(root) / "train-images-idx3-ubyte.gz").unlink()
    assert not mnist_available(root)


def test_mnist_fingerprint(fake_mnist, tmp_path, monkeypatch):
    root, arrays = fake_mnist
    fp = mnist_fingerprint(root)
    assert fp.startswith("mnist:") and len(fp) == len("mnist:") + 12
    int(fp.removeprefix("mnist:"), 16)
    assert mnist_fingerprint(root) == fp

    # The same bytes elsewhere give the same fingerprint.
    copy = tmp_path / "copy"
    write_dataset(copy, gz_payloads(arrays))
    assert mnist_fingerprint(copy) == fp

    # Different data gives a different one.
    arrays["t10k-labels-idx1-ubyte.gz"] = (arrays["t10k-labels-idx1-ubyte.gz"] + 1) % 10
    _rewrite(copy, monkeypatch, arrays)
    assert mnist_fingerprint(copy) != fp

    with pytest.raises(MnistNotFoundError):
        mnist_fingerprint(tmp_path / "missing")


def test_resources_table_matches_known_digests():
    table = mnist.MNIST_RESOURCES
    assert set(table) == {
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    }
    assert table["train-images-idx3-ubyte.gz"].md5 == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert table["t10k-labels-idx1-ubyte.gz"].md5 == "ec29112dd5afa0611ce80d1b7f02629c"
    assert all(len(r.md5) == 32 and len(r.sha256 or "") == 64 for r in table.values())


def test_data_module_does_not_import_django():
    code = "import sys, engine.data; sys.exit(1 if 'django' in sys.modules else 0)"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr or "engine.data imported django"


# -------------------------------------------------------------------- real data


def _real_root() -> Path | None:
    value = os.environ.get("MNIST_ROOT")
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


@pytest.mark.slow
@pytest.mark.skipif(_real_root() is None, reason="MNIST_ROOT is not set")
def test_real_mnist():
    root = _real_root()
    assert mnist_available(root, verify=True)

    train = load_mnist(root, "train")
    assert len(train) == 60000
    assert train.images.dtype == torch.uint8
    assert tuple(train.images.shape) == (60000, 28, 28)
    assert train.labels.dtype == torch.int64
    assert int(train.labels.min()) == 0 and int(train.labels.max()) == 9
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]

    test = load_mnist(root, "test")
    assert len(test) == 10000
    assert tuple(test.images.shape) == (10000, 28, 28)
    assert set(test.labels.unique().tolist()) == set(range(10))

    fp = mnist_fingerprint(root)
    assert fp.startswith("mnist:") and len(fp) == 18
