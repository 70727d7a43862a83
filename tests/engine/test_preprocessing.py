"""engine.preprocessing: any drawing becomes the same MNIST-style 28x28 input."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from engine.preprocessing import (
    PREPROCESSING_VERSION,
    EmptyDrawingError,
    ink_map,
    preprocess,
    preprocess_batch,
    to_png_bytes,
)

SEVEN = [(70, 70), (205, 70), (120, 230)]
ZERO = [(140, 50), (95, 70), (80, 140), (95, 210), (140, 232), (185, 210), (200, 140), (185, 70), (140, 50)]


def coverage(points, *, size=280, width=16, scale=1.0, shift=(0, 0), ss=4) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a round-pen polyline (drawn 4x larger, then reduced)."""
    canvas = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(canvas)
    pts = [((x * scale + shift[0]) * ss, (y * scale + shift[1]) * ss) for x, y in points]
    w = width * scale * ss
    draw.line(pts, fill=255, width=round(w))
    for x, y in pts:
        draw.ellipse((x - w / 2, y - w / 2, x + w / 2, y + w / 2), fill=255)
    return np.asarray(canvas.reduce(ss)).astype(np.float32) / 255.0


def dark_on_light(cov: np.ndarray) -> Image.Image:
    return Image.fromarray(np.rint(255 * (1 - cov)).astype(np.uint8), "L").convert("RGB")


def light_on_dark(cov: np.ndarray) -> Image.Image:
    return Image.fromarray(np.rint(255 * cov).astype(np.uint8), "L").convert("RGB")


def transparent(cov: np.ndarray, colour=(0, 0, 0)) -> Image.Image:
    rgba = np.zeros(cov.shape + (4,), np.uint8)
    rgba[cov > 0, :3] = colour
    rgba[..., 3] = np.rint(255 * cov).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")


def centre_of_mass(x: torch.Tensor) -> tuple[float, float]:
    a = x.squeeze().numpy().astype(np.float64)
    ys, xs = np.mgrid[: a.shape[0], : a.shape[1]]
    return float((a * ys).sum() / a.sum()), float((a * xs).sum() / a.sum())


def bbox_size(x: torch.Tensor, threshold: float = 0.0) -> tuple[int, int]:
    a = x.squeeze().numpy() > threshold
    rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def mean_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


@pytest.fixture(params=["seven", "zero"])
def digit(request):
    return SEVEN if request.param == "seven" else ZERO


@pytest.fixture
def reference(digit) -> torch.Tensor:
    return preprocess(dark_on_light(coverage(digit)))


def test_version_is_a_string():
    assert isinstance(PREPROCESSING_VERSION, str) and PREPROCESSING_VERSION


def test_output_shape_dtype_range(reference):
    assert reference.shape == (1, 28, 28)
    assert reference.dtype == torch.float32
    assert float(reference.min()) == 0.0
    assert 0.99 <= float(reference.max()) <= 1.0
    # soft, MNIST-like edges: some grey levels, mostly saturated cores
    values = reference[reference > 0]
    assert ((values > 0.05) & (values < 0.95)).any()
    assert float((values >= 0.95).float().mean()) > 0.2


def test_centre_of_mass_and_box(reference):
    cy, cx = centre_of_mass(reference)
    assert abs(cy - 14) < 0.5 and abs(cx - 14) < 0.5
    h, w = bbox_size(reference, threshold=0.1)
    assert 19 <= max(h, w) <= 21


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda pts: dark_on_light(coverage(pts, shift=(-40.25, 30.5))), id="shifted"),
        pytest.param(lambda pts: dark_on_light(coverage(pts, shift=(35.75, -25.25))), id="shifted-other-way"),
        pytest.param(lambda pts: dark_on_light(coverage(pts, scale=0.5)), id="half-size"),
        pytest.param(lambda pts: dark_on_light(coverage(pts, size=560, scale=2.0)), id="double-canvas"),
        pytest.param(lambda pts: light_on_dark(coverage(pts)), id="light-on-dark"),
        pytest.param(lambda pts: transparent(coverage(pts)), id="transparent-black-ink"),
        pytest.param(lambda pts: transparent(coverage(pts), (255, 255, 255)), id="transparent-white-ink"),
        pytest.param(lambda pts: dark_on_light(coverage(pts)).convert("L"), id="grayscale-L"),
        pytest.param(lambda pts: light_on_dark(coverage(pts)).convert("LA"), id="grayscale-LA"),
        pytest.param(lambda pts: dark_on_light(coverage(pts)).convert("P"), id="palette"),
        pytest.param(lambda pts: dark_on_light(coverage(pts)).convert("CMYK"), id="cmyk"),
        pytest.param(lambda pts: dark_on_light(coverage(pts)).convert("RGBA"), id="opaque-rgba"),
    ],
)
def test_same_digit_same_input(digit, reference, make):
    out = preprocess(make(digit))
    assert mean_abs_diff(out, reference) < 0.02
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) < 0.5 and abs(cx - 14) < 0.5


