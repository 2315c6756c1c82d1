"""Unit tests of fitting.objectives, fitting.observation and the joints-only kinematics."""

from __future__ import annotations

import pytest
import roma
import torch

from fitting import objectives as O
from fitting.observation import Observation
from prior.hands import TwoHands
from prior.kinematics import JointModel


def _hands(n: int, g: torch.Generator) -> TwoHands:
    return TwoHands(
        0.3 * torch.randn(n, 2, 15, 3, generator=g), 0.5 * torch.randn(n, 2, 10, generator=g),
        roma.rotvec_to_rotmat(torch.randn(n, 2, 3, generator=g)),
        torch.tensor([0.0, 0.0, 0.5]) + 0.05 * torch.randn(n, 2, 3, generator=g),
    )  # fmt: skip


def _obs(hands: TwoHands, mano, noise: float = 0.0) -> Observation:
    b = hands.batch_size
    K = torch.tensor([[1000.0, 0, 320], [0, 1000, 240], [0, 0, 1]]).expand(b, 3, 3).clone()
    joints = mano(hands).joints_in("mediapipe")
    kp = O.project(joints.reshape(b, 42, 3), K).reshape(b, 2, 21, 2) + noise
    return Observation(kp, torch.ones(b, 2, 21), K, torch.tensor([[640.0, 480.0]]).expand(b, 2),
                       hands, torch.ones(b, 2, dtype=torch.bool), joints)  # fmt: skip


def test_project_matches_pinhole():
    pts = torch.tensor([[[0.1, -0.2, 2.0], [0.0, 0.0, 1.0]]])
    K = torch.tensor([[[500.0, 0, 100], [0, 400, 50], [0, 0, 1]]])
    uv = O.project(pts, K)
    assert torch.allclose(uv, torch.tensor([[[125.0, 10.0], [100.0, 50.0]]]))
    with pytest.raises(ValueError, match="project expects"):
        O.project(pts[0], K)


def test_gmof_is_quadratic_then_saturates():
    r = torch.tensor([0.01, 1e4])
    out = O.gmof(r, rho=1.0)
    assert out[0] == pytest.approx(1e-4, rel=1e-3)
    assert out[1] == pytest.approx(1.0, rel=1e-3)


def test_joint_model_equals_mano(mano, generator):
    hands = _hands(4, generator)
    assert torch.allclose(JointModel(mano)(hands).joints, mano(hands).joints, atol=1e-5)


def test_joint_model_skins_chosen_vertices_as_mano(mano, generator):
    hands = _hands(3, generator)
    model = JointModel(mano)
    index = torch.stack([torch.arange(0, 770, 7), torch.arange(5, 775, 7)])  # (2, 110)
    verts = model.vertices(model.pose(hands), index, hands.betas)
    full = mano(hands).verts
    assert verts.shape == (3, 2, 110, 3)
    assert torch.allclose(verts[:, 0], full[:, 0, index[0]], atol=1e-5)
    assert torch.allclose(verts[:, 1], full[:, 1, index[1]], atol=1e-5)
    assert torch.allclose(model.pose(hands).middle_mcp(), mano(hands).middle_mcp(), atol=1e-5)
    # One vertex per entry, each of its own sample and side (a sparse pair list).
    sample = torch.randint(0, 3, (200,), generator=generator)
    side = torch.randint(0, 2, (200,), generator=generator)
    vertex = torch.randint(0, 778, (200,), generator=generator)
    points = model.vertices_at(model.pose(hands), sample, side, vertex, hands.betas)
    assert torch.allclose(points, full[sample, side, vertex], atol=1e-5)


def test_sparse_penetration_loss_equals_the_full_mesh_loss(mano):
    from datasets.synthetic import random_two_hands  # noqa: PLC0415

    g = torch.Generator().manual_seed(3)
    truth = random_two_hands(12, g, mano=mano)[0]
    moved = truth.transl + 0.01 * torch.randn(12, 2, 3, generator=g)  # pushes some pairs into each other
    present = torch.ones(12, 2, dtype=torch.bool)
    present[3, 1] = False
    model = JointModel(mano)

    def run(loss_fn):
        pose, transl = truth.pose_aa.clone().requires_grad_(True), moved.clone().requires_grad_(True)
        hands = TwoHands(pose, truth.betas, truth.rot_mat, transl)
        energy = loss_fn(hands)
        energy.sum().backward()
        return energy.detach(), pose.grad, transl.grad

    full = run(lambda h: O.penetration_loss(mano(h), present, 0.05))
    sparse = run(lambda h: O.sparse_penetration_loss(h, model.pose(h), model, mano, present, 0.05))
    assert (full[0] > 0).sum() >= 3 and full[0][3] == 0  # the case penetrates; absent hand: 0
    assert torch.allclose(sparse[0], full[0], rtol=1e-4, atol=1e-4)
    for a, b in zip(sparse[1:], full[1:]):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4 * float(b.abs().max()))
    # Nothing penetrates: zero, and no graph is built at all.
    apart = TwoHands(truth.pose_aa, truth.betas, truth.rot_mat, truth.transl + torch.tensor([[0.0] * 3, [0.5, 0, 0]]))
    out = O.sparse_penetration_loss(apart, model.pose(apart), model, mano, present, 0.05)
    assert not out.any() and not out.requires_grad


