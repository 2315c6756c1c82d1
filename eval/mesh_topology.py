"""Topology of closed triangle meshes for the penetration metrics: caps (:func:`close_holes`, from
:mod:`prior.topology`, which the fitting's penetration test shares), adjacency, face patches.

Everything here depends on the face array only (never on a pose), so it is computed once per
call and shared by every sample of a batch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
from torch import Tensor

from prior.topology import close_holes

__all__ = ["close_holes", "edges", "face_adjacency", "face_neighbours", "face_patches", "Patches"]


def edges(faces: Tensor) -> Tensor:
    """Unique undirected edges (E, 2) of a face array (F, 3)."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values
    return torch.unique(e, dim=0)


def face_adjacency(faces: Tensor) -> Tensor:
    """Pairs of faces sharing an edge, (P, 2) long with ``pairs[:, 0] < pairs[:, 1]``.

    Args:
        faces: (F, 3) long, edge-manifold (an edge is shared by at most two faces).
    """
    f = faces.cpu().long()
    nf = f.shape[0]
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(dim=1).values
    owner = torch.arange(nf).repeat(3)
    key = e[:, 0] * (int(f.max()) + 1) + e[:, 1]
    order = torch.argsort(key, stable=True)
    k, o = key[order], owner[order]
    same = k[1:] == k[:-1]
    return torch.stack([o[:-1][same], o[1:][same]], 1).sort(dim=1).values


def face_neighbours(faces: Tensor) -> Tensor:
    """Face across each edge (ab, bc, ca) of every face of a closed mesh, (F, 3) long.

    Raises:
        ValueError: an edge without exactly one opposite half-edge (open or non-manifold).
    """
    f = faces.cpu().long()
    nv = int(f.max()) + 1
    src = torch.cat([f[:, 0], f[:, 1], f[:, 2]])
    dst = torch.cat([f[:, 1], f[:, 2], f[:, 0]])
    owner = torch.arange(f.shape[0]).repeat(3)
    key, rev = src * nv + dst, dst * nv + src
    order = torch.argsort(key)
    pos = torch.searchsorted(key[order], rev).clamp_max(key.shape[0] - 1)
    if not bool((key[order][pos] == rev).all()):
        raise ValueError("faces: an edge has no opposite half-edge (open or non-manifold mesh)")
    return owner[order][pos].reshape(3, -1).T.contiguous()


@dataclass
class Patches:
    """Faces grouped into small connected patches (for bounding-sphere culling).

    members: (K, S) long face indices, padded with 0 where ``valid`` is False.
    valid: (K, S) bool. of_face: (F,) long patch of every face.
    """

    members: Tensor
    valid: Tensor
    of_face: Tensor


def face_patches(faces: Tensor, size: int = 32) -> Patches:
    """Greedy breadth-first patches of at most ``size`` edge-connected faces.

    Deterministic (seeds are the smallest unassigned face indices), pose independent.
    """
    nf = faces.shape[0]
    pairs = face_adjacency(faces).tolist()
    nbr: list[list[int]] = [[] for _ in range(nf)]
    for a, b in pairs:
        nbr[a].append(b)
        nbr[b].append(a)
    of_face = [-1] * nf
    groups: list[list[int]] = []
    for seed in range(nf):
        if of_face[seed] >= 0:
            continue
        k, grp, queue = len(groups), [seed], deque([seed])
        of_face[seed] = k
        while queue and len(grp) < size:
            for n in nbr[queue.popleft()]:
                if of_face[n] < 0 and len(grp) < size:
                    of_face[n] = k
                    grp.append(n)
                    queue.append(n)
        groups.append(grp)
    s = max(len(g) for g in groups) if groups else 1
    members = torch.zeros(len(groups), s, dtype=torch.long)
    valid = torch.zeros(len(groups), s, dtype=torch.bool)
    for k, g in enumerate(groups):
        members[k, : len(g)] = torch.tensor(g)
        valid[k, : len(g)] = True
    return Patches(members, valid, torch.tensor(of_face, dtype=torch.long))
