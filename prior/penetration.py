"""The one implementation of two-hand interpenetration (InterHandGen's APG energy, reference §6).

A vertex ``V_i`` of one hand counts as *inside* the other hand when, for its nearest vertex ``V_j``
on the other hand (with outward normal ``n_j``), ``n_j . normalize(V_j - V_i) > 0``. The energy
of a sample is, for each direction (left vertices in the right hand, right in the left)::

    scale * mean_{(i, j) inside, c in xyz} rho(V_i[c] - V_j[c]),   rho(r) = r^2 / (r^2 + rho^2)

summed over the two directions (GMoF applied element-wise on the 3 coordinates, as the original).
Minimising it pulls each penetrating vertex towards its nearest vertex on the other surface.

The work is split in two stages:

1. :func:`find_penetrations` (no gradient): nearest vertices and the normal test, giving a sparse
   list of penetrating pairs (:class:`PenetrationPairs`). Both directions and all samples are one
   batch: the hand axis is folded into the batch axis, so nothing is written twice.
2. :func:`energy_from_pairs` (differentiable): gathers only those pairs. Nearest-vertex indices
   are piecewise constant, so the gradient is the same as differentiating the full computation.

Modes of stage 1:

* ``"exact"``: every vertex of each hand is a query against all vertices of the other hand
  (chunked nearest-vertex search, :func:`nearest_index`), as the original.
* ``"fast"``: a vertex can only lie inside a closed surface if it lies inside that surface's
  axis-aligned bounding box, so only those vertices are queried (compacted per row, rows sorted by
  their number of candidates and processed in chunks padded to the chunk's own maximum); samples
  whose boxes do not overlap cost nothing. The nearest-vertex search over the other hand is still
  exhaustive, so for every vertex inside the other hand's box the result is identical to
  ``"exact"``. The two modes differ only for vertices *outside* the other hand's bounding box that
  the vertex-normal test nevertheless calls inside (false positives of that test near concave or
  sharp regions of a far-away surface; such vertices cannot be inside a closed mesh), which
  ``"exact"`` counts and ``"fast"`` does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from prior.hands import HandMeshes

__all__ = [
    "Mode", "PenetrationPairs", "farthest_point_subset", "vertex_normals", "nearest_index",
    "nearest_vertices", "inside_mask",
    "find_penetrations", "penetrations_from_points", "pair_normals", "depth_from_pairs",
    "energy_from_pairs", "energy_from_points", "penetration_energy", "penetration_depth",
    "winding_at_pairs",
]  # fmt: skip

Mode = Literal["fast", "exact"]
_CDIST_BUDGET = 2_000_000  # distances per nearest-index call (8 MB of float32: cache-sized chunks measured 10-20% faster than 32 MB)


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted vertex normals (outward for outward-wound faces).

    Args:
        verts: (B, V, 3).
        faces: (F, 3) long, counter-clockwise seen from outside.
    Returns:
        (B, V, 3) unit normals.
    """
    if verts.dim() != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must have shape (B, V, 3), got {tuple(verts.shape)}")
    if faces.dim() != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}")
    # Vertex-major (V, B, 3): gathers and index_add move whole rows of B*3 contiguous floats
    # (2.5x faster than batch-major at B = 256, docs/performance.md).
    vt = verts.transpose(0, 1).contiguous()
    v0, v1, v2 = (vt[faces[:, k]] for k in range(3))
    face_n = torch.linalg.cross(v1 - v0, v2 - v0)  # (F, B, 3); length = 2 * area: area weighting
    normals = vt.new_zeros(vt.shape)
    for k in range(3):
        normals = normals.index_add(0, faces[:, k], face_n)
    normals = normals.transpose(0, 1)
    return normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def farthest_point_subset(points: Tensor, k: int) -> Tensor:
    """Deterministic farthest-point sampling (starts at vertex 0): a spread-out vertex subset.

    Args:
        points: (V, 3), e.g. a rest mesh. k: subset size (<= V).
    Returns:
        (k,) long indices, sorted.
    """
    if not 1 <= k <= points.shape[0]:
        raise ValueError(f"subset size {k} must be in 1..{points.shape[0]}")
    chosen = torch.zeros(k, dtype=torch.long)
    dist = torch.full((points.shape[0],), float("inf"), dtype=points.dtype)
    for i in range(1, k):
        dist = torch.minimum(dist, (points - points[chosen[i - 1]]).norm(dim=-1))
        chosen[i] = dist.argmax()
    return chosen.sort().values


