"""Accuracy of a checkpoint on real pen-drawn digits, through the site's own pipeline.

Each recorded digit is drawn on a 280x280 canvas as a browser would produce it (three forms, varied
pen widths, sizes and positions; see ``bench/strokes.py``), then goes through exactly what the
site does: ``engine.preprocessing.preprocess`` -> model -> softmax(logits / T) -> argmax, where T is
the temperature stored in the checkpoint (1 when there is none) and the probabilities are averaged
over the checkpoint's test-time views (``engine.serving``; none unless the checkpoint names some).

    python bench/real_drawings.py [--checkpoint PATH] [--data PATH] [--seed 0] [--variants 3]
                                  [--save-examples DIR]

reports accuracy by writer group, digit, canvas form, pen width and size, the most frequent
confusions, and calibration (expected calibration error before / after the temperature). More:

    --compare SPEC [SPEC ...]   score more models in the same run and print one table of all;
                                a SPEC is a checkpoint path, or paths joined by "+" (an ensemble
                                averaging calibrated probabilities), optionally with "@shift" or
                                "@affine" for its own test-time augmentation
    --tta served|none|scale|shift|affine
                                test-time views of the 28x28 input whose probabilities are averaged
                                (default: as each checkpoint is served, see engine/serving.py)
    --box-size 20               preprocessing's digit box (the site uses MNIST's 20 px)
    --mnist-root DIR            also score each model on the MNIST test set (default: $MNIST_ROOT)
    --leave-one-group-out       for anything that learns from these drawings: choose among the
                                scored models on three writer groups and score the choice on the
                                fourth; and fit a temperature on three groups, measure ECE on the
                                fourth. A method is better only if it is better on groups it did
                                not see.

The last line printed is ``real-drawing accuracy: 97.85% (n=5733)``, for ``--checkpoint``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from bench.strokes import (  # noqa: E402
    RenderedSet,
    default_cache_dir,
    load_strokes,
    render,
    rendered_set,
    variant_params,
)
from engine.calibration import expected_calibration_error, fit_temperature  # noqa: E402
from engine.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from engine.data import load_mnist  # noqa: E402
from engine.serving import TTA_VIEWS, checkpoint_temperature, checkpoint_tta, predict_probabilities  # noqa: E402
from engine.nets import inference_copy  # noqa: E402
from engine.preprocessing import BOX_SIZE, PREPROCESSING_VERSION  # noqa: E402

DEFAULT_CHECKPOINT = REPO_ROOT / "training" / "shipped" / "cnn.pt"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "strokes-dev" / "strokes.json.gz"
BATCH_SIZE = 512
PEN_BUCKETS = ((12.0, 15.0), (15.0, 18.0), (18.0, 21.0), (21.0, 24.0))
SIZE_BUCKETS = ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9))
# Confusions between digits that writing habits make alike (slashed zero, flagged one, crossed seven,
# open four): watched in the comparison table, on the drawings and on MNIST test.
WATCHED_PAIRS = ((1, 7), (7, 1), (0, 8), (8, 0), (4, 9), (9, 4), (0, 6), (1, 2))
TOP_CONFUSIONS = 10
TTA_CHOICES = ("served", *TTA_VIEWS)  # "served": each checkpoint's own (engine.serving)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                        help="model checkpoint (.pt), or several joined by '+' (an ensemble)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="SPEC",
                        help="more checkpoints (or '+'-joined ensembles) to score in the same run")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="strokes.json.gz with recorded digits")
    parser.add_argument("--seed", type=int, default=0, help="seed for pen width, size, position, colour")
    parser.add_argument("--variants", type=int, default=3, help="renderings per recorded digit")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N recorded digits")
    parser.add_argument("--box-size", type=float, default=BOX_SIZE, help="preprocessing's digit box in px")
    parser.add_argument("--tta", choices=TTA_CHOICES, default="served",
                        help="test-time augmentation (default: as each checkpoint is served)")
    parser.add_argument("--no-calibration", action="store_true", help="serve with T = 1 whatever the checkpoint says")
    parser.add_argument("--mnist-root", default=os.environ.get("MNIST_ROOT"),
                        help="also score on the MNIST test set found here (default: $MNIST_ROOT)")
    parser.add_argument("--leave-one-group-out", action="store_true",
                        help="score choices learnt from the drawings on writer groups they did not see")
    parser.add_argument("--table-only", action="store_true", help="print only the comparison table")
    parser.add_argument("--cache", type=Path, default=default_cache_dir(),
                        help="folder for rendered sets (outside the repository); default %(default)s")
    parser.add_argument("--no-cache", action="store_true", help="render again, keep nothing")
    parser.add_argument("--save-examples", type=Path, default=None, metavar="DIR",
                        help="write PNG grids of rendered canvases and misclassified inputs here")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- models


@dataclass
class Member:
    path: Path
    checkpoint: dict[str, Any]
    model: torch.nn.Module
    temperature: float
    tta: str  # the test-time views it is scored with


@dataclass
class Scorer:
    """One entry of the comparison: a checkpoint or an ensemble of them, with its test-time augmentation."""

    spec: str
    members: list[Member]
    calibrate: bool = True

    @property
    def name(self) -> str:
        views = sorted({m.tta for m in self.members} - {"none"})
        return "+".join(_short(m.path) for m in self.members) + (f" [tta={','.join(views)}]" if views else "")

    def probabilities(self, x: torch.Tensor, *, calibrated: bool = True) -> torch.Tensor:
        """``[N, 10]`` probabilities: the mean over members (and test-time views) of softmax(logits / T),
        made as serving makes them (``engine.evaluate.predict_probabilities``), in batches."""
        total = torch.zeros(len(x), 10)
        for member in self.members:
            temperature = member.temperature if (calibrated and self.calibrate) else 1.0
            for i in range(0, len(x), BATCH_SIZE):
                total[i : i + BATCH_SIZE] += predict_probabilities(
                    member.model, x[i : i + BATCH_SIZE], temperature=temperature, tta=member.tta)
        return total / len(self.members)


def _short(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def load_scorer(spec: str, *, tta: str = "served", calibrate: bool = True) -> Scorer:
    """A scorer for ``PATH[+PATH...][@TTA]``: each checkpoint with its own test-time views ("served"),
    or the views named by ``tta`` or by the spec's ``@none|scale|shift|affine`` suffix."""
    head, _, suffix = spec.rpartition("@")
    if head and suffix in TTA_CHOICES:
        spec, tta = head, suffix
    members = []
    for part in spec.split("+"):
        path = Path(part)
        checkpoint = load_checkpoint(path)
        model = inference_copy(model_from_checkpoint(checkpoint))
        members.append(Member(path=path, checkpoint=checkpoint, model=model,
                              temperature=checkpoint_temperature(checkpoint),
                              tta=checkpoint_tta(checkpoint) if tta == "served" else tta))
    return Scorer(spec=spec, members=members, calibrate=calibrate)


