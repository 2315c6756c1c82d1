"""A lean batched MANO forward for data generation: local-frame vertices, joints and skinning frames.

``ManoPair.forward`` goes through ``smplx`` one side at a time and always applies the pose blend
shapes (a (135, 2334) product per hand, even when they are zero, as in the stand-in model). The
synthetic generator poses thousands of hands per second, in the hand's *local* frame (root
rotation identity, no translation: the right hand is then moved rigidly), so this module does
the same linear blend skinning for both sides in one batched product and skips the pose blend
shapes when the model has none. It equals ``ManoPair.forward`` with ``rot_mat = I`` and
``transl = 0`` (tested to 1e-5 m).
"""

from __future__ import annotations

from dataclasses import dataclass

import roma
import torch
from torch import Tensor

from prior.hands import JOINT_ORDERS, MANO_PARENTS, TIP_VERTEX_IDS, ManoPair

__all__ = ["LocalHands", "LocalSkinner"]

_TO_IH26M = JOINT_ORDERS["ih26m"]
# Level k of the kinematic tree holds the k-th joint of each finger (MANO16 order).
_LEVELS = ((1, 4, 7, 10, 13), (2, 5, 8, 11, 14), (3, 6, 9, 12, 15))
_INV_PERM = [(0, *_LEVELS[0], *_LEVELS[1], *_LEVELS[2]).index(j) for j in range(16)]


@dataclass(frozen=True)
class LocalHands:
    """Posed hands in their own model frames (root rotation identity, zero translation).

    verts: (N, 2, S, 3) metres, the skinner's vertices (S = V = 778 unless a subset was chosen).
    joints: (N, 2, 21, 3) InterHand2.6M order.
    frames: (N, 2, S, 3, 3) blended skinning rotation of those vertices (rotates rest normals).
    """

    verts: Tensor
    joints: Tensor
    frames: Tensor


