"""Pinhole intrinsics for a photo: given K, given focal, EXIF focal, or a default field of view.

Priority (first available wins): an explicit ``K`` ("given-K"), ``focal_px`` ("given-focal"),
the EXIF focal length ("exif"), else :data:`DEFAULT_FOV_DEG` across the longer image side
("default-fov"). The principal point is the image centre ``((W-1)/2, (H-1)/2)``: pixel centres
at integer coordinates, the convention used for keypoints throughout recon. Square pixels.

Why 55 degrees: a phone's main camera covers about 65-70 degrees across the long side (26 mm
equivalent), but hand photos are usually zoomed or cropped; 55 degrees (about a 35 mm lens,
``f = 0.96 * max(W, H)``) sits between the two and keeps depth errors moderate either way.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_FOV_DEG = 55.0
SOURCES = ("given-K", "given-focal", "exif", "default-fov")


def focal_from_fov(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> float:
    """Focal length in px that spans ``fov_deg`` across the longer image side."""
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_deg}")
    return 0.5 * max(width, height) / math.tan(math.radians(fov_deg) / 2.0)


def intrinsics(
    width: int,
    height: int,
    focal_px: float | None = None,
    K: np.ndarray | None = None,
    exif_focal_px: float | None = None,
    fov_deg: float = DEFAULT_FOV_DEG,
) -> tuple[np.ndarray, str]:
    """Camera matrix for a ``width`` x ``height`` image and where it came from.

    Args:
        width, height: image size in px (after EXIF orientation).
        focal_px: user-given focal length in px (``--focal``).
        K: user-given (3, 3) intrinsics (``--K``); wins over everything else.
        exif_focal_px: focal length read from EXIF (see ``recon.image_io.exif_focal_px``).
        fov_deg: default horizontal field of view over the longer side when nothing is given.
    Returns:
        (K (3, 3) float64, source) with source one of :data:`SOURCES`.
    Raises:
        ValueError: bad image size, non-positive/non-finite focal, malformed K.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if K is not None:
        return _check_K(K), "given-K"
    if focal_px is not None:
        return _K(_check_focal(focal_px, "--focal"), width, height), "given-focal"
    if exif_focal_px is not None:
        return _K(_check_focal(exif_focal_px, "EXIF focal"), width, height), "exif"
    return _K(focal_from_fov(width, height, fov_deg), width, height), "default-fov"


def _K(f: float, width: int, height: int) -> np.ndarray:
    return np.array(
        [[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )


def _check_focal(f: float, what: str) -> float:
    f = float(f)
    if not math.isfinite(f) or f <= 0:
        raise ValueError(f"{what} must be a positive finite focal length in px, got {f}")
    return f


def _check_K(K: np.ndarray) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must have shape (3, 3), got {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError("K must be finite")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise ValueError(f"K must have positive fx, fy and last row [0, 0, 1], got {K.tolist()}")
    return K.copy()
