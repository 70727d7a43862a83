import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

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


# ------------------------------------------------------------------ bounds and finite values


def checkpoint_bytes(checkpoint: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)  # not save_checkpoint: these files are hostile
    return buffer.getvalue()


def test_a_network_beyond_a_runs_bounds_is_refused_before_it_is_built(tmp_path, small_checkpoint):
    """The review's file: 254 KB whose config says cnn widths [4096, 4096, 4096] built a 2 GB model before
    its weights were found not to fit. Measured in a fresh process: its peak memory stays near torch's own."""
    _, ckpt = small_checkpoint
    path = tmp_path / "wide.pt"
    path.write_bytes(checkpoint_bytes({**ckpt, "config": {"widths": [4096, 4096, 4096], "dropout": 0.2}}))
    assert path.stat().st_size < 300_000
    script = (  # VmHWM: this process's own peak (ru_maxrss would carry the test process's over fork and exec)
        "import sys\n"
        "from engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint\n"
        "def peak_kb():\n"
        "    return next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
        "before = peak_kb()\n"
        "try:\n"
        "    model_from_checkpoint(load_checkpoint(sys.argv[1]))\n"
        "except CheckpointError as exc:\n"
        "    print(exc)\n"
        "print((peak_kb() - before) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2], check=True).stdout.splitlines()
    message, grown_mb = out[0], int(out[-1])
    assert grown_mb < 200, f"{grown_mb} MB"  # the wide network is 453 M parameters, 1.8 GB of float32
    assert message == ("checkpoint describes a network of 453,423,114 parameters; at most 20,000,000 are allowed "
                       "(the bound on a training run's network)")


def test_weights_that_do_not_fit_the_config_are_named(small_checkpoint):
    _, ckpt = small_checkpoint
    state = {**ckpt["state_dict"], "classifier.2.weight": torch.zeros(10, 7), "extra": torch.zeros(1)}
    del state["features.1.weight"]
    with pytest.raises(CheckpointError) as caught:
        model_from_checkpoint({**ckpt, "state_dict": state})
    assert str(caught.value) == ("checkpoint weights do not fit architecture 'cnn': missing features.1.weight; "
                                 "unexpected extra; classifier.2.weight is [10, 7], not [10, 144]")


def test_a_huge_view_of_a_tiny_storage_is_refused_by_its_shape():
    """A tensor can be saved as a view (stride 0) of one number: a 12-byte file of 10^12 elements."""
    giant = torch.zeros(1).expand(1_000_000, 1_000_000)
    data = checkpoint_bytes({**make_checkpoint(model=build_model("logreg"), arch="logreg", config={}),
                             "state_dict": {"fc.weight": giant, "fc.bias": torch.zeros(10)}})
    assert len(data) < 10_000
    with pytest.raises(CheckpointError, match=r"holds 1,000,000,000,010 numbers; at most 40,000,000"):
        load_checkpoint(data)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_weights_must_be_finite(small_checkpoint, bad):
    _, ckpt = small_checkpoint
    weight = ckpt["state_dict"]["classifier.2.weight"].clone()
    weight[3, 5] = bad
    data = checkpoint_bytes({**ckpt, "state_dict": {**ckpt["state_dict"], "classifier.2.weight": weight}})
    with pytest.raises(CheckpointError, match=r"weight 'classifier.2.weight' holds NaN or infinite values"):
        load_checkpoint(data)


@pytest.mark.parametrize("field, value, message", [
    ("metrics", {"test_accuracy": float("nan")}, "metrics['test_accuracy'] is nan, not a finite number"),
    ("training", {"history": [{"loss": float("inf")}]}, "training['history'][0]['loss'] is inf, not a finite number"),
    ("metrics", {"test_accuracy": torch.tensor(0.5)}, "metrics['test_accuracy'] holds a Tensor; only plain values"),
    ("metrics", {1: 0.5}, "metrics has a key that is not a string (1)"),
    ("calibration", {"temperature": -float("inf")}, "calibration['temperature'] is -inf, not a finite number"),
])
def test_everything_beside_the_weights_is_plain_finite_data(small_checkpoint, field, value, message):
    _, ckpt = small_checkpoint
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(checkpoint_bytes({**ckpt, field: value}))
    assert str(caught.value).startswith(f"uploaded file: {message}")
