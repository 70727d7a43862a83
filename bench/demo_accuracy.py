"""How often the Flask demo's pipeline is right, beside the site's, on the real pen-drawn development digits.

The predict benchmark compares the site's speed with ``bench/flask_baseline.py``; this says what the
demo's speed buys. Every digit of a ``strokes.json.gz`` is drawn as a 280x280 canvas in the three forms a
browser produces (``bench/strokes.py``, as ``bench/real_drawings.py`` draws them), then read by the shipped
flagship twice: through the site's preprocessing and the checkpoint's temperature and test-time views, and
through the demo's ``demo_input`` (whole canvas in grey, resized, inverted) with one plain forward pass,
as the demo serves it. Prints accuracy overall and per form.

    python bench/demo_accuracy.py [--strokes PATH] [--checkpoint training/shipped/cnn.pt]
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench.flask_baseline import demo_input  # noqa: E402
from bench.strokes import load_strokes, render_dataset  # noqa: E402
from engine.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from engine.nets import inference_copy  # noqa: E402
from engine.preprocessing import preprocess  # noqa: E402
from engine.serving import checkpoint_temperature, checkpoint_tta, predict_probabilities  # noqa: E402

DEFAULT_STROKES = REPO.parent / "shared" / "data" / "strokes-dev" / "strokes.json.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strokes", type=Path, default=DEFAULT_STROKES)
    parser.add_argument("--checkpoint", type=Path, default=REPO / "training" / "shipped" / "cnn.pt")
    args = parser.parse_args()
    if not args.strokes.exists():
        raise SystemExit(f"no strokes file at {args.strokes} (give --strokes)")

    checkpoint = load_checkpoint(args.checkpoint)
    served = inference_copy(model_from_checkpoint(checkpoint))
    plain = model_from_checkpoint(checkpoint).eval()
    drawings = render_dataset(load_strokes(args.strokes), variants_per_sample=3)
    labels = torch.tensor([label for _, label, _ in drawings])
    forms = [meta["form"] for _, _, meta in drawings]
    site_x = torch.stack([preprocess(image) for image, _, _ in drawings])
    demo_x = torch.cat([demo_input(image) for image, _, _ in drawings])
    site = predict_probabilities(served, site_x, temperature=checkpoint_temperature(checkpoint),
                                 tta=checkpoint_tta(checkpoint)).argmax(1)
    with torch.no_grad():
        demo = plain(demo_x).argmax(1)

    print(f"{len(drawings)} canvases of {len(drawings) // 3} real pen-drawn digits, read by {args.checkpoint.name}")
    for name, answers in (("the site's pipeline", site), ("the Flask demo's pipeline", demo)):
        right = (answers == labels).tolist()
        by_form: dict[str, list[bool]] = defaultdict(list)
        for form, ok in zip(forms, right):
            by_form[form].append(ok)
        detail = ", ".join(f"{form} {100 * sum(v) / len(v):.2f}%" for form, v in by_form.items())
        print(f"  {name:27s} {100 * sum(right) / len(right):6.2f}%  ({detail})")


if __name__ == "__main__":
    main()
