"""recon.init: initial two-hand estimate from (MediaPipe-like) 3D landmarks and 2D keypoints."""

from __future__ import annotations

import numpy as np
import roma
import torch

from fitting.objectives import pose_limits, project
from prior.anatomy import HandAxes, angles_to_pose, sample_finger_angles
from prior.hands import TwoHands
from recon.detect_geometry import HandDetection
from recon.init import InitConfig, init_from_detections, init_from_landmarks, solve_translation

K1 = torch.tensor([[1000.0, 0.0, 320.0], [0.0, 1000.0, 240.0], [0.0, 0.0, 1.0]])


def _posed_hands(n: int, mano, g: torch.Generator) -> TwoHands:
    """Random plausible finger poses and shapes, random root rotations, 0.4-0.6 m away."""
    lim = pose_limits(mano)
    poses = []
    for s in (0, 1):
        axes = HandAxes(lim.flex[s], lim.abd[s], lim.flex_limits[s], lim.abd_limits[s])
        flex, abd, _ = sample_finger_angles(n, axes, g)
        poses.append(angles_to_pose(flex, abd, axes) - lim.hands_mean[s])
    transl = torch.stack([torch.full((n, 2), 0.0), torch.full((n, 2), 0.0),
                          0.4 + 0.2 * torch.rand(n, 2, generator=g)], -1)  # fmt: skip
    transl[..., :2] = 0.08 * torch.randn(n, 2, 2, generator=g)
    return TwoHands(torch.stack(poses, 1), 0.5 * torch.randn(n, 2, 10, generator=g),
                    roma.rotvec_to_rotmat(torch.randn(n, 2, 3, generator=g)), transl)  # fmt: skip


def _observe(hands: TwoHands, mano):
    b = hands.batch_size
    joints = mano(hands).joints_in("mediapipe")
    K = K1.expand(b, 3, 3).clone()
    kp = project(joints.reshape(b, 42, 3), K).reshape(b, 2, 21, 2)
    return joints, K, kp


def test_solve_translation_is_exact():
    g = torch.Generator().manual_seed(3)
    rel = 0.05 * torch.randn(2, 2, 21, 3, generator=g)
    rel = rel - rel[:, :, :1]
    wrist = torch.tensor([0.1, -0.05, 0.5]) + 0.05 * torch.randn(2, 2, 3, generator=g)
    K = K1.expand(2, 3, 3).clone()
    kp = project((rel + wrist[:, :, None]).reshape(2, 42, 3), K).reshape(2, 2, 21, 2)
    t = solve_translation(rel, kp, torch.ones(2, 2, 21), K)
    assert (t - wrist).abs().max() < 1e-5


def test_init_recovers_known_hands(mano):
    g = torch.Generator().manual_seed(0)
    hands = _posed_hands(8, mano, g)
    joints, K, kp = _observe(hands, mano)
    # MediaPipe's world landmarks: metric, camera-aligned axes, origin somewhere in the hand.
    world = joints - joints[:, :, 9:10] + 0.01
    present = torch.ones(8, 2, dtype=torch.bool)
    init, landmarks = init_from_landmarks(world, kp, torch.ones(8, 2, 21), present, K, mano,
                                          InitConfig(steps=60))  # fmt: skip
    est = mano(init).joints_in("mediapipe")
    root_err = (est[:, :, 0] - joints[:, :, 0]).norm(dim=-1)
    rel_err = ((est - est[:, :, :1]) - (joints - joints[:, :, :1])).norm(dim=-1)
    assert root_err.mean() < 0.01 and root_err.max() < 0.03, root_err
    assert rel_err.mean() < 0.005, rel_err.mean()
    # The landmarks are moved to the estimated wrists (camera frame).
    assert (landmarks[:, :, 0] - est[:, :, 0]).norm(dim=-1).max() < 1e-5
    # Left hands went through the left model: their chirality matches (joints agree closely).
    assert rel_err[:, 0].mean() < 0.005


def test_init_from_detections_one_hand(mano):
    g = torch.Generator().manual_seed(1)
    hands = _posed_hands(1, mano, g)
    joints, K, kp = _observe(hands, mano)
    right = HandDetection(kp[0, 1].numpy(), np.ones(21, np.float32),
                          (joints[0, 1] - joints[0, 1, :1]).numpy(), True, 0.9, "mediapipe",
                          "classifier")  # fmt: skip
    init, present = init_from_detections([right], K1.numpy(), (640, 480), mano)
    assert present.tolist() == [False, True]
    est = mano(init).joints_in("mediapipe")
    assert (est[0, 1, 0] - joints[0, 1, 0]).norm() < 0.02
    assert torch.isfinite(init.transl).all() and init.transl[0, 0, 2] > 0
    # Without world landmarks the hand is still placed (flat-hand fallback), not an error.
    flat = HandDetection(kp[0, 1].numpy(), np.ones(21, np.float32), None, True, 0.9, "mediapipe",
                         "classifier")  # fmt: skip
    init2, present2 = init_from_detections([flat], K1.numpy(), (640, 480), mano)
    est2 = mano(init2).joints_in("mediapipe")
    assert present2.tolist() == [False, True]
    assert (est2[0, 1, 0, :2] - joints[0, 1, 0, :2]).norm() < 0.05  # right place in the image
