"""Intersection volume and penetration depth of two closed hands by a surface integral.

By the divergence theorem, ``vol(A n B) = 1/3 * surface integral of x . n`` over the boundary
of ``A n B``, which is the part of each surface inside the other. On a flat face ``x . n`` is
constant, so a face contributes ``det(t0, t1, t2) / 6`` (its signed cone volume from the origin)
times the share of its area inside the other hand. Hence:

1. Faces that cannot touch the other surface (patch bounding spheres, then face bounding
   spheres, then an exact separating-axis triangle test) lie wholly inside or outside it.
   Edge-adjacent such faces share their state, so it propagates over connected components
   (whole patches far from the other surface are single nodes); components reaching outside the
   other hand's bounding box are outside, the rest take one winding number.
2. Faces crossing the other surface (exactly those hitting one of its triangles) are split into
   ``k * k`` equal sub-triangles, ``k = ceil(longest edge / resolution)``. The signed distance
   to the other surface is measured at the sub-triangle corners (the nearest triangle among
   those provably in reach, sign by the angle-weighted pseudo-normal of its closest feature),
   and each sub-triangle counts the area where its linear interpolation is negative. Points of
   the first hand move ``TIE`` inward and those of the second outward, so that coincident
   surfaces (a mesh against a copy of itself, boxes sharing a face plane) are counted once.

Only a few winding numbers are needed per sample, and pairs whose bounding boxes do not overlap
cost nothing. The result is deterministic; exact for faces wholly in or out, and the error of
crossing faces is weighted by ``x . n`` about an origin amid the crossing faces, so it stays
small for thin overlaps. Depth: corners of crossing faces have their signed distance; other
vertices take the state of a face around them and, when inside, their exact distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch
from torch import Tensor

from eval.mesh_topology import Patches, face_adjacency, face_neighbours, face_patches
from eval.winding import (
    by_sample,
    closest_feature,
    nearest_triangle,
    point_triangle_dist,
    prepare,
    triangles_intersect,
    triple,
    winding,
)  # fmt: skip

TOL = 1e-7  # m: separations below this count as contact (conservative)
TIE = 2e-6  # m: tie-break offset of the sub-triangle centres (see module doc)


@dataclass
class HandTopology:
    """Pose-independent tables of one closed hand mesh."""

    faces: Tensor  # (F, 3) long, closed
    adjacency: Tensor  # (P, 2) faces sharing an edge
    neighbours: Tensor  # (F, 3) face across edges ab, bc, ca
    patches: Patches


def hand_topology(faces: Tensor, patch_size: int = 32) -> HandTopology:
    """Adjacency and patches of a closed face array (F, 3)."""
    faces = faces.cpu().long()
    return HandTopology(
        faces, face_adjacency(faces), face_neighbours(faces), face_patches(faces, patch_size)
    )


@dataclass
class _Side:
    """Geometry of one hand for a block of b samples."""

    tri: Tensor  # (b, F, 3, 3)
    cent: Tensor  # (b, F, 3)
    rad: Tensor  # (b, F)
    pc: Tensor  # (b, K, 3) patch sphere centres
    pr: Tensor  # (b, K) patch sphere radii
    lo: Tensor  # (b, 3) hand box
    hi: Tensor
    pn: Tensor | None = None  # (r, F, 7, 3) pseudo-normals of the samples that need them
    pn_row: Tensor | None = None  # (b,) long: row of each sample in ``pn``


def _side(v: Tensor, topo: HandTopology) -> _Side:
    tri = v[:, topo.faces]
    cent = tri.mean(2)
    rad = (tri - cent[:, :, None]).norm(dim=-1).amax(-1)
    mem, val = topo.patches.members, topo.patches.valid
    c = cent[:, mem]  # (b, K, S, 3)
    w = val.to(v.dtype)[None, :, :, None]
    pc = (c * w).sum(2) / w.sum(2)
    pr = (((c - pc[:, :, None]).norm(dim=-1) + rad[:, mem]) * w[..., 0]).amax(-1)
    return _Side(tri, cent, rad, pc, pr, v.amin(1), v.amax(1))


def _box_gap(c: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Distance of points c (b, N, 3) to boxes [lo, hi] (b, 3) -> (b, N)."""
    return torch.maximum(lo[:, None] - c, c - hi[:, None]).clamp_min(0).norm(dim=-1)


