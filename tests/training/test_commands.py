"""The management commands, end to end on the real data (skipped without MNIST_ROOT)."""
import io
import re

import pytest
import torch
from django.core.management import CommandError, call_command
from PIL import Image

from engine.checkpoint import load_checkpoint


def run(*args, **kwargs) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **kwargs)
    return out.getvalue()


@pytest.mark.slow
def test_evaluate_prints_test_accuracy_as_last_line(mnist_root, shipped_dir):
    output = run("evaluate", "--checkpoint", str(shipped_dir / "cnn.pt"), "--mnist-root", str(mnist_root))
    last = output.strip().splitlines()[-1]
    match = re.fullmatch(r"test accuracy: (\d+\.\d\d)% \(n=10000\)", last)
    assert match, last
    assert float(match[1]) >= 99.6


def test_evaluate_refuses_a_bad_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nonsense")
    with pytest.raises(CommandError, match="not a PyTorch checkpoint"):
        run("evaluate", "--checkpoint", str(bad))


def test_missing_mnist_gives_instructions_not_a_traceback(tmp_path):
    with pytest.raises(CommandError, match="fetch_mnist"):
        run("train", "--arch", "logreg", "--epochs", "1", "--mnist-root", str(tmp_path / "none"),
            "--out", str(tmp_path / "x.pt"))
    with pytest.raises(CommandError, match="fetch_mnist"):
        run("evaluate", "--mnist-root", str(tmp_path / "none"))


@pytest.mark.slow
def test_train_writes_a_loadable_checkpoint_and_plots(mnist_root, tmp_path):
    out = tmp_path / "logreg.pt"
    output = run("train", "--arch", "logreg", "--epochs", "1", "--seed", "3", "--out", str(out),
                 "--plots", str(tmp_path / "plots"), "--mnist-root", str(mnist_root))
    summary = [line for line in output.splitlines() if line.startswith("logreg: test accuracy")]
    assert summary, output
    checkpoint = load_checkpoint(out)
    assert checkpoint["training"]["seed"] == 3
    assert checkpoint["training"]["epochs"] == 1
    assert checkpoint["metrics"]["test_accuracy"] > 0.85
    assert len(checkpoint["training"]["history"]) == 1
    for name in ("history.png", "predictions.png"):
        with Image.open(tmp_path / "plots" / name) as image:
            assert image.size[0] > 300


@pytest.mark.slow
def test_train_to_a_target_uses_the_fast_recipe(mnist_root, tmp_path):
    from engine.trainer import FAST_RECIPES

    # A few steps on a slice of MNIST: whether 99% is reached is the benchmark's business (bench/train_speed.py);
    # here, that the run trained with the fast recipe, and that the summary line says how it ended.
    out, stdout = tmp_path / "cnn.pt", io.StringIO()
    try:
        call_command("train", "--arch", "cnn", "--target-accuracy", "0.99", "--mnist-limit", "1300", "--val-size",
                     "500", "--out", str(out), "--mnist-root", str(mnist_root), stdout=stdout, stderr=io.StringIO())
    except CommandError as exc:
        assert "target accuracy not reached" in str(exc)
    output = stdout.getvalue()
    fast = FAST_RECIPES["cnn"]
    assert f"{fast['epochs']} epochs x {800 // fast['batch_size']} steps" in output, output
    assert re.search(r"^(did not reach|reached) target 99\.00%: test accuracy [\d.]+% .*training time", output, re.M)
    training = load_checkpoint(out)["training"]
    assert (training["epochs"], training["batch_size"], training["lr"], training["ema"]) == (
        fast["epochs"], fast["batch_size"], fast["lr"], fast["ema"])
    assert training["augment_config"]["flagged_one"] == 0.0 and training["tta"] == "none"


def test_train_rejects_bad_options(tmp_path):
    with pytest.raises(CommandError, match="epochs"):
        run("train", "--arch", "cnn", "--epochs", "0", "--out", str(tmp_path / "x.pt"))
    with pytest.raises(CommandError, match="arch-config"):
        run("train", "--arch", "cnn", "--arch-config", "{widths: 4}", "--out", str(tmp_path / "x.pt"))
    with pytest.raises(CommandError, match="arch_config must be an object"):
        run("train", "--arch", "cnn", "--arch-config", "[4, 8, 16]", "--out", str(tmp_path / "x.pt"))
    with pytest.raises(CommandError, match="unknown config field"):
        run("train", "--arch", "cnn", "--arch-config", '{"depth": 3}', "--out", str(tmp_path / "x.pt"))
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.slow
def test_train_takes_a_network_config(mnist_root, tmp_path):
    out = tmp_path / "narrow.pt"
    output = run("train", "--arch", "cnn", "--arch-config", '{"widths": [4, 8, 16]}', "--epochs", "1",
                 "--mnist-limit", "600", "--val-size", "100", "--out", str(out), "--mnist-root", str(mnist_root))
    assert "cnn (" in output
    checkpoint = load_checkpoint(out)
    assert checkpoint["config"]["widths"] == [4, 8, 16]
    assert checkpoint["training"]["arch_config"]["widths"] == [4, 8, 16]


def _canvas_from_mnist(image: torch.Tensor) -> Image.Image:
    """An MNIST digit as a site user's canvas would send it: dark ink on white, 280x280."""
    small = Image.fromarray((255 - image.numpy()).astype("uint8"), mode="L")
    return small.resize((280, 280), Image.Resampling.BILINEAR).convert("RGB")


@pytest.mark.slow
def test_predict_prints_digit_and_probabilities(mnist_test, shipped_dir, tmp_path):
    paths = []
    for i in range(5):
        path = tmp_path / f"digit{i}.png"
        _canvas_from_mnist(mnist_test.images[i]).save(path)
        paths.append(str(path))
    output = run("predict", *paths, "--checkpoint", str(shipped_dir / "cnn.pt"))
    lines = output.strip().splitlines()
    assert len(lines) == 5
    for i, line in enumerate(lines):
        match = re.match(r".*digit\d\.png: (\d) \(([\d.]+)%\)((?:\s+\d:\s*[\d.]+%){10})$", line)
        assert match, line
        assert int(match[1]) == int(mnist_test.labels[i])
        probabilities = [float(p) for p in re.findall(r"\d:\s*([\d.]+)%", match[3])]
        assert sum(probabilities) == pytest.approx(100, abs=0.5)


def test_predict_reports_empty_and_unreadable_images(tmp_path, shipped_dir):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (100, 100), "white").save(blank)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    err = io.StringIO()
    with pytest.raises(CommandError, match="2 of 2"):
        call_command("predict", str(blank), str(junk), "--checkpoint", str(shipped_dir / "cnn.pt"),
                     stdout=io.StringIO(), stderr=err)
    assert "empty drawing" in err.getvalue()
    assert "cannot read image" in err.getvalue()
