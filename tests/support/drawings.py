"""Drawings made the way a browser canvas makes them, for API and page tests."""
from __future__ import annotations

import base64
import io

from PIL import Image, ImageDraw

SEVEN = [(90, 60), (190, 60), (120, 230)]
ONE = [(140, 50), (140, 230)]
ZERO = [(140, 50), (90, 90), (85, 170), (140, 230), (195, 170), (190, 90), (140, 50)]


def canvas(points=SEVEN, *, mode: str = "RGBA", size: int = 280, width: int = 18) -> Image.Image:
    """Dark ink on a transparent canvas (RGBA), or on white (RGB / L)."""
    background = (0, 0, 0, 0) if mode == "RGBA" else ("white" if mode != "1" else 1)
    image = Image.new(mode, (size, size), background)
    ink = (20, 20, 20, 255) if mode == "RGBA" else ("black" if mode != "1" else 0)
    draw = ImageDraw.Draw(image)
    scale = size / 280
    pts = [(x * scale, y * scale) for x, y in points]
    draw.line(pts, fill=ink, width=max(1, int(width * scale)), joint="curve")
    r = width * scale / 2
    for x, y in (pts[0], pts[-1]):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=ink)
    return image


def png_bytes(image: Image.Image, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **save_args)
    return buffer.getvalue()


def encode(image_or_bytes, *, fmt: str = "PNG", data_url: bool = True) -> str:
    if isinstance(image_or_bytes, bytes):
        data = image_or_bytes
    else:
        buffer = io.BytesIO()
        image_or_bytes.save(buffer, fmt)
        data = buffer.getvalue()
    text = base64.b64encode(data).decode("ascii")
    mime = "image/png" if fmt == "PNG" else f"image/{fmt.lower()}"
    return f"data:{mime};base64,{text}" if data_url else text