def _crossing_pairs(a: _Side, b: _Side, ta: HandTopology, tb: HandTopology) -> tuple[Tensor, ...]:
    """Triangle pairs (s, f, g) of hand a and hand b that intersect, and touching patches.

    Returns ``(s, f, g, touch_a (b, Ka) bool, touch_b (b, Kb) bool)``.
    """
    near = torch.cdist(a.pc, b.pc) <= a.pr[:, :, None] + b.pr[:, None] + TOL  # (b, Ka, Kb)
    touch_a, touch_b = near.any(2), near.any(1)
    s, ka, kb = near.nonzero(as_tuple=True)
    ma, va = ta.patches.members[ka], ta.patches.valid[ka]  # (M, S)
    mb, vb = tb.patches.members[kb], tb.patches.valid[kb]
    out: list[list[Tensor]] = [[], [], []]
    for c0 in range(0, s.shape[0], 4096):
        sl = slice(c0, c0 + 4096)
        ss, fa, fb = s[sl], ma[sl], mb[sl]
        d = torch.cdist(a.cent[ss[:, None], fa], b.cent[ss[:, None], fb])
        ok = d <= a.rad[ss[:, None], fa][:, :, None] + b.rad[ss[:, None], fb][:, None] + TOL
        ok &= va[sl][:, :, None] & vb[sl][:, None]
        m, i, j = ok.nonzero(as_tuple=True)
        ps, pf, pg = ss[m], fa[m, i], fb[m, j]
        hit = triangles_intersect(a.tri[ps, pf], b.tri[ps, pg], TOL)
        for lst, t in zip(out, (ps, pf, pg)):
            lst.append(t[hit])
    s_, f_, g_ = (torch.cat(x) if x else torch.zeros(0, dtype=torch.long) for x in out)
    return s_, f_, g_, touch_a, touch_b


def _winding_of(pts: Tensor, sid: Tensor, other: _Side, topo: HandTopology) -> Tensor:
    """Winding numbers of points pts (N, 3) of samples sid (N,) w.r.t. the other hand."""
    if pts.shape[0] == 0:
        return pts.new_zeros(0)

    nf = other.tri.shape[1]
    corners = torch.arange(3 * nf).reshape(nf, 3)

    def fn(grp: Tensor, items: Tensor, valid: Tensor) -> Tensor:
        return winding(pts[items], prepare(other.tri[grp].flatten(1, 2), corners))

    return by_sample(sid, other.tri.shape[0], fn, budget=1 << 12)


def _face_states(
    a: _Side, b: _Side, ta: HandTopology, tb: HandTopology, cross: Tensor, touch: Tensor
) -> Tensor:
    """State of the non-crossing faces of hand a w.r.t. hand b: (nb, F) int8, 1 in, 0 out, -1
    crossing."""
    nb, nf = cross.shape
    nk = ta.patches.members.shape[0]
    of = ta.patches.of_face
    node = torch.where(touch[:, of], nk + torch.arange(nf)[None], of[None])  # (nb, F)
    node = node + torch.arange(nb)[:, None] * (nk + nf)
    nc = ~cross
    # Known outside: patch or face spheres clear of the other hand's box.
    patch_out = _box_gap(a.pc, b.lo, b.hi) > a.pr + TOL  # (nb, K)
    face_out = _box_gap(a.cent, b.lo, b.hi) > a.rad + TOL
    known = torch.where(touch[:, of], face_out, patch_out[:, of]) & nc
    ids = node[nc]
    uniq, inv = torch.unique(ids, return_inverse=True)
    n1, n2 = ta.adjacency[:, 0], ta.adjacency[:, 1]
    ok = nc[:, n1] & nc[:, n2] & (node[:, n1] != node[:, n2])
    e1 = torch.searchsorted(uniq, node[:, n1][ok])
    e2 = torch.searchsorted(uniq, node[:, n2][ok])
    nn = uniq.shape[0]
    graph = scipy.sparse.coo_matrix((np.ones(e1.shape[0]), (e1.numpy(), e2.numpy())), (nn, nn))
    ncomp, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    lab = torch.from_numpy(labels).long()
    comp_of_face = lab[inv]  # over the non-crossing faces, in nc order
    state = torch.full((ncomp,), -1, dtype=torch.int8)
    kn = torch.zeros(ncomp, dtype=torch.bool)
    kn[comp_of_face[known[nc]]] = True
    state[kn] = 0
    sf = nc.nonzero()  # (n, 2) sample, face in nc order
    _, first = np.unique(comp_of_face.numpy(), return_index=True)
    rep = torch.from_numpy(first).long()[~kn]
    if rep.numel():
        s, f = sf[rep, 0], sf[rep, 1]
        w = _winding_of(a.cent[s, f], s, b, tb)
        state[~kn] = (w > 0.5).to(torch.int8)
    out = torch.full((nb, nf), -1, dtype=torch.int8)
    out[nc] = state[comp_of_face]
    return out


