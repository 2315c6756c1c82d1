"""Invariants of the built-in stand-in hand model (geometry, skinning, bases, mirror)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from prior.hands import TwoHands
from prior.mano_assets import MANOFileError, load_mano_arrays
from prior.standin import ASSET, load_standin, reference_env

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def arrays():
    return load_mano_arrays(None)[0]


def _edges(faces):
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.sort(e, axis=1)


def test_closed_consistently_oriented_surface(arrays):
    f = arrays["right"]["f"]
    assert arrays["right"]["v_template"].shape == (778, 3) and f.shape == (1552, 3)
    _, counts = np.unique(_edges(f), axis=0, return_counts=True)
    assert (counts == 2).all(), "every edge must be shared by exactly two faces"
    # Consistent orientation: each directed edge appears once (its twin runs the other way).
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)
    nv, ne, nf = len(arrays["right"]["v_template"]), len(counts), len(f)
    assert nv - ne + nf == 2  # genus 0


def test_outward_normals(arrays):
    for side in ("right", "left"):
        v, f = arrays[side]["v_template"], arrays[side]["f"]
        tri = v[f]
        volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
        assert 150e-6 < volume < 500e-6, f"{side} volume {volume * 1e6:.0f} cm3 (positive = outward)"
        # Points pushed slightly along the face normals are outside (winding number ~0).
        centre = tri.mean(1)[::10]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[::10]
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        assert (np.abs(_winding(centre + 5e-4 * normal, v, f)) < 0.3).mean() > 0.99
        assert (_winding(centre - 5e-4 * normal, v, f) > 0.7).mean() > 0.97
        # Vertex normals (what the penetration tests use) all point out of the hand.
        fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        vn = np.zeros_like(v)
        for k in range(3):
            np.add.at(vn, f[:, k], fn)
        vn /= np.linalg.norm(vn, axis=1, keepdims=True)
        assert (np.abs(_winding(v + 1e-3 * vn, v, f)) < 0.3).mean() > 0.995


def _winding(points, v, f):
    """Generalised winding number of points (Q,3) w.r.t. the mesh (Van Oosterom-Strackee)."""
    a, b, c = (v[f[:, k]][None] - points[:, None] for k in range(3))
    la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
    det = np.einsum("qfi,qfi->qf", a, np.cross(b, c))
    dot = lambda x, y: np.einsum("qfi,qfi->qf", x, y)
    den = la * lb * lc + dot(a, b) * lc + dot(b, c) * la + dot(c, a) * lb
    return np.arctan2(det, den).sum(1) / (2 * np.pi)


def _segment_hits_triangle(p0, p1, tri, eps=1e-12):
    """Vectorised Moller-Trumbore: segments (N,2,3) vs triangles (N,3,3) -> (N,) bool."""
    d = p1 - p0
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    h = np.cross(d, e2)
    a = np.einsum("ij,ij->i", e1, h)
    ok = np.abs(a) > eps
    f = np.where(ok, 1.0 / np.where(ok, a, 1.0), 0.0)
    s = p0 - tri[:, 0]
    u = f * np.einsum("ij,ij->i", s, h)
    q = np.cross(s, e1)
    w = f * np.einsum("ij,ij->i", d, q)
    t = f * np.einsum("ij,ij->i", e2, q)
    return ok & (u > 0) & (w > 0) & (u + w < 1) & (t > 0) & (t < 1)


def test_no_self_intersection_in_rest_pose(arrays):
    v, f = arrays["right"]["v_template"], arrays["right"]["f"]
    edges = np.unique(_edges(f), axis=0)
    hits = 0
    for chunk in np.array_split(np.arange(len(edges)), 8):
        e = edges[chunk]
        ei, fi = np.meshgrid(np.arange(len(e)), np.arange(len(f)), indexing="ij")
        ei, fi = ei.ravel(), fi.ravel()
        shares = (f[fi] == e[ei, :1]).any(1) | (f[fi] == e[ei, 1:]).any(1)
        ei, fi = ei[~shares], fi[~shares]
        hits += _segment_hits_triangle(v[e[ei, 0]], v[e[ei, 1]], v[f[fi]]).sum()
    assert hits == 0


def test_human_proportions(mano):
    j = mano(TwoHands.zeros(1)).joints_in("mano")[0, 1].numpy()
    rest = load_mano_arrays(None)[0]["right"]
    joints = rest["J_regressor"] @ rest["v_template"]
    hand_length = np.linalg.norm(rest["v_template"][443] - joints[0])
    assert 0.16 <= hand_length <= 0.21
    bones = {"index prox": (1, 2), "middle prox": (4, 5), "pinky prox": (7, 8), "thumb meta": (13, 14)}
    for name, (a, b) in bones.items():
        length = np.linalg.norm(joints[a] - joints[b])
        assert 0.025 < length < 0.055, f"{name} {length:.3f} m"
    assert np.isfinite(j).all()


def test_skinning_regressor_and_bases(arrays):
    r = arrays["right"]
    assert np.allclose(r["weights"].sum(1), 1.0) and (r["weights"] >= 0).all()
    assert np.allclose(r["J_regressor"].sum(1), 1.0)
    comps = r["hands_components"]
    assert np.allclose(comps @ comps.T, np.eye(45), atol=1e-8)
    assert np.abs(r["hands_mean"]).max() > 0.2  # a relaxed, not flat, mean pose
    assert np.abs(r["posedirs"]).max() == 0.0


def test_shape_directions_are_meaningful(mano):
    b = TwoHands.zeros(3)
    betas = torch.zeros(3, 2, 10)
    betas[1, :, 0] = 2.0  # bigger hand
    betas[2, :, 2] = 2.0  # longer fingers
    out = mano(TwoHands(b.pose_aa, betas, b.rot_mat, b.transl)).joints_in("mano")[:, 1]
    length = (out[:, 18] - out[:, 0]).norm(dim=-1)  # wrist to middle tip
    finger = (out[:, 18] - out[:, 4]).norm(dim=-1)  # middle MCP to tip
    assert length[1] > 1.05 * length[0]
    assert finger[2] > 1.08 * finger[0]


def test_left_is_exact_mirror(arrays):
    r, left = arrays["right"], arrays["left"]
    assert np.array_equal(left["v_template"], r["v_template"] * [-1, 1, 1])
    assert np.array_equal(left["f"], r["f"][:, ::-1])
    assert np.array_equal(left["J_regressor"], r["J_regressor"])


def test_shipped_arrays_regenerate_exactly(tmp_path):
    """The shipped model is what build_standin() makes under the reference settings, bit for bit
    (so the recipe in the code and the arrays every checkpoint is bound to cannot drift apart)."""
    features = np.core._multiarray_umath.__cpu_features__
    if platform.machine().lower() not in ("x86_64", "amd64") or not (features.get("AVX2") and features.get("FMA3")):
        pytest.skip("the reference settings need an x86-64 CPU with AVX2 and FMA")
    out = tmp_path / "standin.npz"
    env = {**os.environ, **reference_env(features)}
    subprocess.run([sys.executable, "-m", "prior.standin", "--out", str(out)], env=env, cwd=REPO,
                   check=True, timeout=300)  # fmt: skip
    with np.load(ASSET) as shipped, np.load(out) as made:
        assert sorted(shipped.files) == sorted(made.files)
        for key in shipped.files:
            assert np.array_equal(shipped[key], made[key]), key


def test_damaged_asset_is_a_clear_error(tmp_path):
    bad = tmp_path / "standin.npz"
    bad.write_bytes(ASSET.read_bytes()[:5000])
    with pytest.raises(MANOFileError, match="standin.npz: stand-in hand model unreadable"):
        load_standin(bad)
    with np.load(ASSET) as z:
        arrays = {k: z[k] for k in z.files if k != "version"}
    np.savez(bad, **arrays, version=np.array("standin-v0"))
    with pytest.raises(MANOFileError, match="stand-in version 'standin-v0'"):
        load_standin(bad)
    np.savez(bad, **{k: v for k, v in arrays.items() if k != "weights"}, version=np.array("standin-v1"))
    with pytest.raises(MANOFileError, match="missing keys \\['weights'\\]"):
        load_standin(bad)
