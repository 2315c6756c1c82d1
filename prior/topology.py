"""Capping the open boundary of a hand mesh (real MANO is open at the wrist), so that inside /
outside is defined: the winding-number penetration test (:func:`prior.penetration.winding_at_pairs`)
and the evaluation's metrics (:mod:`eval.penetration`) need closed surfaces."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

__all__ = ["close_holes"]

log = logging.getLogger(__name__)


def close_holes(faces: Tensor, verts_rest: Tensor | None = None) -> Tensor:
    """Cap every boundary loop of a triangle mesh with a fan from one loop vertex.

    A fan from a loop vertex adds no vertices, so the capped faces index the same ``verts``
    tensor for every pose. Cap triangles use the reversed boundary half-edges, so they share the
    mesh's orientation. The apex is the loop's smallest vertex index, or, when ``verts_rest`` is
    given, the loop vertex whose fan has the least area (the flattest cap). Identity for a closed
    mesh.

    Args:
        faces: (F, 3) long, consistently oriented, edge-manifold.
        verts_rest: optional (V, 3) rest vertices used to choose the apex.
    Returns:
        (F + C, 3) long faces, the C cap faces appended.
    Raises:
        ValueError: non-manifold or inconsistently oriented input, or a branching boundary.
    """
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}")
    f = faces.detach().cpu().numpy().astype(np.int64)
    he = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    n = int(f.max()) + 1 if f.size else 0
    key = he[:, 0] * n + he[:, 1]
    if np.unique(key).size != key.size:
        raise ValueError(
            "faces: a directed edge is used twice (inconsistent orientation or non-manifold)"
        )
    boundary = he[~np.isin(he[:, 1] * n + he[:, 0], key)]
    if boundary.size == 0:
        return faces
    if np.unique(boundary[:, 0]).size != len(boundary):
        raise ValueError(
            "faces: a boundary vertex has two outgoing boundary edges (branching hole)"
        )
    nxt = dict(zip(boundary[:, 0].tolist(), boundary[:, 1].tolist()))
    caps: list[list[int]] = []
    for start in sorted(nxt):
        if start not in nxt:
            continue
        loop = [start]
        while nxt[loop[-1]] != start:
            loop.append(nxt.pop(loop[-1]))
            if loop[-1] not in nxt:
                raise ValueError("faces: an open boundary chain does not close into a loop")
        nxt.pop(loop[-1])
        if len(loop) < 3:
            raise ValueError(f"faces: boundary loop of length {len(loop)}")
        k = _fan_apex(loop, verts_rest)
        loop = loop[k:] + loop[:k]
        caps += [[loop[0], loop[i + 1], loop[i]] for i in range(1, len(loop) - 1)]
    log.debug("close_holes: added %d cap faces", len(caps))
    return torch.cat([faces, torch.tensor(caps, dtype=faces.dtype, device=faces.device)])


def _fan_apex(loop: list[int], verts_rest: Tensor | None) -> int:
    if verts_rest is None:
        return int(np.argmin(loop))
    p = verts_rest.detach().cpu().double().numpy()[loop]
    areas = []
    for k in range(len(loop)):
        q = np.roll(p, -k, axis=0)
        areas.append(np.linalg.norm(np.cross(q[1:-1] - q[0], q[2:] - q[0]), axis=1).sum())
    return int(np.argmin(areas))