def pair_normals(verts: Tensor, faces: Tensor, subset: Tensor | None = None) -> Tensor:
    """Vertex normals of both hands in one call.

    Args:
        verts: (B, 2, V, 3). faces: (2, F, 3) per-side faces.
        subset: optional (S,) vertex indices; only their incident faces are used.
    Returns:
        (B, 2, V, 3) unit normals, or (B, 2, S, 3) at the subset.
    """
    b, _, v, _ = verts.shape
    if subset is not None:
        touch = torch.isin(faces, subset.to(faces.device)).any(-1).any(0)
        faces = faces[:, touch]
    offset = torch.tensor([0, v], device=faces.device).view(2, 1, 1)
    both = (faces + offset).reshape(-1, 3)
    normals = vertex_normals(verts.reshape(b, 2 * v, 3), both).view(b, 2, v, 3)
    return normals if subset is None else normals[:, :, subset]


_INT_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64}
_INDEX_BITS_MAX = {torch.float32: 12, torch.float64: 24}  # low mantissa bits the index may take


def nearest_index(query: Tensor, target: Tensor) -> Tensor:
    """(B, Q, 3), (B, V, 3) -> (B, Q) long index of each query's nearest target point.

    The squared distances come from ONE ``bmm`` of the lifted points ``[q, |q|^2, 1]`` and
    ``[-2t, 1, |t|^2]`` (the matrix-product form ``torch.cdist`` uses for sets this large, without
    its clamp and ``sqrt`` passes). The minimum and its index are then found together by an
    integer ``amin``: a non-negative float's bit pattern orders like the float, so the low
    ``ceil(log2 V)`` mantissa bits are replaced by the target index and the smallest key carries
    both (10 bits for 778 vertices). ``argmin`` over the last axis is a scalar loop in PyTorch on
    the CPU, ~10x slower than ``amin``: this made the whole search ~2x faster (docs/performance.md).
    The price: targets whose squared distances agree to within 2^-(23-10) relative (0.06 um at
    1 mm for float32) count as tied and the lower index wins, well below the float32 rounding of
    the distances themselves at hand scale. Callers centre the points (coordinates of a few cm
    keep the expansion precise in float32). Other dtypes or very large V fall back to ``argmin``.
    """
    return _nearest_lifted(_lift_query(query), _lift_target(target))


def _lift_query(points: Tensor) -> Tensor:
    """(B, Q, 3) -> (B, Q, 5) ``[q, |q|^2, 1]``."""
    return torch.cat([points, points.square().sum(-1, keepdim=True), points.new_ones(*points.shape[:2], 1)], -1)


def _lift_target(points: Tensor) -> Tensor:
    """(B, V, 3) -> (B, 5, V) ``[-2t, 1, |t|^2]`` transposed: ``lift_q @ lift_t = |q - t|^2``."""
    ones = points.new_ones(*points.shape[:2], 1)
    return torch.cat([-2.0 * points, ones, points.square().sum(-1, keepdim=True)], -1).transpose(1, 2)


def _nearest_lifted(lifted_q: Tensor, lifted_t: Tensor) -> Tensor:
    """:func:`nearest_index` on lifted points: (B, Q, 5), (B, 5, V) -> (B, Q) long."""
    v = lifted_t.shape[2]
    d2 = torch.bmm(lifted_q, lifted_t)  # (B, Q, V) squared distances
    bits = max(1, (v - 1).bit_length())
    itype = _INT_VIEW.get(d2.dtype)
    if itype is None or bits > _INDEX_BITS_MAX[d2.dtype]:
        return d2.argmin(-1)
    low = (1 << bits) - 1
    key = d2.view(itype)  # rounding can make a ~0 distance negative: its key is then the smallest
    key.bitwise_and_(~low).bitwise_or_(torch.arange(v, dtype=itype, device=key.device))
    return key.amin(-1).bitwise_and_(low).long()


