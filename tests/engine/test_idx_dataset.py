"""Writing IDX files and loading an MNIST-style dataset (zip or folder) with the engine's own reader."""
from __future__ import annotations

import gzip
import zipfile

import pytest
import torch

from engine.data import (
    IdxFormatError,
    MnistNotFoundError,
    idx_bytes,
    load_idx_dataset,
    parse_idx,
    read_idx,
    write_idx,
)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.float32, torch.float64])
def test_write_then_read_gives_the_same_tensor(tmp_path, dtype):
    tensor = (torch.arange(2 * 3 * 4) - 7).to(dtype).view(2, 3, 4)
    if dtype == torch.uint8:
        tensor = torch.arange(24, dtype=torch.uint8).view(2, 3, 4)
    for compress in (False, True):
        path = write_idx(tmp_path / f"t-{compress}", tensor, compress=compress)
        back = read_idx(path)
        assert back.dtype == dtype and torch.equal(back, tensor)


def test_the_header_is_mnists():
    data = idx_bytes(torch.zeros((5, 28, 28), dtype=torch.uint8))
    assert data[:4] == b"\x00\x00\x08\x03" and data[4:16] == (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    assert len(data) == 16 + 5 * 784
    assert idx_bytes(torch.tensor([1, 2], dtype=torch.uint8)) == b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02"
    with pytest.raises(IdxFormatError):
        idx_bytes(torch.zeros(3, dtype=torch.bool))
    assert parse_idx(gzip.compress(data)).shape == (5, 28, 28)


def test_load_idx_dataset_from_a_zip_or_a_folder(tmp_path):
    images = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 9], dtype=torch.uint8)
    folder = tmp_path / "set"
    folder.mkdir()
    write_idx(folder / "images-idx3-ubyte", images)
    write_idx(folder / "labels-idx1-ubyte.gz", labels, compress=True)
    split = load_idx_dataset(folder)
    assert torch.equal(split.images, images) and split.labels.dtype == torch.int64
    assert split.labels.tolist() == labels.tolist() and len(split) == 7

    path = tmp_path / "set.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("anything/images-idx3-ubyte", idx_bytes(images))
        archive.writestr("anything/labels-idx1-ubyte", idx_bytes(labels))
    images_back, labels_back = load_idx_dataset(path).tensors
    assert torch.equal(images_back, images) and labels_back.tolist() == labels.tolist()


def test_load_idx_dataset_refuses_what_is_not_one(tmp_path):
    with pytest.raises(MnistNotFoundError):
        load_idx_dataset(tmp_path / "missing.zip")
    with pytest.raises(MnistNotFoundError):
        load_idx_dataset(tmp_path)  # a folder without the files
    (tmp_path / "junk.zip").write_bytes(b"junk")
    with pytest.raises(IdxFormatError):
        load_idx_dataset(tmp_path / "junk.zip")
    folder = tmp_path / "bad"
    folder.mkdir()
    write_idx(folder / "images-idx3-ubyte", torch.zeros((2, 28, 28), dtype=torch.uint8))
    write_idx(folder / "labels-idx1-ubyte", torch.tensor([1, 12], dtype=torch.uint8))
    with pytest.raises(IdxFormatError, match="outside 0..9"):
        load_idx_dataset(folder)
    write_idx(folder / "labels-idx1-ubyte", torch.tensor([1], dtype=torch.uint8))
    with pytest.raises(IdxFormatError, match="2 images but 1 labels"):
        load_idx_dataset(folder)
