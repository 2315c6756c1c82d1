"""Joints-only MANO forward pass: the 21 joints of both hands without skinning 778 vertices.

Most fitting terms (reprojection, 3D landmarks, the prior's codec) need joints only. MANO's
joints are the 16 kinematic joints, whose rest positions are linear in the shape (``J_regressor``
applied to the shaped template), plus 5 fingertip *vertices*; skinning just those 5 vertices
instead of all 778 makes a step several times cheaper. The result equals
``ManoPair.forward(hands).joints`` (tested to 1e-5 m). The same transforms skin any other chosen
vertices (:meth:`JointModel.vertices`, :meth:`JointModel.vertices_at`): the fit's penetration
term and the prior's anti-penetration guidance need only the vertices of their penetrating pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from smplx.lbs import batch_rodrigues
from torch import Tensor, nn

from prior.hands import (
    IH26M_MIDDLE_MCP,
    IH26M_WRIST,
    JOINT_ORDERS,
    MANO_PARENTS,
    ManoPair,
    TwoHands,
)

__all__ = ["HandJoints", "JointModel", "PosedHands"]

# MANO's kinematic tree is the wrist plus five chains of three joints (MANO16 order):
# level k holds the k-th joint of each finger, whose parent is in level k-1.
_LEVELS = ((1, 4, 7, 10, 13), (2, 5, 8, 11, 14), (3, 6, 9, 12, 15))
_PERM = (0, *_LEVELS[0], *_LEVELS[1], *_LEVELS[2])  # position in the concatenation -> joint
_INV_PERM = [_PERM.index(j) for j in range(16)]


@dataclass(frozen=True)
class HandJoints:
    """Joints of both hands (the part of ``HandMeshes`` that the codec and losses read).

    joints: (B, 2, 21, 3) InterHand2.6M order.
    """

    joints: Tensor

    def root_joints(self) -> Tensor:
        return self.joints[:, :, IH26M_WRIST]

    def middle_mcp(self) -> Tensor:
        return self.joints[:, :, IH26M_MIDDLE_MCP]


@dataclass(frozen=True)
class PosedHands:
    """One forward pass of :class:`JointModel`: the joints and what skinning more vertices needs.

    joints: (B, 2, 21, 3) camera frame, MANO21 order. rots, shift: (B, 2, 16, 3, 3), (B, 2, 16, 3)
    per-joint rigid transforms ``x -> R x + shift`` of the rest pose (before the root rotation).
    pose_feature: (B, 2, 135) pose blend-shape feature. wrist: (B, 2, 1, 3) rest wrist.
    rot_mat, transl: (B, 2, 3, 3), (B, 2, 3) the hands' root rotation (about the wrist) and
    translation.
    """

    joints: Tensor
    rots: Tensor
    shift: Tensor
    pose_feature: Tensor
    wrist: Tensor
    rot_mat: Tensor
    transl: Tensor

    def joints_in(self, order: str) -> Tensor:
        """(B, 2, 21, 3) joints in a named order of :data:`prior.hands.JOINT_ORDERS`."""
        return self.joints[:, :, list(JOINT_ORDERS[order])]

    def __getitem__(self, idx: Tensor) -> PosedHands:
        """The same pass for a subset of the batch."""
        return PosedHands(*(getattr(self, f.name)[idx] for f in fields(self)))

    def middle_mcp(self) -> Tensor:
        """(B, 2, 3) middle-finger MCP joints (what the prior's codec anchors on)."""
        return self.joints[:, :, JOINT_ORDERS["ih26m"][IH26M_MIDDLE_MCP]]


def _skin(rest: Tensor, weights: Tensor, rots: Tensor, shift: Tensor) -> Tensor:
    """Linear blend skinning: rest points (B, 2, K, 3), weights (2, K, 16), per-joint transforms
    (B, 2, 16, 3, 3) and (B, 2, 16, 3) -> posed points (B, 2, K, 3)."""
    r = torch.einsum("hvj,bhjkl->bhvkl", weights, rots)
    t = torch.einsum("hvj,bhjk->bhvk", weights, shift)
    return (r @ rest[..., None])[..., 0] + t


def _to_camera(points: Tensor, wrist: Tensor, rot_mat: Tensor, transl: Tensor) -> Tensor:
    """Root rotation about the wrist, then translation (as ``ManoPair.forward``): (B, 2, K, 3)."""
    return (points - wrist) @ rot_mat.transpose(-1, -2) + wrist + transl[:, :, None]


class JointModel(nn.Module):
    """Joints-only twin of a :class:`ManoPair` (same parameters, same conventions).

    It also exposes what :class:`prior.codec.HandCodec` reads from a hand model
    (``flat_hand_mean``, ``hands_components(_inv)``, ``hands_mean``, ``model_name``), so it can stand
    in for the ``ManoPair`` when encoding hands for the prior.
    """

    def __init__(self, mano: ManoPair) -> None:
        super().__init__()
        self.mano = mano
        self.flat_hand_mean = mano.flat_hand_mean
        self.model_name = mano.model_name
        tips = mano._tips
        stacks: dict[str, list[Tensor]] = {k: [] for k in (
            "j_template", "j_shapedirs", "tip_template", "tip_shapedirs", "tip_posedirs",
            "tip_weights", "pose_mean", "v_template", "shapedirs", "posedirs", "lbs_weights")}  # fmt: skip
        for layer in mano.layers:
            reg = layer.J_regressor  # (16, 778)
            stacks["j_template"].append(reg @ layer.v_template)
            stacks["j_shapedirs"].append(torch.einsum("jv,vcs->jcs", reg, layer.shapedirs))
            stacks["tip_template"].append(layer.v_template[tips])
            stacks["tip_shapedirs"].append(layer.shapedirs[tips])
            posedirs = layer.posedirs.view(layer.posedirs.shape[0], -1, 3)  # (135, 778, 3)
            stacks["tip_posedirs"].append(posedirs[:, tips].reshape(posedirs.shape[0], -1))
            stacks["tip_weights"].append(layer.lbs_weights[tips])
            stacks["pose_mean"].append(layer.pose_mean[3:].view(15, 3))
            # The whole mesh, for skinning chosen vertices (:meth:`vertices`).
            stacks["v_template"].append(layer.v_template)  # (778, 3)
            stacks["shapedirs"].append(layer.shapedirs)  # (778, 3, 10)
            stacks["posedirs"].append(posedirs.permute(1, 0, 2))  # (778, 135, 3)
            stacks["lbs_weights"].append(layer.lbs_weights)  # (778, 16)
        for name, items in stacks.items():
            self.register_buffer(name, torch.stack(items), persistent=False)
        parents = tuple(int(p) for p in mano.layers[0].parents.tolist())
        if parents != MANO_PARENTS:
            raise ValueError(f"JointModel expects MANO's kinematic tree {MANO_PARENTS}, got {parents}")
        self.register_buffer("_to_ih26m", torch.as_tensor(JOINT_ORDERS["ih26m"]), persistent=False)

    def hands_components(self) -> Tensor:
        return self.mano.hands_components()

    def hands_components_inv(self) -> Tensor:
        return self.mano.hands_components_inv()

    def hands_mean(self) -> Tensor:
        return self.mano.hands_mean()

    def pose(self, hands: TwoHands) -> PosedHands:
        """(B) TwoHands -> :class:`PosedHands`: the joints and the per-joint transforms."""
        b = hands.batch_size
        dtype = hands.pose_aa.dtype
        # Rest joints and tip vertices of the shaped hand (linear in betas).
        joints_rest = self.j_template.to(dtype) + torch.einsum("hjcs,bhs->bhjc", self.j_shapedirs.to(dtype), hands.betas)
        tips_rest = self.tip_template.to(dtype) + torch.einsum("hvcs,bhs->bhvc", self.tip_shapedirs.to(dtype), hands.betas)
        # Finger joint rotations (absolute pose); the root is the identity here, the root
        # rotation is applied about the wrist at the end.
        pose = hands.pose_aa + self.pose_mean.to(dtype)  # (B,2,15,3)
        rot = batch_rodrigues(pose.reshape(-1, 3)).view(b, 2, 15, 3, 3)
        # Pose blend shapes of the tip vertices.
        pose_feature = (rot - torch.eye(3, dtype=dtype, device=pose.device)).reshape(b, 2, 135)
        tips_rest = tips_rest + torch.einsum("bhp,hpk->bhk", pose_feature, self.tip_posedirs.to(dtype)).view(b, 2, 5, 3)
        # Forward kinematics one level at a time: the five fingers are chains of three joints.
        wrist = joints_rest[:, :, :1]  # (B,2,1,3)
        chain_rot, chain_pos, rest_prev = None, wrist.expand(b, 2, 5, 3), wrist.expand(b, 2, 5, 3)
        level_rots, level_pos = [], []
        for level in range(3):
            idx = _LEVELS[level]
            r = rot[:, :, [i - 1 for i in idx]]  # (B,2,5,3,3)
            rest = joints_rest[:, :, idx]
            offset = rest - rest_prev
            if chain_rot is None:
                pos, chain_rot = wrist + offset, r
            else:
                pos = chain_pos + (chain_rot @ offset[..., None])[..., 0]
                chain_rot = chain_rot @ r
            chain_pos, rest_prev = pos, rest
            level_rots.append(chain_rot)
            level_pos.append(pos)
        # Per-joint rigid transforms (rest pose removed), MANO order: x -> R x + (p - R j_rest).
        eye = torch.eye(3, dtype=dtype, device=pose.device).expand(b, 2, 1, 3, 3)
        rots = torch.cat([eye, *level_rots], 2)[:, :, _INV_PERM]  # (B,2,16,3,3)
        posed = torch.cat([wrist, *level_pos], 2)[:, :, _INV_PERM]  # (B,2,16,3)
        shift = posed - (rots @ joints_rest[..., None])[..., 0]
        tips = _skin(tips_rest, self.tip_weights.to(dtype), rots, shift)
        joints = torch.cat([posed, tips], 2)  # MANO21 order
        joints = _to_camera(joints, wrist, hands.rot_mat, hands.transl)
        return PosedHands(joints, rots, shift, pose_feature, wrist, hands.rot_mat, hands.transl)

    def vertices(self, posed: PosedHands, index: Tensor, betas: Tensor) -> Tensor:
        """Mesh vertices ``index`` of both hands, differentiable, without skinning the others.

        Args:
            posed: :meth:`pose` of the hands (B).
            index: (2, K) long vertex indices per side (left, right).
            betas: (B, 2, 10) the hands' shape (``hands.betas``).
        Returns:
            (B, 2, K, 3) camera-frame vertices, equal to ``ManoPair(hands).verts[:, s, index[s]]``.
        """
        dtype = betas.dtype
        side = torch.arange(2, device=index.device)[:, None]
        rest = self.v_template[side, index].to(dtype) + torch.einsum(
            "hkcs,bhs->bhkc", self.shapedirs[side, index].to(dtype), betas)  # fmt: skip
        posedirs = self.posedirs[side, index].to(dtype)  # (2, K, 135, 3)
        rest = rest + torch.einsum("bhp,hkpc->bhkc", posed.pose_feature, posedirs)
        verts = _skin(rest, self.lbs_weights[side, index].to(dtype), posed.rots, posed.shift)
        return _to_camera(verts, posed.wrist, posed.rot_mat, posed.transl)

    def vertices_at(self, posed: PosedHands, sample: Tensor, side: Tensor, vertex: Tensor,
                    betas: Tensor) -> Tensor:  # fmt: skip
        """One mesh vertex per entry, each of its own sample and side: the vertices of a sparse
        pair list (e.g. :class:`prior.penetration.PenetrationPairs`), differentiable.

        Args:
            posed: :meth:`pose` of the hands (B). sample, side, vertex: (P,) long.
            betas: (B, 2, 10) the hands' shape.
        Returns:
            (P, 3) camera-frame points, ``ManoPair(hands).verts[sample, side, vertex]``.
        """
        dtype = betas.dtype
        # Per-hand quantities are gathered with index_select on (B * 2) rows: its backward is a
        # deterministic index_add, where advanced indexing's (index_put with accumulate over
        # repeated rows) is not on the CPU, which made guided sampling irreproducible.
        rows = sample * 2 + side

        def pick(t: Tensor) -> Tensor:
            return t.flatten(0, 1).index_select(0, rows)

        rest = self.v_template[side, vertex].to(dtype) + torch.einsum(
            "pcs,ps->pc", self.shapedirs[side, vertex].to(dtype), pick(betas))  # fmt: skip
        rest = rest + torch.einsum("pq,pqc->pc", pick(posed.pose_feature),
                                   self.posedirs[side, vertex].to(dtype))  # fmt: skip
        w = self.lbs_weights[side, vertex].to(dtype)  # (P, 16)
        rot = torch.einsum("pj,pjkl->pkl", w, pick(posed.rots))
        shift = torch.einsum("pj,pjk->pk", w, pick(posed.shift))
        v = (rot @ rest[:, :, None])[:, :, 0] + shift
        wrist = pick(posed.wrist)[:, 0]
        rot_mat = pick(posed.rot_mat)
        return ((v - wrist)[:, None] @ rot_mat.transpose(-1, -2))[:, 0] + wrist + pick(posed.transl)

    def joints_mano21(self, hands: TwoHands) -> Tensor:
        """(B) TwoHands -> (B, 2, 21, 3) joints in MANO21 order (16 kinematic joints, 5 tips)."""
        return self.pose(hands).joints

    def forward(self, hands: TwoHands) -> HandJoints:
        """(B) TwoHands -> HandJoints with joints (B, 2, 21, 3), InterHand2.6M order."""
        return HandJoints(self.joints_mano21(hands)[:, :, self._to_ih26m])

    def joints_in(self, hands: TwoHands, order: str) -> Tensor:
        """(B, 2, 21, 3) joints in a named order of :data:`prior.hands.JOINT_ORDERS`."""
        return self.pose(hands).joints_in(order)