def nearest_vertices(query: Tensor, target: Tensor, chunk: int = 512) -> tuple[Tensor, Tensor]:
    """Nearest target vertex of every query point (chunked :func:`nearest_index`).

    Args:
        query: (B, Q, 3).
        target: (B, V, 3).
        chunk: query points per search call.
    Returns:
        dist (B, Q) Euclidean distance (differentiable w.r.t. both inputs), idx (B, Q) long.
    """
    if query.dim() != 3 or target.dim() != 3 or query.shape[0] != target.shape[0]:
        raise ValueError(
            f"query (B, Q, 3) and target (B, V, 3) must share B, got {tuple(query.shape)} and "
            f"{tuple(target.shape)}"
        )
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    with torch.no_grad():
        q, t = query.detach(), target.detach()
        centre = t.mean(1, keepdim=True)
        q, t = q - centre, t - centre
        parts = [nearest_index(q[:, s : s + chunk], t) for s in range(0, q.shape[1], chunk)]
        idx = torch.cat(parts, dim=1) if parts else q.new_zeros(q.shape[:2], dtype=torch.long)
    nearest = target.gather(1, idx[..., None].expand(-1, -1, 3))
    return (query - nearest).norm(dim=-1), idx


def inside_mask(
    query: Tensor, target: Tensor, target_normals: Tensor, chunk: int = 512
) -> tuple[Tensor, Tensor]:
    """InterHandGen's normal test: which query points are inside the target surface.

    Args:
        query: (B, Q, 3).
        target: (B, V, 3) vertices of the other surface.
        target_normals: (B, V, 3) their outward unit normals.
        chunk: query points per search call.
    Returns:
        idx (B, Q) nearest target vertex, inside (B, Q) bool.
    """
    with torch.no_grad():
        _, idx = nearest_vertices(query.detach(), target.detach(), chunk)
        gather = idx[..., None].expand(-1, -1, 3)
        to_target = target.detach().gather(1, gather) - query.detach()
        n = target_normals.detach().gather(1, gather)
        inside = (n * to_target).sum(-1) > 0  # sign of n . normalize(V_j - V_i)
    return idx, inside


@dataclass(frozen=True)
class PenetrationPairs:
    """Sparse list of penetrating vertex pairs (P of them) for a batch of B samples.

    sample: (P,) sample index. side: (P,) hand of the query vertex (0: a left-hand vertex inside
    the right hand, 1: a right-hand vertex inside the left hand). query: (P,) vertex index in
    hand ``side``. target: (P,) its nearest vertex in hand ``1 - side``.
    """

    sample: Tensor
    side: Tensor
    query: Tensor
    target: Tensor
    batch_size: int

    def __len__(self) -> int:
        return self.sample.shape[0]

    def select(self, keep: Tensor) -> PenetrationPairs:
        """The pairs where ``keep`` (P,) bool is True."""
        return PenetrationPairs(self.sample[keep], self.side[keep], self.query[keep],
                                self.target[keep], self.batch_size)  # fmt: skip

    def samples_with_pairs(self) -> Tensor:
        """(B,) bool: which samples penetrate at all."""
        out = torch.zeros(self.batch_size, dtype=torch.bool, device=self.sample.device)
        out[self.sample] = True
        return out


def _as_verts_faces(meshes: HandMeshes | Tensor, faces: Tensor | None) -> tuple[Tensor, Tensor]:
    if isinstance(meshes, HandMeshes):
        return meshes.verts, meshes.faces
    if faces is None:
        raise ValueError("faces (2, F, 3) are required when passing raw verts")
    if meshes.dim() != 4 or meshes.shape[1] != 2 or meshes.shape[-1] != 3:
        raise ValueError(f"verts must have shape (B, 2, V, 3), got {tuple(meshes.shape)}")
    if faces.dim() != 3 or faces.shape[0] != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must have shape (2, F, 3), got {tuple(faces.shape)}")
    return meshes, faces


