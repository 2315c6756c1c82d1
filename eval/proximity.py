"""Closest vertex pair between two hands, culled by groups of nearby vertices.

Vertices are grouped by a median split of one reference pose (any grouping gives the same exact
answer; compact groups only make it fast). Per sample, an upper bound comes from one vertex per
group; group pairs whose bounding spheres are farther apart than that bound cannot hold the
closest pair, and only the rest are measured vertex by vertex.
"""

from __future__ import annotations

import torch
from torch import Tensor


def vertex_groups(ref: Tensor, size: int = 16) -> tuple[Tensor, Tensor]:
    """Split vertices ref (V, 3) into groups of at most ``size`` by recursive median splits.

    Returns:
        ``(members (G, S) long, padded with the group's first vertex; valid (G, S) bool)``.
    """
    groups: list[Tensor] = []
    stack = [torch.arange(ref.shape[0])]
    while stack:
        ids = stack.pop()
        if ids.shape[0] <= size:
            groups.append(ids)
            continue
        p = ref[ids]
        axis = int((p.amax(0) - p.amin(0)).argmax())
        order = ids[torch.argsort(p[:, axis], stable=True)]
        half = order.shape[0] // 2
        stack += [order[half:], order[:half]]
    s = max(g.shape[0] for g in groups)
    members = torch.stack([torch.cat([g, g[:1].expand(s - g.shape[0])]) for g in groups])
    valid = torch.stack([torch.arange(s) < g.shape[0] for g in groups])
    return members, valid


def closest_pair(v: Tensor, size: int = 16) -> Tensor:
    """Exact smallest vertex-to-vertex distance between the two hands of each sample.

    Args:
        v: (b, 2, V, 3) float64, finite. size: vertices per group.
    Returns:
        (b,) float64 metres: the pair is found in float32 (centred) and measured in float64,
        so a near-tie may pick a pair about 1e-6 m longer than the closest.
    """
    nb = v.shape[0]
    if nb == 0:
        return torch.zeros(0, dtype=torch.float64)
    v = v - v.mean((1, 2), keepdim=True)
    vf = v.float()
    grp = [vertex_groups(vf[0, h], size) for h in range(2)]
    pts, cen, rad = [], [], []
    for h, (mem, val) in enumerate(grp):
        p = vf[:, h][:, mem]  # (b, G, S, 3)
        w = val.float()[None, :, :, None]
        c = (p * w).sum(2) / w.sum(2)
        pts.append(p)
        cen.append(c)
        rad.append((p - c[:, :, None]).norm(dim=-1).amax(-1))  # padding repeats a member
    lower = torch.cdist(cen[0], cen[1]) - rad[0][:, :, None] - rad[1][:, None]  # (b, G0, G1)
    # Upper bound: the closest pair within the group pair of smallest lower bound.
    ng1 = lower.shape[2]
    k = lower.flatten(1).argmin(1)
    rows = torch.arange(nb)
    upper = _sq_dist(pts[0][rows, k // ng1], pts[1][rows, k % ng1]).flatten(1).amin(1).sqrt()
    s, i, j = (lower <= upper[:, None, None] * (1 + 1e-5) + 1e-7).nonzero(as_tuple=True)
    (m0, _), (m1, _) = grp
    sz = m1.shape[1]
    d2 = torch.cat(
        [
            _sq_dist(
                pts[0][s[c : c + 16384], i[c : c + 16384]],
                pts[1][s[c : c + 16384], j[c : c + 16384]],
            )
            .flatten(1)
            .min(1)
            .values
            for c in range(0, s.shape[0], 16384)
        ]
    )
    best = torch.full((nb,), float("inf")).scatter_reduce(0, s, d2, "amin")
    # The winning group pair of each sample (ties: any), then its pair in float64.
    w = (d2 == best[s]).nonzero().squeeze(1)
    gi, gj, gs = i[w], j[w], s[w]
    e = _sq_dist(pts[0][gs, gi], pts[1][gs, gj]).flatten(1).argmin(1)
    nv = v.shape[2]
    pair = torch.zeros(nb, dtype=torch.long)
    pair[gs] = m0[gi, e // sz] * nv + m1[gj, e % sz]
    return (v[rows, 0, pair // nv] - v[rows, 1, pair % nv]).norm(dim=-1)


def _sq_dist(a: Tensor, b: Tensor) -> Tensor:
    """Squared distances (M, S, T) between points a (M, S, 3) and b (M, T, 3), via a matmul."""
    return (
        (a * a).sum(-1)[:, :, None] + (b * b).sum(-1)[:, None] - 2 * torch.bmm(a, b.transpose(1, 2))
    ).clamp_min(0)
