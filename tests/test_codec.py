"""Codec: TwoHands <-> normalised (anchor, other) vectors (InterHandGen reference §2.3-§2.4)."""

from __future__ import annotations

import pytest
import roma
import torch

from prior.codec import (
    BETAS,
    DIM,
    POSE,
    RELATIVE,
    ROT6D,
    TRANSL,
    CodecConfig,
    HandCodec,
    NormStats,
    anchor_frame,
    rot6d_to_rotmat,
    rotmat_to_6d,
    swap_sides,
)  # fmt: skip
from prior.hands import LEFT, RIGHT, ManoPair, TwoHands

MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))




def random_hands(n: int, seed: int) -> TwoHands:
    g = torch.Generator().manual_seed(seed)
    return TwoHands(
        pose_aa=0.3 * torch.randn(n, 2, 15, 3, generator=g),
        betas=torch.randn(n, 2, 10, generator=g),
        rot_mat=roma.rotvec_to_rotmat(2.0 * torch.randn(n, 2, 3, generator=g)),
        transl=0.1 * torch.randn(n, 2, 3, generator=g),
    )


def fitted_codec(mano: ManoPair, norm: str = "std") -> HandCodec:
    codec = HandCodec(CodecConfig(norm=norm))
    a, o = codec.encode_raw(random_hands(64, 99), mano)
    codec.set_stats(NormStats.fit(a, o, norm))
    return codec


def assert_hands_close(a: TwoHands, b: TwoHands, atol: float = 2e-5) -> None:
    for name in ("pose_aa", "betas", "rot_mat", "transl"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=atol, msg=name)


def test_slices_cover_the_vector_exactly():
    covered = sorted(i for s in (POSE, BETAS, ROT6D, TRANSL) for i in range(DIM)[s])
    assert covered == list(range(DIM)) and DIM == 64
    assert list(range(DIM)[RELATIVE]) == list(range(55, 64))


def test_6d_round_trip_is_first_two_rows():
    rot = roma.rotvec_to_rotmat(torch.randn(10, 3, generator=torch.Generator().manual_seed(0)))
    six = rotmat_to_6d(rot)
    torch.testing.assert_close(six[:, :3], rot[:, 0])
    torch.testing.assert_close(rot6d_to_rotmat(six), rot, rtol=0, atol=1e-6)
    eye6 = rotmat_to_6d(torch.eye(3)[None])
    assert eye6.tolist() == [[1, 0, 0, 0, 1, 0]]


def test_decode_encode_round_trip_restores_the_camera_frame(mano):
    codec = fitted_codec(mano)
    hands = random_hands(16, 0)
    anchor, other = codec.encode(hands, mano)
    local = codec.decode(anchor, other, mano)
    # In the anchor frame: left hand has identity rotation and its middle MCP at the origin.
    torch.testing.assert_close(local.rot_mat[:, LEFT], torch.eye(3).expand(16, 3, 3))
    mcp = mano(local).middle_mcp()
    torch.testing.assert_close(mcp[:, LEFT], torch.zeros(16, 3), rtol=0, atol=1e-6)
    # to_camera with the anchor's pose restores the original hands exactly.
    restored = codec.to_camera(local, *anchor_frame(hands, mano), mano)
    assert_hands_close(restored, hands)
    torch.testing.assert_close(mano(restored).verts, mano(hands).verts, rtol=0, atol=1e-5)


def test_encode_decode_round_trip_of_vectors(mano):
    codec = fitted_codec(mano)
    anchor, other = codec.encode(random_hands(16, 1), mano)
    # Perturb pose/betas/translation (rotation must stay a valid 6D rotation).
    g = torch.Generator().manual_seed(2)
    anchor[:, :55] += torch.randn(16, 55, generator=g)
    other[:, :55] += torch.randn(16, 55, generator=g)
    other[:, TRANSL] += torch.randn(16, 3, generator=g)
    a2, o2 = codec.encode(codec.decode(anchor, other, mano), mano)
    torch.testing.assert_close(a2, anchor, rtol=0, atol=1e-4)
    torch.testing.assert_close(o2, other, rtol=0, atol=1e-4)