def _directions(points: Tensor, normals: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Fold the hand axis into the batch: row ``2b + a`` queries hand a against hand 1 - a.

    Returns query (2B, S, 3), target (2B, S, 3), target normals (2B, S, 3); centred per sample
    (translation-invariant, and smaller coordinates keep the search precise).
    """
    b, _, v, _ = points.shape
    points = points - points.mean(dim=(1, 2), keepdim=True)
    other = [1, 0]
    return (points.reshape(2 * b, v, 3), points[:, other].reshape(2 * b, v, 3),
            normals[:, other].reshape(2 * b, v, 3))  # fmt: skip


def _candidates(query: Tensor, target: Tensor, margin: float) -> Tensor:
    """(N, V) bool: query vertices inside the target's bounding box (+ margin)."""
    lo = target.amin(dim=1, keepdim=True) - margin
    hi = target.amax(dim=1, keepdim=True) + margin
    return ((query >= lo) & (query <= hi)).all(dim=-1)


def find_penetrations(
    meshes: HandMeshes | Tensor,
    faces: Tensor | None = None,
    mode: Mode = "fast",
    chunk: int = 512,
    margin: float = 0.0,
    vertex_subset: Tensor | None = None,
    max_queries: int = 0,
    closed_faces: Tensor | None = None,
) -> PenetrationPairs:
    """Penetrating vertex pairs in both directions (no gradient).

    Args:
        meshes: HandMeshes, or verts (B, 2, V, 3) with ``faces`` (2, F, 3).
        faces: per-side faces when ``meshes`` is a tensor.
        mode: "fast" (bounding-box culled, see the module doc) or "exact" (all vertices).
        chunk: query points per search call in "exact" mode.
        margin: metres added to the bounding boxes in "fast" mode.
        vertex_subset: optional (S,) long vertex indices: a coarse proxy where only those
            vertices are queried and searched (normals still from the full mesh). Returned
            indices refer to the full mesh. Coarser, so not equal to the full computation.
        max_queries: "fast" mode, > 0: a hand with more candidate vertices than this inside the
            other's box (gross overlap) is queried at an evenly strided subset of about this many
            of them (see :func:`penetrations_from_points`); 0: all candidates.
        closed_faces: (2, F', 3) capped faces: when given, a pair counts only if its query vertex
            is inside the other hand by the winding number (:func:`winding_at_pairs`); the
            vertex-normal test alone reads ~1.3 mm of depth on average on touching,
            non-penetrating generated pairs.
    Returns:
        PenetrationPairs.
    """
    verts, faces = _as_verts_faces(meshes, faces)
    with torch.no_grad():
        verts = verts.detach()
        normals = pair_normals(verts, faces, vertex_subset)
        points = verts if vertex_subset is None else verts[:, :, vertex_subset]
        pairs = penetrations_from_points(points, normals, mode, chunk, margin, max_queries)
    if vertex_subset is not None:
        pairs = PenetrationPairs(pairs.sample, pairs.side, vertex_subset[pairs.query],
                                 vertex_subset[pairs.target], pairs.batch_size)  # fmt: skip
    if closed_faces is not None and len(pairs):
        pairs = pairs.select(winding_at_pairs(verts, closed_faces, pairs) > 0.5)
    return pairs


def penetrations_from_points(
    points: Tensor, normals: Tensor, mode: Mode = "fast", chunk: int = 512, margin: float = 0.0,
    max_queries: int = 0,
) -> PenetrationPairs:  # fmt: skip
    """The normal test on given surface points (no gradient); see :func:`find_penetrations`.

    Args:
        points: (B, 2, S, 3) vertices of both hands. normals: (B, 2, S, 3) outward unit normals.
        mode, chunk, margin: see :func:`find_penetrations`.
        max_queries: "fast" mode only: rows with more candidates keep every ``ceil(n / max)``-th
            candidate (in vertex order), so a gross overlap costs at most about ``max_queries``
            queries per hand. For guidance, where the energy is a mean over pairs and a strided
            subset estimates it; measurements need 0 (all candidates).
    Returns:
        PenetrationPairs with indices into S.
    """
    if mode not in ("fast", "exact"):
        raise ValueError(f"unknown penetration mode {mode!r}; use 'fast' or 'exact'")
    if points.dim() != 4 or points.shape[1] != 2 or points.shape != normals.shape:
        raise ValueError(
            f"points and normals must both be (B, 2, S, 3), got {tuple(points.shape)} and "
            f"{tuple(normals.shape)}"
        )
    with torch.no_grad():
        query, target, target_n = _directions(points.detach(), normals.detach())
        if mode == "exact":
            idx, inside = inside_mask(query, target, target_n, chunk)
            row, qi = inside.nonzero(as_tuple=True)
            tj = idx[row, qi]
        else:
            cand = _candidates(query, target, margin)
            if max_queries > 0:
                cand = _strided(cand, max_queries)
            row, qi, tj = _fast_pairs(query, target, target_n, cand)
    return PenetrationPairs(row // 2, row % 2, qi, tj, points.shape[0])


def _strided(cand: Tensor, max_queries: int) -> Tensor:
    """(N, V) bool -> the same with rows of more than ``max_queries`` True thinned to every
    ``ceil(count / max_queries)``-th True."""
    counts = cand.sum(1, keepdim=True)
    stride = ((counts + max_queries - 1) // max_queries).clamp_min(1)
    rank = cand.cumsum(1) - 1
    return cand & (rank % stride == 0)


def _fast_pairs(
    query: Tensor, target: Tensor, normals: Tensor, cand: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Normal test on the candidate vertices only: rows sorted by candidate count, candidates
    compacted to the front of each row once, then chunked, each chunk cut to its own largest
    count. Returns (row, query idx, target idx) of hits."""
    counts = cand.sum(1)
    rows = counts.nonzero(as_tuple=True)[0]
    if rows.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=query.device)
        return empty, empty, empty
    rows = rows[torch.argsort(counts[rows], descending=True)]
    counts = counts[rows]
    v, widest = query.shape[1], int(counts[0])
    # Candidate vertex ids of each row, in vertex order, at the front (a scatter, not a sort).
    c = cand[rows]
    r_idx, v_idx = c.nonzero(as_tuple=True)
    order = torch.zeros(rows.numel(), widest, dtype=torch.long, device=query.device)
    order[r_idx, (c.cumsum(1) - 1)[r_idx, v_idx]] = v_idx
    q_all = query[rows[:, None], order]  # (R, widest, 3)
    lq_all, lt_all = _lift_query(q_all), _lift_target(target[rows])
    out_r, out_q, out_t = [], [], []
    start = 0
    while start < rows.numel():
        width = int(counts[start])
        stop = start + max(1, _CDIST_BUDGET // (width * v))
        sel, q = rows[start:stop], q_all[start:stop, :width]
        idx = _nearest_lifted(lq_all[start:stop, :width], lt_all[start:stop])  # (R, width)
        valid = torch.arange(width, device=query.device)[None] < counts[start:stop, None]
        nearest, nrm = target[sel[:, None], idx], normals[sel[:, None], idx]
        inside = ((nrm * (nearest - q)).sum(-1) > 0) & valid
        r, col = inside.nonzero(as_tuple=True)
        out_r.append(sel[r])
        out_q.append(order[start:stop][r, col])
        out_t.append(idx[r, col])
        start = stop
    return torch.cat(out_r), torch.cat(out_q), torch.cat(out_t)


def energy_from_pairs(
    verts: Tensor, pairs: PenetrationPairs, rho: float = 0.05, scale: float = 1000.0
) -> Tensor:
    """Differentiable energy of given pairs (see the module doc).

    Args:
        verts: (B, 2, V, 3), possibly requiring grad.
        pairs: from :func:`find_penetrations` on the same (detached) vertices.
        rho: GMoF scale in metres.
        scale: multiplier (1000 in the original).
    Returns:
        (B,) energy; exactly 0, with a zero gradient, for samples without pairs.
    """
    b = verts.shape[0]
    if pairs.batch_size != b:
        raise ValueError(f"pairs were found for batch {pairs.batch_size}, verts have batch {b}")
    vi = verts[pairs.sample, pairs.side, pairs.query]
    vj = verts[pairs.sample, 1 - pairs.side, pairs.target]
    return energy_from_points(vi, vj, pairs, rho, scale)


def energy_from_points(
    vi: Tensor, vj: Tensor, pairs: PenetrationPairs, rho: float = 0.05, scale: float = 1000.0
) -> Tensor:
    """:func:`energy_from_pairs` from the pairs' points themselves: vi (P, 3) the query vertices,
    vj (P, 3) their nearest vertices on the other hand (for callers that compute only those)."""
    b = pairs.batch_size
    sq = (vi - vj).square()
    robust = (sq / (sq + rho * rho)).sum(-1)  # (P,) summed over xyz
    group = pairs.sample * 2 + pairs.side
    sums = vi.new_zeros(2 * b).index_add(0, group, robust)
    counts = torch.bincount(group, minlength=2 * b).to(vi.dtype) * 3.0
    return scale * (sums / counts.clamp_min(1.0)).view(b, 2).sum(1)


def winding_at_pairs(
    verts: Tensor, faces: Tensor, pairs: PenetrationPairs, chunk: int = 128
) -> Tensor:
    """Generalised winding number of each pair's query vertex w.r.t. the other hand's surface.

    The vertex-normal test above has false positives wherever the other surface is concave or
    sharp at the vertex scale (a vertex in the crease between two fingers, or touching the other
    hand, is often "behind" its nearest vertex's normal while outside the surface); the winding
    number (~1 inside a closed surface, ~0 outside, Van Oosterom-Strackee solid angles) decides
    exactly. Evaluated per pair against all faces of the other hand, so its cost is linear in the
    number of pairs the normal test found (~F = 1.5k solid angles each), not in the mesh size
    squared.

    Args:
        verts: (B, 2, V, 3) both hands. faces: (2, F, 3) long, per side, CLOSED and outward
            oriented (real MANO is open at the wrist: cap it, :func:`prior.topology.close_holes`).
        pairs: from :func:`find_penetrations` on these vertices.
        chunk: pairs per block ((chunk, F, 3, 3) floats at a time).
    Returns:
        (P,) winding numbers (not differentiable); ``> 0.5``: the query vertex is inside.
    """
    if verts.dim() != 4 or verts.shape[1] != 2 or verts.shape[-1] != 3:
        raise ValueError(f"verts must have shape (B, 2, V, 3), got {tuple(verts.shape)}")
    if faces.dim() != 3 or faces.shape[0] != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must have shape (2, F, 3), got {tuple(faces.shape)}")
    out = []
    with torch.no_grad():
        v = verts.detach()
        for s in range(0, len(pairs), chunk):
            sample, other = pairs.sample[s : s + chunk], 1 - pairs.side[s : s + chunk]
            q = v[sample, 1 - other, pairs.query[s : s + chunk]]  # (p, 3)
            tri = v[sample[:, None, None], other[:, None, None], faces[other]]  # (p, F, 3, 3)
            a, b, c = (tri - q[:, None, None]).unbind(2)  # (p, F, 3) each, relative to the query
            la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
            det = (a * torch.linalg.cross(b, c)).sum(-1)
            den = (la * lb * lc + (a * b).sum(-1) * lc + (a * c).sum(-1) * lb
                   + (b * c).sum(-1) * la)  # fmt: skip
            out.append(torch.atan2(det, den).sum(-1) / (2.0 * torch.pi))
    return torch.cat(out) if out else v.new_zeros(0)


def penetration_energy(
    meshes: HandMeshes | Tensor,
    faces: Tensor | None = None,
    rho: float = 0.05,
    scale: float = 1000.0,
    mode: Mode = "fast",
    chunk: int = 512,
) -> Tensor:
    """Two-direction GMoF penetration energy of each sample.

    Args:
        meshes: HandMeshes, or verts (B, 2, V, 3) with ``faces`` (2, F, 3).
        faces: per-side faces when ``meshes`` is a tensor.
        rho: GMoF scale (metres). scale: multiplier (1000 as the original).
        mode: "fast" or "exact" (see the module doc). chunk: search chunk ("exact").
    Returns:
        (B,) energy, differentiable w.r.t. the vertices.
    """
    verts, faces = _as_verts_faces(meshes, faces)
    pairs = find_penetrations(verts, faces, mode=mode, chunk=chunk)
    return energy_from_pairs(verts, pairs, rho=rho, scale=scale)


def penetration_depth(
    meshes: HandMeshes | Tensor,
    faces: Tensor | None = None,
    mode: Mode = "fast",
    chunk: int = 512,
    vertex_subset: Tensor | None = None,
    closed_faces: Tensor | None = None,
) -> Tensor:
    """Largest distance of an inside vertex to its nearest vertex of the other hand.

    Args:
        meshes: HandMeshes, or verts (B, 2, V, 3) with ``faces`` (2, F, 3).
        mode, chunk, vertex_subset, closed_faces: see :func:`find_penetrations`.
    Returns:
        (B,) metres, 0 where nothing penetrates (not differentiable). The nearest vertex is up to
        about one edge farther than the surface, so this bounds the exact depth from above.
    """
    verts, faces = _as_verts_faces(meshes, faces)
    pairs = find_penetrations(verts, faces, mode=mode, chunk=chunk, vertex_subset=vertex_subset,
                              closed_faces=closed_faces)  # fmt: skip
    return depth_from_pairs(verts, pairs)


def depth_from_pairs(verts: Tensor, pairs: PenetrationPairs) -> Tensor:
    """(B, 2, V, 3) vertices (or points the pairs index) -> (B,) largest pair distance, metres."""
    with torch.no_grad():
        v = verts.detach()
        d = v[pairs.sample, pairs.side, pairs.query] - v[pairs.sample, 1 - pairs.side, pairs.target]
        return v.new_zeros(v.shape[0]).scatter_reduce(0, pairs.sample, d.norm(dim=-1), "amax")
