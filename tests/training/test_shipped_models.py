"""The shipped checkpoints, measured on the real MNIST test set (MNIST_ROOT)."""
import pytest

from engine.checkpoint import load_checkpoint, model_from_checkpoint
from engine.evaluate import evaluate
from engine.nets import count_parameters

# What each class of model should reach; the flagship's bar is the product requirement.
MINIMUM_ACCURACY = {"cnn": 0.996, "lenet5": 0.985, "mlp": 0.975, "logreg": 0.91}

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("arch", sorted(MINIMUM_ACCURACY))
def test_shipped_checkpoint_accuracy_on_mnist_test(arch, shipped_dir, mnist_test):
    checkpoint = load_checkpoint(shipped_dir / f"{arch}.pt")
    assert checkpoint["arch"] == arch
    model = model_from_checkpoint(checkpoint)
    metrics = evaluate(model, mnist_test.images, mnist_test.labels)
    assert metrics["n"] == 10_000
    assert metrics["accuracy"] >= MINIMUM_ACCURACY[arch]
    # the metrics stored in the checkpoint are the ones it really has
    assert checkpoint["metrics"]["test_accuracy"] == pytest.approx(metrics["accuracy"], abs=2e-4)
    assert checkpoint["metrics"]["confusion_matrix"] == metrics["confusion_matrix"]


def test_flagship_is_a_single_small_model_selected_on_validation(shipped_dir):
    checkpoint = load_checkpoint(shipped_dir / "cnn.pt")
    assert count_parameters(model_from_checkpoint(checkpoint)) <= 500_000
    training = checkpoint["training"]
    assert training["val_size"] > 0 and checkpoint["metrics"]["best_epoch"] >= 1
    assert training["target_accuracy"] is None  # never stopped by looking at the test set
    assert checkpoint["preprocessing"] == "mnist-com-20px/1"
    assert checkpoint["data_fingerprint"].startswith("mnist:")