def test_relative_transform_formula_about_the_middle_mcp(mano):
    codec = HandCodec()
    hands = random_hands(8, 3)
    anchor_raw, other_raw = codec.encode_raw(hands, mano)
    j9 = mano(hands).middle_mcp()
    r_l, r_r = hands.rot_mat[:, LEFT], hands.rot_mat[:, RIGHT]
    rel_rot = r_l.transpose(1, 2) @ r_r
    rel_trans = torch.einsum("bji,bj->bi", r_l, j9[:, RIGHT] - j9[:, LEFT])
    torch.testing.assert_close(other_raw[:, ROT6D], rel_rot[:, :2].flatten(1))
    torch.testing.assert_close(other_raw[:, TRANSL], rel_trans)
    assert anchor_raw[:, RELATIVE].tolist() == [[1, 0, 0, 0, 1, 0, 0, 0, 0]] * 8
    # PCA pose: pose = pca @ components of the hand's own side.
    comps = mano.hands_components()
    torch.testing.assert_close(anchor_raw[:, POSE] @ comps[LEFT], hands.pose_aa[:, LEFT].flatten(1),
                               rtol=0, atol=1e-5)  # fmt: skip
    torch.testing.assert_close(other_raw[:, POSE] @ comps[RIGHT], hands.pose_aa[:, RIGHT].flatten(1),
                               rtol=0, atol=1e-5)  # fmt: skip


def test_mirrored_swap_gives_the_mirrored_configuration(mano):
    codec = HandCodec()
    hands = random_hands(8, 4)
    swap = torch.tensor([True, False] * 4)
    swapped = swap_sides(hands, swap)
    assert_hands_close(swapped[swap], hands[swap].mirror(), atol=0)
    assert_hands_close(swapped[~swap], hands[~swap], atol=0)
    # Swapped sample: the right hand is the anchor and the relative transform is the mirror
    # image M (R_r^T R_l) M, M R_r^T (J9_l - J9_r) (reference §2.3 step 4).
    _, other_raw = codec.encode_raw(hands.mirror(), mano)
    j9 = mano(hands).middle_mcp()
    r_l, r_r = hands.rot_mat[:, LEFT], hands.rot_mat[:, RIGHT]
    want_rot = MIRROR @ r_r.transpose(1, 2) @ r_l @ MIRROR
    want_trans = (MIRROR @ r_r.transpose(1, 2) @ (j9[:, LEFT] - j9[:, RIGHT])[..., None])[..., 0]
    torch.testing.assert_close(other_raw[:, ROT6D], want_rot[:, :2].flatten(1), rtol=0, atol=1e-5)
    torch.testing.assert_close(other_raw[:, TRANSL], want_trans, rtol=0, atol=1e-6)
    # The decoded swapped sample, placed back, is the mirrored scene (vertex for vertex).
    m = hands.mirror()
    back = codec.to_camera(codec.decode(*codec.encode(m, mano), mano), *anchor_frame(m, mano), mano)
    torch.testing.assert_close(mano(back).verts, mano(hands).mirror().verts, rtol=0, atol=1e-5)


@pytest.mark.parametrize("norm", ["std", "variance_quirk"])
def test_normalisation(mano, norm):
    codec = HandCodec(CodecConfig(norm=norm))
    a_raw, o_raw = codec.encode_raw(random_hands(200, 5), mano)
    stats = NormStats.fit(a_raw, o_raw, norm)
    codec.set_stats(stats)
    anchor, other = codec.normalize(a_raw, o_raw)
    hand = torch.cat([anchor[:, :55], other[:, :55]])
    if norm == "std":
        torch.testing.assert_close(hand.std(0), torch.ones(55), rtol=0, atol=1e-3)
        torch.testing.assert_close(other[:, RELATIVE].std(0), torch.ones(9), rtol=0, atol=1e-3)
    else:
        raw = torch.cat([a_raw[:, :55], o_raw[:, :55]])
        torch.testing.assert_close(stats.hand_scale, raw.var(0) + 1e-6)
    assert anchor[:, RELATIVE].tolist() == [[1, 0, 0, 0, 1, 0, 0, 0, 0]] * 200
    a2, o2 = codec.denormalize(anchor, other)
    torch.testing.assert_close(o2, o_raw, rtol=0, atol=1e-4)
    torch.testing.assert_close(a2, a_raw, rtol=0, atol=1e-4)
    mask = codec.anchor_loss_mask()
    assert mask.sum().item() == 55 and mask[RELATIVE].sum().item() == 0


def test_encode_is_differentiable(mano):
    codec = fitted_codec(mano)
    hands = random_hands(4, 6)
    pose = hands.pose_aa.clone().requires_grad_(True)
    transl = hands.transl.clone().requires_grad_(True)
    a, o = codec.encode(TwoHands(pose, hands.betas, hands.rot_mat, transl), mano)
    (a.square().sum() + o.square().sum()).backward()
    assert torch.isfinite(pose.grad).all() and pose.grad.abs().sum() > 0
    assert torch.isfinite(transl.grad).all() and transl.grad[:, RIGHT].abs().sum() > 0


def test_norm_stats_reject_bad_input():
    with pytest.raises(ValueError, match="N>=2"):
        NormStats.fit(torch.zeros(1, 64), torch.zeros(1, 64))
    with pytest.raises(ValueError, match="unknown norm"):
        NormStats.fit(torch.randn(4, 64), torch.randn(4, 64), "bogus")  # type: ignore[arg-type]
