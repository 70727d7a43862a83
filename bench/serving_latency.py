"""What inference choices cost per drawing: one canvas at a time, one thread, as a web process serves.

For each model spec (a checkpoint, or several joined by "+", an ensemble) and test-time augmentation
(see ``bench/real_drawings.py``), times preprocessing and the model on single 280x280 canvases drawn
from the recorded digits, and prints the median (p50) and p99 in milliseconds. The predict API's
budget is p50 <= 5 ms for the whole request; this is the part the model choice changes.

    python bench/serving_latency.py [--compare SPEC ...] [--tta none shift affine] [--n 300]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from bench.real_drawings import DEFAULT_CHECKPOINT, DEFAULT_DATA, TTA_CHOICES, load_scorer  # noqa: E402
from bench.strokes import load_strokes, render_dataset  # noqa: E402
from engine.preprocessing import preprocess  # noqa: E402


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--compare", nargs="*", default=[], metavar="SPEC")
    parser.add_argument("--tta", nargs="+", choices=TTA_CHOICES, default=["served"],
                        help="test-time views (default: as each checkpoint is served)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=300, help="drawings timed per configuration")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if not args.data.is_file():
        print(f"error: no recorded digits at {args.data}", file=sys.stderr)
        return 2
    samples = load_strokes(args.data)[:: max(1, len(load_strokes(args.data)) // args.n)][: args.n]
    canvases = [image for image, _, _ in render_dataset(samples, variants_per_sample=1)]
    print(f"{len(canvases)} canvases, 1 thread, torch {torch.__version__}")
    print(f"  {'model':<52} {'preprocess p50':>14} {'model p50':>10} {'model p99':>10} {'total p50':>10}")
    for spec in [args.checkpoint, *args.compare]:
        for tta in args.tta:
            scorer = load_scorer(spec, tta=tta)
            for image in canvases[:20]:  # warm-up
                scorer.probabilities(preprocess(image).unsqueeze(0))
            pre, model = [], []
            for image in canvases:
                t0 = time.perf_counter()
                x = preprocess(image).unsqueeze(0)
                t1 = time.perf_counter()
                scorer.probabilities(x)
                t2 = time.perf_counter()
                pre.append(1000 * (t1 - t0))
                model.append(1000 * (t2 - t1))
            total = [a + b for a, b in zip(pre, model)]
            print(f"  {scorer.name[:52]:<52} {statistics.median(pre):14.2f} {statistics.median(model):10.2f} "
                  f"{percentile(model, 0.99):10.2f} {statistics.median(total):10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
