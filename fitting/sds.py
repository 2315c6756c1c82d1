"""Adapter from the fitter to the prior's score distillation (:mod:`prior.sds`).

The prior describes *two* interacting hands, so the term is evaluated only for images where both
hands are present; the others get 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from prior.checkpoint import Prior
from prior.hands import TwoHands
from prior.sds import sds_loss_hands

if TYPE_CHECKING:
    from fitting.kinematics import JointModel
    from fitting.optimize import FitConfig

__all__ = ["prior_loss"]


def prior_loss(
    prior: Prior, hands: TwoHands, mano: JointModel, present: Tensor, cfg: FitConfig,
    generator: torch.Generator | None,
) -> Tensor:  # fmt: skip
    """(B,) SDS loss of the current hands (0 for images without both hands).

    Args:
        prior: frozen prior (same hand model as ``mano``).
        mano: the joints-only twin of the hand model (all the codec reads is joints).
        hands: TwoHands (B), differentiable, camera frame (the codec is frame-invariant).
        present: (B, 2) bool.
        cfg: supplies ``sds_t_range``, ``cfg_weight``, ``sds_weighting``, ``sds_symmetric``.
        generator: source of t and noise.
    """
    both = present.all(1)
    out = hands.pose_aa.new_zeros(hands.batch_size)
    if not both.any():
        return out
    idx = both.nonzero()[:, 0]
    loss = sds_loss_hands(prior, hands[idx], mano, tuple(cfg.sds_t_range), cfg.cfg_weight,
                          generator, cfg.sds_weighting, cfg.sds_symmetric)  # fmt: skip
    return out.index_put((idx,), loss)
