"""Render recorded pen trajectories as the canvas images a browser would send to the site.

The data are on-line digits (lists of pen-down strokes, each a list of ``[x, y]`` points, y growing
downward). ``render`` draws one on a square canvas the way an HTML canvas does with round caps and
joins, anti-aliased by supersampling, in one of the three forms a browser produces:

* ``"dark-on-light"``: RGB, dark ink on a white background;
* ``"light-on-dark"``: RGB, light ink on a black background;
* ``"transparent"``: RGBA, ink colour in RGB with alpha = coverage, background fully transparent
  with RGB (0, 0, 0), as ``canvas.toDataURL()`` gives for a canvas that was never filled.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from engine import preprocessing
from engine.preprocessing import BOX_SIZE, PREPROCESSING_VERSION, preprocess

FORMS: tuple[str, ...] = ("dark-on-light", "light-on-dark", "transparent")
PEN_WIDTH_RANGE = (12.0, 24.0)
HEIGHT_FRACTION_RANGE = (0.5, 0.9)
SUPERSAMPLE = 4

# Ink colours a drawing app plausibly uses, per form (RGB).
_DARK_INKS = ((0, 0, 0), (20, 20, 20), (34, 34, 34), (17, 24, 39), (30, 41, 120))
_LIGHT_INKS = ((255, 255, 255), (245, 245, 245), (230, 230, 230), (224, 231, 255))
_ANY_INKS = _DARK_INKS + _LIGHT_INKS + ((37, 99, 235), (220, 38, 38))


def load_strokes(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a ``strokes.json(.gz)`` file: a list of ``{"label", "writer", "strokes"}`` dicts."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        samples = json.load(fh)
    if not isinstance(samples, list):
        raise ValueError(f"{path}: expected a JSON list of samples")
    return samples


def _points(sample: dict[str, Any]) -> list[np.ndarray]:
    strokes = [np.asarray(stroke, dtype=np.float64).reshape(-1, 2) for stroke in sample["strokes"]]
    strokes = [s for s in strokes if len(s)]
    if not strokes:
        raise ValueError("sample has no points")
    return strokes


def coverage(
    sample: dict[str, Any],
    *,
    size: int = 280,
    pen_width: float,
    digit_height_frac: float,
    offset: tuple[float, float] = (0.5, 0.5),
) -> np.ndarray:
    """Ink coverage (uint8 ``size x size``, 255 = fully covered) of a sample drawn with a round pen.

    The digit keeps its aspect ratio; its drawn height (pen included) is ``digit_height_frac`` of
    the canvas unless that would make it wider than the canvas. ``offset`` (each in [0, 1]) places
    it within the room left over, so the drawing is always fully inside the canvas.
    """
    strokes = _points(sample)
    allpts = np.concatenate(strokes)
    origin = allpts.min(axis=0)
    extent = allpts.max(axis=0) - origin  # (width, height) of the centre line
    room = size - 2.0  # keep a pixel free on each side
    target_h = max(digit_height_frac * size - pen_width, 0.0)
    scales = []
    if extent[1] > 0:
        scales.append(target_h / extent[1])
    if extent[0] > 0:
        scales.append((room - pen_width) / extent[0])
    scale = min(scales) if scales else 0.0
    drawn_w = extent[0] * scale + pen_width
    drawn_h = extent[1] * scale + pen_width
    fx = float(np.clip(offset[0], 0.0, 1.0))
    fy = float(np.clip(offset[1], 0.0, 1.0))
    left = 1.0 + fx * max(room - drawn_w, 0.0)
    top = 1.0 + fy * max(room - drawn_h, 0.0)

    ss = SUPERSAMPLE
    radius = pen_width * ss / 2.0
    canvas = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(canvas)
    for stroke in strokes:
        pts = ((stroke - origin) * scale + (left + pen_width / 2.0, top + pen_width / 2.0)) * ss
        coords = [(float(x), float(y)) for x, y in pts]
        if len(coords) > 1:
            draw.line(coords, fill=255, width=max(1, round(pen_width * ss)))
        for x, y in coords:  # round caps and joins; a single point is a dot
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return np.asarray(canvas.reduce(ss))


def render(
    sample: dict[str, Any],
    *,
    size: int = 280,
    pen_width: float,
    digit_height_frac: float,
    offset: tuple[float, float],
    form: str,
    rng: np.random.Generator | None = None,
) -> Image.Image:
    """A sample drawn on a ``size x size`` canvas in one of ``FORMS`` (see the module docstring).

    ``rng`` picks a plausible ink colour for the form; without it the ink is black (white when
    light on dark).
    """
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; expected one of {FORMS}")
    cover = coverage(
        sample, size=size, pen_width=pen_width, digit_height_frac=digit_height_frac, offset=offset
    )
    if form == "dark-on-light":
        inks, background = _DARK_INKS, (255, 255, 255)
    elif form == "light-on-dark":
        inks, background = _LIGHT_INKS, (0, 0, 0)
    else:
        inks, background = _ANY_INKS, (0, 0, 0)
    ink = np.asarray(inks[int(rng.integers(len(inks)))] if rng is not None else inks[0], np.float32)
    a = cover.astype(np.float32)[..., None] / 255.0
    if form == "transparent":
        rgb = np.where(a > 0, ink, np.float32(0.0))
        rgba = np.concatenate([rgb, a * 255.0], axis=-1)
        return Image.fromarray(np.rint(rgba).astype(np.uint8), "RGBA")
    rgb = ink * a + np.asarray(background, np.float32) * (1.0 - a)
    return Image.fromarray(np.rint(rgb).astype(np.uint8), "RGB")


def variant_params(index: int, variant: int, *, seed: int = 0) -> dict[str, Any]:
    """The random drawing parameters of one variant of one sample (deterministic per seed)."""
    rng = np.random.default_rng((seed, index, variant))
    return {
        "form": FORMS[variant % len(FORMS)],
        "pen_width": float(rng.uniform(*PEN_WIDTH_RANGE)),
        "digit_height_frac": float(rng.uniform(*HEIGHT_FRACTION_RANGE)),
        "offset": (float(rng.uniform()), float(rng.uniform())),
        "rng": rng,
    }


def render_dataset(
    samples: Sequence[dict[str, Any]], *, seed: int = 0, variants_per_sample: int = 3, size: int = 280
) -> list[tuple[Image.Image, int, dict[str, Any]]]:
    """Every sample drawn ``variants_per_sample`` times: ``[(image, label, meta), ...]``.

    Per variant the pen width is uniform in 12-24 px, the digit height uniform in 0.5-0.9 of the
    canvas, the position uniform over the room left, and the form cycles through ``FORMS`` so each
    sample appears in each form (with 3 or more variants). The same seed gives the same images.
    """
    out = []
    for index, sample in enumerate(samples):
        for variant in range(variants_per_sample):
            params = variant_params(index, variant, seed=seed)
            image = render(sample, size=size, **params)
            meta = {k: v for k, v in params.items() if k != "rng"}
            meta.update(index=index, variant=variant, writer=sample.get("writer", ""))
            out.append((image, int(sample["label"]), meta))
    return out


@dataclass
class RenderedSet:
    """Recorded digits rendered as canvases and preprocessed like the site, with what each one is.

    ``x`` float32 ``[N, 1, 28, 28]``, ``y`` int64 ``[N]``; the lists hold, per rendering, the writer
    (``"<group>/<id>"``), the recorded sample's index, the canvas form, the pen width (px) and the
    digit's height (share of the canvas).
    """

    x: torch.Tensor
    y: torch.Tensor
    writer: list[str]
    index: list[int]
    form: list[str]
    pen_width: list[float]
    height_frac: list[float]

    @property
    def group(self) -> list[str]:
        return [w.split("/")[0] for w in self.writer]

    def as_dict(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "writer": self.writer, "index": self.index, "form": self.form,
                "pen_width": self.pen_width, "height_frac": self.height_frac}


def default_cache_dir() -> Path:
    """Where rendered sets are kept between runs: outside the repository (they derive from the data)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnistsite" / "real-drawings"