def test_jpeg_round_trip(digit, reference):
    buffer = io.BytesIO()
    dark_on_light(coverage(digit)).save(buffer, format="JPEG", quality=70)
    out = preprocess(Image.open(io.BytesIO(buffer.getvalue())))
    assert mean_abs_diff(out, reference) < 0.01


def test_sixteen_bit(digit, reference):
    cov = coverage(digit)
    values = np.rint(65535 * (1 - cov)).astype(np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    out = preprocess(image)
    assert mean_abs_diff(out, reference) < 0.03
    # the same data as 32-bit integers and as floats in [0, 1]
    assert mean_abs_diff(preprocess(Image.fromarray(values.astype(np.int32))), reference) < 0.03
    assert mean_abs_diff(preprocess(Image.fromarray((1 - cov).astype(np.float32))), reference) < 0.03


def test_light_grey_pen_is_normalised(digit, reference):
    cov = coverage(digit)
    grey = Image.fromarray(np.rint(255 - 90 * cov).astype(np.uint8), "L")
    out = preprocess(grey)
    assert float(out.max()) > 0.99
    assert mean_abs_diff(out, reference) < 0.03


def test_grey_background_both_polarities(digit, reference):
    cov = coverage(digit)
    dark_ink = Image.fromarray(np.rint(150 - 150 * cov).astype(np.uint8), "L")
    light_ink = Image.fromarray(np.rint(150 + 105 * cov).astype(np.uint8), "L")
    assert mean_abs_diff(preprocess(dark_ink), reference) < 0.03
    assert mean_abs_diff(preprocess(light_ink), reference) < 0.03


def test_transparent_pixels_on_an_opaque_background(digit, reference):
    # a white card with transparent corners; the digit is dark on the opaque part
    image = dark_on_light(coverage(digit)).convert("RGBA")
    alpha = np.full((280, 280), 255, np.uint8)
    alpha[:12, :12] = alpha[:12, -12:] = alpha[-12:, :12] = alpha[-12:, -12:] = 0
    rgba = np.asarray(image).copy()
    rgba[..., 3] = alpha
    rgba[alpha == 0, :3] = 0
    out = preprocess(Image.fromarray(rgba, "RGBA"))
    assert mean_abs_diff(out, reference) < 0.03


def test_exif_orientation_is_applied(digit, reference):
    # stored rotated by 90 degrees, with EXIF orientation 6 ("rotate 90 CW to view")
    stored = dark_on_light(coverage(digit)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    out = preprocess(Image.open(io.BytesIO(buffer.getvalue())))
    assert mean_abs_diff(out, reference) < 0.03


def test_noise_is_ignored(digit, reference):
    rng = np.random.default_rng(0)
    cov = coverage(digit)
    noisy = 255 * (1 - cov) - rng.uniform(0, 12, cov.shape)
    out = preprocess(Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "L"))
    assert mean_abs_diff(out, reference) < 0.03


def test_ink_map_polarity_and_range(digit):
    cov = coverage(digit)
    for image in (dark_on_light(cov), light_on_dark(cov), transparent(cov)):
        ink = ink_map(image)
        assert ink.dtype == np.float32 and ink.shape == (280, 280)
        assert ink.min() == 0.0 and ink.max() <= 1.0
        assert ink[cov >= 0.99].min() > 0.98
        assert ink[cov == 0].max() == 0.0


def test_tall_thin_one_keeps_its_aspect():
    image = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(image).rectangle((139, 60, 140, 220), fill=0)  # 2 px wide, 161 px tall
    out = preprocess(image)
    h, w = bbox_size(out)
    assert 19 <= h <= 21
    assert w <= 2
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) < 0.5 and abs(cx - 14) < 0.5


def test_wide_digit_uses_the_width():
    image = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(image).line([(30, 140), (250, 150)], fill=0, width=14)
    h, w = bbox_size(preprocess(image), threshold=0.1)
    assert 19 <= w <= 21 and h <= 4


