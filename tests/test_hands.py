"""TwoHands / HandMeshes containers and ManoPair with the stand-in model."""

from __future__ import annotations

import pytest
import roma
import torch

from prior.hands import JOINT_ORDERS, LEFT, RIGHT, HandMeshes, TwoHands, convert_joints


def random_hands(b: int, g: torch.Generator, scale: float = 0.4) -> TwoHands:
    return TwoHands(
        pose_aa=scale * torch.randn(b, 2, 15, 3, generator=g),
        betas=torch.randn(b, 2, 10, generator=g),
        rot_mat=roma.rotvec_to_rotmat(torch.randn(b, 2, 3, generator=g)),
        transl=0.1 * torch.randn(b, 2, 3, generator=g),
    )


def test_validation_errors_name_the_field():
    h = TwoHands.zeros(2)
    with pytest.raises(ValueError, match="betas must have shape"):
        TwoHands(h.pose_aa, torch.zeros(2, 2, 9), h.rot_mat, h.transl)
    with pytest.raises(ValueError, match="pose_aa must be floating"):
        TwoHands(h.pose_aa.long(), h.betas, h.rot_mat, h.transl)
    with pytest.raises(ValueError, match="transl is torch.float64"):
        TwoHands(h.pose_aa, h.betas, h.rot_mat, h.transl.double())
    with pytest.raises(ValueError, match="must be a torch.Tensor"):
        TwoHands(h.pose_aa, h.betas.numpy(), h.rot_mat, h.transl)


def test_slicing_cat_to(generator):
    h = random_hands(5, generator)
    assert h[1:3].batch_size == 2 and h[4].batch_size == 1
    assert torch.equal(TwoHands.cat([h[:2], h[2:]]).transl, h.transl)
    assert h.to(dtype=torch.float64).betas.dtype == torch.float64
    idx = torch.tensor([4, 0])
    assert torch.equal(h[idx].pose_aa, h.pose_aa[idx])


def test_mirror_is_an_involution(generator):
    h = random_hands(6, generator)
    mm = h.mirror().mirror()
    for a, b in zip(h.as_numpy().values(), mm.as_numpy().values()):
        assert abs(a - b).max() < 1e-6


def test_mirrored_params_give_mirrored_vertices_exactly(mano, generator):
    h = random_hands(4, generator)
    out = mano(h)
    out_m = mano(h.mirror())
    ref = out.mirror()
    assert (out_m.verts - ref.verts).abs().max() < 1e-5
    assert (out_m.joints - ref.joints).abs().max() < 1e-5


def test_shapes_and_finite_gradients(mano, generator):
    h = random_hands(3, generator)
    params = [t.clone().requires_grad_(True) for t in (h.pose_aa, h.betas, h.rot_mat, h.transl)]
    out = mano(TwoHands(*params))
    assert out.verts.shape == (3, 2, 778, 3) and out.joints.shape == (3, 2, 21, 3)
    assert out.faces.shape == (2, 1552, 3)
    (out.verts.square().sum() + out.joints.sum()).backward()
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_zero_pose_gradient_is_finite(mano):
    h = TwoHands.zeros(1)
    pose = h.pose_aa.clone().requires_grad_(True)
    mano(TwoHands(pose, h.betas, h.rot_mat, h.transl)).verts.sum().backward()
    assert torch.isfinite(pose.grad).all()


def test_root_rotation_turns_about_the_wrist(mano, generator):
    h = TwoHands.zeros(1)
    rot = roma.rotvec_to_rotmat(torch.tensor([[[0.3, -1.0, 0.5], [1.0, 0.2, 0.0]]]))
    turned = mano(TwoHands(h.pose_aa, h.betas, rot, h.transl))
    rest = mano(h)
    assert torch.allclose(turned.root_joints(), rest.root_joints(), atol=1e-6)
    rel = (rest.verts - rest.root_joints()[:, :, None]) @ rot.transpose(-1, -2)
    assert torch.allclose(turned.verts - turned.root_joints()[:, :, None], rel, atol=1e-6)


def test_joint_orders_round_trip_and_mediapipe_layout(mano):
    j = mano(TwoHands.zeros(1)).joints  # ih26m order
    for name in JOINT_ORDERS:
        assert torch.equal(convert_joints(convert_joints(j, "ih26m", name), name, "ih26m"), j)
    mp = convert_joints(j, "ih26m", "mediapipe")
    ih = j[0, RIGHT]
    assert torch.equal(mp[0, RIGHT, 0], ih[20])  # wrist
    for mp_tip, ih_tip in zip((4, 8, 12, 16, 20), (0, 4, 8, 12, 16)):
        assert torch.equal(mp[0, RIGHT, mp_tip], ih[ih_tip])
    verts = mano(TwoHands.zeros(1)).verts
    # Tips are the smplx MANO tip vertices 744 (thumb) and 443 (middle).
    assert torch.equal(mp[0, LEFT, 4], verts[0, LEFT, 744])
    assert torch.equal(mp[0, LEFT, 12], verts[0, LEFT, 443])


def test_hand_meshes_validation():
    with pytest.raises(ValueError, match="faces must be torch.long"):
        HandMeshes(torch.zeros(1, 2, 778, 3), torch.zeros(1, 2, 21, 3), torch.zeros(2, 10, 3))
