"""Geometry kernels of the penetration metrics: winding numbers, distances, triangle tests.

All kernels are batched over samples (leading dimension ``b``) and work in the input dtype;
callers centre coordinates near the region they query, which keeps float32 accurate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Prepared:
    """Per-face constants of b closed meshes, for fast winding numbers and distance bounds."""

    tri: Tensor  # (b, F, 3, 3) triangle corners
    mat: Tensor  # (b, 3, 4F) columns t0, t1, t2, n (n = sum of corner cross products)
    sq: Tensor  # (b, 3, F) |t0|^2, |t1|^2, |t2|^2
    dots: Tensor  # (b, 3, F) t0.t1, t0.t2, t1.t2
    det: Tensor  # (b, F) det(t0, t1, t2) = 6 x signed volume of the cone from the origin
    cent: Tensor  # (b, F, 3) bounding-sphere centre (centroid)
    rad: Tensor  # (b, F) bounding-sphere radius
    plane: Tensor  # (b, 4, F) unit normal and offset: plane distance is |[q, -1] . plane|

    def take(self, idx: Tensor | int) -> Prepared:
        """The samples ``idx`` (an index tensor, or one int kept as a batch of one)."""
        if isinstance(idx, int):
            idx = torch.tensor([idx])
        return Prepared(*(getattr(self, k)[idx] for k in self.__dataclass_fields__))


def prepare(verts: Tensor, faces: Tensor) -> Prepared:
    """Per-face constants of meshes verts (b, V, 3) with closed faces (F, 3)."""
    tri = verts[:, faces]
    t0, t1, t2 = tri.unbind(2)
    n = torch.cross(t0, t1, dim=-1) + torch.cross(t1, t2, dim=-1) + torch.cross(t2, t0, dim=-1)
    mat = torch.cat([t0, t1, t2, n], dim=1).transpose(1, 2).contiguous()
    cent = tri.mean(2)
    nhat = torch.nn.functional.normalize(torch.cross(t1 - t0, t2 - t0, dim=-1), dim=-1)
    return Prepared(
        tri=tri,
        mat=mat,
        sq=torch.stack([(t0 * t0).sum(-1), (t1 * t1).sum(-1), (t2 * t2).sum(-1)], 1),
        dots=torch.stack([(t0 * t1).sum(-1), (t0 * t2).sum(-1), (t1 * t2).sum(-1)], 1),
        det=(t0 * torch.cross(t1, t2, dim=-1)).sum(-1),
        cent=cent,
        rad=(tri - cent[:, :, None]).norm(dim=-1).amax(-1),
        plane=torch.cat([nhat, (nhat * t0).sum(-1, keepdim=True)], -1).transpose(1, 2).contiguous(),
    )


def triple(tri: Tensor) -> Tensor:
    """det(t0, t1, t2) of triangles tri (..., 3, 3): 6 x the signed cone volume from the origin."""
    t0, t1, t2 = tri.unbind(-2)
    return (t0 * torch.cross(t1, t2, dim=-1)).sum(-1)


def winding(q: Tensor, p: Prepared, chunk: int = 128) -> Tensor:
    """Winding numbers of q (b, Q, 3) w.r.t. prepared meshes -> (b, Q).

    Van Oosterom-Strackee solid angles with every dot product expanded around the origin, so
    the (b, Q, F) work is one batched matmul plus elementwise ops.
    """
    nf = p.det.shape[-1]
    out = []
    for s in range(0, q.shape[1], chunk):
        qq = q[:, s : s + chunk]
        q0, q1, q2, qn = torch.bmm(qq, p.mat).split(nf, dim=-1)
        n2 = (qq * qq).sum(-1, keepdim=True)
        la = (p.sq[:, None, 0] - 2 * q0 + n2).clamp_min_(0).sqrt_()
        lb = (p.sq[:, None, 1] - 2 * q1 + n2).clamp_min_(0).sqrt_()
        lc = (p.sq[:, None, 2] - 2 * q2 + n2).clamp_min_(0).sqrt_()
        den = la * lb * lc
        den += (p.dots[:, None, 0] - q0 - q1 + n2) * lc
        den += (p.dots[:, None, 1] - q0 - q2 + n2) * lb
        den += (p.dots[:, None, 2] - q1 - q2 + n2) * la
        out.append(torch.atan2(p.det[:, None] - qn, den).sum(-1))
    return torch.cat(out, dim=1) / (2 * math.pi)


def dist_lb(q: Tensor, p: Prepared, chunk: int = 128) -> Tensor:
    """Lower bound of the distance from q (b, Q, 3) to the surface -> (b, Q).

    Per face, the larger of the bounding-sphere bound and the distance to the face's plane.
    """
    out = []
    for s in range(0, q.shape[1], chunk):
        qq = q[:, s : s + chunk]
        d = torch.cdist(qq, p.cent) - p.rad[:, None]
        hq = torch.cat([qq, -torch.ones_like(qq[..., :1])], -1)
        d = torch.maximum(d, torch.bmm(hq, p.plane).abs_())
        out.append(d.amin(-1))
    return torch.cat(out, dim=1)


def point_triangle_dist(p: Tensor, tri: Tensor) -> Tensor:
    """Exact distance of points p (..., 3) to triangles tri (..., 3, 3) (broadcast) -> (...)."""
    a, b, c = tri.unbind(-2)
    nrm = torch.cross(b - a, c - a, dim=-1)
    nn2 = (nrm * nrm).sum(-1).clamp_min(1e-30)
    inside = None
    best = None
    for u, v in ((a, b), (b, c), (c, a)):
        e, w = v - u, p - u
        side = (torch.cross(e, w, dim=-1) * nrm).sum(-1) >= 0
        inside = side if inside is None else inside & side
        t = ((w * e).sum(-1) / (e * e).sum(-1).clamp_min(1e-30)).clamp(0, 1)
        d = (w - t[..., None] * e).square().sum(-1)
        best = d if best is None else torch.minimum(best, d)
    plane = ((p - a) * nrm).sum(-1).square() / nn2
    return torch.where(inside, torch.minimum(best, plane), best).sqrt()


def point_surface_dist(q: Tensor, tri: Tensor, chunk: int = 256) -> Tensor:
    """Exact distance from points q (Q, 3) to the surface of triangles tri (F, 3, 3) -> (Q,)."""
    out = [
        point_triangle_dist(q[s : s + chunk, None], tri[None]).amin(-1)
        for s in range(0, q.shape[0], chunk)
    ]
    return torch.cat(out) if out else q.new_zeros(0)


def triangles_intersect(t1: Tensor, t2: Tensor, tol: float = 1e-7) -> Tensor:
    """Whether triangle pairs t1, t2 (N, 3, 3) intersect (or come within about ``tol``) -> (N,).

    Separating-axis test on the two normals and the nine edge cross products. Conservative:
    coplanar overlapping or barely touching pairs count as intersecting; a separation is only
    accepted when it exceeds ``tol`` times the axis length.
    """
    o = t1[:, :1]
    a, b = t1 - o, t2 - o
    ea = a.roll(-1, 1) - a  # (N, 3, 3) edges
    eb = b.roll(-1, 1) - b
    axes = torch.cat(
        [
            torch.cross(ea[:, 0], ea[:, 1], dim=-1)[:, None],
            torch.cross(eb[:, 0], eb[:, 1], dim=-1)[:, None],
            torch.cross(
                ea[:, :, None].expand(-1, 3, 3, 3), eb[:, None].expand(-1, 3, 3, 3), dim=-1
            ).reshape(-1, 9, 3),
        ],
        1,
    )  # (N, 11, 3)
    pa = torch.bmm(axes, a.transpose(1, 2))  # (N, 11, 3)
    pb = torch.bmm(axes, b.transpose(1, 2))
    margin = tol * axes.norm(dim=-1)
    sep = (pa.amax(-1) < pb.amin(-1) - margin) | (pb.amax(-1) < pa.amin(-1) - margin)
    return ~sep.any(-1)


def by_sample(
    sid: Tensor, nb: int, fn: Callable[[Tensor, Tensor, Tensor], Tensor], budget: int = 1 << 14
) -> Tensor:
    """Run a per-sample batched kernel on a flat list of items grouped by sample.

    Items are sorted by sample; samples with similar item counts are padded together into
    ``(g, Qmax)`` index blocks of at most about ``budget`` items.

    Args:
        sid: (N,) long sample id of every item, in [0, nb).
        nb: number of samples.
        fn: ``fn(samples (g,), items (g, Qmax) long, valid (g, Qmax) bool) -> (g, Qmax, ...)``.
        budget: padded items per call.
    Returns:
        (N, ...) results in the order of ``sid``.
    """
    order = torch.argsort(sid, stable=True)
    counts = torch.bincount(sid, minlength=nb)
    starts = torch.cumsum(counts, 0) - counts
    samples = torch.nonzero(counts).squeeze(1)
    samples = samples[torch.argsort(counts[samples], stable=True)]
    result: Tensor | None = None
    i = 0
    cnt = counts[samples].tolist()
    while i < len(cnt):
        qmax, j = cnt[i], i + 1
        while j < len(cnt) and cnt[j] * (j - i + 1) <= max(budget, cnt[j]):
            qmax, j = cnt[j], j + 1
        grp = samples[i:j]
        ar = torch.arange(qmax)
        valid = ar[None] < counts[grp][:, None]
        pos = (starts[grp][:, None] + ar[None]).clamp_max(sid.shape[0] - 1)
        items = order[pos]
        out = fn(grp, items, valid)
        if result is None:
            result = out.new_empty((sid.shape[0], *out.shape[2:]))
        result[items[valid]] = out[valid]
        i = j
    if result is None:
        return torch.zeros(0)
    return result


def winding_numbers(query: Tensor, verts: Tensor, faces: Tensor, chunk: int = 128) -> Tensor:
    """Generalized winding numbers of query points w.r.t. a closed triangle mesh.

    About 1 inside and 0 outside for a closed outward-oriented mesh (-1 inside if inside-out).
    Computed in the input dtype after centring on the mesh.

    Args:
        query: (B, Q, 3) points. verts: (B, V, 3) mesh vertices. faces: (F, 3) long, closed
            (use :func:`eval.mesh_topology.close_holes` for open meshes).
        chunk: query points per block; memory is about ``B * chunk * F * 40`` bytes.
    Returns:
        (B, Q) winding numbers.
    """
    if query.dim() != 3 or verts.dim() != 3 or query.shape[0] != verts.shape[0]:
        raise ValueError(
            f"query (B, Q, 3) and verts (B, V, 3) expected, got {tuple(query.shape)}, {tuple(verts.shape)}"
        )
    center = verts.detach().mean(1, keepdim=True)
    return winding(query - center, prepare(verts - center, faces), chunk)


def closest_feature(p: Tensor, tri: Tensor) -> tuple[Tensor, Tensor]:
    """Closest point of triangles tri (N, 3, 3) to points p (N, 3), and its feature.

    Returns ``(closest (N, 3), feature (N,) long)`` with features 0, 1, 2 = corners a, b, c;
    3, 4, 5 = edges ab, bc, ca; 6 = interior (Ericson's region tests).
    """
    a, b, c = tri.unbind(1)
    ab, ac, ap, bp, cp = b - a, c - a, p - a, p - b, p - c
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    vc, vb, va = d1 * d4 - d3 * d2, d5 * d2 - d1 * d6, d3 * d6 - d5 * d4
    tiny = 1e-30
    t_ab = d1 / (d1 - d3).clamp_min(tiny)
    t_ac = d2 / (d2 - d6).clamp_min(tiny)
    t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6)).clamp_min(tiny)
    den = (va + vb + vc).clamp_min(tiny)
    v, w = vb / den, vc / den
    closest = a + v[:, None] * ab + w[:, None] * ac
    feat = torch.full_like(d1, 6, dtype=torch.long)
    conds = [
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), 4, b + t_bc[:, None] * (c - b)),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), 5, a + t_ac[:, None] * ac),
        ((d6 >= 0) & (d5 <= d6), 2, c),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), 3, a + t_ab[:, None] * ab),
        ((d3 >= 0) & (d4 <= d3), 1, b),
        ((d1 <= 0) & (d2 <= 0), 0, a),
    ]  # applied in reverse priority: the last true condition wins, as in Ericson's order
    for cond, code, point in conds:
        feat = torch.where(cond, code, feat)
        closest = torch.where(cond[:, None], point, closest)
    return closest, feat


def nearest_triangle(p: Tensor, tri: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest of N triangles tri (k, N, 3, 3) to each point p (k, m, 3), by expanded dot products.

    Squared distances come from four matmul columns (p.a, p.ab, p.ac, p.n) and Ericson's
    quantities, with branch-free arithmetic (clamps, minima, signs) only, so the (k, m, N) work
    is a few dozen fast elementwise ops. Accurate to about ``|p|^2 * eps`` in squared distance:
    centre p and tri near p, pick the triangle with it, then measure exactly. Degenerate
    (zero-area) triangles must be masked by the caller.

    Returns:
        ``(d2 (k, m) approximate squared distance, index (k, m) long)``.
    """
    a, b, c = tri.unbind(2)  # (k, N, 3)
    ab, ac = b - a, c - a
    nrm = torch.nn.functional.normalize(torch.cross(ab, ac, dim=-1), dim=-1)
    cols = torch.cat([a, ab, ac, nrm], 1).transpose(1, 2)  # (k, 3, 4N)
    nn = tri.shape[1]
    pa, pab, pac, pn = torch.bmm(p, cols).split(nn, dim=-1)  # (k, m, N)
    aa = (ab * ab).sum(-1)[:, None].clamp_min(1e-30)
    ab_ac = (ab * ac).sum(-1)[:, None]
    cc = (ac * ac).sum(-1)[:, None].clamp_min(1e-30)
    bc2 = (aa - 2 * ab_ac + cc).clamp_min(1e-30)  # |c - b|^2
    ap2 = (p * p).sum(-1, keepdim=True) - 2 * pa + (a * a).sum(-1)[:, None]
    d1 = pab - (a * ab).sum(-1)[:, None]  # ab . (p - a)
    d2 = pac - (a * ac).sum(-1)[:, None]  # ac . (p - a)
    d3, d4, d5, d6 = d1 - aa, d2 - ab_ac, d1 - ab_ac, d2 - cc
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    inside = torch.minimum(torch.minimum(va, vb), vc).sign_().clamp_min_(0)  # 1 inside
    plane = (pn - (a * nrm).sum(-1)[:, None]).square_()

    def seg(w2: Tensor, we: Tensor, e2: Tensor) -> Tensor:  # |w - t e|^2, t = clamp(w.e/|e|^2)
        q = we / e2
        t = q.clamp(0, 1)
        return w2 - e2 * t * (2 * q - t)

    edges = torch.minimum(seg(ap2, d1, aa), seg(ap2, d2, cc))
    bp2 = ap2 - 2 * d1 + aa
    edges = torch.minimum(edges, seg(bp2, d4 - d3, bc2))
    dist2 = edges - inside * (edges - plane)
    return dist2.min(-1)
