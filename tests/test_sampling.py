"""Sampling loop, cascade, classifier-free guidance and the SDS API."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from prior.checkpoint import Prior
from prior.codec import RELATIVE, HandCodec
from prior.denoiser import DenoiserConfig, HandDenoiser
from prior.diffusion import DiffusionConfig, GaussianDiffusion
from prior.guidance import apg_schedule, cfg_x0
from prior.hands import LEFT, ManoPair
from prior.sampling import SamplerConfig, ddim_loop, sample_two_hands, sample_vectors
from prior.sds import sds_loss

TINY = DenoiserConfig(hidden=48, emb=32, ff_dim=64, layers=3, skips=(1,))



class ConstantModel(nn.Module):
    """Predicts the same x0 for every input (an oracle for the loop and SDS)."""

    def __init__(self, x0: Tensor) -> None:
        super().__init__()
        self.x0 = nn.Parameter(x0.clone(), requires_grad=False)
        self.calls: list[tuple[Tensor, Tensor]] = []

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        self.calls.append((t.clone(), cond.clone()))
        return self.x0.expand_as(x_t) + 0 * x_t


@pytest.fixture(scope="module")
def tiny_prior(mano) -> Prior:
    torch.manual_seed(0)
    denoiser = HandDenoiser(TINY).eval()
    return Prior(denoiser, GaussianDiffusion(DiffusionConfig()), HandCodec(), mano.model_name)


def test_cfg_weight_zero_is_the_conditional_prediction():
    g = torch.Generator().manual_seed(0)
    c, u = torch.randn(5, 64, generator=g), torch.randn(5, 64, generator=g)
    for slots in ("relative", "all", None):
        torch.testing.assert_close(cfg_x0(c, u, 0.0, slots), c, rtol=0, atol=0)
    guided = cfg_x0(c, u, 0.1, "relative")
    torch.testing.assert_close(guided[:, :55], c[:, :55], rtol=0, atol=0)  # pose/shape untouched
    torch.testing.assert_close(guided[:, RELATIVE], 1.1 * c[:, RELATIVE] - 0.1 * u[:, RELATIVE])
    torch.testing.assert_close(cfg_x0(c, u, 0.5, "all"), 1.5 * c - 0.5 * u)


def test_apg_schedule():
    s = apg_schedule(42)
    assert s.shape == (42,)
    assert s[0].item() == pytest.approx(7 * 0.9**41, rel=1e-5)  # 0.093 at the noisiest step
    assert s[-1].item() == pytest.approx(7.0)
    assert bool((s[1:] > s[:-1]).all())


@pytest.mark.parametrize("rule", ["interhandgen", "ddim"])
def test_loop_with_an_oracle_returns_its_x0(rule):
    x0 = torch.randn(64, generator=torch.Generator().manual_seed(1))
    model = ConstantModel(x0)
    cfg = SamplerConfig(step_rule=rule, cfg_weight=0.0)
    out = ddim_loop(model, GaussianDiffusion(DiffusionConfig()), torch.randn(3, 64), None, cfg)
    torch.testing.assert_close(out, x0.expand(3, 64), rtol=0, atol=1e-6)
    assert [int(t[0]) for t, _ in model.calls] == list(range(123, -1, -3))
    assert all(bool((c == 0).all()) for _, c in model.calls)  # None = null condition


def test_loop_calls_guidance_once_per_step_after_cfg():
    x0 = torch.zeros(64)
    seen: list[int] = []

    def guide(x0_hat: Tensor, step: int) -> Tensor:
        seen.append(step)
        return x0_hat + 1.0

    model = ConstantModel(x0)
    cond = torch.ones(2, 64)
    out = ddim_loop(model, GaussianDiffusion(DiffusionConfig()), torch.randn(2, 64), cond,
                    SamplerConfig(steps=10), guide)  # fmt: skip
    assert seen == list(range(10))
    torch.testing.assert_close(out, torch.ones(2, 64))  # the last step returns the guided x0
    # CFG on: one forward of 2B per step, [cond ; null].
    assert all(c.shape[0] == 4 and (c[:2] == 1).all() and (c[2:] == 0).all() for _, c in model.calls)


def test_cascade_returns_finite_vectors_and_is_seeded(tiny_prior):
    cfg = SamplerConfig(steps=8, apg=False)
    a1, o1 = sample_vectors(tiny_prior, 6, cfg, torch.Generator().manual_seed(3))
    a2, o2 = sample_vectors(tiny_prior, 6, cfg, torch.Generator().manual_seed(3))
    assert a1.shape == o1.shape == (6, 64)
    assert torch.isfinite(a1).all() and torch.isfinite(o1).all()
    torch.testing.assert_close(a1, a2, rtol=0, atol=0)
    torch.testing.assert_close(o1, o2, rtol=0, atol=0)
    assert a1[:, RELATIVE].tolist() == [[1, 0, 0, 0, 1, 0, 0, 0, 0]] * 6
    a3, _ = sample_vectors(tiny_prior, 6, cfg, torch.Generator().manual_seed(4))
    assert not torch.allclose(a1, a3)


def test_shared_noise_switch(tiny_prior):
    # With an oracle ignoring its input, the first x_t of both loops is the initial noise.
    seen: dict[str, Tensor] = {}

    class Recorder(ConstantModel):
        def forward(self, x_t, t, cond):
            key = "other" if bool((cond != 0).any()) else "anchor"
            seen.setdefault(key, x_t[: x_t.shape[0]].clone())
            return super().forward(x_t, t, cond)

    rec = Recorder(torch.zeros(64) + 0.5)
    prior = Prior(rec, tiny_prior.diffusion, tiny_prior.codec, "standin")  # type: ignore[arg-type]
    for shared in (True, False):
        seen.clear()
        sample_vectors(prior, 4, SamplerConfig(steps=3, cfg_weight=0.0, shared_noise=shared),
                       torch.Generator().manual_seed(5))  # fmt: skip
        assert torch.equal(seen["anchor"], seen["other"]) == shared


def test_sample_two_hands_in_the_anchor_frame(tiny_prior):
    mano = ManoPair()
    hands = sample_two_hands(tiny_prior, mano, 4, SamplerConfig(steps=4, apg=False),
                             torch.Generator().manual_seed(6))  # fmt: skip
    assert hands.batch_size == 4
    torch.testing.assert_close(hands.rot_mat[:, LEFT], torch.eye(3).expand(4, 3, 3))
    mcp = mano(hands).middle_mcp()[:, LEFT]
    torch.testing.assert_close(mcp, torch.zeros(4, 3), rtol=0, atol=1e-5)


def test_sds_gradient_is_x_minus_x0_hat(tiny_prior):
    x0 = torch.randn(64, generator=torch.Generator().manual_seed(7))
    prior = Prior(ConstantModel(x0), tiny_prior.diffusion, tiny_prior.codec, "standin")  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(8)
    anchor = torch.randn(5, 64, generator=g).requires_grad_(True)
    other = torch.randn(5, 64, generator=g).requires_grad_(True)
    loss = sds_loss(prior, anchor, other, (0.02, 0.5), 0.0, torch.Generator().manual_seed(9))
    assert loss.shape == (5,)
    loss.sum().backward()
    mask = tiny_prior.codec.anchor_loss_mask()
    torch.testing.assert_close(other.grad, (other - x0).detach())
    torch.testing.assert_close(anchor.grad, mask * (anchor - x0).detach())
    # The other hand is conditioned on the (detached) anchor, the anchor on the null condition.
    (t, cond), = prior.denoiser.calls
    assert t.min() >= round(0.02 * 128) and t.max() <= round(0.5 * 128)
    assert (cond[:5] == 0).all() and torch.equal(cond[5:], anchor.detach())


def test_sds_with_a_real_network_moves_towards_its_prediction(tiny_prior):
    g = torch.Generator().manual_seed(10)
    anchor = torch.randn(3, 64, generator=g).requires_grad_(True)
    other = torch.randn(3, 64, generator=g).requires_grad_(True)
    loss = sds_loss(tiny_prior, anchor, other, cfg_weight=0.1, generator=torch.Generator().manual_seed(1))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and (loss > 0).all()
    assert torch.isfinite(other.grad).all() and other.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="t_range"):
        sds_loss(tiny_prior, anchor, other, t_range=(0.6, 0.2))


def test_sample_cli_writes_npz_and_resolved_config(tmp_path, tiny_prior):
    import numpy as np

    from prior.__main__ import main
    from prior.checkpoint import save_prior

    ckpt = tmp_path / "prior.pt"
    save_prior(ckpt, tiny_prior, step=0)
    out = tmp_path / "s.npz"
    rc = main(["sample", "--ckpt", str(ckpt), "--n", "5", "--out", str(out), "--seed", "3",
               "--no-apg", "--set", "sampler.steps=4", "--set", "batch_size=3"])  # fmt: skip
    assert rc == 0
    with np.load(out) as z:
        assert z["params"].shape == (5, 128) and z["pose_aa"].shape == (5, 2, 15, 3)
        assert np.isfinite(z["params"]).all() and str(z["hand_model"]).startswith("standin-")
    assert (tmp_path / "s.config.resolved.yaml").is_file()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["sample", "--ckpt", str(bad), "--n", "2", "--out", str(tmp_path / "x.npz"),
                 "--no-apg"]) == 2  # fmt: skip
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("sigma, rule, lo, hi", [
    (1.0, "ddim", 0.95, 1.05),          # standard DDIM reproduces unit-variance data
    (1.0, "interhandgen", 0.0, 0.01),   # the original rule collapses it to the mean
    (15.0, "ddim", 0.0, 0.15),          # variance-scaled data: the chain never reaches N(0, I)
    (15.0, "interhandgen", 0.6, 1.2),   # ... which the original rule largely compensates
])  # fmt: skip
def test_step_rules_with_the_exact_gaussian_denoiser(sigma, rule, lo, hi):
    diffusion = GaussianDiffusion(DiffusionConfig())

    def bayes_x0(x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:  # E[x0 | x_t], x0 ~ N(0, s^2)
        ab = diffusion.alpha_bar_at(t)[:, None]
        return ab.sqrt() * sigma**2 / (ab * sigma**2 + 1 - ab) * x_t

    x_T = torch.randn(4000, 8, generator=torch.Generator().manual_seed(0))
    out = ddim_loop(bayes_x0, diffusion, x_T, None, SamplerConfig(step_rule=rule, cfg_weight=0.0))
    assert lo <= out.std().item() / sigma <= hi


def test_auto_step_rule_follows_the_normalisation():
    from prior.sampling import resolve_step_rule

    assert resolve_step_rule("auto", "std") == "ddim"
    assert resolve_step_rule("auto", "variance_quirk") == "interhandgen"
    assert resolve_step_rule("interhandgen", "std") == "interhandgen"
    with pytest.raises(ValueError):
        resolve_step_rule("euler", "std")


def test_sds_of_two_hands_reaches_the_hand_parameters(tiny_prior):
    import roma

    from prior.hands import TwoHands
    from prior.sds import sds_loss_hands

    g = torch.Generator().manual_seed(11)
    pose = (0.2 * torch.randn(3, 2, 15, 3, generator=g)).requires_grad_(True)
    transl = (0.05 * torch.randn(3, 2, 3, generator=g)).requires_grad_(True)
    hands = TwoHands(pose, torch.zeros(3, 2, 10),
                     roma.rotvec_to_rotmat(torch.randn(3, 2, 3, generator=g)), transl)  # fmt: skip
    loss = sds_loss_hands(tiny_prior, hands, ManoPair(), generator=torch.Generator().manual_seed(0),
                          symmetric=True)  # fmt: skip
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(pose.grad).all() and pose.grad.abs().sum() > 0
    assert torch.isfinite(transl.grad).all() and transl.grad.abs().sum() > 0
