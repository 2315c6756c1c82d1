"""Hand detection on the real photos, handedness geometry, and awkward inputs.

One MediaPipe graph is built per module (fixture) so the file stays fast.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from recon.detect import DetectConfig, DetectionResult, HandDetector, detect_hands
from recon.detect_geometry import chirality, merge_candidates, select_pair
from recon.image_io import load_image

IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images"


@pytest.fixture(scope="module")
def detector() -> HandDetector:
    with HandDetector(DetectConfig()) as det:
        yield det


@pytest.fixture(scope="module")
def apart(detector: HandDetector) -> DetectionResult:
    return detector(load_image(IMAGES / "two_hands_apart.jpg"))


def _sides(result: DetectionResult) -> list[str]:
    return sorted(h.side for h in result.hands)


def test_two_hands_apart_matches_mediapipe_reference(apart: DetectionResult) -> None:
    ref = json.loads((IMAGES / "two_hands_apart.mediapipe_reference.json").read_text())
    ref_hands = np.asarray(ref["hands_xy"], dtype=np.float64)  # (2, 21, 2) px
    assert _sides(apart) == ["left", "right"]
    for ref_kp in ref_hands:
        errors = [np.linalg.norm(h.keypoints_2d - ref_kp, axis=-1) for h in apart.hands]
        best = min(errors, key=lambda e: e.mean())
        assert best.max() < 20.0, f"max keypoint error {best.max():.1f} px"
    # Both photographed hands are LEFT hands seen from the back (a geometric fact the
    # classifier and the chirality agree on), so one side must come from pair resolution;
    # the layout tie-break then puts the right hand on the image's left (person facing the
    # camera, arms uncrossed).
    sources = sorted(h.handedness_source for h in apart.hands)
    assert sources == ["chirality", "pair-resolution"]
    assert apart.hand("right").keypoints_2d[0, 0] < apart.hand("left").keypoints_2d[0, 0]
    for h in apart.hands:
        assert h.chirality < 0  # both look left by geometry
        assert h.confidence.shape == (21,) and np.all((h.confidence > 0) & (h.confidence <= 1))
        assert h.world_landmarks is not None and h.world_landmarks.shape == (21, 3)


def test_same_side_pair_runs_only_the_flipped_view(detector: HandDetector, apart: DetectionResult) -> None:
    """Two distinct hands that claim one side: no hand is missing, so only the flipped view
    runs by default; every recovery view ("full") keeps the same pair with the same sides."""
    assert apart.stages_run == ["mediapipe", "flip"]
    full = detect_hands(load_image(IMAGES / "two_hands_apart.jpg"),
                        replace(detector.cfg, same_side_recovery="full"), detector)  # fmt: skip
    assert len(full.stages_run) > 10
    for side in ("left", "right"):
        a, b = apart.hand(side), full.hand(side)
        assert np.abs(a.keypoints_2d - b.keypoints_2d).max() < 1.0 and a.handedness_source == b.handedness_source
    with pytest.raises(ValueError, match="same_side_recovery"):
        DetectConfig(same_side_recovery="some")


def test_woman_two_hands_sides(detector: HandDetector) -> None:
    image = load_image(IMAGES / "woman_two_hands.jpg")
    result = detector(image)
    assert _sides(result) == ["left", "right"]
    right, left = result.hand("right"), result.hand("left")
    # Arms crossed: her right hand is the upper one (over her forehead), her left the lower one.
    assert right.keypoints_2d[0, 1] < 500 < left.keypoints_2d[0, 1]
    assert right.chirality > 0 > left.chirality
    assert all(h.handedness_source == "chirality" for h in result.hands)
    assert all(h.stage == "mediapipe" for h in result.hands)

    # The mirrored photo swaps the sides (and the chirality signs); keypoints mirror too.
    mirrored = detector(np.ascontiguousarray(image[:, ::-1]))
    assert _sides(mirrored) == ["left", "right"]
    w = image.shape[1]
    flipped_right = mirrored.hand("left").keypoints_2d.copy()
    flipped_right[:, 0] = w - 1 - flipped_right[:, 0]
    assert np.linalg.norm(flipped_right - right.keypoints_2d, axis=-1).mean() < 10.0
    assert mirrored.hand("left").chirality < 0 < mirrored.hand("right").chirality


@pytest.mark.parametrize("name", ["one_hand_thumbs_up.jpg", "one_hand_victory.jpg"])
def test_one_hand_photo_gives_one_hand(detector: HandDetector, name: str) -> None:
    result = detector(load_image(IMAGES / name))
    assert len(result.hands) == 1
    assert result.hands[0].stage == "mediapipe" and result.hands[0].score > 0.9
    assert len(result.stages_run) > 1  # the recovery stage ran and found no false second hand


def test_recovery_finds_second_interlaced_hand(detector: HandDetector) -> None:
    """hamer_test3 (interlaced fingers): the stock call finds one hand, recovery the other."""
    result = detector(load_image(IMAGES / "hamer_test3.jpg"))
    assert _sides(result) == ["left", "right"]
    stages = {h.side: h.stage for h in result.hands}
    assert stages["right"] == "mediapipe" and stages["left"] != "mediapipe"
    # His right arm enters from the image's left, his left from the right.
    assert result.hand("right").keypoints_2d[0, 0] < result.hand("left").keypoints_2d[0, 0]


def test_no_hands_and_recovery_off(detector: HandDetector) -> None:
    blank = np.full((240, 320, 3), 128, np.uint8)
    result = detector(blank)
    assert result.hands == [] and result.stages_run[0] == "mediapipe"
    image = load_image(IMAGES / "two_thumbs_up_overlap.jpg")
    off = detect_hands(image, replace(detector.cfg, recovery=False), detector)
    assert off.stages_run == ["mediapipe"] and len(off.hands) == 1


def test_grayscale_and_rgba_inputs_work(detector: HandDetector, tmp_path: Path) -> None:
    rgb = load_image(IMAGES / "two_hands_apart.jpg")
    gray_path, rgba_path = tmp_path / "gray.png", tmp_path / "rgba.png"
    Image.fromarray(rgb).convert("L").save(gray_path)
    Image.fromarray(rgb).convert("RGBA").save(rgba_path)
    assert len(detector(load_image(rgba_path)).hands) == 2
    # MediaPipe's models were trained on colour photos: on this grayscale copy they find no
    # hand at all. The contract is a valid (possibly empty) result, never a crash.
    gray = detector(load_image(gray_path))
    assert isinstance(gray, DetectionResult) and len(gray.hands) <= 2


def test_huge_image_keypoints_in_full_resolution(detector: HandDetector, tmp_path: Path) -> None:
    """A 12000x9000 JPEG: detection runs on a downscaled copy, keypoints come back full-res."""
    small = load_image(IMAGES / "one_hand_victory.jpg")  # 418 x 418
    ref = detector(small).hands[0].keypoints_2d
    k, off = 9000 / 418, np.array([1500, 0])  # the photo scaled to 9000 x 9000, padded
    canvas = np.full((9000, 12000, 3), 90, np.uint8)
    canvas[:, off[0] : off[0] + 9000] = cv2.resize(
        small, (9000, 9000), interpolation=cv2.INTER_LINEAR
    )
    path = tmp_path / "huge.jpg"
    Image.fromarray(canvas).save(path, quality=80)
    del canvas
    image = load_image(path)
    assert image.shape == (9000, 12000, 3)
    result = detect_hands(image, replace(detector.cfg, recovery=False), detector)
    assert len(result.hands) == 1 and any("1920x1440 copy" in n for n in result.notes)
    expected = (ref + 0.5) * k - 0.5 + off
    err = np.linalg.norm(result.hands[0].keypoints_2d - expected, axis=-1)
    assert np.median(err) < 0.02 * 9000  # 2% of the scaled photo (about 8 px in the original)


def test_bad_array_input_is_a_clear_error(detector: HandDetector) -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        detector(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        detector(np.zeros((64, 64, 3), np.float32))


def test_chirality_sign_flips_under_mirroring(apart: DetectionResult) -> None:
    world = apart.hands[0].world_landmarks
    assert world is not None
    mirrored = world * np.array([-1.0, 1.0, 1.0])
    assert chirality(world) == pytest.approx(-chirality(mirrored))
    assert abs(chirality(world)) > 0.1


def test_merge_and_pair_resolution_rules(apart: DetectionResult) -> None:
    a, b = apart.hands
    # A slightly shifted copy of a hand is the same hand; the other hand is not.
    shifted = replace(a, keypoints_2d=a.keypoints_2d + 5.0, stage="flip")
    merged = merge_candidates([a, shifted, b])
    assert len(merged) == 2 and merged[0].support == a.support + 1
    # Two confident right hands: one is forced to left, by layout when evidence ties.
    r1 = replace(a, right_prob=0.95, chirality=0.4)
    r2 = replace(b, right_prob=0.95, chirality=0.4)
    pair, notes = select_pair([r1, r2], min_score=0.5)
    assert sorted(h.side for h in pair) == ["left", "right"]
    assert any(h.handedness_source == "pair-resolution" for h in pair) and notes
    # Stronger evidence wins over layout.
    weak = replace(r1, right_prob=0.55, chirality=0.01)
    pair, _ = select_pair([weak, r2], min_score=0.5)
    assert next(h for h in pair if h.is_right).right_prob == pytest.approx(0.95)


def test_palm_landmark_pipeline_matches_reference() -> None:
    """Our own glue around MediaPipe's TFLite models reproduces the stock keypoints and sides."""
    from recon.palm import PalmLandmarkPipeline, ssd_anchors

    assert ssd_anchors().shape == (2016, 2)
    ref = json.loads((IMAGES / "two_hands_apart.mediapipe_reference.json").read_text())
    hands = PalmLandmarkPipeline()(load_image(IMAGES / "two_hands_apart.jpg"))
    assert len(hands) == 2
    for ref_kp in np.asarray(ref["hands_xy"], dtype=np.float64):
        err = min(np.linalg.norm(h.keypoints_2d - ref_kp, axis=-1).max() for h in hands)
        assert err < 20.0
    # Both are left hands seen from the back: classifier and chirality agree.
    assert all(h.right_prob < 0.5 and h.chirality < 0 and h.score > 0.9 for h in hands)
