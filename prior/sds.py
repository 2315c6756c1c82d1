"""Score distillation with the prior (InterHandGen §8's "single-step forward-reverse" critic).

For current parameters ``x`` the loss noises them to a random ``t``, denoises with the frozen
network (no gradient through it) and returns ``0.5 w(t) ||x - stopgrad(x0_hat)||^2``, whose
gradient is ``w(t) (x - x0_hat)``: for an x0-predicting model that is proportional to
``eps_hat - eps``, the SDS direction. The anchor uses the null condition; the other hand is
conditioned on the (detached) anchor.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor

from prior.checkpoint import Prior
from prior.codec import swap_sides
from prior.guidance import cfg_x0
from prior.hands import ManoPair, TwoHands

__all__ = ["sds_loss", "sds_loss_hands"]

Weighting = Literal["uniform", "snr"]
# guide(anchor (B, 64), other_x0_hat (B, 64)) -> guided other_x0_hat, e.g. prior.apg.apg_step.
X0Guide = Callable[[Tensor, Tensor], Tensor]


def _weight(alpha_bar: Tensor, weighting: Weighting) -> Tensor:
    if weighting == "uniform":
        return torch.ones_like(alpha_bar)
    if weighting == "snr":  # DreamFusion's w(t) = 1 - ab turned into x0 units
        return (alpha_bar * (1 - alpha_bar)).sqrt()
    raise ValueError(f"unknown SDS weighting {weighting!r}; use 'uniform' or 'snr'")


def sds_loss(
    prior: Prior,
    anchor: Tensor,
    other: Tensor,
    t_range: tuple[float, float] = (0.02, 0.5),
    cfg_weight: float = 0.0,
    generator: torch.Generator | None = None,
    weighting: Weighting = "uniform",
    cfg_slots: Literal["relative", "all"] = "relative",
    guide: X0Guide | None = None,
) -> Tensor:
    """SDS loss of normalised vectors.

    Args:
        prior: the frozen prior.
        anchor, other: (B, 64) normalised vectors (e.g. ``prior.codec.encode(hands, mano)``),
            differentiable w.r.t. whatever is being fitted.
        t_range: fractions of the chain ``(lo, hi)``; t is drawn uniformly from the integers
            in ``[lo (T-1), hi (T-1)]``.
        cfg_weight: classifier-free guidance weight for the other hand (0 = none).
        generator: source of t and noise.
        weighting: "uniform" (w = 1) or "snr" (w = sqrt(ab (1 - ab))).
        cfg_slots: CFG slots, as in sampling.
        guide: applied to the other hand's x0 prediction (after CFG), as the sampler applies
            anti-penetration guidance: the loss then pulls towards the guided prediction.
    Returns:
        (B,) loss; its gradient w.r.t. (anchor, other) is ``w(t) (x - x0_hat)`` (the anchor's
        constant rotation/translation slots are masked out).
    """
    if anchor.shape != other.shape or anchor.dim() != 2 or anchor.shape[1] != 64:
        raise ValueError(f"anchor/other must be (B, 64), got {tuple(anchor.shape)}, {tuple(other.shape)}")
    lo, hi = t_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"t_range must satisfy 0 <= lo <= hi <= 1, got {t_range}")
    diffusion, model = prior.diffusion, prior.denoiser
    b, dev = anchor.shape[0], anchor.device
    gdev = generator.device if generator is not None else torch.device("cpu")
    last = diffusion.num_steps - 1
    t_lo, t_hi = round(lo * last), max(round(hi * last), round(lo * last))
    t = torch.randint(t_lo, t_hi + 1, (b,), generator=generator, device=gdev).to(dev)
    noise = torch.randn(2, b, 64, generator=generator, device=gdev).to(anchor)
    with torch.no_grad():
        a, o = anchor.detach(), other.detach()
        # Forward-noise both hands to t and denoise in one batch: [anchor | null ; other | anchor].
        x_t = torch.cat([diffusion.q_sample(a, t, noise[0]), diffusion.q_sample(o, t, noise[1])])
        null = torch.zeros_like(a)
        x_t_in, t_in, cond_in = x_t, torch.cat([t, t]), torch.cat([null, a])
        if cfg_weight != 0.0:  # the other hand once more with the null condition
            x_t_in = torch.cat([x_t, x_t[b:]])
            t_in = torch.cat([t_in, t])
            cond_in = torch.cat([cond_in, null])
        x0_hat = model(x_t_in, t_in, cond_in)
        anchor_hat, other_hat = x0_hat[:b], x0_hat[b : 2 * b]
        if cfg_weight != 0.0:
            other_hat = cfg_x0(other_hat, x0_hat[2 * b :], cfg_weight, cfg_slots)
        if guide is not None:
            other_hat = guide(a, other_hat).detach()
        w = _weight(diffusion.alpha_bar_at(t).to(anchor), weighting)[:, None]
    mask = prior.codec.anchor_loss_mask().to(anchor)
    anchor_term = (mask * (anchor - anchor_hat) ** 2).sum(1)
    other_term = ((other - other_hat) ** 2).sum(1)
    return 0.5 * w[:, 0] * (anchor_term + other_term)


def sds_loss_hands(
    prior: Prior,
    hands: TwoHands,
    mano: ManoPair,
    t_range: tuple[float, float] = (0.02, 0.5),
    cfg_weight: float = 0.0,
    generator: torch.Generator | None = None,
    weighting: Weighting = "uniform",
    symmetric: bool = False,
) -> Tensor:
    """:func:`sds_loss` of TwoHands (any frame: the codec's relative encoding removes it).

    Args:
        hands: TwoHands (B), differentiable.
        mano: hand model (must be the one the prior was trained with).
        symmetric: also score the mirrored scene (right hand as anchor) and average, since the
            prior was trained on both orientations.
    Returns:
        (B,) loss.
    """
    loss = sds_loss(prior, *prior.codec.encode(hands, mano), t_range, cfg_weight, generator,
                    weighting)  # fmt: skip
    if symmetric:
        swap = torch.ones(hands.batch_size, dtype=torch.bool, device=hands.device)
        mirrored = prior.codec.encode(swap_sides(hands, swap), mano)
        loss = 0.5 * (loss + sds_loss(prior, *mirrored, t_range, cfg_weight, generator, weighting))
    return loss