def test_tiny_drawing_is_enlarged(digit, reference):
    out = preprocess(dark_on_light(coverage(digit, scale=0.1, shift=(100, 100))))
    h, w = bbox_size(out, threshold=0.1)
    assert 19 <= max(h, w) <= 21
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) < 0.5 and abs(cx - 14) < 0.5
    assert mean_abs_diff(out, reference) < 0.08  # 28 px drawn: coarse, but the same shape


def test_digit_at_the_edge_stays_inside():
    image = Image.new("L", (280, 280), 255)
    draw = ImageDraw.Draw(image)
    draw.line([(40, 40), (240, 40)], fill=0, width=30)  # heavy bar: mass far from the box centre
    draw.line([(140, 40), (140, 240)], fill=0, width=4)
    out = preprocess(image).squeeze()
    assert float(out.sum()) > 0
    h, w = bbox_size(out, threshold=0.05)
    assert h >= 19 and w >= 19  # nothing was cut off


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(Image.new("RGB", (280, 280), "white"), id="white"),
        pytest.param(Image.new("RGB", (280, 280), "black"), id="black"),
        pytest.param(Image.new("RGBA", (280, 280), (0, 0, 0, 0)), id="transparent"),
        pytest.param(Image.new("RGBA", (280, 280), (255, 255, 255, 0)), id="transparent-white"),
        pytest.param(Image.new("L", (280, 280), 128), id="grey"),
        pytest.param(Image.new("I;16", (64, 64), 40000), id="grey-16-bit"),
        pytest.param(Image.new("F", (64, 64), 0.3), id="grey-float"),
    ],
)
def test_empty_canvas_raises(image):
    with pytest.raises(EmptyDrawingError):
        preprocess(image)


def test_faint_speck_and_single_dot_raise():
    faint = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(faint).ellipse((100, 100, 110, 110), fill=245)
    with pytest.raises(EmptyDrawingError):
        preprocess(faint)
    speck = Image.new("L", (280, 280), 255)
    speck.putpixel((50, 60), 0)
    speck.putpixel((51, 60), 0)
    with pytest.raises(EmptyDrawingError):
        preprocess(speck)
    noise = np.random.default_rng(0).integers(250, 256, (280, 280)).astype(np.uint8)
    with pytest.raises(EmptyDrawingError):
        preprocess(Image.fromarray(noise, "L"))


def test_empty_drawing_error_is_a_value_error():
    assert issubclass(EmptyDrawingError, ValueError)


def test_preprocess_batch(digit):
    images = [dark_on_light(coverage(digit)), light_on_dark(coverage(digit, scale=0.6))]
    batch = preprocess_batch(images)
    assert batch.shape == (2, 1, 28, 28) and batch.dtype == torch.float32
    assert torch.equal(batch[0], preprocess(images[0]))
    assert preprocess_batch([]).shape == (0, 1, 28, 28)


def test_to_png_bytes_round_trip(reference):
    data = to_png_bytes(reference)
    assert data.startswith(b"\x89PNG")
    image = Image.open(io.BytesIO(data))
    assert image.mode == "L" and image.size == (28, 28)
    pixels = np.asarray(image).astype(np.float32) / 255.0
    assert np.abs(pixels - reference.squeeze().numpy()).max() <= 0.5 / 255 + 1e-6
    assert to_png_bytes(reference.squeeze()) == data
    assert to_png_bytes(reference.unsqueeze(0).numpy()) == data
    with pytest.raises(ValueError):
        to_png_bytes(torch.zeros(2, 28, 28))


def test_mnist_digit_is_nearly_unchanged():
    """An image already in MNIST form comes back (almost) as it was."""
    cov = coverage(SEVEN)
    out = preprocess(dark_on_light(cov))
    again = preprocess(Image.fromarray(np.rint(out.squeeze().numpy() * 255).astype(np.uint8), "L"))
    assert mean_abs_diff(again, out) < 0.01


def test_transparent_gif(digit, reference):
    buffer = io.BytesIO()
    transparent(coverage(digit)).save(buffer, format="GIF")
    image = Image.open(io.BytesIO(buffer.getvalue()))
    assert image.mode == "P" and "transparency" in image.info
    assert mean_abs_diff(preprocess(image), reference) < 0.02


def test_large_image_is_handled(digit, reference):
    big = dark_on_light(coverage(digit)).resize((2400, 2400), Image.Resampling.BICUBIC)
    assert mean_abs_diff(preprocess(big), reference) < 0.02
