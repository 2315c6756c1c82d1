"""``TwoHands`` <-> the prior's pair of normalised 64-D vectors (anchor, other).

Layout of one hand's vector (InterHandGen, reference §2.4)::

    [ pose 45 PCA coefficients | betas 10 | root rotation 6D (first two rows) | translation 3 ]

* The **anchor** is the LEFT hand in its own canonical frame: identity rotation, and the origin
  at its middle-finger MCP (IntagHand joint 9, our ``HandMeshes.middle_mcp()``). Its rotation and
  translation slots are the constants ``[1,0,0,0,1,0 | 0,0,0]``, never normalised, never trained.
* The **other** hand is the RIGHT hand expressed in that frame, about the middle MCPs::

      rel_rot = R_anchor^T R_other,   rel_trans = R_anchor^T (J9_other - J9_anchor)

* Pose: ``pca = (pose_aa [- hands_mean if flat_hand_mean]) @ inverse(hands_components)`` of the
  hand's own side (solved, so non-orthonormal MANO bases stay correct).
* Normalisation: ``(x - mean) / scale`` with ``scale = std`` (or the original's
  ``variance + 1e-6`` quirk); pose/betas stats are shared by both hands, rotation/translation
  stats exist for the other hand only.

Only this module knows the layout; everything else sees ``TwoHands``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from prior.hands import IH26M_MIDDLE_MCP, LEFT, RIGHT, ManoPair, TwoHands

__all__ = [
    "POSE", "BETAS", "ROT6D", "TRANSL", "SHAPE_POSE", "RELATIVE", "DIM", "CODEC_LAYOUT",
    "CodecConfig", "NormStats", "HandCodec", "swap_sides", "anchor_frame", "rotmat_to_6d",
    "rot6d_to_rotmat",
]  # fmt: skip

POSE, BETAS, ROT6D, TRANSL = slice(0, 45), slice(45, 55), slice(55, 61), slice(61, 64)
SHAPE_POSE, RELATIVE = slice(0, 55), slice(55, 64)  # normalised with hand / relative stats
DIM = 64
CODEC_LAYOUT = "pose45pca|betas10|rot6d_rows|transl3@middle_mcp;anchor=left"
_ANCHOR_CONST = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0)  # identity 6D, zero translation

NormMode = Literal["std", "variance_quirk"]


@dataclass
class CodecConfig:
    """Codec options.

    Attributes:
        pose_space: only "pca45" (InterHandGen).
        norm: "std" divides by the standard deviation; "variance_quirk" reproduces the original,
            which divided by the variance + 1e-6 (translation then has std ~15-25).
    """

    pose_space: Literal["pca45"] = "pca45"
    norm: NormMode = "std"


def rotmat_to_6d(rot: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 6): the first two rows (pytorch3d ``matrix_to_rotation_6d``)."""
    return rot[..., :2, :].flatten(-2)


def rot6d_to_rotmat(x: Tensor) -> Tensor:
    """(..., 6) first two rows -> (..., 3, 3) by Gram-Schmidt (roma, on the transposed matrix)."""
    import roma  # noqa: PLC0415

    rows = x.unflatten(-1, (2, 3))  # (..., 2, 3)
    return roma.special_gramschmidt(rows.transpose(-1, -2)).transpose(-1, -2)


def swap_sides(hands: TwoHands, swap: Tensor) -> TwoHands:
    """Per-sample left/right swap by mirroring: rows with ``swap`` become ``hands.mirror()``.

    The mirrored right hand is a left hand, so the swapped sample has the right hand as anchor
    and describes the mirror image of the scene (reference §2.3).

    Args:
        hands: TwoHands (B). swap: (B,) bool.
    """
    mirrored = hands.mirror()
    out = []
    for name in ("pose_aa", "betas", "rot_mat", "transl"):
        a, b = getattr(hands, name), getattr(mirrored, name)
        mask = swap.to(a.device).view(-1, *([1] * (a.dim() - 1)))
        out.append(torch.where(mask, b, a))
    return TwoHands(*out)


