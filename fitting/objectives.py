"""Fitting loss terms as pure, batched functions; each returns one value per image, (B,).

Absent hands (``present`` False) contribute nothing to any term. Units are chosen so that the
default weights in ``configs/fit.yaml`` are of order one: reprojection in px^2 (robust),
landmarks in cm^2, regularisers in rad^2 / unitless, penetration as InterHandGen's energy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fitting.observation import KEYPOINT_ORDER, Observation
from prior.anatomy import hand_axes
from prior.hands import NUM_POSE_JOINTS, HandMeshes, ManoPair, TwoHands, convert_joints
from prior.kinematics import JointModel, PosedHands
from prior.penetration import (
    PenetrationPairs,
    energy_from_pairs,
    find_penetrations,
    penetration_energy,
)
from prior.penetration import penetration_depth as _penetration_depth

__all__ = [
    "PoseLimits", "project", "gmof", "reprojection_loss", "reprojection_error_px",
    "init_landmark_loss", "init_param_loss", "shape_loss", "pose_loss", "pose_limits",
    "penetration_loss", "sparse_penetration_loss", "penetration_depth", "root_relative", "centred",
]  # fmt: skip

_WRIST_MP = 0  # wrist index in MediaPipe order


def project(points: Tensor, K: Tensor, min_depth: float = 1e-3) -> Tensor:
    """Pinhole projection.

    Args:
        points: (B, N, 3) camera-frame points, metres.
        K: (B, 3, 3) intrinsics.
        min_depth: depths are clamped to at least this (keeps gradients finite behind the camera).
    Returns:
        (B, N, 2) pixel coordinates.
    """
    if points.dim() != 3 or points.shape[-1] != 3 or K.shape != (points.shape[0], 3, 3):
        raise ValueError(f"project expects (B,N,3) points and (B,3,3) K, got {tuple(points.shape)}, {tuple(K.shape)}")
    z = points[..., 2:].clamp_min(min_depth)
    uv1 = torch.cat([points[..., :2] / z, torch.ones_like(z)], -1) @ K.transpose(1, 2)
    return uv1[..., :2]


def gmof(residual: Tensor, rho: float) -> Tensor:
    """Geman-McClure robust penalty ``rho^2 r^2 / (r^2 + rho^2)`` (SMPLify's scaling), elementwise.

    Quadratic (``~ r^2``) for ``|r| << rho``, saturating at ``rho^2``.
    """
    sq = residual**2
    return rho**2 * sq / (sq + rho**2)


def _keypoint_weights(obs: Observation) -> Tensor:
    """(B, 2, 21) confidence of present hands."""
    return obs.confidence * obs.present[..., None].to(obs.confidence)


def _in_keypoint_order(joints: Tensor, order: str) -> Tensor:
    return joints if order == KEYPOINT_ORDER else convert_joints(joints, order, KEYPOINT_ORDER)


def _project_hands(joints: Tensor, K: Tensor, order: str) -> Tensor:
    """(B, 2, 21, 3) joints in ``order`` -> (B, 2, 21, 2) px in the observation's order."""
    b = joints.shape[0]
    ordered = _in_keypoint_order(joints, order)
    return project(ordered.reshape(b, 42, 3), K).reshape(b, 2, 21, 2)


def reprojection_loss(joints: Tensor, obs: Observation, rho: float = 100.0, order: str = "ih26m") -> Tensor:
    """Confidence-weighted robust 2D reprojection error.

    Args:
        joints: (B, 2, 21, 3) model joints in ``order`` (default InterHand2.6M, as
            ``HandMeshes.joints``), camera frame.
        obs: the observation (keypoints in MediaPipe order).
        rho: GMoF scale, px.
    Returns:
        (B,) weighted mean of ``gmof(|proj - keypoint|)`` over the observed keypoints, px^2.
    """
    residual = (_project_hands(joints, obs.K, order) - obs.keypoints_2d).norm(dim=-1)  # (B,2,21)
    w = _keypoint_weights(obs)
    return (w * gmof(residual, rho)).sum((1, 2)) / w.sum((1, 2)).clamp_min(1e-6)


def reprojection_error_px(joints: Tensor, obs: Observation, order: str = "ih26m") -> Tensor:
    """(B,) confidence-weighted mean reprojection distance in px (a metric, not a loss).

    Images without any observed keypoint give NaN (there is nothing to measure).
    """
    residual = (_project_hands(joints, obs.K, order) - obs.keypoints_2d).norm(dim=-1)
    w = _keypoint_weights(obs)
    total = w.sum((1, 2))
    return torch.where(total > 0, (w * residual).sum((1, 2)) / total.clamp_min(1e-12),
                       torch.full_like(total, float("nan")))  # fmt: skip


def root_relative(points: Tensor, root: int = _WRIST_MP) -> Tensor:
    """(..., 21, 3) -> (..., 21, 3) minus the root joint."""
    return points - points[..., root : root + 1, :]


def centred(points: Tensor) -> Tensor:
    """(..., N, 3) -> (..., N, 3) minus their centroid."""
    return points - points.mean(-2, keepdim=True)


def init_landmark_loss(joints: Tensor, landmarks_3d: Tensor, present: Tensor, order: str = "ih26m") -> Tensor:
    """Keep the hand's shape close to the initial 3D landmarks, translation-free.

    Both point sets are centred on their centroids rather than on the wrist: the centroid of
    21 noisy landmarks is ~4.6x less noisy than any single one, so a noisy wrist does not shift
    the whole target.

    Args:
        joints: (B, 2, 21, 3) model joints in ``order`` (default InterHand2.6M).
        landmarks_3d: (B, 2, 21, 3) initial landmarks, MediaPipe order, camera frame.
        present: (B, 2) bool.
    Returns:
        (B,) mean squared centred distance over present hands, cm^2.
    """
    ordered = _in_keypoint_order(joints, order)
    sq = ((centred(ordered) - centred(landmarks_3d)) * 100.0).pow(2).sum(-1)  # cm^2
    w = present.to(sq)
    return (sq.mean(-1) * w).sum(1) / w.sum(1).clamp_min(1.0)


def init_param_loss(hands: TwoHands, init: TwoHands, present: Tensor) -> Tensor:
    """(B,) squared distance of the finger pose (rad^2) and shape to the initial estimate."""
    d_pose = (hands.pose_aa - init.pose_aa).pow(2).sum((-1, -2))
    d_betas = (hands.betas - init.betas).pow(2).sum(-1)
    w = present.to(d_pose)
    return ((d_pose + d_betas) * w).sum(1)


def shape_loss(betas: Tensor, present: Tensor) -> Tensor:
    """(B,) squared norm of the shape coefficients of present hands."""
    return (betas.pow(2).sum(-1) * present.to(betas)).sum(1)


@dataclass(frozen=True)
class PoseLimits:
    """Per-side joint axes and limits in each side's model frame (from :mod:`prior.anatomy`).

    flex, abd: (2, 15, 3) unit axes; flex_limits, abd_limits: (2, 15, 2) radians;
    hands_mean: (2, 15, 3) the model's mean pose (``pose_aa`` is relative to it).
    """

    flex: Tensor
    abd: Tensor
    flex_limits: Tensor
    abd_limits: Tensor
    hands_mean: Tensor

    def to(self, device: torch.device | str) -> PoseLimits:
        return PoseLimits(*(getattr(self, k).to(device) for k in self.__dataclass_fields__))


def pose_limits(mano: ManoPair) -> PoseLimits:
    """Joint axes and limits of both sides, computed from the model's flat rest skeleton."""
    mean = mano.hands_mean().view(2, NUM_POSE_JOINTS, 3).float().cpu()
    if mano.flat_hand_mean:
        mean = torch.zeros_like(mean)
    rest = TwoHands.zeros(1)
    rest = TwoHands(-mean[None], rest.betas, rest.rot_mat, rest.transl)  # absolute zero pose
    with torch.no_grad():
        joints = convert_joints(mano.to("cpu")(rest).joints[0], "ih26m", "mano")  # (2,21,3)
    per_side = [hand_axes(joints[s, :16], joints[s, 16:], side_sign) for s, side_sign in
                ((0, -1.0), (1, 1.0))]  # fmt: skip
    stack = lambda k: torch.stack([getattr(a, k).float() for a in per_side])
    return PoseLimits(stack("flex"), stack("abd"), stack("flex_limits"), stack("abd_limits"), mean)


def _hinge(x: Tensor, limits: Tensor) -> Tensor:
    return torch.relu(limits[..., 0] - x) + torch.relu(x - limits[..., 1])


def pose_loss(pose_aa: Tensor, present: Tensor, limits: PoseLimits, twist_weight: float = 0.5) -> Tensor:
    """Anatomical pose regulariser: joint-limit hinge plus a penalty on twist.

    The absolute pose of each finger joint is split into flexion, abduction and the remainder
    (twist about the bone, which real fingers barely have).

    Args:
        pose_aa: (B, 2, 15, 3) pose relative to the hand mean.
        present: (B, 2) bool.
        limits: from :func:`pose_limits`.
    Returns:
        (B,) sum over present hands of squared limit violations + twist_weight * twist^2, rad^2.
    """
    absolute = pose_aa + limits.hands_mean.to(pose_aa)
    flex = (absolute * limits.flex).sum(-1)  # (B,2,15)
    abd = (absolute * limits.abd).sum(-1)
    twist = absolute - flex[..., None] * limits.flex - abd[..., None] * limits.abd
    per_joint = (_hinge(flex, limits.flex_limits).pow(2) + _hinge(abd, limits.abd_limits).pow(2)
                 + twist_weight * twist.pow(2).sum(-1))  # fmt: skip
    return (per_joint.sum(-1) * present.to(pose_aa)).sum(1)


def penetration_loss(meshes: HandMeshes, present: Tensor, rho: float = 0.05) -> Tensor:
    """Two-hand interpenetration energy (:func:`prior.penetration.penetration_energy`, fast mode).

    Args:
        meshes: (B) posed meshes of both hands.
        present: (B, 2) bool; images without both hands get 0 (there is nothing to collide).
        rho: GMoF scale, metres.
    Returns:
        (B,) energy (InterHandGen's scale: 1000 x mean GMoF over penetrating vertex pairs).
    """
    both = present.all(1)
    out = meshes.verts.new_zeros(meshes.batch_size)
    if both.any():
        idx = both.nonzero()[:, 0]
        out = out.index_put((idx,), penetration_energy(meshes[idx], rho=rho))
    return out


def sparse_penetration_loss(
    hands: TwoHands, posed: PosedHands, kinematics: JointModel, mano: ManoPair, present: Tensor,
    rho: float = 0.05, closed_faces: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """:func:`penetration_loss` of ``mano(hands)`` (same value and gradient) at a fraction of its
    cost: the penetrating pairs are found on a mesh posed without gradient, and only the vertices
    of those pairs are skinned differentiably (``kinematics.vertices``), so the backward pass
    runs through a few dozen vertices instead of two full meshes; nothing is differentiated
    when nothing penetrates.

    Args:
        hands: TwoHands (B), differentiable. posed: ``kinematics.pose(hands)`` (shared with the
            joint terms). kinematics: the joints-only twin of ``mano``. mano: the hand model.
        present: (B, 2) bool. rho: GMoF scale, metres.
        closed_faces: (2, F, 3) the hand model's faces with the wrist capped: when given, a pair
            of the vertex-normal test counts only if its vertex is inside the other hand by the
            winding number (:func:`prior.penetration.find_penetrations`), so hands that merely
            touch are not pushed apart by the test's false positives.
    Returns:
        (B,) energy.
    """
    both = present.all(1)
    out = hands.pose_aa.new_zeros(hands.batch_size)
    if not both.any():
        return out
    idx = both.nonzero()[:, 0]
    with torch.no_grad():
        pairs = find_penetrations(mano(hands[idx].detach()), closed_faces=closed_faces)
    if len(pairs) == 0:
        return out
    # The vertices each side needs (its queries and the other side's targets) in ascending
    # order, as (2, K) indices padded with the side's first one; slot: a vertex's place there.
    need = torch.zeros(2, kinematics.v_template.shape[1], dtype=torch.bool, device=out.device)
    need[pairs.side, pairs.query] = True
    need[1 - pairs.side, pairs.target] = True
    count = need.sum(1, keepdim=True)
    k = int(count.max())
    order = torch.argsort((~need).to(torch.int8), dim=1, stable=True)[:, :k]
    order = torch.where(torch.arange(k, device=out.device) < count, order, order[:, :1])
    slot = need.long().cumsum(1) - 1
    verts = kinematics.vertices(posed[idx], order, hands.betas[idx])  # (b, 2, K, 3)
    local = PenetrationPairs(pairs.sample, pairs.side, slot[pairs.side, pairs.query],
                             slot[1 - pairs.side, pairs.target], pairs.batch_size)  # fmt: skip
    return out.index_put((idx,), energy_from_pairs(verts, local, rho=rho))


def penetration_depth(meshes: HandMeshes, present: Tensor, closed_faces: Tensor | None = None) -> Tensor:
    """(B,) deepest vertex of one hand inside the other, metres (0 unless both are present);
    with ``closed_faces`` (2, F, 3), inside by the winding number, not by the vertex-normal test
    alone (:func:`prior.penetration.penetration_depth`)."""
    both = present.all(1)
    out = meshes.verts.new_zeros(meshes.batch_size)
    if both.any():
        idx = both.nonzero()[:, 0]
        depth = _penetration_depth(meshes[idx], closed_faces=closed_faces)
        out = out.index_put((idx,), depth.to(out))
    return out
