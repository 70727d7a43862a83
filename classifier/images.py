"""Turning untrusted bytes into a PIL image, with limits, and clear errors for everything else."""
from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

from django.conf import settings
from PIL import Image, UnidentifiedImageError

from mnistsite.errors import ApplicationError

# Formats a drawing may arrive in. SVG and anything Pillow does not decode are refused.
ALLOWED_FORMATS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "WEBP": "webp", "BMP": "bmp"}
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)

# Pillow's own decompression-bomb guard (Image.MAX_IMAGE_PIXELS) stays on; PREDICT_MAX_IMAGE_PIXELS is far lower.


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image
    format: str  # PIL format name
    extension: str
    data: bytes


def max_bytes() -> int:
    return int(settings.PREDICT_MAX_IMAGE_BYTES)


def max_pixels() -> int:
    return int(settings.PREDICT_MAX_IMAGE_PIXELS)


def decode_base64(text: str) -> bytes:
    """Bytes from base64 with or without a ``data:`` URL prefix; 400 on anything malformed."""
    if not isinstance(text, str) or not text.strip():
        raise ApplicationError("invalid_image", "The image is empty.", status=400)
    text = text.strip()
    match = _DATA_URL.match(text)
    if match:
        if not match["b64"]:
            raise ApplicationError("invalid_image", "Only base64 data URLs are accepted.", status=400)
        text = text[match.end():]
    # Rough size check before decoding: base64 is 4 characters per 3 bytes.
    if len(text) * 3 // 4 > max_bytes() + 3:
        raise _too_large_bytes(len(text) * 3 // 4)
    try:
        return base64.b64decode(re.sub(r"\s+", "", text), validate=True)
    except (binascii.Error, ValueError):
        raise ApplicationError("invalid_image", "The image is not valid base64.", status=400) from None


def decode_image(data: bytes) -> DecodedImage:
    """Open and fully decode an image, enforcing the byte and pixel limits (413) and formats (400)."""
    if not data:
        raise ApplicationError("invalid_image", "The image is empty.", status=400)
    if len(data) > max_bytes():
        raise _too_large_bytes(len(data))
    if data.lstrip()[:5].lower() in (b"<?xml", b"<svg ", b"<svg>") or b"<svg" in data[:512].lower():
        raise ApplicationError("invalid_image", "SVG images are not supported; send PNG or JPEG.",
                               detail={"supported": sorted(ALLOWED_FORMATS)}, status=400)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format or ""
            if fmt not in ALLOWED_FORMATS:
                raise ApplicationError("invalid_image", f"Unsupported image format {fmt or 'unknown'}.",
                                       detail={"supported": sorted(ALLOWED_FORMATS)}, status=400)
            width, height = image.size
            if width * height > max_pixels():
                raise ApplicationError(
                    "image_too_large",
                    f"The image is {width}x{height} pixels; at most {max_pixels():,} pixels are accepted.",
                    detail={"width": width, "height": height, "max_pixels": max_pixels()},
                    status=413,
                )
            if getattr(image, "n_frames", 1) > 1:
                raise ApplicationError("invalid_image", "Animated images are not supported; send a single frame.",
                                       status=400)
            image.load()
    except ApplicationError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApplicationError("image_too_large", "The image has too many pixels.", status=413) from None
    except UnidentifiedImageError:
        raise ApplicationError("invalid_image", "The data is not an image Pillow can read (PNG, JPEG, ...).",
                               detail={"supported": sorted(ALLOWED_FORMATS)}, status=400) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ApplicationError("invalid_image", "The image is corrupt or truncated.", detail=str(exc),
                               status=400) from None
    return DecodedImage(image=image, format=fmt, extension=ALLOWED_FORMATS[fmt], data=data)


def _too_large_bytes(size: int) -> ApplicationError:
    return ApplicationError(
        "image_too_large",
        f"The image is {size:,} bytes; at most {max_bytes():,} bytes are accepted.",
        detail={"bytes": size, "max_bytes": max_bytes()},
        status=413,
    )
