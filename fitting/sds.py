"""Adapter from the fitter to the prior's score distillation (:mod:`prior.sds`).

The prior describes *two* interacting hands, so the term is evaluated only for images where both
hands are present; the others get 0.

Two safeguards make the term usable in a fit (measured, see ``docs`` / the fitting report):

* **Clipping the denoiser's input.** The codec normalises each PCA pose coefficient by its
  training standard deviation. For the default prior (trained on the synthetic generator, whose
  finger poses are flexion/abduction only) several coefficients have a std of 1e-4..1e-2 rad,
  so an ordinary fitted or detected pose sits hundreds to thousands of standard deviations out
  and the network sees inputs it never saw. The normalised vector is clipped to
  ``[-clip, clip]`` before it is noised and denoised.
* **Choosing which slots receive the gradient** (``slots``). In normalised units the gradient on
  the raw parameters is ``(x - x0_hat) / std``: on those near-degenerate pose coefficients it is
  ~1e8 times the reprojection gradient and drowns every other term. ``"relative"`` lets the
  gradient through only the other hand's relative rotation and translation (the interaction,
  the part a two-hand prior knows and the 2D keypoints determine least); the pose/betas slots
  still condition the denoiser but are not pulled. ``"all"`` is plain SDS on every slot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from prior.apg import apg_step
from prior.checkpoint import Prior
from prior.codec import RELATIVE, swap_sides
from prior.hands import ManoPair, TwoHands
from prior.sds import sds_loss

if TYPE_CHECKING:
    from fitting.optimize import FitConfig
    from prior.kinematics import JointModel

__all__ = ["SLOTS", "prior_loss", "clipped_sds_loss"]

Slots = Literal["relative", "all"]
SLOTS = ("relative", "all")


def _prepare(x: Tensor, clip: float, live: Tensor | None) -> Tensor:
    """Clip a (B, 64) normalised vector to ``[-clip, clip]``; slots outside ``live`` (64,) bool
    keep their value but carry no gradient."""
    x = x.clamp(-clip, clip) if clip > 0 else x
    return x if live is None else torch.where(live, x, x.detach())


def clipped_sds_loss(
    prior: Prior, hands: TwoHands, mano: JointModel, cfg: FitConfig,
    generator: torch.Generator | None, t_range: tuple[float, float] | None = None,
    meshes: ManoPair | None = None, middle_mcp: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """(B,) SDS loss of TwoHands with clipped inputs and the gradient restricted to ``cfg.sds_slots``.

    Args:
        prior: frozen prior (same hand model as ``mano``).
        hands: TwoHands (B), differentiable, any frame (the codec's relative encoding removes it).
        mano: the joints-only twin of the hand model (all the codec reads is joints).
        cfg: supplies ``sds_t_range``, ``cfg_weight``, ``sds_weighting``, ``sds_symmetric``,
            ``sds_slots``, ``sds_clip``.
        generator: source of t and noise.
        t_range: overrides ``cfg.sds_t_range`` (annealing).
        meshes: the full hand model; with ``cfg.sds_apg > 0`` the other hand's x0 prediction
            gets one anti-penetration guidance step of that size (:func:`prior.apg.apg_step`),
            so the term pulls towards the prior's non-penetrating interaction.
        middle_mcp: (B, 2, 3) the hands' middle MCP joints when already computed (the codec
            poses the hands for them otherwise).
    Returns:
        (B,) loss; with ``symmetric`` the mean of the scene and its mirror image (each hand the
        anchor once).
    """
    if cfg.sds_slots not in SLOTS:
        raise ValueError(f"unknown sds_slots {cfg.sds_slots!r}; use one of {SLOTS}")
    t_range = tuple(cfg.sds_t_range) if t_range is None else t_range
    live_other: Tensor | None = None
    live_anchor: Tensor | None = None
    if cfg.sds_slots == "relative":
        live_other = torch.zeros(64, dtype=torch.bool, device=hands.device)
        live_other[RELATIVE] = True
        live_anchor = torch.zeros(64, dtype=torch.bool, device=hands.device)

    guide = None
    if cfg.sds_apg > 0:
        if meshes is None:
            raise ValueError("sds_apg > 0 needs the full hand model (meshes=ManoPair)")
        guide = lambda a, o: apg_step(prior.codec, meshes, a, o, cfg.sds_apg, rho=cfg.pen_rho,  # noqa: E731
                                      max_queries=256)  # fmt: skip

    def one(h: TwoHands, j9: Tensor | None) -> Tensor:
        anchor, other = prior.codec.encode(h, mano, j9)
        return sds_loss(prior, _prepare(anchor, cfg.sds_clip, live_anchor),
                        _prepare(other, cfg.sds_clip, live_other), t_range,
                        cfg.cfg_weight, generator, cfg.sds_weighting, guide=guide)  # fmt: skip

    loss = one(hands, middle_mcp)
    if cfg.sds_symmetric:
        swap = torch.ones(hands.batch_size, dtype=torch.bool, device=hands.device)
        loss = 0.5 * (loss + one(swap_sides(hands, swap), None))
    return loss


def prior_loss(
    prior: Prior, hands: TwoHands, mano: JointModel, present: Tensor, cfg: FitConfig,
    generator: torch.Generator | None, t_range: tuple[float, float] | None = None,
    meshes: ManoPair | None = None, middle_mcp: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """(B,) SDS loss of the current hands (0 for images without both hands).

    Args:
        prior: frozen prior (same hand model as ``mano``).
        hands: TwoHands (B), differentiable, camera frame.
        mano: the joints-only twin of the hand model.
        present: (B, 2) bool.
        cfg: the fit settings (see :func:`clipped_sds_loss`).
        generator: source of t and noise.
        t_range: overrides ``cfg.sds_t_range`` (annealing).
        meshes: the full hand model (needed when ``cfg.sds_apg > 0``).
        middle_mcp: (B, 2, 3) the hands' middle MCP joints, if already computed.
    """
    both = present.all(1)
    out = hands.pose_aa.new_zeros(hands.batch_size)
    if not both.any():
        return out
    idx = both.nonzero()[:, 0]
    j9 = None if middle_mcp is None else middle_mcp[idx]
    return out.index_put((idx,), clipped_sds_loss(prior, hands[idx], mano, cfg, generator, t_range,
                                                    meshes, j9))  # fmt: skip