# --------------------------------------------------------------------------- figures


@dataclass
class Scores:
    """What one scorer made of one labelled set."""

    probs: torch.Tensor  # calibrated
    raw: torch.Tensor  # T = 1
    y: torch.Tensor

    @property
    def pred(self) -> torch.Tensor:
        return self.probs.argmax(dim=1)

    @property
    def correct(self) -> np.ndarray:
        return (self.pred == self.y).numpy()

    @property
    def accuracy(self) -> float:
        return 100.0 * float(self.correct.mean()) if len(self.y) else 0.0

    def confusions(self) -> Counter:
        wrong = self.pred != self.y
        return Counter((int(t), int(p)) for t, p in zip(self.y[wrong], self.pred[wrong]))

    def ece(self, calibrated: bool = True) -> float:
        return 100.0 * expected_calibration_error(self.probs if calibrated else self.raw, self.y)


def score(scorer: Scorer, x: torch.Tensor, y: torch.Tensor) -> Scores:
    probs = scorer.probabilities(x)
    same = scorer.calibrate is False or all(m.temperature == 1.0 for m in scorer.members)
    raw = probs if same else scorer.probabilities(x, calibrated=False)
    return Scores(probs=probs, raw=raw, y=y)


def bucket_label(value: float, buckets: Iterable[tuple[float, float]], fmt: str) -> str:
    buckets = list(buckets)
    for i, (lo, hi) in enumerate(buckets):
        if value < hi or i == len(buckets) - 1:
            return f"{fmt.format(lo)}-{fmt.format(hi)}"
    raise ValueError("no buckets")


def breakdown(
    correct: np.ndarray, metas: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], Any]
) -> list[tuple[Any, int, float]]:
    """``[(group, n, accuracy), ...]`` grouping the results by ``key(meta)``, sorted by group."""
    groups: dict[Any, list[bool]] = defaultdict(list)
    for ok, meta in zip(correct, metas):
        groups[key(meta)].append(bool(ok))
    return [(g, len(v), 100.0 * sum(v) / len(v)) for g, v in sorted(groups.items(), key=lambda kv: str(kv[0]))]


