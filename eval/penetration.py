"""Two-hand penetration metrics on plain tensors: intersection volume, depth, contact.

Inputs are ``verts (B, 2, V, 3)`` in metres and ``faces (2, F, 3)`` long, one face array per
side. Meshes may be open at the wrist like real MANO (1538 faces): :func:`close_holes` caps every
boundary loop first, so the same code serves the closed stand-in (1552 faces) and real MANO.

Inside/outside is the generalized winding number (threshold 0.5), robust to the small
self-intersections of posed hands. Nothing here silently returns 0 for a sample it cannot
evaluate: such a sample (non-finite vertices, a hand whose closed surface has no positive
volume, i.e. degenerate or inside-out) is flagged ``failed`` and gets NaN, and the caller reports
the count. A face array that is non-manifold or inconsistently oriented is an input error
(``ValueError``), since it is shared by the whole batch.

Volume, default ``method="surface"`` (:mod:`eval.surface_volume`): divergence theorem over the
parts of each surface inside the other; faces wholly in or out are exact, faces crossing the
other surface are split into sub-triangles of about ``voxel``. About 6 ms CPU per realistic
pair with depth, minimum distance and contact (bench/penetration.py); within ~2% of a 0.5 mm
voxel reference on stand-in pairs, and a 2 mm lens between spheres is within 3%. ``method="voxel"``
(:mod:`eval.voxel_volume`): the former adaptive voxel occupancy, kept as a slow reference
(over-estimates overlaps thinner than a few voxels). Depth uses exact point-triangle distances.
Layout: topology in :mod:`eval.mesh_topology`, kernels in :mod:`eval.winding`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from eval.mesh_topology import close_holes
from eval.proximity import closest_pair
from eval.surface_volume import hand_topology, surface_metrics
from eval.voxel_volume import voxel_volume
from eval.winding import triple, winding_numbers

__all__ = [
    "close_holes", "winding_numbers", "intersection_volume", "penetration_depth", "min_distance",
    "contact_ratio", "evaluate_penetration", "PenetrationMetrics", "M3_TO_CM3",
]  # fmt: skip

log = logging.getLogger(__name__)

M3_TO_CM3 = 1e6
METHODS = ("surface", "voxel")


def _check_pair(verts: Tensor, faces: Tensor) -> None:
    if (
        not isinstance(verts, Tensor)
        or verts.dim() != 4
        or verts.shape[1:2] != (2,)
        or verts.shape[-1] != 3
    ):
        raise ValueError(
            f"verts must have shape (B, 2, V, 3), got {tuple(getattr(verts, 'shape', ()))}"
        )
    if (
        not isinstance(faces, Tensor)
        or faces.dim() != 3
        or faces.shape[0] != 2
        or faces.shape[-1] != 3
    ):
        raise ValueError(
            f"faces must have shape (2, F, 3), got {tuple(getattr(faces, 'shape', ()))}"
        )
    if faces.numel() and (faces.min() < 0 or faces.max() >= verts.shape[2]):
        raise ValueError(f"faces index outside [0, {verts.shape[2]})")


def _run(
    verts: Tensor,
    faces: Tensor,
    volume: bool,
    depth: bool,
    voxel: float,
    method: str = "surface",
    levels: int = 3,
    block: int = 256,
) -> tuple[Tensor, Tensor, Tensor]:
    """Volume (m^3), depth (m) and failed flags (B,) for a batch; NaN where failed."""
    _check_pair(verts, faces)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not voxel > 0:
        raise ValueError(f"voxel must be > 0, got {voxel}")
    closed = [close_holes(faces[h].cpu().long()) for h in range(2)]
    topo = (hand_topology(closed[0]), hand_topology(closed[1]))
    nb = verts.shape[0]
    vol = torch.full((nb,), math.nan, dtype=torch.float64)
    dep = torch.full((nb,), math.nan, dtype=torch.float64)
    failed = torch.zeros(nb, dtype=torch.bool)
    for s in range(0, nb, block):
        v = verts[s : s + block].detach().to("cpu", torch.float64)
        finite = torch.isfinite(v).all(-1).all(-1).all(-1)
        v = torch.where(finite[:, None, None, None], v, torch.zeros_like(v))
        v = v - v.mean((1, 2), keepdim=True)
        tri = [v[:, h][:, closed[h]] for h in range(2)]
        hand_vol = torch.stack([triple(t).sum(-1) / 6.0 for t in tri], 1)  # (b, 2) m^3
        ok = finite & (hand_vol > 1e-9).all(1)
        failed[s : s + block] = ~ok
        sel = ok.nonzero().squeeze(1)
        if method == "voxel" and volume:
            vol[s : s + block] = voxel_volume(v.float(), ok, closed, voxel, levels)
            if depth:
                _, dd = surface_metrics(v[sel], topo, False, True, voxel)
                dep[s + sel] = dd
        elif sel.numel():
            vv, dd = surface_metrics(v[sel], topo, volume, depth, voxel)
            vol[s + sel], dep[s + sel] = vv, dd
    if failed.any():
        log.warning(
            "penetration: %d of %d samples could not be evaluated (NaN)", int(failed.sum()), nb
        )
    return vol, dep, failed


def intersection_volume(
    verts: Tensor,
    faces: Tensor,
    voxel: float = 0.002,
    method: str = "surface",
    levels: int = 3,
    block: int = 256,
) -> tuple[Tensor, Tensor]:
    """Volume of the intersection of the two (capped) hands.

    Deterministic; exactly 0 when the bounding boxes do not overlap or no face of one hand lies
    (partly) inside the other.

    Args:
        verts: (B, 2, V, 3) metres. faces: (2, F, 3) long, open or closed.
        voxel: resolution (m): the sub-triangle edge for faces crossing the other surface
            (``surface``), or the finest cell (``voxel``).
        method: ``"surface"`` (fast, default) or ``"voxel"`` (slow reference).
        levels: coarse levels of the voxel method. block: samples processed at once.
    Returns:
        ``(volume_cm3 (B,) float64, failed (B,) bool)``; failed samples are NaN.
    """
    vol, _, failed = _run(verts, faces, True, False, voxel, method, levels, block)
    return vol * M3_TO_CM3, failed


def penetration_depth(verts: Tensor, faces: Tensor, block: int = 256) -> Tensor:
    """Deepest vertex of either hand inside the other, as its exact distance to that surface.

    Args:
        verts: (B, 2, V, 3) metres. faces: (2, F, 3) long, open or closed.
    Returns:
        (B,) float64 metres; 0 when no vertex is inside, NaN for samples that cannot be evaluated.
    """
    return _run(verts, faces, False, True, 0.002, block=block)[1]


def min_distance(verts: Tensor, block: int = 1024) -> Tensor:
    """Smallest vertex-to-vertex distance between the two hands.

    Exact up to near-ties: the closest pair is found in float32 (centred coordinates, culled by
    groups of nearby vertices, :mod:`eval.proximity`) and its distance recomputed in float64.

    Args:
        verts: (B, 2, V, 3) metres.
    Returns:
        (B,) float64 metres (NaN where vertices are not finite).
    """
    if verts.dim() != 4 or verts.shape[1] != 2 or verts.shape[-1] != 3:
        raise ValueError(f"verts must have shape (B, 2, V, 3), got {tuple(verts.shape)}")
    out = torch.full((verts.shape[0],), math.nan, dtype=torch.float64)
    for s in range(0, verts.shape[0], block):
        v = verts[s : s + block].detach().to("cpu", torch.float64)
        ok = torch.isfinite(v).flatten(1).all(1)
        out[s : s + block][ok] = closest_pair(v[ok])
    return out


@dataclass
class PenetrationMetrics:
    """Per-sample penetration and contact measures, (B,) each; NaN where ``failed``."""

    volume_cm3: Tensor
    depth_m: Tensor
    min_distance_m: Tensor
    contact: Tensor  # 1.0 in contact, 0.0 not, NaN failed
    failed: Tensor  # bool

    def summary(self) -> dict[str, float]:
        """Means over the evaluated samples plus the failure count."""
        ok = ~self.failed
        n_ok = int(ok.sum())

        def mean(t: Tensor) -> float:
            return float(t[ok].mean()) if n_ok else math.nan

        return {
            "pen_volume_cm3": mean(self.volume_cm3),
            "pen_depth_mm": mean(self.depth_m) * 1e3,
            "contact_ratio": mean(self.contact),
            "penetrating_ratio": mean((self.volume_cm3 > 0).double()),
            "n_evaluated": float(n_ok),
            "n_failed": float(self.failed.sum()),
        }


def evaluate_penetration(
    verts: Tensor,
    faces: Tensor,
    voxel: float = 0.002,
    eps: float = 0.005,
    method: str = "surface",
    levels: int = 3,
    block: int = 256,
) -> PenetrationMetrics:
    """Volume, depth, minimum distance and contact of every sample, in one pass.

    Args:
        verts: (B, 2, V, 3) metres. faces: (2, F, 3) long, open or closed.
        voxel, method, levels: see :func:`intersection_volume`. eps: contact distance (m).
    Returns:
        :class:`PenetrationMetrics`.
    """
    vol, dep, failed = _run(verts, faces, True, True, voxel, method, levels, block)
    dmin = min_distance(verts)
    contact = ((dmin < eps) | (dep > 0) | (vol > 0)).double()
    contact[failed] = math.nan
    dmin = dmin.masked_fill(failed, math.nan)
    return PenetrationMetrics(vol * M3_TO_CM3, dep, dmin, contact, failed)


def contact_ratio(verts: Tensor, faces: Tensor, eps: float = 0.005) -> Tensor:
    """Per-sample contact flag: hands closer than ``eps`` (vertex to vertex) or penetrating.

    ``contact_ratio(...).nanmean()`` is the ProxRatio-style share of samples in contact.

    Args:
        verts: (B, 2, V, 3) metres. faces: (2, F, 3) long. eps: contact distance (m).
    Returns:
        (B,) float64: 1.0 in contact, 0.0 not, NaN for samples that cannot be evaluated.
    """
    _, dep, failed = _run(verts, faces, False, True, 0.002)
    contact = ((min_distance(verts) < eps) | (dep > 0)).double()
    return contact.masked_fill(failed, math.nan)
