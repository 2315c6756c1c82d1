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
from prior.hands import ManoPair
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
