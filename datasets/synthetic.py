"""Synthetic two-hand interactions: no licensed assets, seeded, fast (docs/synthetic-data.md).

Frame of the output: the LEFT hand's model frame. The left hand has identity rotation and zero
translation (its wrist at the model's rest wrist, the origin for the stand-in); the right hand
is placed relative to it. In that frame (stand-in model) the left hand's fingers point along -x,
the back of the hand faces +y (the palm -y) and the thumb is on the -z side.

Recipe per pair:

1. an interaction type (:data:`INTERACTIONS`) with a nominal relative rotation of the right hand,
   a point on each hand to bring together, an offset between them and a separation direction;
2. finger poses from ``prior.anatomy`` (per-joint limits, correlated curls and spreads) in the
   type's pose families, and random shapes;
3. the right hand is placed by the jittered nominal transform (slightly interpenetrating), then
   pushed out along the separation direction until the penetration depth (normal test of
   ``prior.penetration`` on a farthest-point vertex subset) is below ``tol``; pairs that do not
   separate within ``max_iter`` pushes are rejected and replaced. "apart" pairs get a gap after.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import roma
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datasets.skinning import LocalHands, LocalSkinner
from prior.anatomy import POSE_FAMILIES, angles_to_pose, hand_axes, sample_finger_angles
from prior.hands import LEFT, RIGHT, ManoPair, TwoHands, convert_joints
from prior.penetration import (
    farthest_point_subset,
    nearest_index,
    pair_normals,
    penetrations_from_points,
)

__all__ = [
    "Interaction", "INTERACTIONS", "SyntheticGenerator", "random_two_hands", "SyntheticTwoHands",
    "SyntheticObservation", "synthetic_observation", "place_in_camera",
]  # fmt: skip

# Columns: images of the right hand's x (fingers), y (back), z axes in the left frame.
_FACING = ((-1, 0, 0), (0, -1, 0), (0, 0, 1))  # palms facing, fingers the same way (Rz(pi))
_OPPOSED = ((1, 0, 0), (0, -1, 0), (0, 0, -1))  # palms facing, fingers opposed (Rx(pi))
_ACROSS = ((0, 0, -1), (0, 1, 0), (1, 0, 0))  # same facing, fingers across (Ry(pi/2))
_GRIP = ((0, 0, 1), (0, -1, 0), (1, 0, 0))  # palms facing, fingers crossed at 90 degrees
_C45 = math.sqrt(0.5)
_DIAGONAL = ((_C45, 0, -_C45), (0, -1, 0), (-_C45, 0, -_C45))  # palms facing, fingers at 135 deg

# Finger (thumb, index, middle, ring, pinky) of each MANO16 joint 1..15.
_FINGER_OF = {**{j: 1 for j in (1, 2, 3)}, **{j: 2 for j in (4, 5, 6)}, **{j: 4 for j in (7, 8, 9)},
              **{j: 3 for j in (10, 11, 12)}, **{j: 0 for j in (13, 14, 15)}}  # fmt: skip

# IH26M joint groups for the contact points.
_POINTS = {
    "palm": (20, 7, 11, 15, 19),
    "fingers": (6, 10, 14, 18),
    "index_tip": (4,),
    "index_pip": (6,),
}


@dataclass(frozen=True)
class Interaction:
    """Nominal relative placement of the right hand w.r.t. the left (left frame, metres).

    rot_cols: images of the right hand's axes (columns of the nominal rotation).
    left_point, right_point: keys of the contact-point table (joint means).
    offset: right point minus left point before the push-out (slight overlap).
    push: separation direction (the right hand moves along it until apart).
    rot_std: radians of random rotation (axis-angle noise); twist: extra random rotation about
        the push axis, uniform in +-twist. offset_std: metres per axis.
    left_families, right_families: finger-pose families. gap: (min, max) extra distance
        after separation (non-zero only for hands near but apart). weight: frequency.
    close: per side (left, right), the range of the curl target (fraction of each joint's
        flexion limit) that the fingers close towards after placement, stopping at contact
        with the other hand; (0, 0) leaves the fingers as sampled.
    """

    rot_cols: tuple[tuple[float, float, float], ...]
    left_point: str
    right_point: str
    offset: tuple[float, float, float]
    push: tuple[float, float, float]
    rot_std: float
    twist: float
    offset_std: float
    left_families: tuple[str, ...]
    right_families: tuple[str, ...]
    gap: tuple[float, float] = (0.0, 0.0)
    weight: float = 1.0
    close: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.0), (0.0, 0.0))


INTERACTIONS: dict[str, Interaction] = {
    "palm_to_palm": Interaction(_FACING, "palm", "palm", (0.0, -0.02, 0.0), (0, -1, 0), 0.12,
                                0.3, 0.008, ("open",), ("open", "relaxed")),
    "interlaced": Interaction(_DIAGONAL, "palm", "palm", (0.0, -0.02, 0.0), (0, -1, 0), 0.1, 0.35,
                              0.01, ("open",), ("open",), close=((0.75, 1.0), (0.75, 1.0))),
    "clasped": Interaction(_GRIP, "palm", "palm", (0.0, -0.02, 0.0), (0, -1, 0), 0.12, 0.3,
                           0.01, ("open", "relaxed"), ("open", "relaxed"),
                           close=((0.7, 1.0), (0.7, 1.0))),
    "fingertip_touch": Interaction(_OPPOSED, "index_tip", "index_tip", (0.005, 0.0, 0.0),
                                   (-1, 0, 0), 0.25, 0.6, 0.004, ("point", "pinch", "open"),
                                   ("point", "pinch", "open")),
    "crossed": Interaction(_ACROSS, "palm", "palm", (0.0, 0.02, 0.0), (0, 1, 0), 0.15, 0.5,
                           0.012, ("relaxed", "open", "fist"), ("relaxed", "open")),
    "holding_fingers": Interaction(_GRIP, "fingers", "palm", (0.0, -0.015, 0.0), (0, -1, 0),
                                   0.12, 0.2, 0.006, ("open", "relaxed", "point"), ("open",),
                                   close=((0.0, 0.0), (0.8, 1.0))),
    "apart": Interaction(_FACING, "palm", "palm", (0.0, -0.02, 0.0), (0, -1, 0), 0.5, math.pi,
                         0.02, tuple(POSE_FAMILIES), tuple(POSE_FAMILIES), gap=(0.015, 0.08)),
}  # fmt: skip


def _rot_about(axis: Tensor, angle: Tensor) -> Tensor:
    """(B, 3) unit axes, (B,) angles -> (B, 3, 3)."""
    return roma.rotvec_to_rotmat(axis * angle[:, None])


@dataclass(frozen=True)
class GeneratedBatch:
    """One batch of accepted pairs from :meth:`SyntheticGenerator.generate`.

    hands: TwoHands (m). kinds: m type names. push: (m,) metres the right hand moved from its
    nominal (overlapping) placement to contact. depth: (m,) penetration depth after placement on
    the check subset (metres; zeros when unchecked). kept: (m,) indices into the n attempts.
    """

    hands: TwoHands
    kinds: list[str]
    push: Tensor
    depth: Tensor
    kept: Tensor


class SyntheticGenerator:
    """Holds the per-model constants (joint axes, skinned vertex subset, rest normals).

    Args:
        mano: the hand model (stand-in or MANO).
        proxy_size: vertices per hand skinned as the surface proxy for the contact search.
        check_size: vertices (a subset of the proxy) for the penetration check after placement
            (0: no check).
        cell: metres, the cell of the height field used for the contact search.
        tol: penetration depth (metres, on the check subset) above which a pair is rejected.
        beta_std: standard deviation of the shape coefficients.
        probe_size: finger points per hand tested while closing the fingers; target_size:
            proxy points of the other hand they are tested against.
        levels: closing steps per finger. close_margin: metres kept from the other hand.
        clearance: metres added to the contact push: the proxy touches at its points, the full
            mesh bulges between them (bench/synthetic.py, 1400 contact pairs at full
            resolution: proxy 320 / no clearance: mean depth 1.97 mm, 38% deeper than 1 mm,
            closest-vertex gap median 3.2 mm; 480 / 1 mm: 1.01 mm, 14%, 4.4 mm; 640 / 1 mm:
            0.80 mm, 12%, 4.7 mm but 25% slower than 480).
    """

    def __init__(
        self,
        mano: ManoPair,
        proxy_size: int = 480,
        check_size: int = 0,
        cell: float = 0.006,
        tol: float = 0.004,
        beta_std: float = 0.6,
        probe_size: int = 48,
        target_size: int = 128,
        levels: int = 8,
        close_margin: float = 0.005,
        clearance: float = 0.001,
    ) -> None:
        self.mano, self.tol, self.beta_std, self.cell = mano, tol, beta_std, cell
        self.clearance = clearance
        rest = TwoHands.zeros(1)
        flat = TwoHands(-mano.hands_mean().view(1, 2, 15, 3), rest.betas, rest.rot_mat, rest.transl)
        with torch.no_grad():
            meshes = mano(flat)
        j21 = convert_joints(meshes.joints, "ih26m", "mano")[0]  # (2, 21, 3) MANO order
        self.axes = [hand_axes(j21[s, :16], j21[s, 16:], 1.0 if s == RIGHT else -1.0)
                     for s in (LEFT, RIGHT)]  # fmt: skip
        self.proxy = farthest_point_subset(meshes.verts[0, RIGHT], proxy_size)
        self.skinner = LocalSkinner(mano, self.proxy)
        template = torch.stack([lay.v_template for lay in mano.layers]).float()
        normals = pair_normals(template[None], mano.faces)[0]  # (2, 778, 3) rest normals
        self.rest_normals = normals[:, self.proxy]  # (2, S, 3)
        self.check = (farthest_point_subset(meshes.verts[0, RIGHT, self.proxy], check_size)
                      if check_size > 0 else None)  # fmt: skip
        # Finger probes for closing: proxy points skinned mostly to a finger joint.
        self.levels, self.close_margin = levels, close_margin
        self.target = farthest_point_subset(meshes.verts[0, RIGHT, self.proxy], target_size)
        self.target_skinner = LocalSkinner(mano, self.proxy[self.target])
        owner = mano.layers[RIGHT].lbs_weights[self.proxy].argmax(-1)  # MANO joint per point
        on_finger = (owner > 0).nonzero(as_tuple=True)[0]
        pick = on_finger[farthest_point_subset(meshes.verts[0, RIGHT, self.proxy[on_finger]],
                                               min(probe_size, on_finger.numel()))]  # fmt: skip
        self.probe_skinner = LocalSkinner(mano, self.proxy[pick])
        self.finger_of_joint = torch.tensor([_FINGER_OF[j] for j in range(1, 16)])
        self.probe_finger = self.finger_of_joint[owner[pick] - 1]

    def _angles(self, kinds: list[str], side: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Flexion and abduction angles (n, 15) in each pair's finger-pose families."""
        n = len(kinds)
        flex, abd = torch.zeros(n, 15), torch.zeros(n, 15)
        attr = "left_families" if side == LEFT else "right_families"
        for name in sorted(set(kinds)):
            idx = torch.tensor([i for i, k in enumerate(kinds) if k == name])
            fams = getattr(INTERACTIONS[name], attr)
            flex[idx], abd[idx], _ = sample_finger_angles(len(idx), self.axes[side], g, fams)
        return flex, abd

    def _pose(self, flex: Tensor, abd: Tensor, side: int) -> Tensor:
        """(n, 15) angles -> (n, 15, 3) finger pose relative to the hand mean."""
        mean = self.mano.hands_mean()[side].view(15, 3)
        return angles_to_pose(flex, abd, self.axes[side]) - mean

    def generate(self, n: int, g: torch.Generator, kinds: list[str] | None = None) -> GeneratedBatch:
        """One batch of ``n`` attempts; pairs that cannot be placed are dropped (see ``kept``)."""
        names = list(INTERACTIONS)
        if kinds is None:
            w = torch.tensor([INTERACTIONS[k].weight for k in names])
            kinds = [names[i] for i in torch.multinomial(w, n, True, generator=g).tolist()]
        specs = [INTERACTIONS[k] for k in kinds]
        angles = [self._angles(kinds, side, g) for side in (LEFT, RIGHT)]
        pose = torch.stack([self._pose(*angles[side], side) for side in (LEFT, RIGHT)], 1)
        betas = (self.beta_std * torch.randn(n, 2, 10, generator=g)).clamp(-2.0, 2.0)
        local = self.skinner(pose, betas)
        rot = self._rotations(specs, g)  # (n, 3, 3)
        kind_idx = torch.tensor([names.index(k) for k in kinds])
        p_l = (self._point_weights[0][kind_idx] @ local.joints[:, LEFT])  # (n, 1, 3)
        p_r = (self._point_weights[1][kind_idx] @ local.joints[:, RIGHT])
        p_l, p_r = p_l[:, 0], p_r[:, 0]
        offset = torch.tensor([s.offset for s in specs])
        std = torch.tensor([s.offset_std for s in specs])[:, None]
        offset = offset + std * torch.randn(n, 3, generator=g)
        t0 = p_l + offset - (rot @ p_r[..., None])[..., 0]
        push = torch.nn.functional.normalize(
            torch.tensor([s.push for s in specs], dtype=torch.float32)
            + 0.15 * torch.randn(n, 3, generator=g), dim=-1)  # fmt: skip
        left_v = local.verts[:, LEFT]
        right_v = local.verts[:, RIGHT] @ rot.transpose(1, 2) + t0[:, None]
        lam = contact_distance(left_v, right_v, push, self.cell) + self.clearance
        ok = torch.isfinite(lam)
        gap_lo = torch.tensor([s.gap[0] for s in specs])
        gap_hi = torch.tensor([s.gap[1] for s in specs])
        lam = torch.where(ok, lam, 0.0) + gap_lo + (gap_hi - gap_lo) * torch.rand(n, generator=g)
        t = t0 + lam[:, None] * push
        depth = torch.zeros(n)
        if self.check is not None:
            sub = self.check
            pts = torch.stack([left_v[:, sub], right_v[:, sub] + (t - t0)[:, None]], 1)
            nrm = _rotate_normals(local.frames[:, :, sub], self.rest_normals[:, sub])
            nrm = torch.stack([nrm[:, LEFT], nrm[:, RIGHT] @ rot.transpose(1, 2)], 1)
            depth = plane_depth(pts, nrm)
            ok &= depth < self.tol
        closing = [k for k in names if any(hi > 0 for _, hi in INTERACTIONS[k].close)]
        rows = torch.tensor([i for i, k in enumerate(kinds) if k in closing and bool(ok[i])],
                            dtype=torch.long)  # fmt: skip
        if rows.numel():
            pose[rows] = self._close(rows, [specs[i] for i in rows.tolist()], angles, betas,
                                     local, rot, t, g)  # fmt: skip
        wrist = local.joints[:, RIGHT, 20]  # rest wrist (MANO rotates about it)
        transl_r = t + (rot @ wrist[..., None])[..., 0] - wrist
        hands = TwoHands(pose, betas, torch.stack([torch.eye(3).expand(n, 3, 3), rot], 1),
                         torch.stack([torch.zeros(n, 3), transl_r], 1))  # fmt: skip
        idx = ok.nonzero(as_tuple=True)[0]
        return GeneratedBatch(hands[idx], [kinds[i] for i in idx.tolist()], lam[idx], depth[idx], idx)

    def _close(self, rows: Tensor, specs: list[Interaction], angles: list[tuple[Tensor, Tensor]],
               betas: Tensor, local: LocalHands, rot: Tensor, t: Tensor,
               g: torch.Generator) -> Tensor:
        """Close the fingers of the selected pairs around the other hand (grasp synthesis).

        Each finger's flexion moves towards a curl target in ``levels`` steps and stops at the
        last step before one of its probe points comes within ``close_margin`` of the other
        hand (signed distance to the tangent plane of the nearest proxy point). The right hand
        closes first against the placed left hand, then the left against the closed right.
        Returns the new (r, 2, 15, 3) poses of the rows.
        """
        r, k = rows.numel(), self.levels
        tgt, rot_t = self.target, rot[rows].transpose(1, 2)
        world = [local.verts[rows, LEFT][:, tgt], local.verts[rows, RIGHT][:, tgt] @ rot_t
                 + t[rows, None]]  # fmt: skip
        nrm = _rotate_normals(local.frames[rows][:, :, tgt], self.rest_normals[:, tgt])
        normals = [nrm[:, LEFT], nrm[:, RIGHT] @ rot_t]
        poses = []
        flexes = [angles[side][0][rows] for side in (LEFT, RIGHT)]
        for side in (RIGHT, LEFT):
            flex, abd = flexes[side], angles[side][1][rows]
            lo = torch.tensor([s.close[side][0] for s in specs])[:, None]
            hi = torch.tensor([s.close[side][1] for s in specs])[:, None]
            frac = lo + (hi - lo) * torch.rand(r, 5, generator=g)  # per finger
            frac = frac[:, self.finger_of_joint]  # (r, 15)
            target = torch.maximum(flex, frac * self.axes[side].flex_limits[:, 1])
            step = torch.linspace(1.0 / k, 1.0, k)[None, :, None]  # (1, k, 1)
            trial = flex[:, None] + step * (target - flex)[:, None]  # (r, k, 15)
            pose = self._pose(trial.reshape(r * k, 15), abd.repeat_interleave(k, 0), side)
            probes = self.probe_skinner(pose[:, None], betas[rows, side].repeat_interleave(k, 0)[:, None],
                                        side=side).verts[:, 0]  # (r*k, P, 3)
            probes = probes.reshape(r, -1, 3)  # (r, k*P, 3): all steps against one target set
            if side == RIGHT:
                probes = probes @ rot_t + t[rows, None]
            other, other_n = world[1 - side], normals[1 - side]
            near = nearest_index(probes, other)  # (r, k*P) nearest target point
            gather = near[..., None].expand(-1, -1, 3)
            signed = (other_n.gather(1, gather) * (probes - other.gather(1, gather))).sum(-1)
            hit = (signed < self.close_margin).float().view(r * k, -1)  # (r*k, P)
            finger = self.probe_finger.expand(r * k, -1)
            hit = torch.zeros(r * k, 5).scatter_reduce(1, finger, hit, "amax")
            free = torch.cumprod(1.0 - hit.view(r, k, 5), 1).sum(1)  # free steps per finger
            amount = (free / k)[:, self.finger_of_joint]  # (r, 15)
            flexes[side] = flex + amount * (target - flex)
            if side == RIGHT:  # the left hand closes against the closed right hand
                hand = self.target_skinner(self._pose(flexes[side], abd, side)[:, None],
                                           betas[rows, side][:, None], side=side)
                world[RIGHT] = hand.verts[:, 0] @ rot_t + t[rows, None]
                n_r = _rotate_normals(hand.frames, self.rest_normals[RIGHT:, tgt])[:, 0]
                normals[RIGHT] = n_r @ rot_t
        for side in (LEFT, RIGHT):
            poses.append(self._pose(flexes[side], angles[side][1][rows], side))
        return torch.stack(poses, 1)

    @functools.cached_property
    def _point_weights(self) -> tuple[Tensor, Tensor]:
        """Per side, (types, 1, 21) averaging weights of each type's contact point (IH26M joints)."""
        out = []
        for attr in ("left_point", "right_point"):
            w = torch.zeros(len(INTERACTIONS), 1, 21)
            for i, spec in enumerate(INTERACTIONS.values()):
                joints = list(_POINTS[getattr(spec, attr)])
                w[i, 0, joints] = 1.0 / len(joints)
            out.append(w)
        return out[0], out[1]

    def _rotations(self, specs: list[Interaction], g: torch.Generator) -> Tensor:
        n = len(specs)
        nominal = torch.tensor([s.rot_cols for s in specs], dtype=torch.float32).transpose(1, 2)
        rot_std = torch.tensor([s.rot_std for s in specs])[:, None]
        noise = roma.rotvec_to_rotmat(rot_std * torch.randn(n, 3, generator=g))
        twist_max = torch.tensor([s.twist for s in specs])
        twist = twist_max * (2 * torch.rand(n, generator=g) - 1)
        axis = torch.nn.functional.normalize(torch.tensor([s.push for s in specs],
                                                          dtype=torch.float32), dim=-1)  # fmt: skip
        return _rot_about(axis, twist) @ noise @ nominal