def group_accuracy(correct: np.ndarray, groups: Sequence[str]) -> dict[str, float]:
    return {g: acc for g, _, acc in breakdown(correct, [{"g": g} for g in groups], lambda m: m["g"])}


def print_table(title: str, rows: list[tuple[Any, int, float]]) -> None:
    print(f"\n{title}")
    for group, n, acc in rows:
        print(f"  {str(group):<16} {acc:6.2f}%  (n={n})")


def metas_of(data: RenderedSet) -> list[dict[str, Any]]:
    return [
        {"form": f, "pen_width": w, "digit_height_frac": h, "writer": wr, "label": int(lab)}
        for f, w, h, wr, lab in zip(data.form, data.pen_width, data.height_frac, data.writer, data.y.tolist())
    ]


def report(scorer: Scorer, data: RenderedSet, scores: Scores, mnist: Scores | None) -> None:
    """The detailed figures of one scorer on the drawings (and MNIST test)."""
    metas = metas_of(data)
    correct = scores.correct
    temps = ", ".join(f"{m.temperature:.3f}" for m in scorer.members)
    print(f"\n=== {scorer.name}  (T = {temps}{'' if scorer.calibrate else ', not applied'})")
    print_table("by writer group", breakdown(correct, metas, lambda m: str(m["writer"]).split("/")[0]))
    print_table("by digit", breakdown(correct, metas, lambda m: m["label"]))
    print_table("by form", breakdown(correct, metas, lambda m: m["form"]))
    print_table("by pen width (px)", breakdown(correct, metas, lambda m: bucket_label(m["pen_width"], PEN_BUCKETS, "{:.0f}")))
    print_table("by digit height (share of canvas)",
                breakdown(correct, metas, lambda m: bucket_label(m["digit_height_frac"], SIZE_BUCKETS, "{:.1f}")))
    pairs = scores.confusions()
    errors = sum(pairs.values())
    print("\nmost frequent confusions (true -> predicted)")
    for (t, p), count in pairs.most_common(TOP_CONFUSIONS):
        print(f"  {t} -> {p}: {count:4d}  ({100.0 * count / max(errors, 1):4.1f}% of the errors)")
    if not pairs:
        print("  none")
    print("\ncalibration (expected calibration error, 15 bins)")
    print(f"  drawings:   ECE {scores.ece(False):5.2f}% at T = 1  ->  {scores.ece(True):5.2f}% calibrated  "
          f"(mean confidence {100 * float(scores.probs.max(1).values.mean()):.2f}%, accuracy {scores.accuracy:.2f}%)")
    if mnist is not None:
        print(f"  MNIST test: ECE {mnist.ece(False):5.2f}% at T = 1  ->  {mnist.ece(True):5.2f}% calibrated  "
              f"(accuracy {mnist.accuracy:.2f}%)")
    print(f"drawings accuracy: {scores.accuracy:.2f}% (n={len(scores.y)})")


def comparison_table(rows: list[tuple[Scorer, Scores, Scores | None]], data: RenderedSet) -> None:
    groups = sorted(set(data.group))
    digits = list(range(10))
    print("\ncomparison (accuracy %, real drawings unless marked MNIST; ECE % at T = 1 -> calibrated)")
    header = (f"  {'model':<44} {'MNIST':>6} {'real':>6} " + " ".join(f"{g:>6}" for g in groups)
              + f" {'worst':>6} " + " ".join(f"{d:>5}" for d in digits) + f" {'ECE real':>13} {'ECE MNIST':>13}")
    print(header)
    for scorer, scores, mnist in rows:
        acc = group_accuracy(scores.correct, data.group)
        per_digit = {int(d): a for d, _, a in breakdown(scores.correct, [{"d": v} for v in data.y.tolist()], lambda m: m["d"])}
        mnist_acc = f"{mnist.accuracy:6.2f}" if mnist is not None else f"{'-':>6}"
        mnist_ece = f"{mnist.ece(False):5.2f}->{mnist.ece(True):5.2f}" if mnist is not None else f"{'-':>13}"
        print(f"  {scorer.name[:44]:<44} {mnist_acc} {scores.accuracy:6.2f} "
              + " ".join(f"{acc.get(g, float('nan')):6.2f}" for g in groups)
              + f" {min(acc.values()):6.2f} " + " ".join(f"{per_digit.get(d, float('nan')):5.1f}" for d in digits)
              + f" {scores.ece(False):5.2f}->{scores.ece(True):5.2f} {mnist_ece}")
    print("\nwatched confusions (count on the drawings / on MNIST test)")
    print(f"  {'model':<44} " + " ".join(f"{f'{t}->{p}':>10}" for t, p in WATCHED_PAIRS))
    for scorer, scores, mnist in rows:
        real_pairs = scores.confusions()
        mnist_pairs = mnist.confusions() if mnist is not None else Counter()
        cells = [f"{real_pairs.get(pair, 0):>5}/{mnist_pairs.get(pair, 0) if mnist is not None else '-':<4}"
                 for pair in WATCHED_PAIRS]
        print(f"  {scorer.name[:44]:<44} " + " ".join(cells))


