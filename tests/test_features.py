"""Feature extractor of the generative metrics: determinism, invariances, checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import roma
import torch

from eval.features import (
    FeatureCheckpointError,
    FeatureNetConfig,
    TwoHandPointNet,
    canonicalize,
    extract_features,
    farthest_point_indices,
    load_features,
    save_features,
    to_points,
)
from eval.train_features import rest_geometry
from prior.hands import HandMeshes, ManoPair, TwoHands

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "checkpoints" / "features_default.pt"



@pytest.fixture(scope="module")
def meshes(mano: ManoPair) -> HandMeshes:
    g = torch.Generator().manual_seed(3)
    n = 12
    rot_left = roma.rotvec_to_rotmat(torch.randn(n, 3, generator=g))
    rel = roma.rotvec_to_rotmat(0.5 * torch.randn(n, 3, generator=g))
    hands = TwoHands(0.3 * torch.randn(n, 2, 15, 3, generator=g), 0.5 * torch.randn(n, 2, 10, generator=g),
                     torch.stack([rot_left, rot_left @ rel], 1), 0.1 * torch.randn(n, 2, 3, generator=g))  # fmt: skip
    with torch.no_grad():
        return mano(hands)


@pytest.fixture(scope="module")
def net(mano: ManoPair) -> TwoHandPointNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TwoHandPointNet(FeatureNetConfig(points_per_hand=64, widths=(32, 64), feat_dim=32))
    model.set_geometry(*rest_geometry(mano))
    return model.eval()


def _rigid(meshes: HandMeshes, rot: torch.Tensor, t: torch.Tensor) -> HandMeshes:
    return HandMeshes(meshes.verts @ rot.T + t, meshes.joints @ rot.T + t, meshes.faces)


def test_points_layout_and_side_label(net: TwoHandPointNet, meshes: HandMeshes) -> None:
    pts = to_points(meshes, net)
    k = net.cfg.points_per_hand
    assert pts.shape == (meshes.batch_size, 2 * k, 5)
    assert torch.equal(pts[:, :k, 3:], torch.tensor([0.0, 1.0]).expand(meshes.batch_size, k, 2))
    assert torch.equal(pts[:, k:, 3:], torch.tensor([1.0, 0.0]).expand(meshes.batch_size, k, 2))
    # Centred at the left middle MCP, in decimetres: coordinates of a hand are O(1).
    assert 0.3 < pts[:, :k, :3].abs().max() < 3.0


def test_canonical_frame_is_rigid_invariant(net: TwoHandPointNet, meshes: HandMeshes) -> None:
    rot = roma.rotvec_to_rotmat(torch.tensor([0.3, -1.2, 2.0]))
    moved = _rigid(meshes, rot, torch.tensor([0.1, -0.2, 0.5]))
    a = canonicalize(meshes, net.rest_palm, canonical=False)
    b = canonicalize(moved, net.rest_palm, canonical=False)
    assert (a - b).abs().max() < 1e-5
    f1, f2 = extract_features(net, meshes), extract_features(net, moved)
    assert (f1 - f2).abs().max() < 1e-4 * (1 + f1.abs().max())


def test_kabsch_recovers_the_anchor_frame(mano: ManoPair, net: TwoHandPointNet) -> None:
    # Zero-shape hands with identity left rotation are already in the anchor frame.
    hands = TwoHands.zeros(3)
    hands = TwoHands(0.4 * torch.randn(3, 2, 15, 3, generator=torch.Generator().manual_seed(1)),
                     hands.betas, hands.rot_mat, hands.transl + torch.tensor([0.0, 0.0, 0.1]))  # fmt: skip
    with torch.no_grad():
        m = mano(hands)
    a = canonicalize(m, net.rest_palm, canonical=False)
    b = canonicalize(m, net.rest_palm, canonical=True)
    assert (a - b).abs().max() < 1e-5


def test_features_deterministic_batch_and_permutation_consistent(net, meshes) -> None:
    f = extract_features(net, meshes, batch=5)
    assert f.shape == (meshes.batch_size, net.cfg.feat_dim) and torch.isfinite(f).all()
    torch.testing.assert_close(extract_features(net, meshes, batch=64), f, rtol=1e-5, atol=1e-5)
    perm = torch.randperm(meshes.batch_size, generator=torch.Generator().manual_seed(0))
    permuted = HandMeshes(meshes.verts[perm], meshes.joints[perm], meshes.faces)
    torch.testing.assert_close(extract_features(net, permuted), f[perm], rtol=1e-5, atol=1e-5)
    # Different samples give different features (the map is not constant).
    assert torch.cdist(f, f).fill_diagonal_(1.0).min() > 1e-4


def test_fps_deterministic_and_spread() -> None:
    pts = torch.randn(500, 3, generator=torch.Generator().manual_seed(0))
    a, b = farthest_point_indices(pts, 50), farthest_point_indices(pts, 50)
    assert torch.equal(a, b) and a.unique().numel() == 50 and a[0] == 0


def test_checkpoint_round_trip_weights_only(tmp_path: Path, net: TwoHandPointNet, meshes) -> None:
    path = tmp_path / "f.pt"
    save_features(path, net, {"hand_model": "standin", "val": {"loss": 1.0}})
    obj = torch.load(path, weights_only=True)
    assert obj["kind"] == "twohand_feature_net"
    loaded, meta = load_features(path)
    assert meta["val"]["loss"] == 1.0
    torch.testing.assert_close(extract_features(loaded, meshes), extract_features(net, meshes))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(FeatureCheckpointError, match="bad.pt"):
        load_features(bad)
    with pytest.raises(FeatureCheckpointError, match="not found"):
        load_features(tmp_path / "missing.pt")


@pytest.mark.skipif(not DEFAULT.is_file(), reason="default extractor not trained yet")
def test_default_checkpoint_loads_and_separates_kinds(mano: ManoPair) -> None:
    from datasets.synthetic import random_two_hands

    net, meta = load_features(DEFAULT)
    assert DEFAULT.stat().st_size < 5e6
    assert meta["hand_model"] == mano.model_name and meta["val"]["class_acc"] > 0.5
    # Features of two draws of one distribution are closer than of two interaction types.
    g = torch.Generator().manual_seed(99)
    n = 48
    hands, _ = random_two_hands(2 * n, g, kinds=["palm_to_palm"] * (2 * n), mano=mano)
    other, _ = random_two_hands(n, g, kinds=["fingertip_touch"] * n, mano=mano)
    with torch.no_grad():
        fa = extract_features(net, mano(hands))
        fb = extract_features(net, mano(other))
    same = (fa[:n].mean(0) - fa[n:].mean(0)).norm()
    diff = (fa[:n].mean(0) - fb.mean(0)).norm()
    assert diff > 3 * same
