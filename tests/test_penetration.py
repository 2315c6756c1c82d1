"""Two-hand penetration energy: zero when apart, positive when overlapping, symmetric, batched."""

from __future__ import annotations

import pytest
import roma
import torch

from prior.hands import HandMeshes, ManoPair, TwoHands
from prior.penetration import (
    find_penetrations,
    nearest_index,
    nearest_vertices,
    penetration_depth,
    penetration_energy,
    vertex_normals,
    winding_at_pairs,
)


def _overlapping(n: int, seed: int, spread: float = 0.01) -> TwoHands:
    """Right hand rotated at random and placed around the left hand's palm."""
    g = torch.Generator().manual_seed(seed)
    eye = torch.eye(3).expand(n, 3, 3)
    rot = roma.rotvec_to_rotmat(torch.randn(n, 3, generator=g) * 0.8)
    # Rest palm centres: right (0.045, -0.01, 0), left its mirror; put the rotated right palm
    # centre near the left one.
    palm_r, palm_l = torch.tensor([0.045, -0.01, 0.0]), torch.tensor([-0.045, -0.01, 0.0])
    transl = torch.zeros(n, 2, 3)
    transl[:, 1] = palm_l - rot @ palm_r + spread * torch.randn(n, 3, generator=g)
    pose = 0.2 * torch.randn(n, 2, 15, 3, generator=g)
    return TwoHands(pose, torch.zeros(n, 2, 10), torch.stack([eye, rot], 1), transl)


def _volume(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    v0, v1, v2 = (verts[:, faces[:, k]] for k in range(3))
    return (v0 * torch.linalg.cross(v1, v2)).sum((-1, -2)) / 6.0


def test_normals_point_outward_on_both_sides(mano: ManoPair) -> None:
    meshes = mano(_overlapping(2, 0))
    for side in range(2):
        v, f = meshes.verts[:, side], mano.faces[side]
        grown = v + 0.001 * vertex_normals(v, f)
        assert (_volume(v, f) > 0).all()
        assert (_volume(grown, f) > _volume(v, f) + 1e-6).all()


def test_separated_is_zero_with_zero_gradient(mano: ManoPair) -> None:
    hands = _overlapping(3, 1)
    far = TwoHands(hands.pose_aa, hands.betas, hands.rot_mat,
                   hands.transl + torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]]))  # fmt: skip
    meshes = mano(far)
    verts = meshes.verts.clone().requires_grad_(True)
    for mode in ("fast", "exact"):
        energy = penetration_energy(verts, mano.faces, mode=mode)
        assert torch.equal(energy, torch.zeros(3))
        (grad,) = torch.autograd.grad(energy.sum(), verts)
        assert torch.equal(grad, torch.zeros_like(grad))
        assert torch.equal(penetration_depth(meshes, mode=mode), torch.zeros(3))


def test_overlapping_positive_symmetric_and_finite_gradient(mano: ManoPair) -> None:
    meshes = mano(_overlapping(6, 2))
    verts = meshes.verts.clone().requires_grad_(True)
    energy = penetration_energy(verts, mano.faces)
    assert (energy > 1.0).all()
    depth = penetration_depth(meshes)
    assert ((depth > 0.002) & (depth < 0.1)).all()
    (grad,) = torch.autograd.grad(energy.sum(), verts)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    mirrored = meshes.mirror()  # swaps the hands: the energy must not depend on hand order
    for mode in ("fast", "exact"):
        a = penetration_energy(meshes, mode=mode)
        b = penetration_energy(mirrored, mode=mode)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_batched_equals_per_sample_loop(mano: ManoPair) -> None:
    meshes = mano(_overlapping(5, 3))
    for mode in ("fast", "exact"):
        batched = penetration_energy(meshes, mode=mode)
        loop = torch.cat([penetration_energy(meshes[i], mode=mode) for i in range(5)])
        torch.testing.assert_close(batched, loop, atol=1e-5, rtol=1e-5)


def test_chunked_equals_unchunked(mano: ManoPair) -> None:
    meshes = mano(_overlapping(3, 4))
    a = penetration_energy(meshes, mode="exact", chunk=37)
    b = penetration_energy(meshes, mode="exact", chunk=4096)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    q, t = meshes.verts[:, 0], meshes.verts[:, 1]
    d1, i1 = nearest_vertices(q, t, chunk=11)
    d2, i2 = nearest_vertices(q, t, chunk=1000)
    assert torch.equal(i1, i2) and torch.allclose(d1, d2)


