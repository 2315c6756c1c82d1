"""Diffusion schedule identities and the denoiser's structure."""

from __future__ import annotations

import pytest
import torch

from prior.denoiser import DenoiserConfig, HandDenoiser
from prior.diffusion import DiffusionConfig, GaussianDiffusion

TINY = DenoiserConfig(hidden=48, emb=32, ff_dim=64, layers=3, skips=(1,))



@pytest.fixture(scope="module")
def diffusion() -> GaussianDiffusion:
    return GaussianDiffusion(DiffusionConfig())


def test_schedule_matches_interhandgen(diffusion):
    ab = diffusion.alpha_bar
    assert ab.shape == (129,)
    assert ab[0].item() == pytest.approx(0.9999, abs=1e-6)
    assert ab[123].item() == pytest.approx(0.5465, abs=1e-4)
    assert ab[128].item() == pytest.approx(0.5201, abs=1e-4)
    assert diffusion.alpha_bar_at(torch.tensor([-1])).item() == 1.0


def test_q_sample_moments(diffusion):
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 2), 1.5)
    for t in (0, 60, 128):
        tt = torch.full((x0.shape[0],), t)
        x_t = diffusion.q_sample(x0, tt, torch.randn(x0.shape, generator=g))
        ab = diffusion.alpha_bar[t].item()
        assert x_t.mean().item() == pytest.approx(ab**0.5 * 1.5, abs=5e-3)
        assert x_t.var().item() == pytest.approx(1 - ab, abs=5e-3 + 0.01 * (1 - ab))


@pytest.mark.parametrize("rule", ["interhandgen", "ddim"])
def test_exact_x0_is_recovered_by_the_final_step(diffusion, rule):
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(16, 64, generator=g), torch.randn(16, 64, generator=g)
    t = torch.full((16,), 3)
    x_t = diffusion.q_sample(x0, t, eps)
    out = diffusion.ddim_step(x_t, x0, t, torch.full((16,), -1), rule=rule)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-6)


def test_ddim_step_with_exact_x0_stays_on_the_forward_marginal(diffusion):
    # Standard DDIM (eta=0) with the true x0 keeps the same implied noise: x_prev = q(x0, t_prev, eps).
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(8, 64, generator=g), torch.randn(8, 64, generator=g)
    t, t_prev = torch.full((8,), 90), torch.full((8,), 60)
    x_prev = diffusion.ddim_step(diffusion.q_sample(x0, t, eps), x0, t, t_prev, rule="ddim")
    torch.testing.assert_close(x_prev, diffusion.q_sample(x0, t_prev, eps), rtol=0, atol=1e-5)
    torch.testing.assert_close(diffusion.eps_from_x0(diffusion.q_sample(x0, t, eps), t, x0), eps,
                               rtol=0, atol=1e-5)  # fmt: skip


def test_interhandgen_rule_is_the_original_formula(diffusion):
    g = torch.Generator().manual_seed(3)
    x_t, x0 = torch.randn(4, 64, generator=g), torch.randn(4, 64, generator=g)
    t, t_prev = torch.full((4,), 30), torch.full((4,), 27)
    ab_n = diffusion.alpha_bar[27]
    want = ab_n.sqrt() * x0 + (1 - ab_n).sqrt() * (x0 - x_t)
    torch.testing.assert_close(diffusion.ddim_step(x_t, x0, t, t_prev), want)


def test_stochastic_step_needs_noise(diffusion):
    x = torch.zeros(2, 64)
    with pytest.raises(ValueError, match="noise"):
        diffusion.ddim_step(x, x, torch.full((2,), 5), torch.full((2,), 2), eta=1.0)


def test_sampling_timesteps(diffusion):
    ts = diffusion.sampling_timesteps(42, "uniform", 126)
    assert ts.tolist() == list(range(123, -1, -3))
    for skip in ("uniform", "quad"):
        for num in (5, 20, 42):
            s = diffusion.sampling_timesteps(num, skip)
            assert bool((s[1:] < s[:-1]).all()) and s[-1].item() == 0
    with pytest.raises(ValueError):
        diffusion.sampling_timesteps(42, "uniform", 500)


def test_antithetic_t(diffusion):
    t = diffusion.antithetic_t(10, torch.Generator().manual_seed(0))
    assert t.shape == (10,) and t.min() >= 0 and t.max() <= 128
    half = 10 // 2 + 1
    torch.testing.assert_close(t[:4] + t[half : half + 4], torch.full((4,), 128))


def test_training_loss_mask_ignores_masked_dims(diffusion):
    torch.manual_seed(0)
    model = HandDenoiser(TINY).eval()
    g = torch.Generator().manual_seed(4)
    x0, noise = torch.randn(6, 64, generator=g), torch.randn(6, 64, generator=g)
    t, cond = torch.full((6,), 10), torch.zeros(6, 64)
    mask = torch.ones(64)
    mask[55:] = 0
    with torch.no_grad():
        pred = model(diffusion.q_sample(x0, t, noise), t, cond)
        want = ((pred - x0)[:, :55] ** 2).mean(1)
        got = diffusion.training_loss(model, x0, cond, t, noise, mask)
    torch.testing.assert_close(got, want)


def test_denoiser_has_interhandgen_parameter_count():
    with torch.device("meta"):
        model = HandDenoiser(DenoiserConfig())
    assert sum(p.numel() for p in model.parameters()) == 75_461_984


def test_attention_is_per_sample_unless_quirk():
    g = torch.Generator().manual_seed(5)
    x, c = torch.randn(6, 64, generator=g), torch.randn(6, 64, generator=g)
    t = torch.randint(0, 129, (6,), generator=g)
    for quirk in (False, True):
        torch.manual_seed(0)
        model = HandDenoiser(DenoiserConfig(**{**TINY.__dict__, "attention_over_batch_quirk": quirk}))
        model.eval()
        with torch.no_grad():
            full, alone = model(x, t, c)[:1], model(x[:1], t[:1], c[:1])
        same = torch.allclose(full, alone, atol=1e-5)
        assert same != quirk  # clean: batch-independent; quirk: mixes samples across the batch


def test_denoiser_rejects_bad_shapes():
    model = HandDenoiser(TINY)
    with pytest.raises(ValueError, match="x_t and cond"):
        model(torch.zeros(2, 63), torch.zeros(2), torch.zeros(2, 63))
    with pytest.raises(ValueError, match="skips"):
        DenoiserConfig(layers=3, skips=(5,))