def _pseudo_normals(tri: Tensor, topo: HandTopology) -> Tensor:
    """Angle-weighted pseudo-normals (b, F, 7, 3) of the corners, edges and interior of the
    faces tri (b, F, 3, 3).

    The sign of ``(p - closest) . pseudo-normal`` of the closest feature is the inside/outside
    test of Baerentzen and Aanaes, exact for closed manifold meshes.
    """
    e = tri.roll(-1, 2) - tri  # (b, F, 3, 3) edges ab, bc, ca
    nf = torch.nn.functional.normalize(torch.cross(e[:, :, 0], -e[:, :, 2], dim=-1), dim=-1)
    u = torch.nn.functional.normalize(e, dim=-1)
    ang = torch.acos((u * -u.roll(1, 2)).sum(-1).clamp(-1, 1))  # (b, F, 3) corner angles
    nv = int(topo.faces.max()) + 1
    vn = tri.new_zeros(tri.shape[0], nv, 3)
    vn.index_add_(1, topo.faces.flatten(), (ang[..., None] * nf[:, :, None]).flatten(1, 2))
    en = nf[:, :, None] + nf[:, topo.neighbours]  # (b, F, 3, 3)
    return torch.cat([vn[:, topo.faces], en, nf[:, :, None]], 2)


def _grid(k: int) -> tuple[Tensor, Tensor]:
    """Barycentric vertices (m, 3) of the k*k equal sub-triangles of a triangle and the
    sub-triangles (k*k, 3) as vertex indices."""
    ij = [(i, j) for i in range(k + 1) for j in range(k + 1 - i)]
    pos = {p: n for n, p in enumerate(ij)}
    bary = torch.tensor([[k - i - j, i, j] for i, j in ij], dtype=torch.float64) / k
    tris = []
    for i, j in ij:
        if i + j <= k - 1:
            tris.append([pos[(i, j)], pos[(i + 1, j)], pos[(i, j + 1)]])
        if i + j <= k - 2:
            tris.append([pos[(i + 1, j)], pos[(i + 1, j + 1)], pos[(i, j + 1)]])
    return bary, torch.tensor(tris, dtype=torch.long)


def _inside_share(sd: Tensor) -> Tensor:
    """Area share where the linear interpolation of signed distances sd (..., 3) is < 0."""
    out = (sd <= 0).all(-1).to(sd.dtype)
    neg = sd < 0
    n_neg = neg.sum(-1)
    for i in range(3):
        si, sj, sk = sd[..., i], sd[..., (i + 1) % 3], sd[..., (i + 2) % 3]
        corner = si * si / ((si - sj) * (si - sk)).clamp_min(1e-30)
        lone_in = neg[..., i] & (n_neg == 1)
        lone_out = ~neg[..., i] & (n_neg == 2) & (si > 0)
        out = torch.where(lone_in, corner, out)
        out = torch.where(lone_out, 1 - corner, out)
    return out.clamp(0, 1)


