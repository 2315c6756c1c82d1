"""Initial two-hand estimate from MediaPipe landmarks, in the camera frame.

Per hand (all hands of a batch at once):

1. **Root rotation** by Procrustes (Umeyama, ``roma.rigid_points_registration``) of the model's
   mean-pose palm points (wrist, thumb CMC, four MCPs) onto the world landmarks' palm points.
   MediaPipe's world landmarks are hand-centred but axis-aligned with the camera, so the rotation
   is already the camera-frame root rotation.
2. **Inverse kinematics**: a short batched Adam fit of finger pose, root rotation and shape so
   that the model's bone *directions* match the landmarks' (scale-free: MediaPipe's skeleton
   differs from MANO's) and its root-relative positions match them loosely (this sets the
   metric size).
3. **Translation**: for the fixed rotated, posed hand, the wrist position ``t`` minimising the
   confidence-weighted algebraic reprojection error of the 2D keypoints is a 3x3 linear
   least-squares problem (DLT-like): ``(X_j + t_x) - x_j (Z_j + t_z) = 0`` with ``x_j`` the
   normalised image coordinate; exact for noise-free keypoints.

A left hand uses the left model (``ManoPair`` handles both sides on the hand axis).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import roma
import torch
from torch import Tensor

from fitting.objectives import PoseLimits, centred, pose_limits, pose_loss, root_relative
from fitting.observation import KEYPOINT_ORDER, Observation
from prior.hands import LEFT, RIGHT, ManoPair, TwoHands, convert_joints
from prior.kinematics import JointModel
from recon.detect_geometry import HandDetection

__all__ = [
    "InitConfig",
    "init_from_landmarks",
    "init_from_detections",
    "observation_from_detections",
]

log = logging.getLogger(__name__)

# MediaPipe skeleton: parent of each landmark (wrist is the root).
MP_PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)
MP_PALM = (0, 1, 5, 9, 13, 17)  # wrist, thumb CMC, index/middle/ring/pinky MCPs
_CHILD = torch.arange(1, 21)
_PARENT = torch.tensor(MP_PARENTS[1:])


@dataclass
class InitConfig:
    """Inverse-kinematics settings.

    steps: Adam steps of the batched IK fit (0 = Procrustes rotation and mean pose only).
    lr: Adam learning rate.
    position_weight: weight of the root-relative position term (cm^2) against the direction
        term; it sets the hand's size (positions are linear in the landmarks, so landmark noise
        does not bias the size, unlike bone lengths).
    pose_weight: anatomical pose regulariser (joint-limit hinge + twist).
    shape_weight: squared norm of the shape coefficients.
    default_depth: depth (m) assumed for a hand with fewer than two usable keypoints.
    """

    steps: int = 50
    lr: float = 0.05
    position_weight: float = 0.05
    pose_weight: float = 0.05
    shape_weight: float = 1e-3
    default_depth: float = 0.5


def _bones(points: Tensor) -> Tensor:
    """(..., 21, 3) MediaPipe-order points -> (..., 20, 3) parent-to-child vectors."""
    return points[..., _CHILD.to(points.device), :] - points[..., _PARENT.to(points.device), :]


def _rot6d_to_mat(x: Tensor) -> Tensor:
    """(..., 3, 2) first two columns -> (..., 3, 3)."""
    return roma.special_gramschmidt(x)


def _model_joints(model: JointModel, pose: Tensor, betas: Tensor, rot: Tensor) -> Tensor:
    """(B, 2, 21, 3) MediaPipe-order joints of hands rotated about their wrists, no translation."""
    hands = TwoHands(pose, betas, rot, torch.zeros_like(betas[..., :3]))
    return convert_joints(model(hands).joints, "ih26m", KEYPOINT_ORDER)


def _procrustes_rotation(model: Tensor, target: Tensor) -> Tensor:
    """(B, 2, 21, 3) root-relative model and target joints -> (B, 2, 3, 3) rotation on the palm."""
    palm = list(MP_PALM)
    rot, _, _ = roma.rigid_points_registration(model[..., palm, :], target[..., palm, :],
                                               compute_scaling=True)  # fmt: skip
    return rot


def solve_translation(joints_rel: Tensor, keypoints_2d: Tensor, weights: Tensor, K: Tensor,
                      default_depth: float = 0.5) -> Tensor:  # fmt: skip
    """Wrist positions minimising the weighted algebraic reprojection error (linear).

    Args:
        joints_rel: (B, 2, 21, 3) wrist-relative joints in camera orientation, metres.
        keypoints_2d: (B, 2, 21, 2) px.
        weights: (B, 2, 21) >= 0.
        K: (B, 3, 3).
        default_depth: the solve is regularised very weakly towards ``(0, 0, default_depth)``
            so that a hand with no usable keypoint stays finite.
    Returns:
        (B, 2, 3) wrist positions in the camera frame.
    """
    uv1 = torch.cat([keypoints_2d, torch.ones_like(keypoints_2d[..., :1])], -1)
    xy = (uv1 @ torch.linalg.inv(K).transpose(1, 2)[:, None])[..., :2]  # normalised coords
    ones, zeros = torch.ones_like(xy[..., 0]), torch.zeros_like(xy[..., 0])
    # Rows (t_x, t_y, t_z) . a = b for x and y of every joint.
    a = torch.stack(
        [torch.stack([ones, zeros, -xy[..., 0]], -1), torch.stack([zeros, ones, -xy[..., 1]], -1)],
        -2,
    )  # (B,2,21,2,3)
    b = torch.stack(
        [
            xy[..., 0] * joints_rel[..., 2] - joints_rel[..., 0],
            xy[..., 1] * joints_rel[..., 2] - joints_rel[..., 1],
        ],
        -1,
    )  # (B,2,21,2)
    w = weights[..., None]
    ata = torch.einsum("bhjki,bhjk,bhjkl->bhil", a, w.expand_as(b), a)
    atb = torch.einsum("bhjki,bhjk,bhjk->bhi", a, w.expand_as(b), b)
    ridge = 1e-6
    prior_t = joints_rel.new_tensor([0.0, 0.0, default_depth])
    eye = torch.eye(3, dtype=a.dtype, device=a.device)
    return torch.linalg.solve(ata + ridge * eye, atb + ridge * prior_t)


def init_from_landmarks(
    world: Tensor,
    keypoints_2d: Tensor,
    confidence: Tensor,
    present: Tensor,
    K: Tensor,
    mano: ManoPair,
    cfg: InitConfig | None = None,
    limits: PoseLimits | None = None,
) -> tuple[TwoHands, Tensor]:
    """Batched initial estimate of both hands.

    Args:
        world: (B, 2, 21, 3) 3D landmarks in camera-aligned axes, metres, any origin
            (MediaPipe world landmarks), MediaPipe order. Rows of absent hands are ignored.
        keypoints_2d: (B, 2, 21, 2) px, MediaPipe order.
        confidence: (B, 2, 21) in [0, 1].
        present: (B, 2) bool.
        K: (B, 3, 3) intrinsics.
        mano: hand model.
        cfg: IK settings.
        limits: precomputed :func:`fitting.objectives.pose_limits` of ``mano`` (optional).
    Returns:
        TwoHands (B) in the camera frame (absent hands: mean pose at the default depth) and
        landmarks_3d (B, 2, 21, 3): the world landmarks moved to the estimated wrist positions.
    """
    cfg = cfg or InitConfig()
    limits = (limits or pose_limits(mano)).to(world.device)
    model = JointModel(mano).to(world.device)
    b = world.shape[0]
    target = root_relative(world)
    w_present = present.to(world)
    zeros = TwoHands.zeros(b, world.device, world.dtype)
    # 1. Root rotation: Procrustes of the mean-pose palm onto the landmarks' palm.
    with torch.no_grad():
        mean_joints = _model_joints(model, zeros.pose_aa, zeros.betas, zeros.rot_mat)
        rot0 = _procrustes_rotation(root_relative(mean_joints), target)
        rot0 = torch.where(present[..., None, None], rot0, zeros.rot_mat)
    # 2. Inverse kinematics on bone directions and (loosely) bone lengths.
    pose = zeros.pose_aa.clone().requires_grad_(True)
    betas = zeros.betas.clone().requires_grad_(True)
    rot6d = rot0[..., :2].clone().requires_grad_(True)
    target_centred = centred(target)
    target_bones = _bones(target)
    target_dir = target_bones / target_bones.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    opt = torch.optim.Adam([pose, betas, rot6d], lr=cfg.lr)
    for _ in range(cfg.steps):
        joints = _model_joints(model, pose, betas, _rot6d_to_mat(rot6d))
        bones = _bones(joints)
        direction = bones / bones.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        position = ((centred(joints) - target_centred) * 100.0).pow(2).sum(-1).mean(-1)  # cm^2
        per_hand = ((direction - target_dir).pow(2).sum(-1).mean(-1)
                    + cfg.position_weight * position
                    + cfg.shape_weight * betas.pow(2).sum(-1))  # fmt: skip
        loss = (per_hand * w_present).sum() + cfg.pose_weight * pose_loss(
            pose, present, limits
        ).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    # 3. Translation from the 2D keypoints for the fixed posed hand.
    with torch.no_grad():
        rot = _rot6d_to_mat(rot6d)
        joints = _model_joints(model, pose, betas, rot)
        wrist_rest = joints[..., 0, :]  # where the wrist lands with zero translation
        weights = confidence * w_present[..., None]
        wrist = solve_translation(joints - wrist_rest[..., None, :], keypoints_2d, weights, K,
                                  cfg.default_depth)  # fmt: skip
        few = (weights > 0).sum(-1) < 2
        if (few & present).any():
            log.warning("%d hand(s) have fewer than 2 usable keypoints: depth set to %.2f m",
                        int((few & present).sum()), cfg.default_depth)  # fmt: skip
        wrist = torch.where((few | ~present)[..., None],
                            wrist.new_tensor([0.0, 0.0, cfg.default_depth]), wrist)  # fmt: skip
        hands = TwoHands(pose.detach(), betas.detach(), rot, wrist - wrist_rest)
        landmarks = target + wrist[..., None, :]
    return hands, landmarks


def _pseudo_world(det: HandDetection, K: np.ndarray, depth: float) -> np.ndarray:
    """Flat 3D landmarks from 2D keypoints at an assumed depth (when MediaPipe gave none)."""
    uv = det.keypoints_2d.astype(np.float64)
    xy = (uv - K[:2, 2]) / np.array([K[0, 0], K[1, 1]]) * depth
    return np.concatenate([xy - xy[:1], np.zeros((21, 1))], 1)


def observation_from_detections(
    detections: Sequence[Sequence[HandDetection]],
    K: Tensor,
    image_size: Tensor,
    mano: ManoPair,
    cfg: InitConfig | None = None,
) -> Observation:
    """Batched :class:`fitting.Observation` (with its initial estimate) for B images.

    Args:
        detections: per image, its hands (at most one per side is used: the highest score).
        K: (B, 3, 3) intrinsics. image_size: (B, 2) (width, height).
        mano: hand model. cfg: IK settings.
    Returns:
        Observation with keypoints in MediaPipe order, ``present`` from the detections and
        ``landmarks_3d`` from the world landmarks.
    """
    cfg = cfg or InitConfig()
    b = len(detections)
    K = torch.as_tensor(K, dtype=torch.float32)
    if K.shape != (b, 3, 3):
        raise ValueError(f"K must have shape ({b}, 3, 3) for {b} images, got {tuple(K.shape)}")
    kp = np.zeros((b, 2, 21, 2), np.float32)
    conf = np.zeros((b, 2, 21), np.float32)
    world = np.zeros((b, 2, 21, 3), np.float32)
    present = np.zeros((b, 2), bool)
    for i, dets in enumerate(detections):
        for side in (LEFT, RIGHT):
            same = [d for d in dets if d.is_right == (side == RIGHT)]
            if not same:
                continue
            if len(same) > 1:
                log.warning("image %d: %d %s hands, keeping the highest score", i, len(same),
                            "right" if side == RIGHT else "left")  # fmt: skip
            det = max(same, key=lambda d: d.score)
            kp[i, side], conf[i, side], present[i, side] = det.keypoints_2d, det.confidence, True
            if det.world_landmarks is None:
                log.warning("image %d: no world landmarks for the %s hand, using a flat hand",
                            i, det.side)  # fmt: skip
                world[i, side] = _pseudo_world(det, K[i].double().numpy(), cfg.default_depth)
            else:
                world[i, side] = det.world_landmarks
    tensors = [torch.as_tensor(a) for a in (world, kp, conf, present)]
    init, landmarks = init_from_landmarks(*tensors, K, mano, cfg)
    size = torch.as_tensor(image_size, dtype=torch.float32).reshape(b, 2)
    return Observation(tensors[1], tensors[2].clamp(0.0, 1.0), K, size, init, tensors[3], landmarks)


def init_from_detections(
    detections: Sequence[HandDetection], K: Tensor | np.ndarray, image_size: Sequence[int],
    mano: ManoPair, cfg: InitConfig | None = None,
) -> tuple[TwoHands, Tensor]:  # fmt: skip
    """Initial estimate for one image.

    Args:
        detections: the image's hands (:class:`recon.detect.HandDetection`).
        K: (3, 3) intrinsics. image_size: (width, height).
    Returns:
        TwoHands with batch 1 in the camera frame, and present (2,) bool.
    """
    K = torch.as_tensor(np.asarray(K), dtype=torch.float32).reshape(1, 3, 3)
    obs = observation_from_detections(
        [list(detections)], K, torch.as_tensor([image_size]), mano, cfg
    )
    return obs.init, obs.present[0]