def test_winding_test_ignores_touching_pairs(mano):
    """Generated pairs touch without interpenetrating: the vertex-normal test still reports pairs
    on some (its false positives), the winding-number test on none, so only ``closed_faces``
    leaves them alone; a real overlap is penalised by both."""
    from datasets.synthetic import random_two_hands  # noqa: PLC0415
    from eval.penetration import penetration_depth  # noqa: PLC0415

    truth = random_two_hands(24, torch.Generator().manual_seed(0), mano=mano)[0]
    present = torch.ones(24, 2, dtype=torch.bool)
    model = JointModel(mano)
    normals = O.sparse_penetration_loss(truth, model.pose(truth), model, mano, present, 0.05)
    winding = O.sparse_penetration_loss(truth, model.pose(truth), model, mano, present, 0.05,
                                        mano.faces)  # fmt: skip
    outside = penetration_depth(mano(truth).verts, mano.faces) == 0  # exact: nothing inside
    assert (outside & (normals > 0)).sum() >= 2  # false positives of the normal test
    assert not winding[outside].any()
    depth = O.penetration_depth(mano(truth), present), O.penetration_depth(mano(truth), present, mano.faces)
    assert (depth[0][outside] > 0).any() and not depth[1][outside].any()
    overlap = TwoHands(truth.pose_aa, truth.betas, truth.rot_mat, truth.transl[:, [0, 0]])  # roots together
    deep = O.sparse_penetration_loss(overlap, model.pose(overlap), model, mano, present, 0.05, mano.faces)
    assert (deep > 0).all()


def test_reprojection_zero_at_truth_and_masks(mano, generator):
    hands = _hands(3, generator)
    obs = _obs(hands, mano)
    joints = mano(hands).joints
    assert O.reprojection_loss(joints, obs).abs().max() < 1e-4
    assert O.reprojection_error_px(joints, obs).max() < 1e-3
    # A shifted right hand costs something, unless the right hand is absent.
    moved = joints.clone()
    moved[:, 1] += torch.tensor([0.01, 0.0, 0.0])
    assert (O.reprojection_loss(moved, obs) > 1.0).all()
    absent = Observation(obs.keypoints_2d, obs.confidence, obs.K, obs.image_size, obs.init,
                         torch.tensor([[True, False]] * 3), obs.landmarks_3d)  # fmt: skip
    assert O.reprojection_loss(moved, absent).abs().max() < 1e-4
    zero_conf = Observation(obs.keypoints_2d, torch.zeros_like(obs.confidence), obs.K,
                            obs.image_size, obs.init, obs.present, None)  # fmt: skip
    assert torch.isnan(O.reprojection_error_px(joints, zero_conf)).all()


def test_init_landmark_loss_translation_free(mano, generator):
    hands = _hands(2, generator)
    obs = _obs(hands, mano)
    joints = mano(hands).joints
    shifted = obs.landmarks_3d + torch.tensor([0.1, -0.2, 0.3])
    assert O.init_landmark_loss(joints, shifted, obs.present).max() < 1e-6
    assert (O.init_landmark_loss(joints * 1.1, obs.landmarks_3d, obs.present) > 0.1).all()


def test_pose_loss_zero_inside_limits_and_grows_outside(mano):
    limits = O.pose_limits(mano)
    present = torch.ones(1, 2, dtype=torch.bool)
    # The model's mean pose is a plausible curled hand: no limit violation, little twist.
    rest = torch.zeros(1, 2, 15, 3)
    assert O.pose_loss(rest, present, limits, twist_weight=0.0).item() < 1e-3
    # Bending every finger backwards by 2 rad violates the flexion limits.
    bent = -2.0 * limits.flex[None]
    assert O.pose_loss(bent, present, limits).item() > 10.0
    assert O.pose_loss(bent, torch.zeros(1, 2, dtype=torch.bool), limits).item() == 0.0


def test_penetration_loss_only_when_both_present(mano):
    hands = TwoHands.zeros(2)
    hands = TwoHands(hands.pose_aa, hands.betas, hands.rot_mat,
                     torch.tensor([0.0, 0.0, 0.5]).expand(2, 2, 3).clone())  # fmt: skip
    meshes = mano(hands)  # both hands at the same place: deep interpenetration
    present = torch.tensor([[True, True], [True, False]])
    pen = O.penetration_loss(meshes, present)
    assert pen[0] > 0 and pen[1] == 0
    depth = O.penetration_depth(meshes, present)
    assert depth[0] > 0.005 and depth[1] == 0


def test_observation_validate(mano, generator):
    obs = _obs(_hands(2, generator), mano)
    assert obs.validate() is obs
    assert obs[1].batch_size == 1 and Observation.cat([obs, obs]).batch_size == 4
    bad = Observation(obs.keypoints_2d[..., :1], obs.confidence, obs.K, obs.image_size, obs.init,
                      obs.present)  # fmt: skip
    with pytest.raises(ValueError, match="keypoints_2d must have shape"):
        bad.validate()
    nan = obs.keypoints_2d.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Observation(nan, obs.confidence, obs.K, obs.image_size, obs.init, obs.present).validate()
    with pytest.raises(ValueError, match=r"confidence must lie in \[0, 1\]"):
        Observation(obs.keypoints_2d, obs.confidence * 2, obs.K, obs.image_size, obs.init,
                    obs.present).validate()  # fmt: skip
    with pytest.raises(ValueError, match="present must be torch.bool"):
        Observation(obs.keypoints_2d, obs.confidence, obs.K, obs.image_size, obs.init,
                    obs.present.float()).validate()  # fmt: skip
