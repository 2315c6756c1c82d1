"""Geometry of the stand-in hand: skeleton, signed distance field, and a 778-vertex closed mesh.

Right hand; fingers along +x, back of the hand +y, thumb on the -z side. The surface is a smooth
implicit hand (rounded palm slab, thenar eminence, round-cone phalanges; each finger blends into
the palm but not into its neighbours) meshed with marching cubes, decimated by quadric error,
then evened out with fold-free shortest-edge collapses projected back onto the surface.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

NUM_VERTS = 778
TIP_IDS = (744, 320, 443, 554, 671)  # thumb, index, middle, ring, pinky
PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])


# Finger name -> (MANO joints, MCP (x, z), splay angle in the x-z plane, segment lengths, radius).
_FINGERS = {
    "index": ((1, 2, 3), (0.086, -0.024), -0.10, (0.039, 0.023, 0.021), 0.0085),
    "middle": ((4, 5, 6), (0.090, -0.003), 0.00, (0.044, 0.027, 0.023), 0.0088),
    "ring": ((10, 11, 12), (0.085, 0.016), 0.08, (0.041, 0.026, 0.022), 0.0083),
    "pinky": ((7, 8, 9), (0.076, 0.033), 0.17, (0.032, 0.019, 0.020), 0.0074),
}
_THUMB_CMC = np.array([0.022, -0.007, -0.021])
_THUMB_DIRS = np.array([[0.70, -0.30, -0.65], [0.80, -0.26, -0.54], [0.88, -0.20, -0.42]])
_THUMB_LENGTHS = (0.042, 0.032, 0.027)
_THUMB_RADIUS = 0.0100
_TIP_FINGER = ("thumb", "index", "middle", "ring", "pinky")


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def skeleton() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rest skeleton of the right hand.

    Returns:
        joints (16, 3) MANO order, tips (5, 3) (surface tip points, thumb..pinky),
        radii (16,) phalanx radius at each joint (0 for the wrist).
    """
    joints = np.zeros((16, 3))
    radii = np.zeros(16)
    tips = np.zeros((5, 3))
    for name, (chain, (x, z), angle, lengths, radius) in _FINGERS.items():
        d = np.array([np.cos(angle), 0.0, np.sin(angle)])
        p = np.array([x, 0.0, z])
        for k, j in enumerate(chain):
            joints[j] = p
            radii[j] = radius * (1.0 - 0.08 * k)
            p = p + lengths[k] * d
        tips[_TIP_FINGER.index(name)] = p
    p = _THUMB_CMC.copy()
    for k, j in enumerate((13, 14, 15)):
        joints[j] = p
        radii[j] = _THUMB_RADIUS * (1.0 - 0.06 * k)
        p = p + _THUMB_LENGTHS[k] * unit(_THUMB_DIRS[k])
    tips[0] = p
    return joints, tips, radii


def phalanx_segments(joints: np.ndarray, tips: np.ndarray, radii: np.ndarray):
    """Phalanx segments (owner joint, start, end, r0, r1); distal ends stop one radius short."""
    segs = []
    for name, chain in (*((n, f[0]) for n, f in _FINGERS.items()), ("thumb", (13, 14, 15))):
        for k, j in enumerate(chain):
            a = joints[j]
            r0 = radii[j]
            if k + 1 < len(chain):
                b, r1 = joints[chain[k + 1]], radii[chain[k + 1]]
            else:
                r1 = 0.92 * r0
                tip = tips[_TIP_FINGER.index(name)]
                b = tip - r1 * unit(tip - a)
            segs.append((j, a, b, r0, r1))
    return segs


def segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of points (N,3) to segment ab and the projection parameter in [0, 1]."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1), t


