"""MediaPipe's palm detector and hand-landmark model run directly, with our own post-processing.

The ``mediapipe`` wheel ships both networks as TFLite files; ``ai-edge-litert`` runs them on CPU.
The glue re-implements the stock graph (letter-boxed 192x192 input, 2016 SSD anchors, box and
7-keypoint decoding, rotated ROI: shift -0.5 along the palm axis, square, 2.6x, then the
landmark model on a 224x224 crop of that ROI) but with our own thresholds and NMS, so that
palms the stock graph drops (e.g. a partly hidden second hand of a clasp) still reach the
landmark model. The landmark model's own hand-presence score then rejects non-hands.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np

from recon.detect_geometry import HandDetection, chirality

log = logging.getLogger(__name__)

PALM_MODEL = "modules/palm_detection/palm_detection_full.tflite"
LANDMARK_MODEL = "modules/hand_landmark/hand_landmark_full.tflite"
PALM_SIZE, LANDMARK_SIZE = 192, 224


def default_model_dir() -> Path:
    """The installed ``mediapipe`` package directory (holds ``modules/...tflite``)."""
    import mediapipe

    return Path(mediapipe.__file__).resolve().parent


def ssd_anchors() -> np.ndarray:
    """(2016, 2) anchor centres in [0, 1] for the 192x192 palm detector.

    Strides 8, 16, 16, 16 with 2 anchors per cell per layer (fixed unit size), layers of equal
    stride stacked per cell as in MediaPipe's SsdAnchorsCalculator.
    """
    anchors = []
    for stride, per_cell in ((8, 2), (16, 6)):
        n = PALM_SIZE // stride
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=-1)
        anchors.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(anchors)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float) -> list[np.ndarray]:
    """MediaPipe-style weighted NMS: overlapping detections are score-averaged, not dropped.

    Args:
        boxes: (N, 4 + 14) rows [x0, y0, x1, y1, 7 keypoints xy] in normalised coordinates.
        scores: (N,) in [0, 1].
    Returns:
        list of (19,) rows: the averaged row followed by the best score.
    """
    order = np.argsort(-scores)
    out = []
    while order.size:
        best = boxes[order[0]]
        x0 = np.maximum(best[0], boxes[order, 0])
        y0 = np.maximum(best[1], boxes[order, 1])
        x1 = np.minimum(best[2], boxes[order, 2])
        y1 = np.minimum(best[3], boxes[order, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        area = (boxes[order, 2] - boxes[order, 0]) * (boxes[order, 3] - boxes[order, 1])
        iou = inter / (area[0] + area - inter + 1e-12)
        group = order[iou > iou_thresh]
        w = scores[group][:, None]
        out.append(np.concatenate([(boxes[group] * w).sum(0) / w.sum(), [scores[order[0]]]]))
        order = order[iou <= iou_thresh]
    return out


class PalmLandmarkPipeline:
    """Palm detector + landmark model with our thresholds; call on (H, W, 3) uint8 RGB.

    Args:
        model_dir: folder holding ``modules/...`` (default: the installed mediapipe package).
        palm_score: palm detection score threshold (MediaPipe uses 0.5).
        nms_iou: IoU for the weighted NMS of palm boxes (MediaPipe uses 0.3).
        presence: landmark-model hand-presence threshold (MediaPipe uses 0.5).
        max_palms: at most this many palms go to the landmark model.
        num_threads: TFLite CPU threads.
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        palm_score: float = 0.3,
        nms_iou: float = 0.3,
        presence: float = 0.5,
        max_palms: int = 4,
        num_threads: int = 2,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        root = Path(model_dir) if model_dir is not None else default_model_dir()
        for rel in (PALM_MODEL, LANDMARK_MODEL):
            if not (root / rel).is_file():
                raise FileNotFoundError(f"{root / rel}: MediaPipe TFLite model not found")
        self._palm = Interpreter(str(root / PALM_MODEL), num_threads=num_threads)
        self._lm = Interpreter(str(root / LANDMARK_MODEL), num_threads=num_threads)
        self._palm.allocate_tensors()
        self._lm.allocate_tensors()
        self._anchors = ssd_anchors()
        self.palm_score, self.nms_iou, self.presence, self.max_palms = (
            palm_score,
            nms_iou,
            presence,
            max_palms,
        )
        outs = {tuple(d["shape"][1:]): d["index"] for d in self._palm.get_output_details()}
        self._palm_reg, self._palm_cls = outs[(2016, 18)], outs[(2016, 1)]
        self._lm_out = sorted(self._lm.get_output_details(), key=lambda d: d["name"])

    def palms(self, image: np.ndarray) -> list[np.ndarray]:
        """Palm detections as (19,) rows [box xyxy, 7 keypoints xy (image px), score]."""
        h, w = image.shape[:2]
        side = max(h, w)
        # Letter-box into a square, then resize to 192x192, range [0, 1].
        pad_x, pad_y = (side - w) / 2.0, (side - h) / 2.0
        square = cv2.copyMakeBorder(
            image,
            int(pad_y),
            side - h - int(pad_y),
            int(pad_x),
            side - w - int(pad_x),
            cv2.BORDER_CONSTANT,
        )
        x = (
            cv2.resize(square, (PALM_SIZE, PALM_SIZE), interpolation=cv2.INTER_AREA).astype(
                np.float32
            )
            / 255.0
        )
        self._palm.set_tensor(self._palm.get_input_details()[0]["index"], x[None])
        self._palm.invoke()
        reg = self._palm.get_tensor(self._palm_reg)[0] / PALM_SIZE
        logit = np.clip(self._palm.get_tensor(self._palm_cls)[0, :, 0], -100.0, 100.0)
        score = 1.0 / (1.0 + np.exp(-logit))
        keep = score > self.palm_score
        if not keep.any():
            return []
        reg, score, anchors = reg[keep], score[keep], self._anchors[keep]
        cx, cy = reg[:, 0] + anchors[:, 0], reg[:, 1] + anchors[:, 1]
        boxes = np.stack(
            [cx - reg[:, 2] / 2, cy - reg[:, 3] / 2, cx + reg[:, 2] / 2, cy + reg[:, 3] / 2], 1
        )
        kps = reg[:, 4:18].reshape(-1, 7, 2) + anchors[:, None, :]
        rows = weighted_nms(np.concatenate([boxes, kps.reshape(-1, 14)], 1), score, self.nms_iou)
        out = []
        offset = np.array([int(pad_x), int(pad_y)], dtype=np.float64)
        for row in sorted(rows, key=lambda r: -r[-1])[: self.max_palms]:
            xy = row[:18].reshape(9, 2) * side - offset  # back to image pixels
            out.append(np.concatenate([xy.ravel(), row[-1:]]))
        return out

    def __call__(self, image: np.ndarray, stage: str = "palm-model") -> list[HandDetection]:
        """Hands from every palm whose ROI the landmark model accepts; keypoints in image px."""
        hands = []
        for palm in self.palms(image):
            xy = palm[:18].reshape(9, 2)
            box, kps = xy[:2], xy[2:]
            hand = self._landmarks(image, _palm_roi(box, kps), stage, float(palm[-1]))
            if hand is not None:
                hands.append(hand)
        return hands

    def _landmarks(
        self, image: np.ndarray, roi: tuple[np.ndarray, float, float], stage: str, palm_score: float
    ) -> HandDetection | None:
        """Run the landmark model on a rotated square ROI (centre px, side px, angle rad)."""
        centre, side, angle = roi
        # Affine from the 224x224 crop to the image: rotate by angle, scale side/224.
        c, s = math.cos(angle), math.sin(angle)
        k = side / LANDMARK_SIZE
        crop_to_img = np.array([[k * c, -k * s, 0.0], [k * s, k * c, 0.0]])
        crop_to_img[:, 2] = centre - crop_to_img[:, :2] @ np.array([LANDMARK_SIZE / 2] * 2)
        img_to_crop = cv2.invertAffineTransform(crop_to_img)
        crop = cv2.warpAffine(
            image, img_to_crop, (LANDMARK_SIZE, LANDMARK_SIZE), flags=cv2.INTER_LINEAR
        )
        self._lm.set_tensor(
            self._lm.get_input_details()[0]["index"], (crop.astype(np.float32) / 255.0)[None]
        )
        self._lm.invoke()
        by_name = {d["name"]: self._lm.get_tensor(d["index"])[0] for d in self._lm_out}
        landmarks, presence, handed, world = (by_name[d["name"]] for d in self._lm_out)
        presence_p = float(presence.ravel()[0])
        if presence_p > 1.0 or presence_p < 0.0:  # logits in some model versions
            presence_p = 1.0 / (1.0 + math.exp(-presence_p))
        if presence_p < self.presence:
            return None
        lm = landmarks.reshape(21, 3)
        kp = lm[:, :2] @ crop_to_img[:, :2].T + crop_to_img[:, 2]
        # World landmarks come in the crop's axes: rotate x, y back into image axes.
        wl = world.reshape(21, 3).astype(np.float64)
        wl[:, :2] = wl[:, :2] @ np.array([[c, -s], [s, c]]).T
        # Unlike the legacy solution's label, the raw output is already P(right) for an
        # ordinary photo (checked against the chirality on shared/data/images).
        right_prob = float(handed.ravel()[0])
        score = presence_p
        return HandDetection(
            keypoints_2d=kp,
            confidence=np.full(21, score),
            world_landmarks=wl,
            is_right=right_prob > 0.5,
            score=score,
            stage=stage,
            handedness_source="classifier",
            right_prob=right_prob,
            chirality=chirality(wl),
        )


def _palm_roi(box: np.ndarray, kps: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Rotated square hand ROI from a palm box (2, 2) xyxy px and 7 keypoints (7, 2) px.

    Rotation aligns wrist centre (keypoint 0) -> middle-finger MCP (keypoint 2) with "up";
    the box centre moves half a box along that axis towards the fingers; side = 2.6 x longer
    box side (MediaPipe's palm_detection_detection_to_roi + rect transformation).
    Returns:
        (centre (2,) px, side px, angle rad) where angle rotates crop axes into image axes.
    """
    centre = box.mean(0)
    size = float((box[1] - box[0]).max())
    d = kps[2] - kps[0]
    # Angle of the wrist->MCP direction relative to image "up" (0, -1).
    angle = math.atan2(d[0], -d[1])
    up = np.array([math.sin(angle), -math.cos(angle)])  # unit vector wrist -> fingers
    centre = centre + 0.5 * size * up
    return centre, 2.6 * size, angle
