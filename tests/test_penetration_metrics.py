"""Penetration metrics on small synthetic meshes with known answers (eval.penetration)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from eval import penetration as P
from eval.winding import point_surface_dist

R = 0.02  # sphere radius (m)


def _mesh(m: trimesh.Trimesh) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.long)


def _pair(va: torch.Tensor, vb: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([va, vb])[None], torch.stack([f, f])


@pytest.fixture(scope="module")
def sphere() -> tuple[torch.Tensor, torch.Tensor, float]:
    m = trimesh.creation.icosphere(subdivisions=2, radius=R)
    v, f = _mesh(m)
    return v, f, float(m.volume)


def test_winding_numbers_inside_outside(sphere) -> None:
    v, f, _ = sphere
    g = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(400, 3, generator=g), dim=-1)
    r = torch.cat(
        [torch.rand(200, generator=g) * 0.85 * R, (1.15 + torch.rand(200, generator=g)) * R]
    )
    w = P.winding_numbers((d * r[:, None])[None], v[None], f)[0]
    assert torch.allclose(w[:200], torch.ones(200), atol=1e-3)
    assert torch.allclose(w[200:], torch.zeros(200), atol=1e-3)
    flipped = P.winding_numbers((d * r[:, None])[None], v[None], f.flip(1))[0]
    assert torch.allclose(flipped, -w, atol=1e-4)


def test_close_holes_identity_and_open_mesh(sphere) -> None:
    v, f, _ = sphere
    assert P.close_holes(f) is f
    keep = v[f].mean(1)[:, 2] > -0.6 * R  # cut off the bottom cap: an open mesh
    fo = f[keep]
    fc = P.close_holes(fo, v)
    closed = trimesh.Trimesh(v.numpy(), fc.numpy(), process=False)
    assert fc.shape[0] > fo.shape[0] and closed.is_watertight and closed.is_winding_consistent
    assert closed.volume > 0  # caps keep the outward orientation
    verts, faces = _pair(v, v, fo)
    vol, failed = P.intersection_volume(verts, faces)
    assert not failed.any()
    assert vol.item() == pytest.approx(closed.volume * 1e6, rel=0.05)


def test_close_holes_rejects_non_manifold() -> None:
    f = torch.tensor([[0, 1, 2], [0, 1, 3]])  # edge 0->1 used twice in one direction
    with pytest.raises(ValueError, match="directed edge"):
        P.close_holes(f)


def test_separated_meshes_give_exactly_zero(sphere) -> None:
    v, f, _ = sphere
    far = _pair(v, v + torch.tensor([0.1, 0.0, 0.0]), f)
    # Diagonal offset: the bounding boxes overlap, the spheres do not (distance 1.5 * 2R > 2R).
    diag = _pair(v, v + 1.5 * R * torch.ones(3), f)
    for verts, faces in (far, diag):
        vol, failed = P.intersection_volume(verts, faces)
        assert vol.item() == 0.0 and not failed.any()
        assert P.penetration_depth(verts, faces).item() == 0.0


def test_self_overlap_equals_own_volume(sphere) -> None:
    v, f, true_vol = sphere
    vol, failed = P.intersection_volume(*_pair(v, v, f))
    assert not failed.any()
    assert vol.item() == pytest.approx(true_vol * 1e6, rel=0.05)


@pytest.mark.parametrize(
    "shift", [(0.0131, 0.0043, 0.0), (0.0217, 0.0, 0.0071), (0.0305, 0.011, 0.002)]
)
def test_box_overlap_matches_analytic(shift) -> None:
    a = trimesh.creation.box(extents=(0.04, 0.03, 0.02))
    va, f = _mesh(a)
    s = torch.tensor(shift)
    vol, failed = P.intersection_volume(*_pair(va, va + s, f))
    ext = np.array([0.04, 0.03, 0.02])
    expected = float(np.prod(np.clip(ext - np.abs(shift), 0, None))) * 1e6
    assert not failed.any()
    assert vol.item() == pytest.approx(expected, rel=0.05)


def test_sphere_lens_and_depth(sphere) -> None:
    v, f, _ = sphere
    d = 0.03  # centre distance; lens thickness 2R - d = 1 cm
    vol, _ = P.intersection_volume(*_pair(v, v + torch.tensor([d, 0.0, 0.0]), f))
    lens = math.pi * (4 * R + d) * (2 * R - d) ** 2 / 12 * 1e6  # ideal spheres
    assert vol.item() == pytest.approx(lens, rel=0.15)  # the icosphere is slightly smaller
    depth = P.penetration_depth(*_pair(v, v + torch.tensor([d, 0.0, 0.0]), f)).item()
    assert depth == pytest.approx(2 * R - d, abs=1.5e-3)


def test_contact_and_min_distance(sphere) -> None:
    v, f, _ = sphere
    verts = torch.cat(
        [
            _pair(v, v + torch.tensor([0.1, 0.0, 0.0]), f)[0],  # far apart
            _pair(v, v + torch.tensor([2 * R + 0.002, 0.0, 0.0]), f)[0],  # 2 mm gap
            _pair(v, v + torch.tensor([2 * R - 0.004, 0.0, 0.0]), f)[0],  # penetrating
        ]
    )
    faces = torch.stack([f, f])
    dmin = P.min_distance(verts)
    assert dmin[0].item() == pytest.approx(0.1 - 2 * R, abs=1e-4)
    assert dmin[1].item() == pytest.approx(0.002, abs=2e-4)
    assert P.contact_ratio(verts, faces, eps=0.005).tolist() == [0.0, 1.0, 1.0]
    m = P.evaluate_penetration(verts, faces)
    assert m.volume_cm3[0].item() == 0.0 and m.volume_cm3[2].item() > 0.0
    assert m.summary()["contact_ratio"] == pytest.approx(2 / 3)


def test_failures_are_nan_and_flagged(sphere) -> None:
    v, f, _ = sphere
    verts = torch.cat([_pair(v, v, f)[0], _pair(v, v, f)[0]])
    verts[1, 0, 5, 1] = float("nan")
    vol, failed = P.intersection_volume(verts, torch.stack([f, f]))
    assert failed.tolist() == [False, True] and math.isnan(vol[1].item()) and vol[0].item() > 0
    assert math.isnan(P.penetration_depth(verts, torch.stack([f, f]))[1].item())
    # An inside-out hand (flipped faces) has negative volume: refused, not counted as 0.
    vol, failed = P.intersection_volume(verts[:1], torch.stack([f, f.flip(1)]))
    assert failed.tolist() == [True] and math.isnan(vol[0].item())
    m = P.evaluate_penetration(verts, torch.stack([f, f]))
    assert m.summary()["n_failed"] == 1.0 and math.isnan(m.contact[1].item())


def test_thin_sphere_lens_matches_analytic() -> None:
    """A 2 mm lens between two finely tessellated spheres: within 10% of the ideal lens."""
    m = trimesh.creation.icosphere(subdivisions=4, radius=R)
    v, f = _mesh(m)
    d = 2 * R - 0.002
    vol, failed = P.intersection_volume(*_pair(v, v + torch.tensor([d, 0.0, 0.0]), f))
    lens = math.pi * (4 * R + d) * (2 * R - d) ** 2 / 12 * 1e6
    assert not failed.any()
    assert vol.item() == pytest.approx(lens, rel=0.10)


@pytest.fixture(scope="module")
def hand_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """The stand-in left hand against rotated, shifted copies of itself (overlapping)."""
    import roma

    from prior.hands import ManoPair, TwoHands

    mano = ManoPair()
    with torch.no_grad():
        out = mano(TwoHands.zeros(1))
    v = out.verts[0, 0]
    c = v.mean(0)
    g = torch.Generator().manual_seed(3)
    pairs = []
    for shift in ((0.0, -0.02, 0.0), (0.09, 0.0, 0.0), (0.0, 0.0, 0.07)):  # 7-26 cm^3
        rot = roma.rotvec_to_rotmat(0.15 * torch.randn(3, generator=g))
        pairs.append(torch.stack([v, (v - c) @ rot.T + c + torch.tensor(shift)]))
    return torch.stack(pairs), torch.stack([out.faces[0], out.faces[0]])


def test_surface_volume_agrees_with_voxel_reference(hand_pairs) -> None:
    verts, faces = hand_pairs
    fast, failed = P.intersection_volume(verts, faces)
    ref, ref_failed = P.intersection_volume(verts, faces, voxel=0.002, method="voxel")
    assert not failed.any() and not ref_failed.any()
    assert (ref > 1.0).all()  # substantial overlaps, where the voxel reference is accurate
    assert torch.allclose(fast, ref, rtol=0.10)


def test_depth_matches_brute_force(hand_pairs) -> None:
    """Depth = deepest vertex inside the other hand (winding number) at its exact distance."""
    verts, faces = hand_pairs
    depth = P.penetration_depth(verts, faces)
    for i in range(verts.shape[0]):
        best = 0.0
        for h in range(2):
            a, b = verts[i, h].double(), verts[i, 1 - h].double()
            w = P.winding_numbers(a[None], b[None], faces[1 - h])[0]
            inside = a[w > 0.5]
            if inside.shape[0]:
                best = max(best, float(point_surface_dist(inside, b[faces[1 - h]]).max()))
        assert depth[i].item() == pytest.approx(best, abs=1e-5)
        assert best > 0.002


def test_batched_equals_one_by_one(hand_pairs) -> None:
    verts, faces = hand_pairs
    far = verts[:1].clone()
    far[0, 1] += 0.3
    batch = torch.cat([verts, far])
    vol, _ = P.intersection_volume(batch, faces, block=2)
    single = torch.cat([P.intersection_volume(batch[i : i + 1], faces)[0] for i in range(4)])
    assert vol[3].item() == 0.0
    assert torch.allclose(vol, single, rtol=1e-6, atol=0)