def palm_sdf(p: np.ndarray) -> np.ndarray:
    """Rounded, wrist-tapered palm slab (approximate signed distance)."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    hz = 0.027 + 0.011 * np.clip((x + 0.015) / 0.065, 0.0, 1.0)  # wrist narrower than knuckles
    zc = 0.005 + 0.002 * np.clip(x / 0.08, 0.0, 1.0)
    q = np.stack([np.abs(x - 0.036) - 0.052, np.abs(y) - 0.0125, np.abs(z - zc) - hz], axis=1)
    r = 0.010
    q = q + r
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
    return outside + np.minimum(q.max(axis=1), 0.0) - r


def _ellipsoid_sdf(p: np.ndarray, c: np.ndarray, radii: np.ndarray) -> np.ndarray:
    k = np.linalg.norm((p - c) / radii, axis=1)
    return (k - 1.0) * radii.min()


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def hand_sdf(p: np.ndarray) -> np.ndarray:
    """Signed distance (approximate, metres) of points (N, 3) to the right stand-in hand."""
    joints, tips, radii = skeleton()
    palm = palm_sdf(p)
    thenar = _ellipsoid_sdf(p, np.array([0.030, -0.006, -0.016]), np.array([0.032, 0.011, 0.016]))
    palm = _smin(palm, thenar, 0.006)
    by_finger: dict[int, np.ndarray] = {}
    for j, a, b, r0, r1 in phalanx_segments(joints, tips, radii):
        d, t = segment_distance(p, a, b)
        sd = d - (r0 + (r1 - r0) * t)
        finger = j if PARENTS[j] == 0 else None
        root = j
        while PARENTS[root] != 0:
            root = PARENTS[root]
        by_finger[root] = sd if finger is not None else np.minimum(by_finger[root], sd)
    # Each finger blends into the palm, but fingers never blend into each other.
    return np.min(np.stack([_smin(palm, f, 0.007) for f in by_finger.values()]), axis=0)


def _marching_cubes(voxel: float) -> tuple[np.ndarray, np.ndarray]:
    from skimage.measure import marching_cubes  # noqa: PLC0415

    lo, hi = np.array([-0.035, -0.05, -0.105]), np.array([0.21, 0.04, 0.065])
    axes = [np.arange(lo[i], hi[i] + voxel, voxel) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    sdf = hand_sdf(grid).reshape(len(axes[0]), len(axes[1]), len(axes[2]))
    verts, faces, _, _ = marching_cubes(sdf, level=0.0, spacing=(voxel,) * 3)
    verts = verts + lo
    # Orient the faces so normals point out of the hand (positive signed volume).
    tri = verts[faces]
    signed_volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    return verts, (faces if signed_volume > 0 else faces[:, ::-1]).copy()


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


def _collapse_to(
    verts: np.ndarray, faces: np.ndarray, target: int
) -> tuple[np.ndarray, np.ndarray]:
    """Edge collapses (shortest first, link condition kept) or splits until ``target`` vertices."""
    verts, faces = verts.copy(), faces.copy()
    while len(verts) != target:
        edges = mesh_edges(faces)
        lengths = np.linalg.norm(verts[edges[:, 0]] - verts[edges[:, 1]], axis=1)
        if len(verts) < target:  # split the longest edge at its midpoint
            a, b = edges[np.argmax(lengths)]
            m = len(verts)
            verts = np.vstack([verts, 0.5 * (verts[a] + verts[b])])
            new_faces = []
            for f in faces:
                fl = list(f)
                if a in fl and b in fl:
                    i = fl.index(a)
                    if fl[(i + 1) % 3] == b:
                        c = fl[(i + 2) % 3]
                        new_faces += [[a, m, c], [m, b, c]]
                    else:
                        c = fl[(i + 1) % 3]
                        new_faces += [[b, m, c], [m, a, c]]
                else:
                    new_faces.append(fl)
            faces = np.array(new_faces)
            continue
        for e in np.argsort(lengths):
            a, b = edges[e]
            nbr_a = set(faces[(faces == a).any(1)].ravel()) - {a}
            nbr_b = set(faces[(faces == b).any(1)].ravel()) - {b}
            if len(nbr_a & nbr_b) != 2:  # link condition: collapse keeps a manifold
                continue
            verts[a] = 0.5 * (verts[a] + verts[b])
            faces = faces[~((faces == a).any(1) & (faces == b).any(1))]
            faces[faces == b] = a
            verts = np.delete(verts, b, axis=0)
            faces[faces > b] -= 1
            break
        else:
            raise RuntimeError("stand-in mesh: no collapsible edge left")
    return verts, faces


def _project_to_surface(p: np.ndarray, iters: int = 3, h: float = 1e-4) -> np.ndarray:
    """Move points (N, 3) onto the zero level set of :func:`hand_sdf` (Newton steps)."""
    for _ in range(iters):
        d = hand_sdf(p)
        grad = np.stack(
            [(hand_sdf(p + h * e) - hand_sdf(p - h * e)) / (2 * h) for e in np.eye(3)], axis=1
        )
        p = p - (d / np.maximum((grad**2).sum(1), 1e-12))[:, None] * grad
    return p


def _collapse_flips(verts, faces, vert_faces, a: int, b: int) -> bool:
    """Would moving a and b to their midpoint flip (or degenerate) a surviving face?"""
    mid = 0.5 * (verts[a] + verts[b])
    around = {fi for fi in vert_faces[a] + vert_faces[b]}
    for fi in around:
        f = faces[fi]
        if a in f and b in f:
            continue  # removed by the collapse
        tri = verts[f]
        new = np.where(((f == a) | (f == b))[:, None], mid, tri)
        n_old = np.cross(tri[1] - tri[0], tri[2] - tri[0])
        n_new = np.cross(new[1] - new[0], new[2] - new[0])
        if n_old @ n_new <= 0.2 * np.linalg.norm(n_old) * np.linalg.norm(n_new):
            return True
    return False


def _collapse_pass(verts: np.ndarray, faces: np.ndarray, budget: int):
    """Collapse up to ``budget`` short, mutually independent edges (link condition kept)."""
    edges = mesh_edges(faces)
    lengths = np.linalg.norm(verts[edges[:, 0]] - verts[edges[:, 1]], axis=1)
    nbrs = [set() for _ in range(len(verts))]
    for a, b in edges:
        nbrs[a].add(b)
        nbrs[b].add(a)
    vert_faces = [[] for _ in range(len(verts))]
    for fi, f in enumerate(faces):
        for k in f:
            vert_faces[k].append(fi)
    locked = np.zeros(len(verts), bool)
    merge = {}
    for e in np.argsort(lengths):
        if len(merge) >= budget:
            break
        a, b = edges[e]
        if locked[a] or locked[b] or len(nbrs[a] & nbrs[b]) != 2:
            continue
        if _collapse_flips(verts, faces, vert_faces, a, b):
            continue
        merge[b] = a
        locked[list(nbrs[a] | nbrs[b] | {a, b})] = True
    src = np.array(list(merge.keys()), dtype=np.int64)
    dst = np.array(list(merge.values()), dtype=np.int64)
    verts = verts.copy()
    verts[dst] = 0.5 * (verts[dst] + verts[src])
    remap = np.arange(len(verts))
    remap[src] = dst
    faces = remap[faces]
    faces = faces[
        (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    ]
    keep = np.ones(len(verts), bool)
    keep[src] = False
    index = np.cumsum(keep) - 1
    return verts[keep], index[faces]


def build_mesh() -> tuple[np.ndarray, np.ndarray]:
    """Closed genus-0 hand surface with exactly 778 fairly uniform vertices."""
    import fast_simplification  # noqa: PLC0415

    verts, faces = _marching_cubes(voxel=0.0012)
    # Quadric decimation keeps the shape; shortest-edge collapses then even out the triangles
    # (quadric meshes leave long slivers along the fingers, which bend badly at the joints).
    reduction = 1.0 - 8000 / len(faces)
    verts, faces = fast_simplification.simplify(verts, faces, target_reduction=reduction, agg=3)
    verts, faces = np.asarray(verts, float), np.asarray(faces, np.int64)
    while len(verts) > NUM_VERTS + 20:
        budget = max(1, min(len(verts) // 8, len(verts) - NUM_VERTS - 20))
        verts, faces = _collapse_pass(verts, faces, budget)
        verts = _project_to_surface(verts)
    verts, faces = _collapse_to(verts, faces, NUM_VERTS)
    walk = adjacency_walk(faces, len(verts))
    flipped = _flipped_faces(verts, faces)
    for _ in range(5):  # relax towards neighbours, then back onto the surface
        relaxed = _project_to_surface(0.5 * verts + 0.5 * (walk @ verts))
        now = _flipped_faces(relaxed, faces)
        if now > flipped:
            break  # relaxation started to fold triangles: keep the previous state
        verts, flipped = relaxed, now
    return verts, faces


def _flipped_faces(verts: np.ndarray, faces: np.ndarray, h: float = 1e-4) -> int:
    """Faces whose normal opposes the SDF gradient (a fold; the field is approximate in crevices)."""
    tri = verts[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    c = tri.mean(1)
    grad = np.stack([(hand_sdf(c + h * e) - hand_sdf(c - h * e)) / (2 * h) for e in np.eye(3)], 1)
    return int((np.einsum("ij,ij->i", normal, grad) <= 0).sum())


def adjacency_walk(faces: np.ndarray, n: int) -> sparse.csr_matrix:
    e = mesh_edges(faces)
    a = sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    a = (a + a.T).tocsr()
    return sparse.diags(1.0 / np.asarray(a.sum(1)).ravel()) @ a
