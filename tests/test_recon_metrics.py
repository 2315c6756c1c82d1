"""Reconstruction metrics: exact values on constructed cases and on the miniature InterHand2.6M."""

from __future__ import annotations

import json

import numpy as np
import pytest
import roma
import torch

from datasets.interhand import InterHandImages
from eval.reconstruction import (
    PROTOCOL_LABEL,
    aggregate,
    mpjpe,
    mpvpe,
    mrrpe,
    pa_mpjpe,
    procrustes_align,
)
from prior.hands import LEFT, RIGHT
from tests.interhand_fixture import SPLIT, write_interhand_fixture


def _joints(b: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    j = 0.05 * torch.randn(b, 2, 21, 3, generator=g, dtype=torch.float64)
    j[:, RIGHT] += torch.tensor([0.1, 0.0, 0.5], dtype=torch.float64)
    j[:, LEFT] += torch.tensor([-0.1, 0.0, 0.5], dtype=torch.float64)
    return j


def _unit_dirs(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    d = torch.randn(*shape, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return d / d.norm(dim=-1, keepdim=True)


def test_gt_scores_zero_and_offsets_score_exactly():
    gt = _joints()
    valid = torch.ones(6, 2, 21, dtype=torch.bool)
    for root in ("wrist", "middle_mcp", None):
        assert mpjpe(gt, gt, valid, root).abs().max() == 0
    assert pa_mpjpe(gt, gt, valid).abs().max() < 1e-9
    assert mrrpe(gt, gt, valid).abs().max() == 0
    # A rigid 5 mm shift of both hands: absolute MPJPE 5 mm, root-relative 0, MRRPE 0.
    shift = gt + 0.005 * _unit_dirs((6, 1, 1), 1)
    assert torch.allclose(mpjpe(shift, gt, valid, None), torch.full((6, 2), 0.005, dtype=torch.float64))
    assert mpjpe(shift, gt, valid, "wrist").abs().max() < 1e-12
    assert mrrpe(shift, gt, valid).abs().max() < 1e-12
    # 5 mm on every joint but the root: root-relative MPJPE = 5 * 20/21 mm for that protocol.
    for root, idx in (("wrist", 20), ("middle_mcp", 11)):
        off = 0.005 * _unit_dirs((6, 2, 21), 2)
        off[:, :, idx] = 0
        err = mpjpe(gt + off, gt, valid, root)
        assert torch.allclose(err, torch.full_like(err, 0.005 * 20 / 21))
    # Moving only the right hand by 5 mm changes the relative root vector by 5 mm.
    moved = gt.clone()
    moved[:, RIGHT] += 0.005 * _unit_dirs((6, 1), 3)
    assert torch.allclose(mrrpe(moved, gt, valid, "middle_mcp"), torch.full((6,), 0.005, dtype=torch.float64))


def test_swapped_hands_mrrpe_is_twice_the_root_distance():
    gt = _joints()
    valid = torch.ones(6, 2, 21, dtype=torch.bool)
    swapped = gt[:, [RIGHT, LEFT]]
    for root, idx in (("wrist", 20), ("middle_mcp", 11)):
        expect = 2 * (gt[:, RIGHT, idx] - gt[:, LEFT, idx]).norm(dim=-1)
        assert torch.allclose(mrrpe(swapped, gt, valid, root), expect)


def test_invalid_joints_and_roots_are_excluded_not_zeroed():
    gt = _joints()
    valid = torch.ones(6, 2, 21, dtype=torch.bool)
    pred = gt + 0.004 * _unit_dirs((6, 2, 21), 4)
    pred[:, :, 20] = gt[:, :, 20]
    base = mpjpe(pred, gt, valid)
    pred2 = pred.clone()
    pred2[0, LEFT, 3] += 1.0  # huge error on a joint marked invalid
    valid2 = valid.clone()
    valid2[0, LEFT, 3] = False
    err = mpjpe(pred2, gt, valid2)
    assert err[0, LEFT] == pytest.approx(0.004 * 19 / 20, abs=1e-12) and torch.equal(err[1:], base[1:])
    valid2[1, RIGHT, 20] = False  # invalid wrist: no root-relative error for that hand
    assert torch.isnan(mpjpe(pred, gt, valid2, "wrist")[1, RIGHT])
    assert not torch.isnan(mpjpe(pred, gt, valid2, "middle_mcp")[1, RIGHT])
    assert torch.isnan(mrrpe(pred, gt, valid2, "wrist")[1])
    valid2[2, LEFT] = False
    assert torch.isnan(mpjpe(pred, gt, valid2)[2, LEFT]) and torch.isnan(pa_mpjpe(pred, gt, valid2)[2, LEFT])


def test_pa_mpjpe_removes_similarity_and_matches_reference():
    gt = _joints(4, seed=5)
    valid = torch.ones(4, 2, 21, dtype=torch.bool)
    rot = roma.rotvec_to_rotmat(torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64))
    sim = 1.3 * gt @ rot.transpose(-1, -2) + 0.2
    assert pa_mpjpe(sim, gt, valid).abs().max() < 1e-9
    noisy = sim + 0.003 * _unit_dirs((4, 2, 21), 7)
    valid[0, LEFT, :5] = False
    got = pa_mpjpe(noisy, gt, valid)
    for b in range(4):  # reference: per-hand Umeyama in numpy on the valid joints
        for s in range(2):
            m = valid[b, s].numpy()
            x, y = noisy[b, s].numpy()[m], gt[b, s].numpy()[m]
            xc, yc = x - x.mean(0), y - y.mean(0)
            u, sv, vt = np.linalg.svd(xc.T @ yc)
            d = np.diag([1, 1, np.sign(np.linalg.det(vt.T @ u.T))])
            r = vt.T @ d @ u.T
            scale = np.trace(np.diag(sv) @ d) / (xc ** 2).sum()
            ref = np.linalg.norm(scale * xc @ r.T + y.mean(0) - y, axis=-1).mean()
            assert got[b, s].item() == pytest.approx(ref, rel=1e-9)
    assert procrustes_align(noisy[:, 0], gt[:, 0], torch.ones(4, 21)).shape == (4, 21, 3)


def test_mpvpe_root_relative_and_masked():
    g = torch.Generator().manual_seed(8)
    verts = torch.randn(3, 2, 778, 3, generator=g, dtype=torch.float64)
    roots = torch.randn(3, 2, 3, generator=g, dtype=torch.float64)
    ok = torch.tensor([[True, True], [True, False], [True, True]])
    assert mpvpe(verts + 1.0, verts, roots + 1.0, roots, ok).nan_to_num(0).abs().max() < 1e-12
    off = verts + 0.005 * _unit_dirs((3, 2, 778), 9)
    err = mpvpe(off, verts, roots, roots, ok)
    assert torch.isnan(err[1, 1]) and torch.allclose(err[ok], torch.full((5,), 0.005, dtype=torch.float64))
    with pytest.raises(ValueError, match="verts"):
        mpvpe(verts[:, :, :10], verts, roots, roots, ok)
    with pytest.raises(ValueError, match=r"\(B, 2, 21, 3\)"):
        mpjpe(verts, verts, ok)


def test_aggregate_counts_missing_and_labels_protocols():
    gt = _joints(8, seed=10)
    valid = torch.ones(8, 2, 21, dtype=torch.bool)
    inter = torch.tensor([True] * 5 + [False] * 3)
    valid[5:, LEFT] = False  # single-hand samples: right hand only
    pred = gt + 0.005 * _unit_dirs((8, 2, 21), 11)
    pred[:, :, [20, 11]] = gt[:, :, [20, 11]]
    present = torch.ones(8, 2, dtype=torch.bool)
    present[0, RIGHT] = False  # one missing right hand in an interacting sample
    present[6, :] = False  # nothing predicted for one single-hand sample
    pred[0, RIGHT] = float("nan")
    pred[6] = float("nan")
    rep = aggregate(pred, gt, valid, present, inter)
    assert rep.unit == "mm" and rep.n_samples == {"all": 8, "interacting": 5, "single": 3}
    assert rep.labels == {p: PROTOCOL_LABEL[p] for p in ("wrist", "middle_mcp")}
    assert "InterWild" in rep.labels["wrist"] and "IntagHand" in rep.labels["middle_mcp"]
    w = rep.results["wrist"]
    st = w["all"]["mpjpe"]
    assert (st["left"].count, st["left"].missing) == (5, 0)
    assert (st["right"].count, st["right"].missing) == (6, 2)
    assert (st["both"].count, st["both"].missing) == (11, 2)
    assert st["both"].mean_mm == pytest.approx(5 * 19 / 21)  # two roots untouched per hand
    assert w["interacting"]["mrrpe"]["both"].count == 4 and w["interacting"]["mrrpe"]["both"].missing == 1
    single_mrrpe = w["single"]["mrrpe"]["both"]
    assert single_mrrpe.mean_mm is None and single_mrrpe.count == 0  # never reported as 0
    assert w["single"]["mpjpe"]["left"].mean_mm is None
    assert w["interacting"]["pa_mpjpe"]["both"].count == 9
    json.dumps(rep.to_dict())
    assert any("IntagHand" in line for line in rep.table())
    bad = pred.clone()
    bad[1, LEFT, 4] = float("nan")  # NaN in a prediction claimed present
    with pytest.raises(ValueError, match="non-finite"):
        aggregate(bad, gt, valid, present, inter)



def test_metrics_on_generated_interhand(tmp_path, mano):
    truth = write_interhand_fixture(tmp_path, mano, seed=2)
    ds = InterHandImages(truth.root, SPLIT, mano=mano)
    samples = [ds[i] for i in range(len(ds))]
    gt = torch.stack([s.joints_cam for s in samples]).double()
    valid = torch.stack([s.joint_valid for s in samples])
    inter = torch.tensor([s.interacting for s in samples])
    gt_mesh_ok = torch.stack([s.mano_valid for s in samples]) & valid.any(-1)
    from prior.hands import TwoHands  # noqa: PLC0415
    mano_gt = TwoHands.cat([s.mano_gt if s.mano_gt is not None else TwoHands.zeros(1) for s in samples])
    meshes = mano(mano_gt)
    present = torch.ones(len(samples), 2, dtype=torch.bool)
    rep = aggregate(gt, gt, valid, present, inter, meshes.verts, meshes.verts, gt_mesh_ok,
                    meshes.joints, meshes.joints)
    for proto in ("wrist", "middle_mcp"):
        for subset, ms in rep.results[proto].items():
            for metric, hands in ms.items():
                for hand, st in hands.items():
                    assert st.mean_mm is None or abs(st.mean_mm) < 1e-6, (proto, subset, metric, hand)
    assert rep.results["wrist"]["all"]["mpjpe"]["both"].count == int(valid.any(-1).sum())
    shifted = gt.clone()
    shifted[:, RIGHT] += torch.tensor([0.005, 0.0, 0.0], dtype=torch.float64)
    rep5 = aggregate(shifted, gt, valid, present, inter)
    assert rep5.results["wrist"]["interacting"]["mrrpe"]["both"].mean_mm == pytest.approx(5.0)
    off = gt + 0.005 * _unit_dirs(tuple(gt.shape[:3]), 12)
    assert mpjpe(off, gt, valid, None)[valid.any(-1)].mean().item() * 1000 == pytest.approx(5.0)