class LocalSkinner:
    """Linear blend skinning of both hands of a ``ManoPair`` at once (no gradient needed).

    Skinning is linear in the number of vertices, so a generator that only needs a proxy of the
    surface skins a vertex subset: the subset's vertices come first, then the five fingertip
    vertices (for the joints).

    Args:
        mano: the hand model whose arrays are copied (stand-in or MANO).
        vertices: optional (S,) vertex indices to skin (default: all).
    """

    def __init__(self, mano: ManoPair, vertices: Tensor | None = None) -> None:
        layers = list(mano.layers)
        full = torch.stack([lay.v_template for lay in layers]).float()  # (2, 778, 3)
        nv = full.shape[1]
        sel = torch.arange(nv) if vertices is None else vertices.long()
        self.num_verts = sel.numel()
        rows = torch.cat([sel, torch.as_tensor(TIP_VERTEX_IDS)])
        v = rows.numel()
        self.template = full[:, rows]  # (2, S+5, 3)
        shapedirs = torch.stack([lay.shapedirs for lay in layers]).float()  # (2, 778, 3, 10)
        # (2, 10, (S+5)*3): betas -> vertex offsets.
        self.shapedirs = shapedirs[:, rows].reshape(2, v * 3, -1).transpose(1, 2).contiguous()
        reg = torch.stack([lay.J_regressor for lay in layers]).float()  # (2, 16, 778)
        self.j_template = reg @ full  # (2, 16, 3)
        self.j_shapedirs = torch.einsum("hjv,hvcs->hsjc", reg, shapedirs).reshape(2, -1, 48)
        posedirs = torch.stack([lay.posedirs for lay in layers]).float().view(2, 135, nv, 3)
        posedirs = posedirs[:, :, rows].reshape(2, 135, v * 3)
        self.posedirs = posedirs if bool(posedirs.abs().max() > 0) else None
        self.weights = torch.stack([lay.lbs_weights for lay in layers]).float()[:, rows]  # (2, v, 16)
        self.pose_mean = torch.stack([lay.pose_mean[3:].view(15, 3) for lay in layers]).float()
        parents = tuple(int(p) for p in layers[0].parents.tolist())
        if parents != MANO_PARENTS:
            raise ValueError(f"LocalSkinner expects MANO's kinematic tree, got parents {parents}")

    def __call__(self, pose_aa: Tensor, betas: Tensor, side: int | None = None) -> LocalHands:
        """Pose both hands in their local frames.

        Args:
            pose_aa: (N, 2, 15, 3) finger pose relative to the hand mean (``TwoHands`` convention).
            betas: (N, 2, 10).
            side: pose only this side; then the hand axis of the inputs and outputs has size 1.
        Returns:
            LocalHands.
        """
        n = pose_aa.shape[0]
        v = self.template.shape[1]
        sl = slice(None) if side is None else slice(side, side + 1)
        h = 2 if side is None else 1
        with torch.no_grad():
            b = betas.transpose(0, 1)  # (h, N, 10): one GEMM per side
            shaped = self.template[sl] + (b @ self.shapedirs[sl]).transpose(0, 1).view(n, h, v, 3)
            j_rest = self.j_template[sl] + (b @ self.j_shapedirs[sl]).transpose(0, 1).view(n, h, 16, 3)
            rot = roma.rotvec_to_rotmat(pose_aa + self.pose_mean[sl])  # (N, h, 15, 3, 3)
            if self.posedirs is not None:
                feat = (rot - torch.eye(3)).reshape(n, h, 135).transpose(0, 1)
                shaped = shaped + (feat @ self.posedirs[sl]).transpose(0, 1).view(n, h, v, 3)
            # Forward kinematics one level at a time (five chains of three joints).
            g_rot, g_pos = [torch.eye(3).expand(n, h, 1, 3, 3)], [j_rest[:, :, :1]]
            prev_rot, prev_pos, prev_rest = None, j_rest[:, :, :1], j_rest[:, :, :1]
            for level in _LEVELS:
                rest = j_rest[:, :, level]
                local = rot[:, :, [k - 1 for k in level]]
                if prev_rot is None:
                    pos, prev_rot = prev_pos + (rest - prev_rest), local
                else:
                    pos = prev_pos + _mv(prev_rot, rest - prev_rest)
                    prev_rot = _mm(prev_rot, local)
                prev_pos, prev_rest = pos, rest
                g_rot.append(prev_rot)
                g_pos.append(pos)
            grot = torch.cat(g_rot, 2)[:, :, _INV_PERM]  # (N, h, 16, 3, 3) MANO order
            gpos = torch.cat(g_pos, 2)[:, :, _INV_PERM]  # (N, h, 16, 3)
            shift = gpos - _mv(grot, j_rest)
            affine = torch.cat([grot.reshape(n, h, 16, 9), shift], -1)  # (N, h, 16, 12)
            # One GEMM per side, (v, 16) @ (16, N*12), much faster than N small products; the
            # result stays in (2, v, N, 12) layout for the element-wise products below.
            flat = affine.permute(1, 2, 0, 3).reshape(h, 16, n * 12)
            blend = (self.weights[sl] @ flat).view(h, v, n, 12)
            x = shaped.permute(1, 2, 0, 3)  # (h, v, N, 3)
            out = blend[..., 9:] + blend[..., 0:9:3] * x[..., :1] + blend[..., 1:9:3] * x[..., 1:2] \
                + blend[..., 2:9:3] * x[..., 2:3]
            verts = out.permute(2, 0, 1, 3)
            s = self.num_verts
            joints = torch.cat([gpos, verts[:, :, s:]], 2)[:, :, _TO_IH26M]
            frames = blend[:, :s, :, :9].permute(2, 0, 1, 3).reshape(n, h, s, 3, 3)
        return LocalHands(verts[:, :, :s].contiguous(), joints, frames)


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """Batched 3x3 products element-wise (much faster than ``bmm`` on tiny matrices)."""
    return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)


def _mv(a: Tensor, x: Tensor) -> Tensor:
    """(..., 3, 3) @ (..., 3) element-wise."""
    return (a * x[..., None, :]).sum(-1)