def leave_one_group_out(rows: list[tuple[Scorer, Scores, Scores | None]], data: RenderedSet) -> None:
    """Choices learnt from the drawings, each scored only on a writer group it did not see."""
    groups = np.asarray(data.group)
    names = sorted(set(data.group))
    print("\nleave one writer group out")
    if len(rows) > 1:
        print("  choosing one of the scored models on three groups (by accuracy), scored on the fourth:")
        chosen_correct = np.zeros(len(groups), dtype=bool)
        for held in names:
            seen, unseen = groups != held, groups == held
            best = max(range(len(rows)), key=lambda i: (rows[i][1].correct[seen].mean(), -i))
            oracle = max(rows[i][1].correct[unseen].mean() for i in range(len(rows)))
            chosen_correct[unseen] = rows[best][1].correct[unseen]
            print(f"    held out {held:<5} chose {rows[best][0].name[:44]:<44} "
                  f"{100 * rows[best][1].correct[unseen].mean():6.2f}% (best on it {100 * oracle:6.2f}%)")
        print(f"    pooled over held-out groups: {100 * chosen_correct.mean():.2f}% "
              f"(first model {rows[0][1].accuracy:.2f}%)")
    print("  temperature fitted on the other groups' drawings vs the checkpoint's (validation) temperature,")
    print("  ECE % on the held-out group:")
    for scorer, scores, _ in rows:
        logits = scores.raw.clamp_min(1e-12).log()  # the scorer's uncalibrated log-probabilities
        cells = []
        for held in names:
            seen, unseen = torch.from_numpy(groups != held), torch.from_numpy(groups == held)
            t_drawings = fit_temperature(logits[seen], scores.y[seen])
            ece_drawings = 100 * expected_calibration_error((logits[unseen] / t_drawings).softmax(1), scores.y[unseen])
            ece_ckpt = 100 * expected_calibration_error(scores.probs[unseen], scores.y[unseen])
            cells.append(f"{held} {ece_ckpt:4.2f} vs {ece_drawings:4.2f} (T={t_drawings:.2f})")
        print(f"    {scorer.name[:44]:<44} " + "; ".join(cells))


# --------------------------------------------------------------------------- example sheets