def _rotate_normals(frames: Tensor, rest: Tensor) -> Tensor:
    """(n, h, S, 3, 3) skinning rotations, (h, S, 3) rest normals -> (n, h, S, 3) unit normals."""
    v = (frames * rest[:, :, None, :]).sum(-1)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def plane_depth(points: Tensor, normals: Tensor) -> Tensor:
    """Penetration depth of sparse surface samples: the normal test of ``prior.penetration``
    (nearest point of the other hand, inside when behind its normal), measured as the distance
    behind that point's tangent plane, which unlike the point-to-point distance does not grow
    with the sample spacing.

    Args:
        points, normals: (n, 2, S, 3) both hands' samples and outward unit normals.
    Returns:
        (n,) metres, 0 where nothing is inside.
    """
    pairs = penetrations_from_points(points, normals)
    q = points[pairs.sample, pairs.side, pairs.query]
    other = 1 - pairs.side
    behind = (normals[pairs.sample, other, pairs.target]
              * (points[pairs.sample, other, pairs.target] - q)).sum(-1)  # fmt: skip
    return points.new_zeros(points.shape[0]).scatter_reduce(0, pairs.sample, behind, "amax")


def contact_distance(left: Tensor, right: Tensor, push: Tensor, cell: float) -> Tensor:
    """Distance to move the right hand along ``push`` so that it just touches the left hand.

    A height field: the plane orthogonal to ``push`` is cut into ``cell``-sized squares; each
    square holds the highest left-hand point (along ``push``) of its 3x3 neighbourhood, and
    the right hand must lie above it wherever it has points. The move is the largest
    ``height - right height`` over the right hand's points: after it, the hands touch where they
    are tightest and overlap nowhere (at the proxy's resolution). Negative when the hands are
    apart along ``push`` (the right hand is brought back into contact).

    Args:
        left, right: (n, V, 3) proxy points. push: (n, 3) unit directions. cell: metres.
    Returns:
        (n,) metres; -inf where no right point is above or below a left one (no contact along
        ``push``).
    """
    n = left.shape[0]
    helper = torch.eye(3)[push.abs().argmin(-1)]
    e1 = torch.nn.functional.normalize(torch.linalg.cross(push, helper), dim=-1)
    e2 = torch.linalg.cross(push, e1)
    basis = torch.stack([e1, e2, push], 2)  # (n, 3, 3) columns
    lp, rp = left @ basis, right @ basis  # (n, V, 3): plane coordinates and height
    lo = lp[..., :2].amin(1, keepdim=True) - 2 * cell
    size = int(math.ceil(float((lp[..., :2].amax(1) - lo[:, 0]).max()) / cell)) + 3
    pad = size * size  # a spill cell for points outside the grid

    def cells(p: Tensor) -> Tensor:
        ij = ((p[..., :2] - lo) / cell).floor().long()
        inside = ((ij >= 0) & (ij < size)).all(-1)
        return torch.where(inside, ij[..., 0] * size + ij[..., 1], pad)

    top = torch.full((n, pad + 1), -math.inf).scatter_reduce(1, cells(lp), lp[..., 2], "amax")
    grid = top[:, :pad].view(n, size, size)
    grid = torch.maximum(grid, torch.maximum(grid.roll(1, 1), grid.roll(-1, 1)))  # 3x3 max:
    grid = torch.maximum(grid, torch.maximum(grid.roll(1, 2), grid.roll(-1, 2)))  # separable
    top = torch.cat([grid.reshape(n, pad), torch.full((n, 1), -math.inf)], 1)
    return (top.gather(1, cells(rp)) - rp[..., 2]).amax(1)


