"""Reverse-diffusion loop and the two-hand cascade (InterHandGen reference §5).

The loop is a function of ``(model, diffusion, x_T, cond, knobs)``; guidance enters at one
seam, ``guide_x0(x0_hat, step) -> x0_hat``, after classifier-free guidance and before the step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Literal

import torch
from torch import Tensor

from prior.checkpoint import Prior
from prior.diffusion import GaussianDiffusion, StepRule
from prior.guidance import GuideFactory, GuideFn, cfg_x0
from prior.hands import ManoPair, TwoHands

__all__ = ["SamplerConfig", "ddim_loop", "sample_vectors", "sample_two_hands", "apg_factory",
           "resolve_step_rule"]


@dataclass
class SamplerConfig:
    """Reverse-process options; defaults reproduce InterHandGen's sampler.

    Attributes:
        steps, skip, horizon: timesteps (42 uniform steps 123, 120, ..., 0 out of 126).
        eta: DDIM stochasticity (0 = deterministic, the original).
        step_rule: "ddim" (standard DDIM with the implied noise), "interhandgen" (the
            original's update, ``x0_hat - x_t`` as the direction) or "auto" (default):
            "interhandgen" for a prior trained with ``norm: variance_quirk``, else "ddim".
            Measured with the exact Gaussian denoiser (tests/test_sampling.py): on
            unit-variance data the original rule collapses every sample to the mean (std 0.00
            vs 0.99 for DDIM); it only works combined with the variance normalisation
            (data std 5-25), where it compensates for the chain never reaching N(0, I).
        cfg_weight: classifier-free guidance weight w on x0 (original 0.1; 0 = off, which also
            skips the unconditional forward).
        cfg_slots: "relative" (other hand's 6D rotation + translation only, original) or "all".
        shared_noise: reuse the anchor's initial noise for the other hand (the original does).
            Default off: independent noise, since nothing in the method asks the two hands to
            start from the same point and sharing it couples their trajectories.
        apg, apg_weight, apg_decay, apg_last_step_scale, apg_rho, apg_mode,
            apg_min_step_weight, apg_max_queries, apg_last_step_repeats, apg_full_last_steps,
            apg_max_shift:
            anti-penetration guidance knobs
            (:func:`apg_factory`, ``prior.apg.penetration_guidance``); ``sample_vectors`` itself
            only applies the ``guide`` it is given. Defaults 2.0 / 128 / 1 / 0 / 0.05: APG at the
            12 steps with ``s_k >= 2`` only, at most ~128 queried vertices per hand in a gross
            overlap (``apg_full_last_steps=2``: all of them at the last 2 steps; it met the
            reference's penetration in the random-weight bench but was worse with the trained
            prior: FID 58.7 vs 50.9, 0.37 vs 0.28 cm^3 over 3 runs), each step moving the other
            hand by at most 5 cm (uncapped, a few samples thrown metres away decided FID: 6 runs
            56.2 vs 48.7 capped, docs/evaluation.md).
            Measured with the default checkpoint (docs/evaluation.md, docs/performance.md): 5x
            less guidance time than every-step, all-vertex APG for somewhat more penetration
            (1,000 samples, max queries 256: 4.7 % vs 4.1 % penetrating, 0.42 vs 0.19 cm^3);
            128 instead of 256 queries halves the pair search and over 3 runs of 1,000 samples
            left 0.28 vs 0.37 cm^3 (FID 50.9 vs 48.2, inside the runs' spread).
    """

    steps: int = 42
    skip: Literal["uniform", "quad"] = "uniform"
    horizon: int = 126
    eta: float = 0.0
    step_rule: Literal["auto", "interhandgen", "ddim"] = "auto"
    cfg_weight: float = 0.1
    cfg_slots: Literal["relative", "all"] = "relative"
    shared_noise: bool = False
    apg: bool = True
    apg_weight: float = 7.0
    apg_decay: float = 0.9
    apg_last_step_scale: float = 0.1
    apg_rho: float = 0.05
    apg_mode: Literal["fast", "exact"] = "fast"
    apg_min_step_weight: float = 2.0
    apg_max_queries: int = 128
    apg_last_step_repeats: int = 1
    apg_full_last_steps: int = 0
    apg_max_shift: float = 0.05


Model = Callable[[Tensor, Tensor, Tensor], Tensor]


def resolve_step_rule(rule: str, norm: str) -> StepRule:
    """"auto" -> the original's rule for variance-normalised priors, standard DDIM otherwise."""
    if rule == "auto":
        return "interhandgen" if norm == "variance_quirk" else "ddim"
    if rule not in ("interhandgen", "ddim"):
        raise ValueError(f"unknown step rule {rule!r}; use 'auto', 'interhandgen' or 'ddim'")
    return rule  # type: ignore[return-value]


def ddim_loop(
    model: Model,
    diffusion: GaussianDiffusion,
    x_T: Tensor,
    cond: Tensor | None,
    cfg: SamplerConfig,
    guide_x0: GuideFn | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Run the reverse process from ``x_T`` and return the final x0 prediction.

    Args:
        model: ``f(x_t, t, cond) -> x0_hat``.
        diffusion: the schedule.
        x_T: (B, D) initial noise.
        cond: (B, D) condition, or None for the null condition (no CFG then).
        cfg: sampler options ("auto" step rule = "ddim" here).
        guide_x0: optional ``(x0_hat, step) -> x0_hat`` applied after CFG at every step.
        generator: noise source for eta > 0.
    Returns:
        (B, D) sample (the last step goes to t = -1 where x equals x0_hat).
    """
    rule: StepRule = "ddim" if cfg.step_rule == "auto" else cfg.step_rule
    timesteps = diffusion.sampling_timesteps(cfg.steps, cfg.skip, cfg.horizon).tolist()
    b = x_T.shape[0]
    null = torch.zeros_like(x_T)
    use_cfg = cond is not None and cfg.cfg_weight != 0.0
    x_t = x_T
    with torch.no_grad():
        for k, t in enumerate(timesteps):
            t_prev = timesteps[k + 1] if k + 1 < len(timesteps) else -1
            t_vec = torch.full((b,), t, dtype=torch.long, device=x_T.device)
            if use_cfg:
                # Classifier-free guidance on x0: one forward of [cond ; null].
                both = model(torch.cat([x_t, x_t]), torch.cat([t_vec, t_vec]),
                             torch.cat([cond, null]))  # fmt: skip
                x0_hat = cfg_x0(both[:b], both[b:], cfg.cfg_weight, cfg.cfg_slots)
            else:
                x0_hat = model(x_t, t_vec, null if cond is None else cond)
            # Injected guidance (e.g. anti-penetration) adjusts x0_hat.
            if guide_x0 is not None:
                with torch.enable_grad():
                    x0_hat = guide_x0(x0_hat, k).detach()
            # DDIM-style update t -> t_prev.
            noise = None
            if cfg.eta > 0:
                noise = torch.randn(x_t.shape, generator=generator,
                                    device=_gen_device(generator)).to(x_t)  # fmt: skip
            x_t = diffusion.ddim_step(x_t, x0_hat, t_vec, torch.full_like(t_vec, t_prev), cfg.eta,
                                      noise, rule)  # fmt: skip
    return x_t


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def sample_vectors(
    prior: Prior,
    n: int,
    cfg: SamplerConfig,
    generator: torch.Generator | None = None,
    guide: GuideFactory | None = None,
) -> tuple[Tensor, Tensor]:
    """Cascade in normalised space: anchor unconditional, then the other hand given it.

    Args:
        prior: the prior (its device is used).
        n: number of samples.
        cfg: sampler options.
        generator: source of the initial noise (and of eta noise).
        guide: optional factory called with the anchor (n, 64) that returns the
            ``guide_x0(x0_hat, step)`` callable for the other hand's loop (e.g. APG).
    Returns:
        anchor (n, 64) with its rot/transl slots set to identity/zero, other (n, 64).
    """
    device = prior.device
    model = prior.denoiser
    cfg = replace(cfg, step_rule=resolve_step_rule(cfg.step_rule, prior.codec.cfg.norm))
    was_training = model.training
    model.eval()
    try:
        z_anchor = torch.randn(n, 64, generator=generator, device=_gen_device(generator))
        z_other = z_anchor if cfg.shared_noise else torch.randn(
            n, 64, generator=generator, device=_gen_device(generator))  # fmt: skip
        # 1) Anchor hand with the null condition.
        anchor = ddim_loop(model, prior.diffusion, z_anchor.to(device), None, cfg, None, generator)
        # 2) Its rotation/translation outputs are untrained: replace by the constants.
        anchor = prior.codec.fix_anchor_slots(anchor)
        # 3) Other hand conditioned on the anchor, with CFG and optional guidance.
        guide_x0 = guide(anchor) if guide is not None else None
        other = ddim_loop(model, prior.diffusion, z_other.to(device), anchor, cfg, guide_x0,
                          generator)  # fmt: skip
    finally:
        model.train(was_training)
    return anchor, other


def sample_two_hands(
    prior: Prior,
    mano: ManoPair,
    n: int,
    cfg: SamplerConfig,
    generator: torch.Generator | None = None,
    guide: GuideFactory | None = None,
) -> TwoHands:
    """Sample ``n`` two-hand interactions, as TwoHands in the anchor (left-hand) frame.

    See :func:`sample_vectors` for the arguments; ``mano`` decodes the vectors. With
    ``cfg.apg`` and no explicit ``guide``, anti-penetration guidance comes from ``cfg``.
    """
    if guide is None and cfg.apg:
        guide = apg_factory(prior, mano, cfg)
    anchor, other = sample_vectors(prior, n, cfg, generator, guide)
    with torch.no_grad():
        return prior.codec.decode(anchor, other, mano)


def apg_factory(prior: Prior, mano: ManoPair, cfg: SamplerConfig) -> GuideFactory:
    """Anti-penetration guidance for :func:`sample_vectors` built from ``cfg``'s APG knobs.

    Calls ``prior.apg.penetration_guidance(codec, mano, anchor, ...)`` once the anchor is known.
    """
    try:
        from prior.apg import penetration_guidance  # noqa: PLC0415
    except ImportError as e:
        raise ImportError(f"anti-penetration guidance is not available ({e}); disable APG") from e

    def factory(anchor: Tensor) -> GuideFn:
        return penetration_guidance(
            prior.codec, mano, anchor, num_steps=cfg.steps, weight=cfg.apg_weight,
            decay=cfg.apg_decay, last_step_scale=cfg.apg_last_step_scale, rho=cfg.apg_rho,
            mode=cfg.apg_mode, min_step_weight=cfg.apg_min_step_weight,
            max_queries=cfg.apg_max_queries, last_step_repeats=cfg.apg_last_step_repeats,
            full_last_steps=cfg.apg_full_last_steps, max_shift=cfg.apg_max_shift,
        )  # fmt: skip

    return factory
