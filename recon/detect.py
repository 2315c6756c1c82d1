"""Detect both hands in a photo with MediaPipe Hands, plus a recovery stage for the second hand.

Stages (each reported per hand in ``HandDetection.stage``):

1. ``"mediapipe"``: one call of the stock legacy solution (``mp.solutions.hands.Hands``,
   static images, two hands, full model) on the image downscaled to ``max_side``. Everything it
   finds is kept.
2. Recovery, only when fewer than two distinct hands with opposite sides were found: the same
   detector on augmented views, all keypoints mapped back to the original image: square crops
   of 2x and 3x a found hand's size centred on it and shifted half a hand left, right and down
   (``"crop2.0-left"``...), the horizontally flipped image (``"flip"``), and rotations
   (``"rot+20"``...). Candidates are merged by mean keypoint distance (NMS, see
   ``recon.detect_geometry``); stock hits have priority. Recovery stops early once two
   distinct hands with opposite side evidence are found. When the stock call already found two
   distinct hands that claim the same side, no hand is missing: by default
   (``same_side_recovery="flip"``) only the flipped view runs, a mirrored second reading of
   both hands' side evidence.

Handedness: MediaPipe's legacy label assumes a mirrored selfie image, so it is swapped for
ordinary photos (and swapped back for flipped views). The side is then decided by the
classifier together with the chirality of the world landmarks, and two hands that claim the
same side are resolved by :func:`recon.detect_geometry.select_pair`.

Confidence: the legacy solution returns no per-landmark presence or visibility (both are 0.0),
so every landmark of a hand gets the hand's score (the handedness classifier's score times the
stage discount), halved for landmarks predicted outside the image.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from recon.detect_geometry import HandDetection, chirality, merge_candidates, select_pair

__all__ = ["DetectConfig", "DetectionResult", "HandDetection", "HandDetector", "detect_hands"]

log = logging.getLogger(__name__)


@dataclass
class DetectConfig:
    """Detection settings (defaults measured on ``shared/data/images``).

    max_side: images are downscaled so the longer side is at most this for detection; the
        keypoints are mapped back to full resolution.
    min_detection_confidence / min_tracking_confidence: MediaPipe's thresholds.
    model_complexity: 0 (lite) or 1 (full) MediaPipe landmark model.
    recovery: run the recovery stage when fewer than two distinct sided hands are found.
    early_exit: stop recovery as soon as two distinct hands of opposite sides are found.
    rotations: degrees (counter-clockwise in the image) of rotated recovery views.
    crop_scales: crop side as a multiple of the found hand's size.
    crop_shifts: crop centre offsets in hand sizes, named.
    crop_px: crops are resized to this square size before detection.
    merge_frac: candidates closer than this fraction of the hand size are one hand.
    min_score: hands scoring lower are dropped.
    stage_discount: multiplies the score of hands found in recovery views.
    chirality_scale: chirality value that counts as fully decisive.
    layout_weight: tie-break weight of the wrist layout in pair resolution.
    same_side_recovery: recovery views when two distinct hands were found but claim the same
        side: "flip" (the flipped image only) or "full" (every view). On shared/data/images the
        full set changed neither pair of that kind (two_hands_apart, hamer_test1) and took
        0.72 and 0.84 s per image instead of 0.07 s.
    palm_model: in recovery, also run MediaPipe's palm + landmark TFLite models with our own
        thresholds (``recon.palm``, stage "palm-model") on the image and its mirror. Off by
        default: on shared/data/images it found no hand the other views missed.
    palm_score: palm-detector score threshold of that stage.
    """

    max_side: int = 1920
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    model_complexity: int = 1
    recovery: bool = True
    early_exit: bool = True
    rotations: tuple[float, ...] = (-20.0, 20.0, -45.0, 45.0, 90.0, 180.0)
    crop_scales: tuple[float, ...] = (2.0, 3.0)
    crop_shifts: tuple[tuple[str, float, float], ...] = (
        ("centre", 0.0, 0.0),
        ("left", -0.5, 0.0),
        ("right", 0.5, 0.0),
        ("down", 0.0, 0.5),
    )
    crop_px: int = 256
    merge_frac: float = 1.0 / 3.0
    min_score: float = 0.5
    stage_discount: float = 0.9
    chirality_scale: float = 0.2
    layout_weight: float = 0.3
    same_side_recovery: str = "flip"
    palm_model: bool = False
    palm_score: float = 0.3

    def __post_init__(self) -> None:
        if self.same_side_recovery not in ("flip", "full"):
            raise ValueError(f"DetectConfig.same_side_recovery: {self.same_side_recovery!r} is not 'flip' or 'full'")


@dataclass
class DetectionResult:
    """hands: at most one left and one right hand, left first; stages_run: views tried, in
    order; notes: human-readable remarks (pair resolution, early exit, ...)."""

    hands: list[HandDetection]
    stages_run: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def hand(self, side: str) -> HandDetection | None:
        """The hand of side "left" or "right", or None."""
        return next((h for h in self.hands if h.side == side), None)


@dataclass(frozen=True)
class _View:
    """An augmented view: ``image_view = warp(image, A)`` with the 2x3 affine A (px->px)."""

    name: str
    A: np.ndarray
    size: tuple[int, int]  # (w, h) of the view


class HandDetector:
    """Holds one MediaPipe Hands instance; call it on (H, W, 3) uint8 RGB images.

    Use as a context manager or call :meth:`close` to free the graph.
    """

    def __init__(self, cfg: DetectConfig | None = None) -> None:
        import mediapipe as mp  # heavy import, only when a detector is built

        self.cfg = cfg or DetectConfig()
        self._hands = mp.solutions.hands.Hands(
            static_image_mode=True,
            max_num_hands=2,
            model_complexity=self.cfg.model_complexity,
            min_detection_confidence=self.cfg.min_detection_confidence,
            min_tracking_confidence=self.cfg.min_tracking_confidence,
        )
        self._palm = None
        if self.cfg.palm_model:
            from recon.palm import PalmLandmarkPipeline

            self._palm = PalmLandmarkPipeline(palm_score=self.cfg.palm_score)

    def close(self) -> None:
        if self._hands is not None:
            self._hands.close()
            self._hands = None

    def __enter__(self) -> HandDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, image: np.ndarray) -> DetectionResult:
        return detect_hands(image, self.cfg, self)

    def palm_candidates(self, image: np.ndarray) -> list[HandDetection]:
        """The palm + landmark TFLite stage on the image and its mirror (empty when off)."""
        if self._palm is None:
            return []
        hands = self._palm(image, stage="palm-model")
        w = image.shape[1]
        for hand in self._palm(np.ascontiguousarray(image[:, ::-1]), stage="palm-model-flip"):
            kp = hand.keypoints_2d.copy()
            kp[:, 0] = w - 1 - kp[:, 0]
            wl = hand.world_landmarks * np.array([-1.0, 1.0, 1.0])
            hands.append(
                replace(
                    hand,
                    keypoints_2d=kp,
                    world_landmarks=wl,
                    right_prob=1.0 - hand.right_prob,
                    chirality=-hand.chirality,
                )
            )
        return hands

    def candidates(self, image: np.ndarray, view: _View, discount: float) -> list[HandDetection]:
        """Run MediaPipe on one view of ``image``; hands mapped back to ``image`` pixels."""
        if self._hands is None:
            raise RuntimeError("HandDetector is closed")
        warped = cv2.warpAffine(
            image,
            view.A,
            view.size,
            flags=cv2.INTER_AREA if _scale(view.A) < 1 else cv2.INTER_LINEAR,
        )
        res = self._hands.process(np.ascontiguousarray(warped))
        if not res.multi_hand_landmarks:
            return []
        A_inv = cv2.invertAffineTransform(view.A)
        linear = view.A[:, :2] / _scale(view.A)  # rotation or reflection, image axes
        mirrored = np.linalg.det(linear) < 0
        # World landmarks back to the original image axes (x, y rotate; z is depth).
        back3 = np.eye(3)
        back3[:2, :2] = np.linalg.inv(linear)
        w_view, h_view = view.size
        out = []
        for lm, handed, world in zip(
            res.multi_hand_landmarks, res.multi_handedness, res.multi_hand_world_landmarks
        ):
            px = np.array([[p.x * w_view, p.y * h_view] for p in lm.landmark])
            kp = px @ A_inv[:, :2].T + A_inv[:, 2]
            wl = np.array([[p.x, p.y, p.z] for p in world.landmark]) @ back3.T
            label = handed.classification[0]
            # Selfie label swap for ordinary photos, undone once more for mirrored views.
            right_prob = label.score if label.label == "Left" else 1.0 - label.score
            if mirrored:
                right_prob = 1.0 - right_prob
            score = float(label.score) * discount
            out.append(
                HandDetection(
                    keypoints_2d=kp,
                    confidence=np.full(21, score),
                    world_landmarks=wl,
                    is_right=right_prob > 0.5,
                    score=score,
                    stage=view.name,
                    handedness_source="classifier",
                    right_prob=float(right_prob),
                    chirality=chirality(wl),
                )
            )
        return out


def detect_hands(
    image: np.ndarray, cfg: DetectConfig, detector: HandDetector | None = None
) -> DetectionResult:
    """Find at most one left and one right hand in an RGB photo.

    Args:
        image: (H, W, 3) uint8 RGB, full resolution.
        cfg: detection settings.
        detector: a reusable detector (its MediaPipe graph is reused); built and closed here
            when None.
    Returns:
        DetectionResult with keypoints in full-resolution pixels.
    Raises:
        ValueError: image is not (H, W, 3) uint8.
    """
    if not (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
    ):
        shape = getattr(image, "shape", None)
        raise ValueError(
            f"detect_hands needs an (H, W, 3) uint8 RGB array, got {type(image).__name__} {shape}"
        )
    if detector is None:
        with HandDetector(cfg) as owned:
            return detect_hands(image, cfg, owned)
    h, w = image.shape[:2]
    scale = min(1.0, cfg.max_side / max(h, w))
    work = image
    if scale < 1.0:
        work = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    result = _detect_work(work, cfg, detector)
    sx, sy = w / work.shape[1], h / work.shape[0]
    result.hands = [_finish(hand, (sx, sy), (w, h)) for hand in result.hands]
    if scale < 1.0:
        result.notes.append(
            f"detected on a {work.shape[1]}x{work.shape[0]} copy of the {w}x{h} image"
        )
    return result


def _detect_work(image: np.ndarray, cfg: DetectConfig, detector: HandDetector) -> DetectionResult:
    """All stages on the (downscaled) working image; keypoints in its pixels."""
    h, w = image.shape[:2]
    stages = ["mediapipe"]
    cands = detector.candidates(image, _View("mediapipe", _identity(), (w, h)), 1.0)
    hands = merge_candidates(cands, cfg.merge_frac)
    pair, notes = select_pair(
        hands, cfg.min_score, cfg.chirality_scale, layout_weight=cfg.layout_weight
    )
    if cfg.recovery and cfg.palm_model and not _good_pair(pair, notes):
        stages.append("palm-model")
        cands += detector.palm_candidates(image)
        hands = merge_candidates(cands, cfg.merge_frac)
        pair, notes = select_pair(
            hands, cfg.min_score, cfg.chirality_scale, layout_weight=cfg.layout_weight
        )
    if cfg.recovery and not _good_pair(pair, notes):
        views = _recovery_views(image, hands, cfg)
        if cfg.same_side_recovery == "flip" and len(pair) == 2:
            views = [v for v in views if v.name == "flip"]
            notes.append("two distinct hands claim one side: recovery ran the flipped view only")
        for view in views:
            stages.append(view.name)
            cands += detector.candidates(image, view, cfg.stage_discount)
            hands = merge_candidates(cands, cfg.merge_frac)
            pair, notes = select_pair(
                hands, cfg.min_score, cfg.chirality_scale, layout_weight=cfg.layout_weight
            )
            if cfg.early_exit and _good_pair(pair, notes):
                notes.append(f"recovery stopped early after {view.name}")
                break
    return DetectionResult(hands=pair, stages_run=stages, notes=notes)


def _good_pair(pair: list[HandDetection], notes: list[str]) -> bool:
    """Two hands whose sides needed no pair resolution."""
    return len(pair) == 2 and all(h.handedness_source != "pair-resolution" for h in pair)


def _recovery_views(
    image: np.ndarray, hands: list[HandDetection], cfg: DetectConfig
) -> list[_View]:
    """Crops around/beside found hands first (the other hand of a clasp is near), then the
    flipped image, then rotations."""
    h, w = image.shape[:2]
    views = []
    for k, hand in enumerate(hands[:2]):
        centre = hand.keypoints_2d.mean(0)
        for s in cfg.crop_scales:
            side = s * hand.size
            for name, dx, dy in cfg.crop_shifts:
                c = centre + np.array([dx, dy]) * hand.size
                f = cfg.crop_px / side
                A = np.array(
                    [[f, 0.0, cfg.crop_px / 2 - f * c[0]], [0.0, f, cfg.crop_px / 2 - f * c[1]]]
                )
                tag = f"crop{s:.1f}-{name}" + (f"-h{k}" if len(hands) > 1 else "")
                views.append(_View(tag, A, (cfg.crop_px, cfg.crop_px)))
    views.append(_View("flip", np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]]), (w, h)))
    for deg in cfg.rotations:
        views.append(_rotation_view(w, h, deg))
    return views


def _rotation_view(w: int, h: int, deg: float) -> _View:
    """Rotate about the image centre by ``deg`` (counter-clockwise), canvas grown to fit."""
    A = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), deg, 1.0)
    c, s = abs(math.cos(math.radians(deg))), abs(math.sin(math.radians(deg)))
    nw, nh = int(math.ceil(w * c + h * s)), int(math.ceil(w * s + h * c))
    A[:, 2] += [(nw - w) / 2.0, (nh - h) / 2.0]
    return _View(f"rot{deg:+.0f}", A, (nw, nh))


def _identity() -> np.ndarray:
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _scale(A: np.ndarray) -> float:
    return float(math.sqrt(abs(np.linalg.det(A[:, :2]))))


def _finish(
    hand: HandDetection, scale_xy: tuple[float, float], size_wh: tuple[int, int]
) -> HandDetection:
    """Map working-image keypoints to full resolution; halve confidence outside the image."""
    kp = (hand.keypoints_2d + 0.5) * np.asarray(scale_xy) - 0.5
    inside = (
        (kp[:, 0] >= 0)
        & (kp[:, 0] <= size_wh[0] - 1)
        & (kp[:, 1] >= 0)
        & (kp[:, 1] <= size_wh[1] - 1)
    )
    conf = np.clip(np.where(inside, hand.score, 0.5 * hand.score), 0.0, 1.0)
    return replace(hand, keypoints_2d=kp, confidence=conf)
