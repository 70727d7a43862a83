import io
import os
import pickle

import pytest
import torch

from engine.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    sha256_of,
)
from engine.nets import build_model


@pytest.fixture
def small_checkpoint():
    torch.manual_seed(0)
    model = build_model("cnn", {"widths": [4, 8, 16]})
    return model, make_checkpoint(
        model=model,
        arch="cnn",
        config={"widths": [4, 8, 16], "dropout": 0.2},
        metrics={"test_accuracy": 0.5, "confusion_matrix": [[0] * 10] * 10},
        preprocessing="mnist-com-20px/1",
        training={"epochs": 1},
        data_fingerprint="mnist:abc",
    )


def test_round_trip_gives_the_same_function(tmp_path, small_checkpoint):
    model, ckpt = small_checkpoint
    path = tmp_path / "m.pt"
    digest = save_checkpoint(path, ckpt)
    assert digest == sha256_of(path)
    loaded = load_checkpoint(path, sha256=digest)
    assert loaded["format_version"] == FORMAT_VERSION
    assert loaded["arch"] == "cnn"
    assert loaded["metrics"]["test_accuracy"] == 0.5
    assert loaded["data_fingerprint"] == "mnist:abc"
    assert loaded["created_at"]
    rebuilt = model_from_checkpoint(loaded)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), rebuilt(x))


def test_loads_from_bytes_and_file_objects(tmp_path, small_checkpoint):
    _, ckpt = small_checkpoint
    path = tmp_path / "m.pt"
    save_checkpoint(path, ckpt)
    data = path.read_bytes()
    assert load_checkpoint(data)["arch"] == "cnn"
    assert load_checkpoint(io.BytesIO(data))["arch"] == "cnn"


def test_sha256_mismatch_is_refused(tmp_path, small_checkpoint):
    _, ckpt = small_checkpoint
    path = tmp_path / "m.pt"
    save_checkpoint(path, ckpt)
    with pytest.raises(CheckpointError, match="integrity check"):
        load_checkpoint(path, sha256="0" * 64)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/should-not-exist-mnistsite",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_code_running_pickle_is_refused_and_never_runs(tmp_path):
    marker = "/tmp/should-not-exist-mnistsite"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pt"
    torch.save({"format": "mnistsite.checkpoint", "payload": _RunsCode()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not os.path.exists(marker)
    # a raw pickle stream (not torch's zip format) is refused as well
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not os.path.exists(marker)


@pytest.mark.parametrize("payload", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_garbage_is_refused(tmp_path, payload):
    path = tmp_path / "junk.pt"
    path.write_bytes(payload)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_plain_state_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(build_model("logreg").state_dict(), path)
    with pytest.raises(CheckpointError, match="not an mnistsite checkpoint"):
        load_checkpoint(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_unknown_architecture_is_refused(tmp_path, small_checkpoint):
    _, ckpt = small_checkpoint
    save_checkpoint(tmp_path / "x.pt", {**ckpt, "arch": "transformer"})
    with pytest.raises(CheckpointError, match="unknown architecture 'transformer'"):
        model_from_checkpoint(load_checkpoint(tmp_path / "x.pt"))


def test_weights_of_another_architecture_are_refused(tmp_path, small_checkpoint):
    _, ckpt = small_checkpoint
    # cnn weights labelled as lenet5, and cnn weights with a different width config
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_checkpoint({**ckpt, "arch": "lenet5", "config": {}})
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_checkpoint({**ckpt, "config": {"widths": [8, 8, 16]}})


def test_newer_format_version_is_refused(tmp_path, small_checkpoint):
    _, ckpt = small_checkpoint
    with pytest.raises(CheckpointError, match="format version"):
        save_checkpoint(tmp_path / "x.pt", {**ckpt, "format_version": FORMAT_VERSION + 1})


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, small_checkpoint, monkeypatch):
    _, ckpt = small_checkpoint
    path = tmp_path / "m.pt"
    save_checkpoint(path, ckpt)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        save_checkpoint(path, {**ckpt, "data_fingerprint": "other"})
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temp file left