def _signed_dist(pts: Tensor, s: Tensor, c: Tensor, reach: Tensor | None, b: _Side) -> Tensor:
    """Signed distances (n, m) of points pts (n, m, 3) of samples s (n,) to hand b (< 0 inside).

    Every point must lie within ``reach`` (n,) of ``c`` (n, 3) plus its distance to b; then
    the faces of b within that range of ``c`` hold its closest point, and the closest feature's
    pseudo-normal gives the sign. ``reach=None``: the points are ``c`` itself (m = 1).
    """
    n, m = pts.shape[:2]
    gap = (b.cent[s] - c[:, None]).norm(dim=-1) - b.rad[s]  # (n, F)
    if reach is None:  # a surface point lies within |c - centroid| + radius of c
        reach = (gap + 2 * b.rad[s]).amin(1)
    near = gap <= reach[:, None] + TOL
    count = near.sum(1)
    rows = torch.argsort(count)  # similar near-set sizes together: little padding
    cnt = count[rows].tolist()
    sd = pts.new_empty(n, m)
    i = 0
    while i < n:
        j = i + 1
        while j < n and (j + 1 - i) * m * cnt[j] <= 1 << 17:
            j += 1
        sl = rows[i:j]
        nmax = cnt[j - 1]
        ss, cc = s[sl], c[sl]
        idx = torch.argsort((~near[sl]).to(torch.int8), dim=1, stable=True)[:, :nmax]
        tri = b.tri[ss[:, None], idx] - cc[:, None, None]  # (k, N, 3, 3) around c
        far = ~near[sl].gather(1, idx)
        tri[far] = 1e3  # padding: a far-away triangle
        _, arg = nearest_triangle(pts[sl] - cc[:, None], tri)
        g = idx.gather(1, arg)  # (k, m)
        sk = ss[:, None].expand_as(g).flatten()
        p = pts[sl].reshape(-1, 3)
        cp, feat = closest_feature(p, b.tri[sk, g.flatten()])
        nrm = b.pn[b.pn_row[sk], g.flatten(), feat]
        diff = p - cp
        sd[sl] = (torch.sign((diff * nrm).sum(-1)) * diff.norm(dim=-1)).reshape(-1, m)
        i = j
    return sd


def _crossing_fractions(
    a: _Side,
    b: _Side,
    s: Tensor,
    f: Tensor,
    pairs: tuple[Tensor, Tensor, Tensor],
    sign: float,
    res: float,
    kmax: int,
) -> tuple[Tensor, Tensor]:
    """Share of the area of crossing faces (s, f) of hand a inside hand b -> (n,) float64.

    Also returns the signed distances of the faces' corners to b (n, 3).
    """
    tri = a.tri[s, f]  # (n, 3, 3)
    longest = (tri - tri.roll(1, 1)).norm(dim=-1).amax(-1)
    k = torch.ceil(longest / res).clamp(1, kmax).long()
    nrm = torch.nn.functional.normalize(
        torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1), dim=-1
    )
    ps, pf, pg = pairs  # intersecting triangle pairs (sample, face of a, face of b)
    nf = a.tri.shape[1]
    face_key = s * nf + f
    order = torch.argsort(face_key)
    pair_face = order[torch.searchsorted(face_key[order], ps * nf + pf)]  # row of each pair
    frac = torch.zeros(s.shape[0], dtype=torch.float64)
    corner = tri.new_zeros(s.shape[0], 3)
    for kk in torch.unique(k).tolist():
        sel = (k == kk).nonzero().squeeze(1)
        bary, subs = _grid(kk)
        pts = torch.einsum("mj,njc->nmc", bary.to(tri.dtype), tri[sel])
        pts = pts + sign * TIE * nrm[sel, None]
        # Reach: the largest distance of a point to the triangles its face is known to hit.
        rows = torch.full((s.shape[0],), -1, dtype=torch.long)
        rows[sel] = torch.arange(sel.shape[0])
        pr = rows[pair_face]
        keep = pr >= 0
        dpair = point_triangle_dist(pts[pr[keep]], b.tri[ps[keep], pg[keep]][:, None])  # (P, m)
        up = torch.full((sel.shape[0], pts.shape[1]), math.inf, dtype=pts.dtype)
        up = up.scatter_reduce(0, pr[keep][:, None].expand_as(dpair), dpair, "amin")
        reach = (pts - a.cent[s[sel], f[sel]][:, None]).norm(dim=-1).amax(1) + up.amax(1)
        sd = _signed_dist(pts, s[sel], a.cent[s[sel], f[sel]], reach, b).double()
        frac[sel] = _inside_share(sd[:, subs]).mean(1)
        corner[sel] = sd[:, _corner_rows(kk)].to(tri.dtype)
    return frac, corner


def _corner_rows(k: int) -> list[int]:
    """Rows of the grid vertices at the corners a, b, c (barycentric (1,0,0), (0,1,0), (0,0,1))."""
    ij = [(i, j) for i in range(k + 1) for j in range(k + 1 - i)]
    return [ij.index((0, 0)), ij.index((k, 0)), ij.index((0, k))]