def random_two_hands(
    n: int,
    generator: torch.Generator,
    kinds: list[str] | None = None,
    mano: ManoPair | None = None,
    synth: SyntheticGenerator | None = None,
    chunk: int = 1024,
) -> tuple[TwoHands, list[str]]:
    """``n`` synthetic interactions in the left hand's model frame (see the module doc).

    Args:
        n: number of pairs.
        generator: the only source of randomness.
        kinds: optional interaction type per pair (len n); default: drawn by frequency.
        mano: hand model (default: the stand-in ``ManoPair()``), or ``synth`` prebuilt.
        chunk: pairs per batch (bounds memory).
    Returns:
        (TwoHands (n), kind label per pair).
    """
    if kinds is not None:
        if len(kinds) != n:
            raise ValueError(f"kinds has {len(kinds)} entries, expected n={n}")
        unknown = sorted(set(kinds) - set(INTERACTIONS))
        if unknown:
            raise ValueError(f"unknown interaction kinds {unknown}; known: {list(INTERACTIONS)}")
    synth = synth or SyntheticGenerator(mano or ManoPair())
    if kinds is None:  # drawn up-front, so that rejected pairs are replaced by the same type
        names = list(INTERACTIONS)
        w = torch.tensor([INTERACTIONS[k].weight for k in names])
        kinds = [names[i] for i in torch.multinomial(w, n, True, generator=generator).tolist()]
    pending = list(range(n))
    parts: list[tuple[Tensor, TwoHands]] = []
    labels: list[str | None] = [None] * n
    for _ in range(50):
        if not pending:
            break
        batch = pending[:chunk]
        want = [kinds[p] for p in batch]
        out = synth.generate(len(batch), generator, want)
        hands, got = out.hands, out.kinds
        pos = torch.tensor(batch, dtype=torch.long)[out.kept]
        parts.append((pos, hands))
        for p, k in zip(pos.tolist(), got):
            labels[p] = k
        done = set(pos.tolist())
        pending = [p for p in pending if p not in done]
    if pending:
        raise RuntimeError(f"synthetic generator rejected too many pairs ({len(pending)} of {n})")
    order = torch.argsort(torch.cat([p for p, _ in parts]))
    return TwoHands.cat([h for _, h in parts])[order], [str(k) for k in labels]