@pytest.mark.parametrize("dtype,v", [(torch.float32, 778), (torch.float64, 778), (torch.float32, 5000)])
def test_nearest_index_finds_the_nearest_point(dtype: torch.dtype, v: int) -> None:
    """The packed-key search (and its argmin fallback for V > 4096 in float32) returns a point
    at the true smallest distance (float64 brute force), up to ties far below a micrometre."""
    g = torch.Generator().manual_seed(0)
    q = (torch.rand(3, 400, 3, generator=g, dtype=torch.float64) - 0.5) * 0.1  # +-5 cm
    t = (torch.rand(3, v, 3, generator=g, dtype=torch.float64) - 0.5) * 0.1
    idx = nearest_index(q.to(dtype), t.to(dtype))
    d = torch.cdist(q, t)
    chosen = d.gather(2, idx[..., None])[..., 0]
    best = d.min(2).values
    assert (chosen - best).max() < 1e-7  # metres
    assert (idx == d.argmin(2)).float().mean() > 0.999


def test_fast_equals_exact_where_it_matters(mano: ManoPair) -> None:
    """Fast == exact on every sample whose exact pairs all lie inside the other hand's box."""
    meshes = mano(_overlapping(12, 5))
    exact = find_penetrations(meshes, mode="exact")
    v = meshes.verts
    q = v[exact.sample, exact.side, exact.query]
    other = v[:, [1, 0]]
    lo, hi = other.amin(2)[exact.sample, exact.side], other.amax(2)[exact.sample, exact.side]
    outside_box = ~((q >= lo) & (q <= hi)).all(-1)
    clean = torch.ones(12, dtype=torch.bool)
    clean[exact.sample[outside_box]] = False
    assert clean.sum() >= 8, "test configuration should mostly avoid normal-test false positives"
    e_fast = penetration_energy(meshes, mode="fast")
    e_exact = penetration_energy(meshes, mode="exact")
    torch.testing.assert_close(e_fast[clean], e_exact[clean], atol=1e-5, rtol=1e-5)
    # Where they differ, fast drops only exact's out-of-box (false-positive) pairs.
    fast = find_penetrations(meshes, mode="fast")
    assert len(fast) == len(exact) - int(outside_box.sum())


def test_bad_input_is_a_clear_error(mano: ManoPair) -> None:
    with pytest.raises(ValueError, match="faces"):
        penetration_energy(torch.zeros(2, 2, 778, 3))
    with pytest.raises(ValueError, match="mode"):
        penetration_energy(HandMeshes(torch.zeros(1, 2, 778, 3), torch.zeros(1, 2, 21, 3),
                                      mano.faces), mode="slow")  # fmt: skip


def test_winding_at_pairs_matches_the_batched_winding_number(mano: ManoPair) -> None:
    """Per-pair winding numbers equal eval's batched ones at the same points; deep overlaps are
    inside (> 0.5) and the normal test's pairs include some that are not."""
    from eval.winding import winding_numbers  # noqa: PLC0415

    meshes = mano(_overlapping(3, 2, spread=0.02))
    pairs = find_penetrations(meshes)
    w = winding_at_pairs(meshes.verts, mano.faces, pairs)
    assert w.shape == (len(pairs),) and len(pairs) > 100
    for p in range(0, len(pairs), 37):
        s, side = int(pairs.sample[p]), int(pairs.side[p])
        q = meshes.verts[s, side, pairs.query[p]].view(1, 1, 3)
        ref = winding_numbers(q, meshes.verts[s : s + 1, 1 - side], mano.faces[1 - side])
        assert abs(float(w[p]) - float(ref)) < 1e-4
    inside = w > 0.5
    assert inside.float().mean() > 0.5 and (~inside).any()  # mostly true positives, not all
    kept = pairs.select(inside)
    assert len(kept) == int(inside.sum()) and torch.equal(kept.query, pairs.query[inside])
    with pytest.raises(ValueError, match="faces must have shape"):
        winding_at_pairs(meshes.verts, mano.faces[0], pairs)
