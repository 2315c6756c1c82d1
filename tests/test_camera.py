"""Intrinsics sources and image loading (EXIF, formats, clear errors on unusable files)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recon.camera import DEFAULT_FOV_DEG, focal_from_fov, intrinsics
from recon.image_io import ImageError, exif_focal_px, load_image

IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images"


def test_intrinsics_priority_and_sources() -> None:
    K_given = np.array([[800.0, 0, 300], [0, 810.0, 200], [0, 0, 1]])
    K, src = intrinsics(640, 480, focal_px=500.0, K=K_given, exif_focal_px=700.0)
    assert src == "given-K" and np.array_equal(K, K_given)
    K, src = intrinsics(640, 480, focal_px=500.0, exif_focal_px=700.0)
    assert src == "given-focal" and K[0, 0] == K[1, 1] == 500.0
    K, src = intrinsics(640, 480, exif_focal_px=700.0)
    assert src == "exif" and K[0, 0] == 700.0
    K, src = intrinsics(640, 480)
    assert src == "default-fov"
    # Principal point at the image centre; the default spans DEFAULT_FOV_DEG over the long side.
    assert K[0, 2] == pytest.approx(319.5) and K[1, 2] == pytest.approx(239.5)
    fov = 2 * math.degrees(math.atan(0.5 * 640 / K[0, 0]))
    assert fov == pytest.approx(DEFAULT_FOV_DEG)
    # Portrait image: the long side is the height.
    assert focal_from_fov(480, 640) == pytest.approx(K[0, 0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"focal_px": -1.0},
        {"focal_px": float("nan")},
        {"K": np.eye(2)},
        {"K": np.array([[500.0, 0, 1], [0, 500, 1], [0, 1, 1]])},
    ],
)
def test_intrinsics_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        intrinsics(640, 480, **kwargs)


def _jpeg_with_exif(path: Path, size: tuple[int, int], tags: dict[int, object]) -> None:
    im = Image.new("RGB", size, (120, 90, 60))
    exif = Image.Exif()
    sub = exif.get_ifd(0x8769)
    sub.update(tags)
    im.save(path, exif=exif)


def test_exif_focal_35mm_and_focal_plane(tmp_path: Path) -> None:
    p = tmp_path / "f35.jpg"
    _jpeg_with_exif(p, (400, 300), {0xA405: 26})
    f = exif_focal_px(p, 400, 300)
    # 26 mm equivalent over a 43.27 mm diagonal, 500 px image diagonal.
    assert f == pytest.approx(26 * 500 / math.hypot(36, 24))
    p = tmp_path / "plane.jpg"
    # 4 mm lens, 1000 px/mm sensor... given per cm (unit 3): 10000 px/cm; EXIF width 4000 px.
    _jpeg_with_exif(p, (400, 300), {0x920A: 4.0, 0xA20E: 10000.0, 0xA210: 3, 0xA002: 4000})
    assert exif_focal_px(p, 400, 300) == pytest.approx(4.0 * 1000.0 * 400 / 4000)
    p = tmp_path / "none.jpg"
    _jpeg_with_exif(p, (400, 300), {})
    assert exif_focal_px(p, 400, 300) is None
    K, src = intrinsics(400, 300, exif_focal_px=exif_focal_px(p, 400, 300))
    assert src == "default-fov"


def test_load_real_photo_applies_exif_orientation() -> None:
    img = load_image(IMAGES / "two_hands_apart.jpg")
    assert img.shape == (382, 720, 3) and img.dtype == np.uint8


def test_exif_orientation_rotates(tmp_path: Path) -> None:
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :40] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    p = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(p, exif=exif, quality=95)
    out = load_image(p)
    assert out.shape == (80, 40, 3)
    assert out[:40].mean() > 200 and out[40:].mean() < 50  # white half now on top


def test_grayscale_and_rgba_become_rgb(tmp_path: Path) -> None:
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((50, 60), 77, np.uint8), mode="L").save(gray)
    out = load_image(gray)
    assert out.shape == (50, 60, 3) and np.all(out == 77)
    rgba = np.zeros((50, 60, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :30, 3] = 255  # left half opaque red, right half transparent
    p = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(p)
    out = load_image(p)
    assert out.shape == (50, 60, 3)
    assert np.array_equal(out[0, 0], [200, 0, 0]) and np.array_equal(out[0, -1], [255, 255, 255])


def test_unusable_files_raise_one_line_image_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((IMAGES / "two_hands_apart.jpg").read_bytes()[:2000])
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    cases = {
        tmp_path / "missing.jpg": "no such file",
        empty: "zero-byte",
        corrupt: "unreadable or corrupt",
        truncated: "unreadable or corrupt",
        tiny: "too small",
    }
    for path, words in cases.items():
        with pytest.raises(ImageError) as info:
            load_image(path)
        msg = str(info.value)
        assert words in msg and str(path) in msg and "\n" not in msg
    assert issubclass(ImageError, ValueError)