class SyntheticTwoHands(Dataset):
    """Pre-generated synthetic pairs; ``ds[i] -> (TwoHands (1), interacting: bool)``.

    Chunk ``c`` is generated from seed ``(seed, c)``, so the data do not depend on the chunk
    order. "apart" pairs are the non-interacting ones.

    Args:
        n: number of pairs. seed: data seed. mano: hand model (default stand-in).
        chunk: pairs per generation chunk.
    """

    def __init__(self, n: int, seed: int, mano: ManoPair | None = None, chunk: int = 4096) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        synth = SyntheticGenerator(mano or ManoPair())
        parts, labels = [], []
        for c, start in enumerate(range(0, n, chunk)):
            g = torch.Generator().manual_seed(int(seed) * 1_000_003 + c)
            hands, kinds = random_two_hands(min(chunk, n - start), g, synth=synth)
            parts.append(hands)
            labels += kinds
        self._hands = TwoHands.cat(parts)
        self.kinds = labels
        self.interacting = torch.tensor([k != "apart" for k in labels])

    def __len__(self) -> int:
        return self._hands.batch_size

    def __getitem__(self, idx: int) -> tuple[TwoHands, bool]:
        return self._hands[int(idx)], bool(self.interacting[idx])

    def all_hands(self) -> TwoHands:
        """Every sample at once: TwoHands with batch ``len(self)``."""
        return self._hands