def anchor_frame(hands: TwoHands, mano: ManoPair) -> tuple[Tensor, Tensor]:
    """Pose of the anchor frame in the hands' frame: ``(R_left (B,3,3), J9_left (B,3))``."""
    j9 = mano(hands).middle_mcp()
    return hands.rot_mat[:, LEFT], j9[:, LEFT]


@dataclass
class NormStats:
    """Normalisation statistics (computed from training data, stored in checkpoints).

    hand_mean, hand_scale: (55,) pose+betas, shared by both hands.
    rel_mean, rel_scale: (9,) the other hand's 6D rotation and translation.
    ``scale`` is the divisor: std (mode "std") or variance + 1e-6 ("variance_quirk").
    """

    hand_mean: Tensor
    hand_scale: Tensor
    rel_mean: Tensor
    rel_scale: Tensor

    @staticmethod
    def fit(anchor_raw: Tensor, other_raw: Tensor, norm: NormMode = "std") -> NormStats:
        """Statistics of raw (un-normalised) vectors.

        Args:
            anchor_raw, other_raw: (N, 64) raw vectors (N >= 2).
            norm: "std" or "variance_quirk".
        """
        if anchor_raw.shape[0] < 2 or anchor_raw.shape != other_raw.shape:
            raise ValueError(
                f"NormStats.fit needs two (N>=2, 64) tensors, got {tuple(anchor_raw.shape)} and "
                f"{tuple(other_raw.shape)}"
            )
        hand = torch.cat([anchor_raw[:, SHAPE_POSE], other_raw[:, SHAPE_POSE]]).double()
        rel = other_raw[:, RELATIVE].double()

        def scale(x: Tensor) -> Tensor:
            if norm == "std":
                return x.std(0).clamp_min(1e-6)
            if norm == "variance_quirk":
                return x.var(0) + 1e-6
            raise ValueError(f"unknown norm {norm!r}; use 'std' or 'variance_quirk'")

        return NormStats(hand.mean(0).float(), scale(hand).float(), rel.mean(0).float(),
                         scale(rel).float())  # fmt: skip

    @staticmethod
    def identity() -> NormStats:
        """Stats that leave vectors unchanged (before fitting)."""
        return NormStats(torch.zeros(55), torch.ones(55), torch.zeros(9), torch.ones(9))


