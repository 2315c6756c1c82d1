"""Anti-penetration guidance: lowers the energy; batched == the per-sample loop reference."""

from __future__ import annotations

import pytest
import roma
import torch

from prior.apg import penetration_guidance, penetration_guidance_loop, step_sizes
from prior.codec import TRANSL, HandCodec
from prior.hands import ManoPair, TwoHands
from prior.penetration import penetration_energy


def _overlapping(n: int, seed: int) -> TwoHands:
    g = torch.Generator().manual_seed(seed)
    eye = torch.eye(3).expand(n, 3, 3)
    rot = roma.rotvec_to_rotmat(torch.randn(n, 3, generator=g) * 0.8)
    palm_r, palm_l = torch.tensor([0.045, -0.01, 0.0]), torch.tensor([-0.045, -0.01, 0.0])
    transl = torch.zeros(n, 2, 3)
    transl[:, 1] = palm_l - rot @ palm_r + 0.01 * torch.randn(n, 3, generator=g)
    return TwoHands(0.2 * torch.randn(n, 2, 15, 3, generator=g), torch.zeros(n, 2, 10),
                    torch.stack([eye, rot], 1), transl)  # fmt: skip


def _energy(codec: HandCodec, mano: ManoPair, anchor: torch.Tensor, other: torch.Tensor):
    with torch.no_grad():
        return penetration_energy(mano(codec.decode(anchor, other, mano)))


def test_schedule_matches_reference() -> None:
    s = step_sizes(42, 7.0, 0.9, 0.1)
    assert abs(float(s[0, 0]) - 7 * 0.9**41) < 1e-6 and abs(float(s[40, 0]) - 6.3) < 1e-5
    assert torch.allclose(s[41, TRANSL], torch.tensor(7.0)) and abs(float(s[41, 0]) - 0.7) < 1e-6