@dataclass(frozen=True)
class SyntheticObservation:
    """Projected true joints (MediaPipe order) for fitting tests.

    keypoints_2d: (B, 2, 21, 2) px. confidence: (B, 2, 21), 0 for dropped keypoints.
    joints_3d: (B, 2, 21, 3) true joints in the camera frame, MediaPipe order.
    """

    keypoints_2d: Tensor
    confidence: Tensor
    joints_3d: Tensor


def synthetic_observation(
    hands: TwoHands,
    mano: ManoPair,
    K: Tensor,
    noise_px: float,
    drop_frac: float,
    generator: torch.Generator,
) -> SyntheticObservation:
    """Project the true joints of camera-frame hands, with pixel noise and dropped keypoints.

    Args:
        hands: TwoHands (B) in the camera frame (OpenCV), e.g. from :func:`place_in_camera`.
        K: (B, 3, 3) intrinsics. noise_px: Gaussian noise std (px). drop_frac: fraction of
            keypoints given confidence 0.
    """
    b = hands.batch_size
    if K.shape != (b, 3, 3):
        raise ValueError(f"K must have shape ({b}, 3, 3), got {tuple(K.shape)}")
    with torch.no_grad():
        joints = mano(hands).joints_in("mediapipe")  # (B, 2, 21, 3)
    if (joints[..., 2] <= 1e-3).any():
        raise ValueError("some joints are behind the camera (z <= 1 mm): place the hands first")
    uvw = joints @ K[:, None].transpose(-1, -2)
    uv = uvw[..., :2] / uvw[..., 2:]
    uv = uv + noise_px * torch.randn(uv.shape, generator=generator)
    conf = (torch.rand(b, 2, 21, generator=generator) >= drop_frac).float()
    return SyntheticObservation(uv, conf, joints)