class HandCodec(nn.Module):
    """Encode/decode two hands; normalisation stats are buffers (saved with the prior)."""

    def __init__(self, cfg: CodecConfig | None = None, stats: NormStats | None = None) -> None:
        super().__init__()
        self.cfg = cfg or CodecConfig()
        stats = stats or NormStats.identity()
        for name in ("hand_mean", "hand_scale", "rel_mean", "rel_scale"):
            self.register_buffer(name, getattr(stats, name).clone().float())
        self.register_buffer("_anchor_const", torch.tensor(_ANCHOR_CONST), persistent=False)

    def set_stats(self, stats: NormStats) -> None:
        for name in ("hand_mean", "hand_scale", "rel_mean", "rel_scale"):
            getattr(self, name).copy_(getattr(stats, name))

    def signature(self, hand_model: str) -> str:
        """Identifies the vector space: layout, pose space, normalisation and hand model."""
        return f"{CODEC_LAYOUT};pose={self.cfg.pose_space};norm={self.cfg.norm};hands={hand_model}"

    # ----------------------------------------------------------------- raw <-> normalised
    def normalize(self, anchor_raw: Tensor, other_raw: Tensor) -> tuple[Tensor, Tensor]:
        """(B,64) raw -> (B,64) normalised; the anchor's rot/transl slots stay constant."""
        anchor = anchor_raw.clone()
        other = other_raw.clone()
        anchor[:, SHAPE_POSE] = (anchor_raw[:, SHAPE_POSE] - self.hand_mean) / self.hand_scale
        anchor[:, RELATIVE] = self._anchor_const
        other[:, SHAPE_POSE] = (other_raw[:, SHAPE_POSE] - self.hand_mean) / self.hand_scale
        other[:, RELATIVE] = (other_raw[:, RELATIVE] - self.rel_mean) / self.rel_scale
        return anchor, other

    def denormalize(self, anchor: Tensor, other: Tensor) -> tuple[Tensor, Tensor]:
        """Inverse of :meth:`normalize` (the anchor's rot/transl are set to the constants)."""
        anchor_raw = anchor.clone()
        other_raw = other.clone()
        anchor_raw[:, SHAPE_POSE] = anchor[:, SHAPE_POSE] * self.hand_scale + self.hand_mean
        anchor_raw[:, RELATIVE] = self._anchor_const
        other_raw[:, SHAPE_POSE] = other[:, SHAPE_POSE] * self.hand_scale + self.hand_mean
        other_raw[:, RELATIVE] = other[:, RELATIVE] * self.rel_scale + self.rel_mean
        return anchor_raw, other_raw

    def fix_anchor_slots(self, anchor: Tensor) -> Tensor:
        """(B,64) copy with the anchor's (untrained) rot/transl slots set to identity/zero."""
        out = anchor.clone()
        out[:, RELATIVE] = self._anchor_const
        return out

    def anchor_loss_mask(self) -> Tensor:
        """(64,) 1 on the anchor's learned dims (pose, betas), 0 on its constant rot/transl."""
        mask = torch.ones(DIM, device=self.hand_mean.device)
        mask[RELATIVE] = 0.0
        return mask

    # ----------------------------------------------------------------- hands <-> raw
    def _pose_to_pca(self, pose_aa: Tensor, side: int, mano: ManoPair) -> Tensor:
        pose = pose_aa.flatten(1)  # (B, 45)
        if mano.flat_hand_mean:
            pose = pose - mano.hands_mean()[side]
        # Rows of C are components: pose = pca @ C, so pca = pose @ inverse(C) (precomputed).
        return pose @ mano.hands_components_inv()[side].to(pose)

    def _pca_to_pose(self, pca: Tensor, side: int, mano: ManoPair) -> Tensor:
        pose = pca @ mano.hands_components()[side].to(pca)
        if mano.flat_hand_mean:
            pose = pose + mano.hands_mean()[side]
        return pose.unflatten(1, (15, 3))

    def encode_raw(
        self, hands: TwoHands, mano: ManoPair, middle_mcp: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Un-normalised (anchor, other) vectors, each (B, 64); differentiable.

        The LEFT hand is the anchor. Swap/mirror beforehand (:func:`swap_sides`) for the other
        orientation. ``middle_mcp``: the hands' (B, 2, 3) middle MCP joints when the caller has
        already posed them (``mano(hands).middle_mcp()``, which is computed otherwise).
        """
        j9 = mano(hands).middle_mcp() if middle_mcp is None else middle_mcp  # (B, 2, 3)
        r_anchor, r_other = hands.rot_mat[:, LEFT], hands.rot_mat[:, RIGHT]
        # Relative transform about the middle MCPs, in the anchor's root frame (ref. §2.3).
        rel_rot = r_anchor.transpose(1, 2) @ r_other
        rel_trans = (r_anchor.transpose(1, 2) @ (j9[:, RIGHT] - j9[:, LEFT])[..., None])[..., 0]
        b = hands.batch_size
        const = self._anchor_const.to(hands.pose_aa).expand(b, 9)
        anchor = torch.cat([self._pose_to_pca(hands.pose_aa[:, LEFT], LEFT, mano),
                            hands.betas[:, LEFT], const], dim=1)  # fmt: skip
        other = torch.cat([self._pose_to_pca(hands.pose_aa[:, RIGHT], RIGHT, mano),
                           hands.betas[:, RIGHT], rotmat_to_6d(rel_rot), rel_trans], dim=1)  # fmt: skip
        return anchor, other

    def encode(
        self, hands: TwoHands, mano: ManoPair, middle_mcp: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Normalised (anchor (B,64), other (B,64)); the left hand is the anchor (see
        :meth:`encode_raw`)."""
        return self.normalize(*self.encode_raw(hands, mano, middle_mcp))

    def decode_raw(self, anchor_raw: Tensor, other_raw: Tensor, mano: ManoPair) -> TwoHands:
        """Raw vectors -> TwoHands in the anchor frame (see :meth:`decode`)."""
        b = anchor_raw.shape[0]
        eye = torch.eye(3, device=anchor_raw.device, dtype=anchor_raw.dtype).expand(b, 3, 3)
        rel_rot = rot6d_to_rotmat(other_raw[:, ROT6D])
        posed = TwoHands(
            pose_aa=torch.stack([self._pca_to_pose(anchor_raw[:, POSE], LEFT, mano),
                                 self._pca_to_pose(other_raw[:, POSE], RIGHT, mano)], dim=1),
            betas=torch.stack([anchor_raw[:, BETAS], other_raw[:, BETAS]], dim=1),
            rot_mat=torch.stack([eye, rel_rot], dim=1),
            transl=anchor_raw.new_zeros(b, 2, 3),
        )  # fmt: skip
        # J9 with zero translation; then translate each hand so its J9 lands on its target
        # (the anchor's at the origin, the other's at rel_trans). Rotations act about the
        # wrist, so J9 depends on pose, shape and rotation: it must come from the hand model.
        j9 = mano(posed).middle_mcp()
        target = torch.stack([torch.zeros_like(other_raw[:, TRANSL]), other_raw[:, TRANSL]], dim=1)
        return TwoHands(posed.pose_aa, posed.betas, posed.rot_mat, target - j9)

    def decode_verts(self, anchor: Tensor, other: Tensor, mano: ManoPair, side: int) -> Tensor:
        """(B, V, 3) vertices of one hand of ``mano(decode(anchor, other))`` in ONE pass of the
        hand model for that side (``decode`` + ``mano`` run the model twice for both sides: once
        for the middle MCPs, once for the meshes). The translation only shifts the hand, so the
        mesh at zero translation is moved to put its middle MCP on the target.

        Args:
            anchor, other: (B, 64) normalised vectors. side: LEFT (the anchor) or RIGHT.
        """
        anchor_raw, other_raw = self.denormalize(anchor, other)
        raw = anchor_raw if side == LEFT else other_raw
        b = raw.shape[0]
        if side == LEFT:
            rot = torch.eye(3, device=raw.device, dtype=raw.dtype).expand(b, 3, 3)
            target = raw.new_zeros(b, 3)
        else:
            rot, target = rot6d_to_rotmat(raw[:, ROT6D]), raw[:, TRANSL]
        verts, joints = mano.forward_side(side, self._pca_to_pose(raw[:, POSE], side, mano),
                                          raw[:, BETAS], rot, raw.new_zeros(b, 3))  # fmt: skip
        j9 = joints[:, IH26M_MIDDLE_MCP]
        return verts + (target - j9)[:, None]

    def decode(self, anchor: Tensor, other: Tensor, mano: ManoPair) -> TwoHands:
        """Normalised vectors -> TwoHands in the anchor frame.

        In that frame the left hand has identity rotation with its middle MCP at the origin, and
        the right hand is placed by the relative transform.

        Args:
            anchor, other: (B, 64) normalised vectors.
        """
        return self.decode_raw(*self.denormalize(anchor, other), mano)

    @staticmethod
    def to_camera(
        hands_anchor_frame: TwoHands, anchor_rot: Tensor, anchor_mcp: Tensor, mano: ManoPair
    ) -> TwoHands:
        """Move hands from the anchor frame by ``x -> anchor_rot x + anchor_mcp``.

        With ``(anchor_rot, anchor_mcp) = anchor_frame(h, mano)`` this restores ``h`` from
        ``decode(encode(h))``. MANO rotates about the rest wrist ``w0`` (which depends on the
        betas only), so the new translation is ``R_a (w0 + t) + m - w0``.

        Args:
            hands_anchor_frame: TwoHands (B). anchor_rot: (B, 3, 3). anchor_mcp: (B, 3).
        """
        h = hands_anchor_frame
        zero = TwoHands(h.pose_aa, h.betas, h.rot_mat, torch.zeros_like(h.transl))
        w0 = mano(zero).root_joints()  # (B, 2, 3): rest wrist (unmoved by rotation about it)
        rot = anchor_rot[:, None] @ h.rot_mat
        transl = ((w0 + h.transl) @ anchor_rot.transpose(1, 2)) + anchor_mcp[:, None] - w0
        return TwoHands(h.pose_aa, h.betas, rot, transl)
