"""reconstruct_batch with a fake detector: statuses, shapes, one-hand images, per-image errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from prior.hands import TwoHands
from recon.detect import DetectionResult, HandDetection
from recon.image_io import ImageError
from recon.pipeline import Pipeline, ReconConfig, reconstruct_batch

K = np.array([[800.0, 0, 319.5], [0, 800.0, 239.5], [0, 0, 1]])


def _scene(mano) -> tuple[TwoHands, np.ndarray, np.ndarray]:
    h = TwoHands.zeros(1)
    transl = torch.tensor([[[0.08, -0.03, 0.5], [-0.08, -0.03, 0.5]]])
    hands = TwoHands(h.pose_aa, h.betas, h.rot_mat, transl)
    with torch.no_grad():
        m = mano(hands)
    mp = m.joints_in("mediapipe")[0].double().numpy()
    uvw = mp @ K.T
    return hands, uvw[..., :2] / uvw[..., 2:], mp - mp[:, :1]


class FakeDetector:
    """Returns prepared detections keyed by the image's first pixel value; 255 raises."""

    def __init__(self, by_value: dict[int, list[HandDetection]]) -> None:
        self.by_value = by_value
        self.closed = False

    def __call__(self, image: np.ndarray) -> DetectionResult:
        v = int(image[0, 0, 0])
        if v == 255:
            raise RuntimeError("detector exploded")
        return DetectionResult(list(self.by_value.get(v, [])), ["fake"])

    def close(self) -> None:
        self.closed = True


@pytest.fixture()
def pipeline(mano):
    _, kp, world = _scene(mano)
    det = [HandDetection(kp[s], np.full(21, 0.9), world[s], bool(s), 0.9, "fake", "classifier")
           for s in (0, 1)]  # fmt: skip
    cfg = ReconConfig(use_prior=False)
    cfg.fit.steps, cfg.fit.global_steps, cfg.init.steps = 4, 1, 3  # fast: shapes and statuses
    detector = FakeDetector({1: det, 2: [det[1]], 3: []})
    return Pipeline(cfg, detector, mano, None, torch.device("cpu"))


def _img(value: int) -> np.ndarray:
    return np.full((480, 640, 3), value, np.uint8)


def test_batch_statuses_and_shapes(pipeline, mano, caplog) -> None:
    gt, kp, _ = _scene(mano)
    images = [_img(1), _img(2), _img(3), _img(255), np.zeros((480, 640), np.uint8)]
    with caplog.at_level(logging.WARNING, logger="recon.pipeline"):
        recs = reconstruct_batch(images, [K] * 5, pipeline, names=list("abcde"))
    assert [r.status for r in recs] == ["ok", "one-hand", "no-hands", "error", "error"]
    ok, one, none, boom, bad = recs
    assert ok.hands.batch_size == 1 and ok.meshes.verts.shape == (1, 2, 778, 3)
    assert ok.present.tolist() == [True, True] and one.present.tolist() == [False, True]
    assert "only the right hand" in one.message and "alone" in one.message
    assert ok.reprojection_px is not None and ok.reprojection_px < 10.0
    assert one.penetration_mm is None and ok.penetration_mm is not None
    assert set(ok.times) >= {"detect", "init", "fit"}
    # The fitted root lands close to the truth (init from exact landmarks, a few steps).
    err = (ok.meshes.root_joints() - mano(gt).root_joints()).norm(dim=-1).max()
    assert err < 0.03, f"root error {err:.3f} m"
    assert none.hands is None and none.message == "no hands found"
    # Unexpected error: traceback summary in the record, logged at error level.
    assert "RuntimeError: detector exploded" in boom.message and boom.error_trace
    assert any(r.levelno == logging.ERROR and "detector exploded" in str(r.exc_info[1])
               for r in caplog.records if r.exc_info)  # fmt: skip
    # Expected error (bad input): message, no traceback.
    assert bad.error_trace is None and "expected an (H, W, 3) uint8" in bad.message


def test_batched_equals_single_shapes(pipeline) -> None:
    single = reconstruct_batch([_img(1)], [K], pipeline)
    batched = reconstruct_batch([_img(1), _img(1)], [K, K], pipeline)
    assert single[0].status == batched[0].status == batched[1].status == "ok"
    a, b = single[0].hands.transl, batched[1].hands.transl
    assert torch.allclose(a, b, atol=5e-3)  # same data in a batch gives nearly the same fit


def test_given_detections_skip_the_detector(pipeline) -> None:
    det = pipeline.detector.by_value[1]
    recs = reconstruct_batch([_img(255)], [K], pipeline, detections=[DetectionResult(det, ["given"])])
    assert recs[0].status == "ok"
    with pytest.raises(ValueError, match="same length"):
        reconstruct_batch([_img(1)], [K, K], pipeline)
    assert issubclass(ImageError, ValueError)