def test_apg_strictly_lowers_penetration(mano: ManoPair) -> None:
    codec = HandCodec()
    anchor, other = codec.encode(_overlapping(4, 0), mano)
    before = _energy(codec, mano, anchor, other)
    assert (before > 1.0).all()
    guide = penetration_guidance(codec, mano, anchor)
    x = other
    for k in (39, 40, 41):
        x = guide(x, k)
    after = _energy(codec, mano, anchor, x)
    assert (after < before).all(), (before, after)
    assert after.sum() < 0.7 * before.sum()
    # Untouched when nothing penetrates and at skipped steps.
    assert torch.equal(
        penetration_guidance(codec, mano, anchor, min_step_weight=1.0)(other, 0), other
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_equals_loop_reference(mano: ManoPair, dtype: torch.dtype) -> None:
    """Same update. The batched guidance differentiates only the pairs' vertices
    (prior.kinematics) and the loop the whole smplx mesh: equal to 1e-9 in float64, to float32
    rounding (amplified by the step size and the preconditioner) in float32."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = mano if dtype == torch.float32 else ManoPair().to(dtype=dtype)
        codec = HandCodec()
        anchor, other = codec.encode(_overlapping(3, 1).to(dtype=dtype), model)
        batched = penetration_guidance(codec, model, anchor, mode="exact")(other, 40)
        loop = penetration_guidance_loop(codec, model, anchor)(other, 40)
    finally:
        torch.set_default_dtype(previous)
    assert batched.dtype == dtype and not torch.equal(batched, other)
    tol = {"atol": 1e-4, "rtol": 1e-3} if dtype == torch.float32 else {"atol": 1e-9, "rtol": 1e-9}
    torch.testing.assert_close(batched, loop, **tol)


def test_decode_callable_is_accepted(mano: ManoPair) -> None:
    codec = HandCodec()
    anchor, other = codec.encode(_overlapping(2, 2), mano)
    a = penetration_guidance(codec, mano, anchor)(other, 41)
    b = penetration_guidance(lambda x, y: codec.decode(x, y, mano), mano, anchor)(other, 41)
    assert not torch.equal(a, other)
    # Same update; the codec path poses the other hand once (decode_verts) and differentiates
    # only the pairs' vertices (prior.kinematics): float32 rounding differs.
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_decode_verts_equals_decode_then_model(mano: ManoPair) -> None:
    codec = HandCodec()
    anchor, other = codec.encode(_overlapping(3, 3), mano)
    full = mano(codec.decode(anchor, other, mano)).verts
    for side in (0, 1):
        torch.testing.assert_close(codec.decode_verts(anchor, other, mano, side), full[:, side],
                                   atol=1e-6, rtol=0)  # fmt: skip


def test_max_queries_thins_only_gross_overlaps(mano: ManoPair) -> None:
    from prior.penetration import find_penetrations

    meshes = mano(_overlapping(4, 4))
    full = find_penetrations(meshes)
    thin = find_penetrations(meshes, max_queries=64)
    assert 0 < len(thin) < len(full)
    # every thinned pair is one of the full pairs (same query, same nearest target)
    key = lambda p: set(zip(p.sample.tolist(), p.side.tolist(), p.query.tolist(), p.target.tolist()))  # noqa: E731
    assert key(thin) <= key(full)
    assert key(find_penetrations(meshes, max_queries=100000)) == key(full)


def test_apg_step_lowers_penetration(mano: ManoPair) -> None:
    from prior.apg import apg_step

    codec = HandCodec()
    anchor, other = codec.encode(_overlapping(4, 5), mano)
    before = _energy(codec, mano, anchor, other)
    after = _energy(codec, mano, anchor, apg_step(codec, mano, anchor, other, weight=7.0))
    assert (after < before).all(), (before, after)


def test_preconditioner_keeps_the_original_step_in_metres():
    """std-normalised codecs scale the gradient by std^2; the variance quirk needs no factor."""
    from prior.apg import gradient_preconditioner
    from prior.codec import CodecConfig, HandCodec

    codec = HandCodec(CodecConfig(norm="std"))
    codec.rel_scale.fill_(0.04)
    factor = gradient_preconditioner(codec)
    assert factor.shape == (64,) and torch.allclose(factor[-3:], torch.full((3,), 0.0016))
    assert gradient_preconditioner(HandCodec(CodecConfig(norm="variance_quirk"))) == 1.0


def test_last_step_repeats_lower_the_energy_further(mano: ManoPair) -> None:
    codec = HandCodec()  # std-like scales: one step does not resolve the overlap
    codec.rel_scale.fill_(0.02)
    codec.hand_scale.fill_(0.2)
    anchor, other = codec.encode(_overlapping(4, 6), mano)
    once = penetration_guidance(codec, mano, anchor)(other, 41)
    thrice = penetration_guidance(codec, mano, anchor, last_step_repeats=3)(other, 41)
    left = _energy(codec, mano, anchor, once).sum()
    assert left > 0 and _energy(codec, mano, anchor, thrice).sum() < left
    # only the last step repeats
    torch.testing.assert_close(penetration_guidance(codec, mano, anchor, last_step_repeats=3)(other, 40),
                               penetration_guidance(codec, mano, anchor)(other, 40))  # fmt: skip


def test_full_last_steps_query_every_candidate(mano: ManoPair) -> None:
    """With a query cap, the last ``full_last_steps`` steps act like the uncapped guidance and
    the earlier ones like the capped one."""
    codec = HandCodec()
    anchor, other = codec.encode(_overlapping(4, 4), mano)
    capped = penetration_guidance(codec, mano, anchor, max_queries=64)
    uncapped = penetration_guidance(codec, mano, anchor)
    mixed = penetration_guidance(codec, mano, anchor, max_queries=64, full_last_steps=2)
    assert not torch.allclose(capped(other, 41), uncapped(other, 41))  # the cap matters here
    for step in (40, 41):
        torch.testing.assert_close(mixed(other, step), uncapped(other, step))
    torch.testing.assert_close(mixed(other, 39), capped(other, 39))


def test_guidance_is_reproducible(mano: ManoPair) -> None:
    """Bitwise the same update on every call: the differentiable pass must not go through
    CPU kernels that accumulate repeated indices in parallel (advanced-indexing backward did,
    and the sampler's chaotic trajectories turned those float differences into other samples)."""
    codec = HandCodec()
    anchor, other = codec.encode(_overlapping(64, 0), mano)
    outs = [penetration_guidance(codec, mano, anchor)(other, 41) for _ in range(4)]
    assert not torch.equal(outs[0], other)
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_max_shift_bounds_the_translation_step(mano: ManoPair) -> None:
    """A capped step moves the other hand's translation by at most ``max_shift`` metres, along
    the uncapped step's direction; samples whose step is smaller are untouched."""
    from prior.codec import NormStats  # noqa: PLC0415

    hands = _overlapping(8, 4)
    codec = HandCodec(stats=NormStats.fit(*HandCodec().encode_raw(hands, mano)))
    anchor, other = codec.encode(hands, mano)
    free = penetration_guidance(codec, mano, anchor)(other, 41)
    cap = 0.0008  # metres: between the steps of these samples (0.2-1.4 mm)
    capped = penetration_guidance(codec, mano, anchor, max_shift=cap)(other, 41)
    metres = torch.cat([codec.hand_scale, codec.rel_scale])[TRANSL]
    shift_free = ((free - other)[:, TRANSL] * metres).norm(dim=-1)
    shift_capped = ((capped - other)[:, TRANSL] * metres).norm(dim=-1)
    assert (shift_free > cap).any() and (shift_free < cap).any()
    assert (shift_capped <= cap * (1 + 1e-4)).all()
    small = shift_free <= cap
    assert torch.equal(capped[small], free[small])
    scale = (shift_capped / shift_free.clamp_min(1e-12))[:, None]
    torch.testing.assert_close(capped - other, (free - other) * scale, atol=1e-5, rtol=1e-4)
