"""Reading photos for reconstruction: RGB uint8 arrays with EXIF orientation applied.

Every unusable input raises :class:`ImageError` with one line naming the file and the problem,
so that a batch runner can record a per-image status and carry on with the other images.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

MIN_SIDE = 32  # px; smaller images cannot hold a detectable hand
MAX_PIXELS = 400_000_000  # refuse larger images (memory), well above a 12000x9000 photo
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 43.27 mm, the 35 mm film diagonal

# EXIF tags (Exif IFD 0x8769).
_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_FOCAL_LENGTH = 0x920A
_FOCAL_35MM = 0xA405
_FOCAL_PLANE_XRES = 0xA20E
_FOCAL_PLANE_UNIT = 0xA210
_EXIF_WIDTH = 0xA002
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # inch, cm, mm, um


class ImageError(ValueError):
    """An input image that cannot be used (missing, empty, corrupt, too small or too large)."""


def load_image(
    path: str | Path, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Read a JPEG/PNG (or any Pillow format) as an RGB array.

    Grayscale, palette, 16-bit and RGBA images are converted to RGB (alpha is composited on
    white), and the EXIF orientation tag is applied so that the array is upright.

    Args:
        path: image file.
        min_side: smallest accepted width/height in pixels.
        max_pixels: largest accepted width*height.
    Returns:
        (H, W, 3) uint8 RGB array.
    Raises:
        ImageError: missing, zero-byte, unreadable/corrupt, too small or too large file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty (zero-byte) file")
    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit below; Pillow's bomb warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(f"{path}: image too large ({w}x{h} > {max_pixels} pixels)")
                im.load()
                if im.getexif().get(_ORIENTATION, 1) != 1:  # avoid a full copy when upright
                    im = ImageOps.exif_transpose(im)
                rgb = _to_rgb(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: image too large ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            f"{path}: unreadable or corrupt image ({type(exc).__name__}: {exc})"
        ) from exc
    h, w = rgb.shape[:2]
    if min(h, w) < min_side:
        raise ImageError(f"{path}: image too small ({w}x{h}; need at least {min_side} px per side)")
    return rgb


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB; transparency composited on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        scale = 255.0 / max(float(a.max()), 1.0)
        im = Image.fromarray(np.clip(a * scale, 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def exif_focal_px(path: str | Path, width: int, height: int) -> float | None:
    """Focal length in pixels from EXIF, for an image of the given (oriented) size.

    Uses FocalLengthIn35mmFilm (scaled by the image diagonal over the 43.27 mm full-frame
    diagonal), else FocalLength with FocalPlaneXResolution/Unit (the sensor's pixel pitch),
    rescaled from the EXIF pixel width to ``width``. Orientation does not matter for the
    diagonal; for the focal-plane route the longer sides are matched.

    Args:
        path: image file (already known to be readable).
        width, height: size of the array the focal length is for, px.
    Returns:
        focal length in px, or None when EXIF has no usable focal information.
    """
    try:
        with Image.open(path) as im:
            exif = im.getexif()
            sub = exif.get_ifd(_EXIF_IFD)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot read EXIF ({type(exc).__name__}: {exc})") from exc
    f35 = _positive(sub.get(_FOCAL_35MM))
    if f35 is not None:
        return f35 * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM
    f_mm = _positive(sub.get(_FOCAL_LENGTH))
    xres = _positive(sub.get(_FOCAL_PLANE_XRES))
    unit_mm = _UNIT_MM.get(int(sub.get(_FOCAL_PLANE_UNIT, 2) or 2))
    if f_mm is None or xres is None or unit_mm is None:
        return None
    px_per_mm = xres / unit_mm  # sensor pixels per mm on the focal plane
    exif_w = _positive(sub.get(_EXIF_WIDTH))
    scale = max(width, height) / exif_w if exif_w else 1.0
    return f_mm * px_per_mm * scale


def _positive(value: object) -> float | None:
    """EXIF rational/number -> positive float, else None."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return v if math.isfinite(v) and v > 0 else None
