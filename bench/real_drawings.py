"""Accuracy of a checkpoint on real pen-drawn digits, through the site's own pipeline.

Each recorded digit is drawn on a 280x280 canvas as a browser would produce it (three forms, varied
pen widths, sizes and positions; see ``bench/strokes.py``), then goes through exactly what the
site does: ``engine.preprocessing.preprocess`` -> model -> argmax.

    python bench/real_drawings.py [--checkpoint PATH] [--data PATH] [--seed 0] [--variants 3]
                                  [--save-examples DIR]

The last line printed is ``real-drawing accuracy: 97.85% (n=5733)``.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from bench.strokes import load_strokes, render_dataset  # noqa: E402
from engine.preprocessing import PREPROCESSING_VERSION, preprocess  # noqa: E402

DEFAULT_CHECKPOINT = REPO_ROOT / "training" / "shipped" / "cnn.pt"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "strokes-dev" / "strokes.json.gz"
BATCH_SIZE = 512
PEN_BUCKETS = ((12.0, 15.0), (15.0, 18.0), (18.0, 21.0), (21.0, 24.0))
SIZE_BUCKETS = ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="model checkpoint (.pt)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="strokes.json.gz with recorded digits")
    parser.add_argument("--seed", type=int, default=0, help="seed for pen width, size, position, colour")
    parser.add_argument("--variants", type=int, default=3, help="renderings per recorded digit")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N recorded digits")
    parser.add_argument("--save-examples", type=Path, default=None, metavar="DIR",
                        help="write PNG grids of rendered canvases and misclassified inputs here")
    return parser.parse_args(argv)


def load_model(path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model and checkpoint dict, through the engine's single loader."""
    from engine.checkpoint import load_checkpoint, model_from_checkpoint

    checkpoint = load_checkpoint(path)
    return model_from_checkpoint(checkpoint), checkpoint


@torch.inference_mode()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """Argmax predictions for ``[N, 1, 28, 28]`` inputs, in batches."""
    model.eval()
    preds = [model(x[i : i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)]
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.int64)


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


def print_table(title: str, rows: list[tuple[Any, int, float]]) -> None:
    print(f"\n{title}")
    for group, n, acc in rows:
        print(f"  {str(group):<16} {acc:6.2f}%  (n={n})")


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
    rendered: list[tuple[Image.Image, int, dict[str, Any]]],
    x: torch.Tensor,
    y: torch.Tensor,
    pred: torch.Tensor,
    *,
    n_canvases: int = 48,
    n_errors: int = 200,
) -> list[Path]:
    """Write ``canvases.png`` (some rendered canvases with their inputs) and ``misclassified.png``."""
    directory.mkdir(parents=True, exist_ok=True)
    step = max(1, len(rendered) // n_canvases)
    tiles = []
    for i in range(0, len(rendered), step)[:n_canvases]:
        image, label, meta = rendered[i]
        shown = _on_checkerboard(image) if image.mode == "RGBA" else image
        tiles.append((shown, f"{label} {meta['form'][:5]} w{meta['pen_width']:.0f}"))
        tiles.append((_input_image(x[i]), f"-> {int(pred[i])}"))
    paths = [directory / "canvases.png", directory / "misclassified.png"]
    _grid(tiles, 112, 12).save(paths[0])
    wrong = torch.nonzero(pred != y).flatten().tolist()[:n_errors]
    errors = [(_input_image(x[i]), f"true {int(y[i])} got {int(pred[i])}") for i in wrong]
    _grid(errors or [(Image.new("L", (28, 28)), "none")], 84, 16).save(paths[1])
    return paths


def _input_image(t: torch.Tensor) -> Image.Image:
    return Image.fromarray(np.rint(t.squeeze().numpy() * 255).astype(np.uint8), "L")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(2)
    if not args.data.is_file():
        print(f"error: no recorded digits at {args.data}; pass --data PATH to strokes.json.gz", file=sys.stderr)
        return 2
    if not args.checkpoint.is_file():
        print(f"error: no checkpoint at {args.checkpoint}; pass --checkpoint PATH", file=sys.stderr)
        return 2
    try:
        model, checkpoint = load_model(args.checkpoint)
    except Exception as exc:  # CheckpointError and friends: say why, don't dump a traceback
        print(f"error: cannot use checkpoint {args.checkpoint}: {exc}", file=sys.stderr)
        return 2

    print(f"checkpoint: {args.checkpoint} (arch={checkpoint.get('arch')}, "
          f"preprocessing={checkpoint.get('preprocessing') or '?'})")
    metrics = checkpoint.get("metrics") or {}
    if metrics:
        shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
        print(f"checkpoint metrics: {shown}")
    stored = checkpoint.get("preprocessing")
    if stored and stored != PREPROCESSING_VERSION:
        print(f"warning: checkpoint was made for preprocessing {stored!r}, this code is {PREPROCESSING_VERSION!r}")

    samples = load_strokes(args.data)
    if args.limit is not None:
        samples = samples[: args.limit]
    writers = {s.get("writer") for s in samples}
    print(f"data: {args.data} ({len(samples)} digits by {len(writers)} writers), "
          f"seed={args.seed}, variants={args.variants}")

    t0 = time.perf_counter()
    rendered = render_dataset(samples, seed=args.seed, variants_per_sample=args.variants)
    t1 = time.perf_counter()
    x = torch.stack([preprocess(image) for image, _, _ in rendered])
    y = torch.tensor([label for _, label, _ in rendered], dtype=torch.int64)
    t2 = time.perf_counter()
    pred = predict(model, x)
    t3 = time.perf_counter()

    metas = [meta for _, _, meta in rendered]
    correct = (pred == y).numpy()
    n = len(correct)
    print_table("by form", breakdown(correct, metas, lambda m: m["form"]))
    print_table("by digit", breakdown(correct, [{"label": int(v)} for v in y], lambda m: m["label"]))
    print_table("by pen width (px)", breakdown(correct, metas, lambda m: bucket_label(m["pen_width"], PEN_BUCKETS, "{:.0f}")))
    print_table("by digit height (share of canvas)",
                breakdown(correct, metas, lambda m: bucket_label(m["digit_height_frac"], SIZE_BUCKETS, "{:.1f}")))
    print_table("by writer group", breakdown(correct, metas, lambda m: str(m["writer"]).split("/")[0]))

    pairs = Counter((int(t), int(p)) for t, p in zip(y[pred != y], pred[pred != y]))
    print("\nmost frequent confusions (true -> predicted)")
    for (t, p), count in pairs.most_common(10):
        print(f"  {t} -> {p}: {count}")
    if not pairs:
        print("  none")

    print(f"\ntime: render {t1 - t0:.1f}s, preprocess {t2 - t1:.1f}s "
          f"({1000 * (t2 - t1) / max(n, 1):.2f} ms/image), model {t3 - t2:.1f}s, total {t3 - t0:.1f}s")
    if args.save_examples is not None:
        for path in save_examples(args.save_examples, rendered, x, y, pred):
            print(f"wrote {path}")
    accuracy = 100.0 * float(correct.mean()) if n else 0.0
    print(f"real-drawing accuracy: {accuracy:.2f}% (n={n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