def _vertex_depth(
    v: Tensor, b: _Side, ta: HandTopology, state: Tensor, cs: Tensor, cf: Tensor, corner: Tensor
) -> Tensor:
    """Deepest vertex of hand a (v (nb, V, 3)) inside hand b, its distance to b -> (nb,).

    Vertices of non-crossing faces take the face's state (distance measured here), corners of
    crossing faces their signed distance ``corner`` (n, 3) from the sub-triangle grid.
    """
    nb, nv = v.shape[:2]
    depth = torch.zeros(nb, dtype=torch.float64)
    if cs.numel():
        d = (-corner).clamp_min(0).amax(1).double()
        depth = depth.scatter_reduce(0, cs, d, "amax")
    vs = torch.zeros(nb, nv, dtype=torch.bool)
    s, f = (state == 1).nonzero(as_tuple=True)
    vs[s[:, None].expand(-1, 3), ta.faces[f]] = True
    s, i = vs.nonzero(as_tuple=True)
    if s.numel():
        d = _signed_dist(v[s, i][:, None], s, v[s, i], None, b)[:, 0].abs().double()
        depth = depth.scatter_reduce(0, s, d, "amax")
    return depth


def surface_metrics(
    verts: Tensor,
    topo: tuple[HandTopology, HandTopology],
    volume: bool,
    depth: bool,
    res: float,
    kmax: int = 32,
) -> tuple[Tensor, Tensor]:
    """Intersection volume (m^3) and penetration depth (m) of a block of valid pairs.

    Args:
        verts: (b, 2, V, 3) float64 metres, every pair evaluable (finite, positive volumes).
        topo: tables of the two closed hands. volume, depth: what to compute (else 0).
        res: sub-triangle edge length (m) for faces crossing the other surface. kmax: limit of
            the subdivision ``k`` per face.
    Returns:
        ``(volume (b,) float64, depth (b,) float64)``.
    """
    nb = verts.shape[0]
    vol = torch.zeros(nb, dtype=torch.float64)
    dep = torch.zeros(nb, dtype=torch.float64)
    lo, hi = verts.amin(2), verts.amax(2)  # (b, 2, 3)
    olo, ohi = torch.maximum(lo[:, 0], lo[:, 1]), torch.minimum(hi[:, 0], hi[:, 1])
    idx = (ohi > olo).all(-1).nonzero().squeeze(1)
    if not idx.numel():
        return vol, dep
    v = (verts[idx] - (0.5 * (olo + ohi))[idx, None, None]).float()
    sides = [_side(v[:, h], topo[h]) for h in range(2)]
    s, f, g, touch0, touch1 = _crossing_pairs(sides[0], sides[1], topo[0], topo[1])
    n = idx.shape[0]
    cross = [torch.zeros(n, t.faces.shape[0], dtype=torch.bool) for t in topo]
    cross[0][s, f] = True
    cross[1][s, g] = True
    touch = (touch0, touch1)
    origin = torch.zeros(n, 3, dtype=torch.float64)
    if s.numel():
        mid = (sides[0].cent[s, f] + sides[1].cent[s, g]).double() / 2
        cnt = torch.zeros(n, dtype=torch.float64).index_add_(
            0, s, torch.ones_like(s, dtype=torch.float64)
        )
        origin.index_add_(0, s, mid)
        origin /= cnt.clamp_min(1)[:, None]
    for h in range(2):
        a, b = sides[h], sides[1 - h]
        if s.numel():  # pseudo-normals of the samples with crossing faces
            need = torch.unique(s)
            b.pn = _pseudo_normals(b.tri[need], topo[1 - h])
            b.pn_row = torch.zeros(n, dtype=torch.long)
            b.pn_row[need] = torch.arange(need.shape[0])
        state = _face_states(a, b, topo[h], topo[1 - h], cross[h], touch[h])
        cs, cf = cross[h].nonzero(as_tuple=True)
        frac, corner = _crossing_fractions(
            a, b, cs, cf, (s, f, g) if h == 0 else (s, g, f), -1.0 if h == 0 else 1.0,
            res if volume else math.inf, kmax,
        )  # fmt: skip
        if volume:
            share = state.clamp_min(0).double()
            share[cs, cf] = frac
            ws, wf = share.nonzero(as_tuple=True)
            # Cone volumes from an origin amid the crossing faces: sub-triangle errors there are
            # weighted by x . n, small near the origin.
            cone = triple(a.tri[ws, wf].double() - origin[ws][:, None]) / 6.0
            vol[idx] += torch.zeros(n, dtype=torch.float64).index_add_(0, ws, cone * share[ws, wf])
        if depth:
            d = _vertex_depth(v[:, h], b, topo[h], state, cs, cf, corner)
            dep[idx] = torch.maximum(dep[idx], d)
    return vol, dep
