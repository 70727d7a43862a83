"""Time to reach 99.0% MNIST test accuracy from scratch, median of three seeds.

Runs the documented benchmark command once per seed, each in a fresh process:

    python manage.py train --arch cnn --target-accuracy 0.99 --seed S

(a run with a target accuracy trains with the architecture's fast recipe, engine.trainer.FAST_RECIPES)
and reports two times: the whole process's wall time, measured here around the subprocess (start-up,
data loading, training, the accuracy checks, the final evaluation, the checkpoint), which is what
TARGET_SECONDS bounds; and the training time from the command's summary line (time in training steps
only; the run's own wall time is shown beside it).

    MNIST_ROOT=../shared/data/mnist python bench/train_speed.py [--seeds 0 1 2] [--arch cnn] [--against DIR]

``--against DIR`` also runs the same command in another checkout (e.g. ``git worktree add /tmp/old
<commit>``), in turns with this one, seed by seed (the machine's speed drifts between minutes), and
reports the median of the per-seed ratios of whole-process times.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(
    r"(?P<verdict>reached|did not reach) target .*?test accuracy (?P<acc>[\d.]+)% after (?P<samples>[\d,]+) samples "
    r"\((?P<epochs>[\d.]+) epochs\); training time: (?P<train>[\d.]+) s \((?P<wall>[\d.]+) s wall"
)
TARGET_SECONDS = 12.0  # whole process, median over the seeds


def run_once(arch: str, seed: int, target: float, out_dir: Path, repo: Path = REPO) -> dict[str, float | str]:
    cmd = [sys.executable, "manage.py", "train", "--arch", arch, "--target-accuracy", str(target),
           "--seed", str(seed), "--out", str(out_dir / f"{arch}-{seed}-{repo.name}.pt")]
    started = time.perf_counter()
    env = dict(os.environ)
    if env.get("MNIST_ROOT"):  # the same data from any checkout
        env["MNIST_ROOT"] = str(Path(env["MNIST_ROOT"]).resolve())
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=env)
    process_s = time.perf_counter() - started
    match = SUMMARY.search(proc.stdout)
    if not match:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"seed {seed} in {repo}: no summary line (exit code {proc.returncode})")
    return {
        "verdict": match["verdict"],
        "accuracy": float(match["acc"]),
        "epochs": float(match["epochs"]),
        "train_s": float(match["train"]),
        "wall_s": float(match["wall"]),
        "process_s": process_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--against", type=Path, help="another checkout to time in turns with this one")
    args = parser.parse_args()
    rows, ratios = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            if args.against:
                other = run_once(args.arch, seed, args.target, Path(tmp), repo=args.against.resolve())
            row = run_once(args.arch, seed, args.target, Path(tmp))
            rows.append(row)
            print(f"seed {seed}: {row['verdict']} {100 * args.target:.1f}% — test accuracy {row['accuracy']:.2f}% "
                  f"after {row['epochs']:.2f} epochs, training time {row['train_s']:.2f} s "
                  f"(run wall {row['wall_s']:.1f} s), whole process {row['process_s']:.1f} s", flush=True)
            if args.against:
                ratios.append(row["process_s"] / other["process_s"])
                print(f"  {args.against}: {other['verdict']} after {other['epochs']:.2f} epochs, training time "
                      f"{other['train_s']:.2f} s, whole process {other['process_s']:.1f} s; ratio {ratios[-1]:.2f}",
                      flush=True)
    if any(r["verdict"] != "reached" for r in rows):
        raise SystemExit("at least one seed did not reach the target")
    process = statistics.median(r["process_s"] for r in rows)
    training = statistics.median(r["train_s"] for r in rows)
    verdict = "within" if process <= TARGET_SECONDS else "OVER"
    print(f"time to {100 * args.target:.1f}% ({args.arch}): median {process:.1f} s whole process "
          f"({verdict} the {TARGET_SECONDS:.0f} s target), {training:.2f} s of training, over {len(rows)} seeds")
    if ratios:
        print(f"whole process against {args.against}: median ratio {statistics.median(ratios):.2f} "
              f"({', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
