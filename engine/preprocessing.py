"""Turn any drawing into an MNIST-style 28x28 input.

MNIST digits were made by scaling each digit so that the longer side of its bounding box is 20 px
(with anti-aliasing, which gives soft grey edges) and then placing it in a 28x28 field so that its
centre of mass sits at the centre. Doing exactly the same to a drawing from the site (any size,
position, colour scheme or transparency) gives the model what it was trained on.

This module is used both by training and by inference; it depends only on numpy, Pillow and torch.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

PREPROCESSING_VERSION = "mnist-com-20px/1"

OUTPUT_SIZE = 28
BOX_SIZE = 20
# MNIST puts the centre of mass on pixel index 14 (the mean over the test set is 13.99 in both
# axes); in continuous coordinates, where pixel i covers [i, i + 1), that is 14.5.
_TARGET_CENTRE = 14.5

# Ink below this share of the strongest ink is noise (JPEG ringing, paper texture) and is dropped.
NOISE_RELATIVE = 0.12
# Ink below this absolute level is always dropped (a few grey levels of compression noise).
NOISE_ABSOLUTE = 0.03
# A drawing whose strongest ink is fainter than this is treated as empty.
MIN_PEAK_INK = 0.1
# A drawing needs at least this many clearly inked pixels (>= half the peak) ...
MIN_INK_PIXELS = 6
# ... and at least this share of the image's pixels, so a speck of dust in a photo is not a digit.
MIN_INK_AREA_FRACTION = 1e-5
# Quantile of the inked pixels taken as "full ink" when normalising the intensity scale.
_INK_LEVEL_QUANTILE = 0.98

_EXIF_ORIENTATION = 0x0112
# Larger images (photos) are first reduced by an integer factor (area averaging) to at most this
# side: the result is 20 px tall, so more resolution only costs time.
MAX_WORKING_SIDE = 1024
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "I", "F", "CMYK"})


class EmptyDrawingError(ValueError):
    """The drawing has no ink (or too little to be a digit)."""


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (photos from phones) when there is one."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # malformed EXIF: use the pixels as stored
        return image
    if orientation in (None, 1):
        return image
    return ImageOps.exif_transpose(image)


def _working_image(image: Image.Image) -> Image.Image:
    """The upright image, reduced when it is much larger than needed."""
    image = _upright(image)
    longest = max(image.size)
    if longest <= MAX_WORKING_SIDE or image.mode not in _REDUCIBLE_MODES:
        return image
    if image.mode not in ("LA", "RGBA") and image.has_transparency_data:
        return image  # a transparent colour key must be read at full resolution
    return image.reduce(math.ceil(longest / MAX_WORKING_SIDE))


def _border(values: np.ndarray) -> np.ndarray:
    """The pixels on the outer edge of a 2-D (or HxWxC) array, as a flat (or Nx C) array."""
    h, w = values.shape[:2]
    if h <= 2 or w <= 2:
        return values.reshape(h * w, *values.shape[2:])
    return np.concatenate([values[0], values[-1], values[1:-1, 0], values[1:-1, -1]])


def _nominal_range(values: np.ndarray) -> tuple[float, float]:
    """The range 32-bit integer or float pixels are meant to span: [0, 1], [0, 255] or [0, 65535]
    when they fit one of those, else their own range."""
    lo, hi = float(values.min()), float(values.max())
    for top in (1.0, 255.0, 65535.0):
        if lo >= 0.0 and hi <= top:
            return 0.0, top
    return min(lo, 0.0), hi


def _gray_values(image: Image.Image) -> tuple[np.ndarray, float, float]:
    """Grey levels of an image without alpha, with the nominal range of its pixel type."""
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.float32), 0.0, 65535.0
    if mode in ("I", "F"):
        values = np.asarray(image).astype(np.float32)
        return (values, *_nominal_range(values))
    if mode != "L":
        try:
            image = image.convert("L")
        except ValueError:  # modes without a direct conversion (e.g. HSV, LAB)
            image = image.convert("RGB").convert("L")
    return np.asarray(image).astype(np.float32), 0.0, 255.0


def _ink_from_gray(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Ink from grey levels: the background is the dominant border value; ink is the deviation
    from it on the side (darker or lighter) where the picture deviates most, scaled so that the
    far end of the range (black on a light background, white on a dark one) is 1."""
    bg = float(np.median(_border(values)))
    deviation = values - bg
    darker = float(np.clip(-deviation, 0.0, None).sum())
    lighter = float(np.clip(deviation, 0.0, None).sum())
    if darker == 0.0 and lighter == 0.0:
        return np.zeros(values.shape, np.float32)
    if darker >= lighter:
        ink = -deviation / max(bg - lo, 1e-6 * (hi - lo))
    else:
        ink = deviation / max(hi - bg, 1e-6 * (hi - lo))
    return ink.astype(np.float32, copy=False)


