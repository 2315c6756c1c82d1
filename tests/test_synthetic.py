"""Synthetic two-hand interactions: seeded, typed, in contact without deep penetration."""

from __future__ import annotations

import pytest
import torch

from datasets.synthetic import (
    INTERACTIONS,
    SyntheticGenerator,
    SyntheticTwoHands,
    place_in_camera,
    random_two_hands,
    synthetic_observation,
)
from prior.hands import ManoPair, TwoHands
from prior.penetration import nearest_vertices, penetration_depth


@pytest.fixture(scope="module")
def synth(mano: ManoPair) -> SyntheticGenerator:
    return SyntheticGenerator(mano)


def test_seeded_and_typed(synth: SyntheticGenerator) -> None:
    a, ka = random_two_hands(48, torch.Generator().manual_seed(3), synth=synth)
    b, kb = random_two_hands(48, torch.Generator().manual_seed(3), synth=synth)
    c, _ = random_two_hands(48, torch.Generator().manual_seed(4), synth=synth)
    assert ka == kb and torch.equal(a.transl, b.transl) and torch.equal(a.pose_aa, b.pose_aa)
    assert not torch.equal(a.transl, c.transl)
    assert len(set(ka)) >= 5 and set(ka) <= set(INTERACTIONS)
    want = ["crossed", "apart", "fingertip_touch"] * 4
    _, got = random_two_hands(12, torch.Generator().manual_seed(0), kinds=want, synth=synth)
    assert got == want
    with pytest.raises(ValueError, match="unknown interaction"):
        random_two_hands(1, torch.Generator(), kinds=["hug"], synth=synth)


def test_contact_without_deep_penetration(mano: ManoPair, synth: SyntheticGenerator) -> None:
    kinds = [k for k in INTERACTIONS for _ in range(6)]
    hands, got = random_two_hands(len(kinds), torch.Generator().manual_seed(1), kinds, synth=synth)
    meshes = mano(hands)
    # The left hand is the frame: identity rotation, zero translation.
    assert torch.equal(hands.rot_mat[:, 0], torch.eye(3).expand(len(got), 3, 3))
    assert torch.equal(hands.transl[:, 0], torch.zeros(len(got), 3))
    depth = penetration_depth(meshes)  # full resolution (push-out used a vertex subset)
    assert depth.median() < 0.001 and depth.quantile(0.9) < 0.006 and depth.max() < 0.02
    gap = nearest_vertices(meshes.verts[:, 0], meshes.verts[:, 1])[0].min(1).values
    apart = torch.tensor([k == "apart" for k in got])
    assert gap[~apart].median() < 0.012  # touching types end up close
    assert (gap[apart] > 0.01).all()  # "apart" pairs keep a gap


def test_dataset_items(mano: ManoPair) -> None:
    ds = SyntheticTwoHands(24, seed=7, mano=mano, chunk=12)
    assert len(ds) == 24
    hands, interacting = ds[5]
    assert hands.batch_size == 1 and isinstance(interacting, bool)
    assert bool(ds.interacting.any())
    assert [not i for i in ds.interacting.tolist()] == [k == "apart" for k in ds.kinds]
    again = SyntheticTwoHands(24, seed=7, mano=mano, chunk=12)
    assert torch.equal(again.all_hands().transl, ds.all_hands().transl)


def test_camera_placement_and_observation(mano: ManoPair, synth: SyntheticGenerator) -> None:
    hands, _ = random_two_hands(8, torch.Generator().manual_seed(2), synth=synth)
    cam = place_in_camera(hands, torch.Generator().manual_seed(0), mano=mano)
    v0, v1 = mano(hands).verts, mano(cam).verts
    # Rigid: pairwise distances within and across hands are unchanged.
    d0 = torch.cdist(v0[:, 0, ::40], v0[:, 1, ::40])
    d1 = torch.cdist(v1[:, 0, ::40], v1[:, 1, ::40])
    torch.testing.assert_close(d0, d1, atol=1e-5, rtol=1e-4)
    assert (v1[..., 2] > 0.2).all() and (v1[..., 2] < 0.8).all()
    K = torch.tensor([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]]).expand(8, 3, 3)
    clean = synthetic_observation(cam, mano, K, 0.0, 0.0, torch.Generator().manual_seed(0))
    uv = clean.joints_3d[..., :2] / clean.joints_3d[..., 2:] * 600.0 + torch.tensor([320.0, 240])
    torch.testing.assert_close(clean.keypoints_2d, uv, atol=1e-3, rtol=1e-5)
    noisy = synthetic_observation(cam, mano, K, 2.0, 0.25, torch.Generator().manual_seed(0))
    err = (noisy.keypoints_2d - clean.keypoints_2d).norm(dim=-1)
    assert 1.5 < float(err.mean()) < 3.5
    assert 0.15 < float(1 - noisy.confidence.mean()) < 0.35


def _winding(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Generalised winding number of points w.r.t. a closed mesh: ~1 inside, ~0 outside."""
    tri = verts[faces][None] - points[:, None, None]  # (P, F, 3, 3)
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
    la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
    det = (a * torch.linalg.cross(b, c)).sum(-1)
    den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
    return (2 * torch.atan2(det, den)).sum(-1) / (4 * torch.pi)


def test_grasps_wrap_without_true_penetration(mano: ManoPair, synth: SyntheticGenerator) -> None:
    """Closing types curl their fingers round the other hand (more than sampled) and no vertex
    lies more than a few mm inside the other closed surface (winding number, exact test)."""
    kinds = ["clasped", "interlaced", "holding_fingers"] * 2
    hands, _ = random_two_hands(len(kinds), torch.Generator().manual_seed(11), kinds, synth=synth)
    meshes = mano(hands)
    faces = mano.faces
    worst = 0.0
    for i in range(len(kinds)):
        v = meshes.verts[i].double()
        for a in (0, 1):
            inside = _winding(v[a], v[1 - a], faces[1 - a]).abs() > 0.5
            if inside.any():
                d = torch.cdist(v[a][inside], v[1 - a]).min(1).values.max()
                worst = max(worst, float(d))
    assert worst < 0.009  # vertex spacing is ~8 mm: at most a vertex barely inside
    # Right-hand finger flexion (absolute angles): grasping closes the hand beyond its sampled
    # "open" family, while palm-to-palm hands stay open.
    mean = mano.hands_mean()[1].view(15, 3)
    flat, _ = random_two_hands(6, torch.Generator().manual_seed(11), ["palm_to_palm"] * 6, synth=synth)
    curl = (hands.pose_aa[:, 1] + mean).norm(dim=-1).mean()
    assert curl > (flat.pose_aa[:, 1] + mean).norm(dim=-1).mean() + 0.15


def test_local_skinner_matches_mano(mano: ManoPair) -> None:
    from datasets.skinning import LocalSkinner

    g = torch.Generator().manual_seed(0)
    pose, betas = 0.4 * torch.randn(5, 2, 15, 3, generator=g), 0.8 * torch.randn(5, 2, 10, generator=g)
    ref = mano(TwoHands(pose, betas, torch.eye(3).expand(5, 2, 3, 3).clone(), torch.zeros(5, 2, 3)))
    out = LocalSkinner(mano)(pose, betas)
    torch.testing.assert_close(out.verts, ref.verts, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.joints, ref.joints, atol=1e-5, rtol=0)
    sub = torch.tensor([3, 100, 500])
    right = LocalSkinner(mano, sub)(pose[:, 1:], betas[:, 1:], side=1)
    torch.testing.assert_close(right.verts[:, 0], ref.verts[:, 1, sub], atol=1e-5, rtol=0)
