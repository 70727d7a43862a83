"""Batched inference throughput of the shipped models on the MNIST test set (images/s).

Uses the same path as ``evaluate()``: an inference copy with batch norm folded into the convolutions,
channels-last tensors, float32, batches of 256.

    MNIST_ROOT=../shared/data/mnist python bench/inference.py [--arch cnn lenet5 ...] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from engine.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from engine.data import load_mnist  # noqa: E402
from engine.evaluate import metrics_from_logits, predict_logits  # noqa: E402
from engine.nets import inference_copy  # noqa: E402

TARGET = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=["cnn", "lenet5", "mlp", "logreg"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--mnist-root", default=os.environ.get("MNIST_ROOT", str(REPO / "media" / "datasets")))
    args = parser.parse_args()
    test = load_mnist(args.mnist_root, "test")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"{len(test)} images x {args.repeats} repeats")
    for arch in args.arch:
        model = inference_copy(model_from_checkpoint(load_checkpoint(REPO / "training" / "shipped" / f"{arch}.pt")))
        predict_logits(model, test.images[:4096], batch_size=args.batch_size)  # warm-up
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            logits = predict_logits(model, test.images, batch_size=args.batch_size)
            rates.append(len(test) / (time.perf_counter() - start))
        accuracy = metrics_from_logits(logits, test.labels)["accuracy"]
        note = f"  (target {TARGET:,}/s: {'met' if statistics.median(rates) >= TARGET else 'MISSED'})" if arch == "cnn" else ""
        print(f"{arch:>7}: {statistics.median(rates):>10,.0f} images/s median (min {min(rates):,.0f}, "
              f"max {max(rates):,.0f}); accuracy {100 * accuracy:.2f}%{note}")


if __name__ == "__main__":
    main()