def _suppress_noise(ink: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and zero the faint values (in place)."""
    np.clip(ink, 0.0, 1.0, out=ink)
    peak = float(ink.max()) if ink.size else 0.0
    threshold = max(NOISE_ABSOLUTE, NOISE_RELATIVE * peak)
    ink[ink < threshold] = 0.0
    return ink


def ink_map(image: Image.Image) -> np.ndarray:
    """How much ink each pixel holds: float32 HxW in [0, 1], 1 = full ink, 0 = background.

    * With an alpha channel (RGBA, LA, PA, or a palette/RGB/L image with a transparent colour)
      whose border is transparent, the ink is the alpha coverage, whatever the colour (browsers
      store black RGB under transparent pixels, so the colour there means nothing). Transparent
      pixels on an opaque background are shown as that background. A fully transparent image has
      no ink.
    * Otherwise the image is read as grey levels (any mode: 8/16/32-bit, float, CMYK, palette)
      and the polarity is taken from the border: the median border value is the background and
      ink is the deviation from it, so dark-on-light and light-on-dark drawings give the same map.

    EXIF orientation is applied first. Faint noise (below a small share of the strongest ink) is
    set to 0.
    """
    image = _upright(image)
    if image.has_transparency_data:
        rgba = np.asarray(image if image.mode == "RGBA" else image.convert("RGBA"))
        alpha = rgba[..., 3]
        a_min, a_max = int(alpha.min()), int(alpha.max())
        if a_max == 0:
            return np.zeros(alpha.shape, np.float32)
        if a_min != a_max:
            border_alpha = float(np.median(_border(alpha)))
            if border_alpha < 128.0:
                ink = (alpha.astype(np.float32) - border_alpha) / (255.0 - border_alpha)
                return _suppress_noise(ink)
            # Opaque background with some transparent pixels: show them as the background.
            a = alpha.astype(np.float32)[..., None] / 255.0
            rgb = rgba[..., :3].astype(np.float32)
            opaque_border = _border(rgb)[_border(alpha) >= 128]
            background = np.median(opaque_border, axis=0)
            rgb = rgb * a + background * (1.0 - a)
            gray = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
            return _suppress_noise(_ink_from_gray(gray, 0.0, 255.0))
        image = Image.fromarray(np.ascontiguousarray(rgba[..., :3]), "RGB")
    values, lo, hi = _gray_values(image)
    return _suppress_noise(_ink_from_gray(values, lo, hi))


def _check_not_empty(ink: np.ndarray) -> float:
    """Raise EmptyDrawingError unless the map holds a drawing; return its peak ink."""
    peak = float(ink.max()) if ink.size else 0.0
    if peak < MIN_PEAK_INK:
        raise EmptyDrawingError("the drawing is empty (no ink found)")
    inked = int(np.count_nonzero(ink >= 0.5 * peak))
    if inked < max(MIN_INK_PIXELS, MIN_INK_AREA_FRACTION * ink.size):
        raise EmptyDrawingError("the drawing is empty (only a few specks of ink)")
    return peak


def _ink_level(crop: np.ndarray) -> float:
    """The intensity of a full stroke: a high quantile of the inked pixels (robust to outliers)."""
    inked = crop[crop > 0]
    k = min(inked.size - 1, int(_INK_LEVEL_QUANTILE * inked.size))
    return float(np.partition(inked, k)[k])


def _resample_rows(a: np.ndarray, start: float, scale: float) -> np.ndarray:
    """Resample the rows of ``a`` (n x m) onto the 28 output rows: ``[28, m]``.

    Source row i covers ``[i, i + 1)`` and lands on ``[start + i * scale, start + (i + 1) * scale)``
    in output coordinates; rows outside the source are background. When reducing (``scale <= 1``)
    each output row is the exact area average of what it covers (MNIST's anti-aliased size
    normalisation), computed from cumulative sums; when enlarging it is linearly interpolated
    (area averaging would only copy pixels into blocks).

    Not as two matrix products: numpy hands a product this size to OpenBLAS's threads, which spin on
    the other cores (a web process measured twice the CPU time per prediction for 1 ms less latency).
    """
    n = a.shape[0]
    edges = (np.arange(OUTPUT_SIZE + 1, dtype=np.float64) - start) / scale
    if scale <= 1.0:
        cumulative = np.zeros((n + 1, a.shape[1]), np.float64)
        np.cumsum(a, axis=0, dtype=np.float64, out=cumulative[1:])
        x = np.clip(edges, 0.0, n)
        i = np.minimum(x.astype(np.intp), n - 1)
        frac = (x - i)[:, None]
        integral = cumulative[i] + frac * a[i]  # integral of the rows from 0 to x
        return ((integral[1:] - integral[:-1]) * scale).astype(np.float32)
    padded = np.zeros((n + 2, a.shape[1]), np.float32)
    padded[1:-1] = a
    # output row centres in padded source index space (padded row k has its centre at k - 0.5)
    pos = np.clip((edges[:-1] + edges[1:]) / 2.0 + 0.5, 0.0, n + 1.0)
    i = np.minimum(pos.astype(np.intp), n)
    frac = (pos - i).astype(np.float32)[:, None]
    return (1.0 - frac) * padded[i] + frac * padded[i + 1]


def _place(crop: np.ndarray, box_size: float = BOX_SIZE) -> np.ndarray:
    """Scale a cropped ink map so its longer side is ``box_size`` (20) px and centre its mass in 28x28."""
    h, w = crop.shape
    scale = box_size / max(h, w)
    # Centre of mass of the crop in continuous coordinates (pixel i covers [i, i + 1)).
    rows, cols = crop.sum(axis=1, dtype=np.float64), crop.sum(axis=0, dtype=np.float64)
    mass = float(rows.sum())
    cy = float(np.dot(rows, np.arange(h))) / mass + 0.5
    cx = float(np.dot(cols, np.arange(w))) / mass + 0.5
    # Where the crop's top-left corner lands in the output, kept inside the field.
    top = min(max(_TARGET_CENTRE - cy * scale, 0.0), OUTPUT_SIZE - h * scale)
    left = min(max(_TARGET_CENTRE - cx * scale, 0.0), OUTPUT_SIZE - w * scale)
    if scale == 1.0:
        # Already MNIST-sized: shift by whole pixels, as MNIST did, so such an image comes back
        # unchanged instead of being interpolated.
        top, left = float(round(top)), float(round(left))
    out = _resample_rows(_resample_rows(crop, top, scale).T, left, scale).T
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)


def mnist_array(ink: np.ndarray, *, box_size: float = BOX_SIZE) -> np.ndarray:
    """The 28x28 float32 MNIST-style array for an ink map (see ``preprocess``).

    ``box_size`` is the longer side of the scaled digit; the site serves MNIST's 20 px (other values
    exist to measure the choice).
    """
    peak = _check_not_empty(ink)
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    level = max(_ink_level(crop), 0.5 * peak)
    crop = np.minimum(crop * np.float32(1.0 / level), np.float32(1.0))
    return _place(np.ascontiguousarray(crop, dtype=np.float32), box_size)


def preprocess(image: Image.Image, *, box_size: float = BOX_SIZE) -> torch.Tensor:
    """An image of a drawn digit as the model's input: float32 ``[1, 28, 28]`` in [0, 1], ink = 1.

    Steps (the MNIST construction): ink map (any colours, polarity or transparency) -> crop to the
    ink's bounding box -> intensity normalised so a full stroke is 1 -> scaled with area averaging
    so the longer side is 20 px, keeping the aspect ratio -> placed in a 28x28 field with the
    centre of mass at pixel (14, 14), to sub-pixel accuracy, but never cut off at the edge.

    Raises ``EmptyDrawingError`` when there is no ink, or only a faint trace or a few specks.
    """
    return torch.from_numpy(mnist_array(ink_map(_working_image(image)), box_size=box_size)).unsqueeze(0)


def preprocess_batch(images: Sequence[Image.Image]) -> torch.Tensor:
    """``preprocess`` for several images: float32 ``[N, 1, 28, 28]``."""
    if not images:
        return torch.zeros((0, 1, OUTPUT_SIZE, OUTPUT_SIZE), dtype=torch.float32)
    return torch.stack([preprocess(image) for image in images])


def to_png_bytes(tensor: torch.Tensor | np.ndarray) -> bytes:
    """A 28x28 model input (``[28, 28]``, ``[1, 28, 28]`` or ``[1, 1, 28, 28]``, values in [0, 1])
    as a grayscale PNG, white ink on black, to show what the model saw."""
    if isinstance(tensor, torch.Tensor):
        array = tensor.detach().to("cpu", torch.float32).numpy()
    else:
        array = np.asarray(tensor, dtype=np.float32)
    array = np.squeeze(array)
    if array.ndim != 2:
        raise ValueError(f"expected a single 2-D image, got shape {tuple(np.shape(tensor))}")
    pixels = np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, format="PNG")
    return buffer.getvalue()