def _on_checkerboard(image: Image.Image) -> Image.Image:
    """An RGBA canvas shown over a checkerboard, so transparency is visible."""
    size = image.size
    ys, xs = np.mgrid[: size[1], : size[0]]
    board = np.where(((xs // 14 + ys // 14) % 2)[..., None] == 0, 200, 160).astype(np.uint8)
    base = Image.fromarray(np.repeat(board, 3, axis=2), "RGB").convert("RGBA")
    base.alpha_composite(image)
    return base.convert("RGB")


def _grid(tiles: list[tuple[Image.Image, str]], tile: int, columns: int) -> Image.Image:
    label_h = 14
    rows = max(1, -(-len(tiles) // columns))
    sheet = Image.new("RGB", (columns * (tile + 4), rows * (tile + label_h + 4)), (64, 64, 64))
    draw = ImageDraw.Draw(sheet)
    for k, (image, caption) in enumerate(tiles):
        r, c = divmod(k, columns)
        x, y = c * (tile + 4) + 2, r * (tile + label_h + 4) + 2
        sheet.paste(image.convert("RGB").resize((tile, tile), Image.Resampling.NEAREST
                                                if image.size[0] < tile else Image.Resampling.BOX), (x, y))
        draw.text((x + 2, y + tile + 1), caption, fill=(255, 255, 160))
    return sheet


def save_examples(
    directory: Path,
    samples: Sequence[dict[str, Any]],
    data: RenderedSet,
    pred: torch.Tensor,
    *,
    seed: int,
    variants: int,
    n_canvases: int = 48,
    n_errors: int = 200,
) -> list[Path]:
    """Write ``canvases.png`` (some rendered canvases with their inputs) and ``misclassified.png``."""
    directory.mkdir(parents=True, exist_ok=True)
    n = len(data.y)
    step = max(1, n // n_canvases)
    step += step % variants == 0 and variants > 1  # walk through the forms, not one of them
    tiles = []
    for i in range(0, n, step)[:n_canvases]:
        index, variant = data.index[i], i % variants
        params = variant_params(index, variant, seed=seed)
        image = render(samples[index], **params)
        shown = _on_checkerboard(image) if image.mode == "RGBA" else image
        tiles.append((shown, f"{int(data.y[i])} {data.form[i][:5]} w{data.pen_width[i]:.0f}"))
        tiles.append((_input_image(data.x[i]), f"-> {int(pred[i])}"))
    paths = [directory / "canvases.png", directory / "misclassified.png"]
    _grid(tiles, 112, 12).save(paths[0])
    wrong = torch.nonzero(pred != data.y).flatten().tolist()[:n_errors]
    errors = [(_input_image(data.x[i]), f"true {int(data.y[i])} got {int(pred[i])}") for i in wrong]
    _grid(errors or [(Image.new("L", (28, 28)), "none")], 84, 16).save(paths[1])
    return paths


def _input_image(t: torch.Tensor) -> Image.Image:
    return Image.fromarray(np.rint(t.squeeze().numpy() * 255).astype(np.uint8), "L")


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(2)
    if not args.data.is_file():
        print(f"error: no recorded digits at {args.data}; pass --data PATH to strokes.json.gz", file=sys.stderr)
        return 2
    scorers = []
    for spec in [args.checkpoint, *args.compare]:
        head, _, suffix = spec.rpartition("@")
        paths = head if head and suffix in TTA_CHOICES else spec
        missing = [part for part in paths.split("+") if not Path(part).is_file()]
        if missing:
            print(f"error: no checkpoint at {missing[0]}; pass --checkpoint PATH", file=sys.stderr)
            return 2
        try:
            scorers.append(load_scorer(spec, tta=args.tta, calibrate=not args.no_calibration))
        except Exception as exc:  # CheckpointError and friends: say why, don't dump a traceback
            print(f"error: cannot use checkpoint {spec}: {exc}", file=sys.stderr)
            return 2

    for scorer in scorers:
        for member in scorer.members:
            checkpoint = member.checkpoint
            metrics = {k: v for k, v in (checkpoint.get("metrics") or {}).items() if isinstance(v, (int, float, str))}
            print(f"checkpoint: {member.path} (arch={checkpoint.get('arch')}, "
                  f"preprocessing={checkpoint.get('preprocessing') or '?'}, T={member.temperature:.3f}, "
                  f"tta={member.tta})")
            if metrics and not args.table_only:
                print(f"  metrics: {metrics}")
            stored = checkpoint.get("preprocessing")
            if stored and stored != PREPROCESSING_VERSION:
                print(f"warning: checkpoint was made for preprocessing {stored!r}, this code is {PREPROCESSING_VERSION!r}")

    t0 = time.perf_counter()
    data = rendered_set(args.data, seed=args.seed, variants=args.variants, limit=args.limit,
                        box_size=args.box_size, cache_dir=None if args.no_cache else args.cache)
    t1 = time.perf_counter()
    writers = set(data.writer)
    print(f"data: {args.data} ({len(set(data.index))} digits by {len(writers)} writers), seed={args.seed}, "
          f"variants={args.variants}, box={args.box_size:g} px, tta={args.tta}; "
          f"rendered and preprocessed in {t1 - t0:.1f}s")

    mnist = None
    if args.mnist_root:
        try:
            test = load_mnist(args.mnist_root, "test")
            mnist = (test.images.float().div(255).unsqueeze(1), test.labels.long())
        except Exception as exc:  # no MNIST here: the drawings alone are still worth reporting
            print(f"note: MNIST test not scored ({exc})")

    rows = []
    for scorer in scorers:
        scores = score(scorer, data.x, data.y)
        mnist_scores = score(scorer, *mnist) if mnist is not None else None
        rows.append((scorer, scores, mnist_scores))
        if not args.table_only:
            report(scorer, data, scores, mnist_scores)
    t2 = time.perf_counter()
    comparison_table(rows, data)
    if args.leave_one_group_out:
        leave_one_group_out(rows, data)
    print(f"\ntime: data {t1 - t0:.1f}s, models {t2 - t1:.1f}s")
    primary = rows[0][1]
    if args.save_examples is not None:
        samples = load_strokes(args.data)
        for path in save_examples(args.save_examples, samples, data, primary.pred, seed=args.seed,
                                  variants=args.variants):
            print(f"wrote {path}")
    print(f"real-drawing accuracy: {primary.accuracy:.2f}% (n={len(primary.y)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