def place_in_camera(
    hands: TwoHands,
    generator: torch.Generator,
    distance: tuple[float, float] = (0.35, 0.6),
    mano: ManoPair | None = None,
) -> TwoHands:
    """Put pairs in front of an OpenCV camera: random rotation, the pair's centre (mean of the
    two wrists) on the optical axis +-5 cm at a depth uniform in ``distance`` (metres).

    MANO rotates about the rest wrist ``w0``, so a rigid motion ``x -> R x + t`` maps the
    translation to ``R (w0 + transl) + t - w0``.
    """
    mano = mano or ManoPair()
    b = hands.batch_size
    with torch.no_grad():
        zero = TwoHands(hands.pose_aa, hands.betas, hands.rot_mat, torch.zeros_like(hands.transl))
        w0 = mano(zero).root_joints()  # (B, 2, 3)
    rot = roma.rotvec_to_rotmat(math.pi * torch.rand(b, 1, generator=generator)
                                * torch.nn.functional.normalize(
                                    torch.randn(b, 3, generator=generator), dim=-1))  # fmt: skip
    centre = (w0 + hands.transl).mean(1)  # (B, 3) wrists' midpoint
    depth = distance[0] + (distance[1] - distance[0]) * torch.rand(b, generator=generator)
    target = torch.stack([0.05 * torch.randn(b, generator=generator),
                          0.05 * torch.randn(b, generator=generator), depth], 1)  # fmt: skip
    t = target - (rot @ centre[..., None])[..., 0]
    new_rot = rot[:, None] @ hands.rot_mat
    transl = torch.einsum("bij,bsj->bsi", rot, w0 + hands.transl) + t[:, None] - w0
    return TwoHands(hands.pose_aa, hands.betas, new_rot, transl)
