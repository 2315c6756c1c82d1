"""run_fit.py end to end: a folder of good and bad inputs, each with a clear per-image status."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import run_fit

FAST = ["--no-prior", "--quiet", "--set", "fit.steps=6", "--set", "fit.global_steps=2",
        "--set", "init.steps=5", "--set", "detect.recovery=false"]  # fmt: skip


def test_dry_run_prints_config(capsys) -> None:
    assert run_fit.main(["--dry-run", "--set", "fit.steps=40", "--batch-size", "3"]) == 0
    out = capsys.readouterr().out
    assert "fit:" in out and "steps: 40" in out and "batch_size: 3" in out


def test_setup_errors_exit_1(tmp_path: Path, capsys) -> None:
    assert run_fit.main(["--dry-run", "--set", "fit.nonsense=1"]) == 1
    assert "unknown config key fit.nonsense" in capsys.readouterr().err
    (tmp_path / "k.json").write_text("[[1, 2], [3, 4]]")
    assert run_fit.main(["x.jpg", "--K", str(tmp_path / "k.json")]) == 1
    assert "K must be 3x3" in capsys.readouterr().err
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    missing = tmp_path / "nope.pt"
    assert run_fit.main([str(img), "--out", str(tmp_path / "o"), "--prior-ckpt", str(missing), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err and "--no-prior" in err
    assert run_fit.main([str(tmp_path / "*.nothing"), "--no-prior"]) == 1


@pytest.fixture()
def mixed_folder(tmp_path: Path, shared_data: Path) -> Path:
    src = shared_data / "images" / "two_hands_apart.jpg"
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(src, d / "photo.jpg")
    grad = np.tile(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], (240, 1, 3))
    cv2.imwrite(str(d / "gradient.png"), grad)
    (d / "unreadable.jpg").write_text("this is not a JPEG\n")
    (d / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (1, 1), (200, 100, 50)).save(d / "tiny.png")
    photo = Image.open(src)
    photo.convert("L").save(d / "gray.jpg")
    rgba = photo.convert("RGBA")
    rgba.putalpha(255)
    rgba.save(d / "rgba.png")
    (d / "notes.txt").write_text("not an image extension: skipped")
    return d


def _summary(out: Path) -> dict[str, dict]:
    s = json.loads((out / "summary.json").read_text())
    return {Path(e["image"]).name: e for e in s["images"]}


def test_mixed_folder(mixed_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = run_fit.main([str(mixed_folder), "--out", str(out), *FAST])
    assert rc == 0
    s = _summary(out)
    assert set(s) == {"photo.jpg", "gradient.png", "unreadable.jpg", "empty.jpg", "tiny.png", "gray.jpg", "rgba.png"}
    photo = s["photo.jpg"]
    assert photo["status"] == "ok", photo["message"]
    assert photo["hands"]["left"]["found"] and photo["hands"]["right"]["found"]
    assert photo["hands"]["left"]["stage"] == "mediapipe"
    assert photo["reprojection_error_px"] is not None and photo["time_s"] > 0
    for f in ("left.obj", "right.obj", "hands.glb", "params.json", "params.npz", "overlay.png", "views.png"):
        assert (out / "photo" / f).is_file(), f
    assert s["gradient.png"]["status"] == "no-hands"
    assert (out / "gradient" / "params.json").is_file()
    expect = {"unreadable.jpg": "unreadable or corrupt", "empty.jpg": "zero-byte", "tiny.png": "too small"}
    for name, text in expect.items():
        assert s[name]["status"] == "error" and text in s[name]["message"], s[name]
        assert "traceback" not in s[name]  # expected errors: a message, not a bug report
        assert s[name]["out_dir"] is None
    for name in ("gray.jpg", "rgba.png"):
        assert s[name]["status"] in ("ok", "one-hand", "no-hands"), s[name]
    assert s["rgba.png"]["status"] == "ok"  # opaque RGBA is the same photo
    assert (out / "config.resolved.yaml").is_file()
    assert not list(out.rglob(".*.tmp*"))


@pytest.mark.slow
def test_huge_image(tmp_path: Path, shared_data: Path) -> None:
    """A 12000x9000 photo: detection on a downscaled copy, full-resolution K, small overlay."""
    photo = cv2.imread(str(shared_data / "images" / "two_hands_apart.jpg"))
    huge = cv2.resize(photo, (12000, 9000), interpolation=cv2.INTER_LINEAR)
    path = tmp_path / "huge.jpg"
    cv2.imwrite(str(path), huge, [cv2.IMWRITE_JPEG_QUALITY, 60])
    del huge
    out = tmp_path / "out"
    assert run_fit.main([str(path), "--out", str(out), *FAST]) == 0
    e = _summary(out)["huge.jpg"]
    assert e["status"] == "ok", e["message"]
    meta = json.loads((out / "huge" / "params.json").read_text())
    assert meta["image_size"] == [12000, 9000]
    overlay = cv2.imread(str(out / "huge" / "overlay.png"))
    assert max(overlay.shape[:2]) == 2048