def _cache_key(path: Path, **params: Any) -> str:
    digest = hashlib.sha256()
    digest.update(path.read_bytes())
    for source in (Path(__file__), Path(preprocessing.__file__)):  # code that shapes the images
        digest.update(source.read_bytes())
    digest.update(json.dumps({**params, "preprocessing": PREPROCESSING_VERSION}, sort_keys=True).encode())
    return digest.hexdigest()[:24]


def rendered_set(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    variants: int = 3,
    limit: int | None = None,
    box_size: float = BOX_SIZE,
    cache_dir: str | os.PathLike[str] | None = None,
) -> RenderedSet:
    """The samples in ``path`` rendered (as ``render_dataset``) and preprocessed like the site.

    With ``cache_dir`` the result is kept there under a key made of the data, the parameters and the
    code that renders and preprocesses, so a second run with the same inputs skips the ~50 s of work.
    """
    path = Path(path)
    cache_file = None
    if cache_dir is not None:
        key = _cache_key(path, seed=seed, variants=variants, limit=limit, box_size=box_size)
        cache_file = Path(cache_dir) / f"{key}.pt"
        if cache_file.is_file():
            return RenderedSet(**torch.load(cache_file, weights_only=True))
    samples = load_strokes(path)
    if limit is not None:
        samples = samples[:limit]
    xs, ys, meta = [], [], []
    for image, label, info in render_dataset(samples, seed=seed, variants_per_sample=variants):
        xs.append(preprocess(image, box_size=box_size))
        ys.append(label)
        meta.append(info)
    result = RenderedSet(
        x=torch.stack(xs) if xs else torch.zeros(0, 1, 28, 28),
        y=torch.tensor(ys, dtype=torch.int64),
        writer=[str(m["writer"]) for m in meta],
        index=[int(m["index"]) for m in meta],
        form=[str(m["form"]) for m in meta],
        pen_width=[float(m["pen_width"]) for m in meta],
        height_frac=[float(m["digit_height_frac"]) for m in meta],
    )
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        torch.save(result.as_dict(), tmp)
        os.replace(tmp, cache_file)
    return result


def rendered_tensor_dataset(
    path: str | os.PathLike[str], seed: int = 0, variants: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples in ``path`` rendered (as ``render_dataset``) and preprocessed like the site:
    ``(x float32 [N, 1, 28, 28], y int64 [N])``, ready to score a model with."""
    rendered = rendered_set(path, seed=seed, variants=variants)
    return rendered.x, rendered.y


def split_writers(writers: Sequence[str], *, seed: int = 0) -> set[str]:
    """Half of each group's writers (seeded): the "users" who correct, the rest are the new visitors.

    Writers are ``"<group>/<id>"``; per group, the sorted distinct writers are shuffled with ``seed`` and
    the first half (rounded down) returned. The same writers and seed give the same half.
    """
    by_group: dict[str, list[str]] = {}
    for writer in sorted(set(writers)):
        by_group.setdefault(writer.split("/")[0], []).append(writer)
    chosen: set[str] = set()
    for group, members in sorted(by_group.items()):
        rng = np.random.default_rng([seed, int(hashlib.sha256(group.encode()).hexdigest()[:8], 16)])
        order = rng.permutation(len(members))
        chosen.update(members[i] for i in order[: len(members) // 2])
    return chosen
