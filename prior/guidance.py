"""Guidance terms acting on the x0 prediction (design A2: one seam, injected callables).

* :func:`cfg_x0` — classifier-free guidance, a small pure function.
* :func:`apg_schedule` — the anti-penetration guidance step sizes ``w0 * decay^(K-1-k)``.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor

from prior.codec import RELATIVE

__all__ = ["GuideFn", "GuideFactory", "CFG_SLOTS", "cfg_x0", "apg_schedule"]

# guide_x0(x0_hat (B,64), step k) -> adjusted x0_hat (B,64)
GuideFn = Callable[[Tensor, int], Tensor]
# Built once the anchor is known: factory(anchor (B,64) normalised) -> GuideFn for the other hand.
GuideFactory = Callable[[Tensor], GuideFn]

# "relative": only the other hand's 6D rotation + translation (InterHandGen); "all": 64 dims.
CFG_SLOTS: dict[str, slice | None] = {"relative": RELATIVE, "all": None}


def cfg_x0(
    x0_cond: Tensor,
    x0_uncond: Tensor,
    weight: float,
    slots: slice | Literal["relative", "all"] | None = "relative",
) -> Tensor:
    """Classifier-free guidance on x0: ``x0_c + w (x0_c - x0_u)`` on ``slots``.

    Outside ``slots`` the conditional prediction is kept (the original guides only the relative
    rotation and translation, the last 9 dims).

    Args:
        x0_cond, x0_uncond: (B, D) conditional / null-condition predictions.
        weight: guidance weight w (0 returns ``x0_cond``).
        slots: a slice, "relative", "all" or None (= all dims).
    Returns:
        (B, D) guided prediction.
    """
    if isinstance(slots, str):
        if slots not in CFG_SLOTS:
            raise ValueError(f"unknown cfg slots {slots!r}; use one of {sorted(CFG_SLOTS)}")
        slots = CFG_SLOTS[slots]
    guided = x0_cond + weight * (x0_cond - x0_uncond)
    if slots is None:
        return guided
    out = x0_cond.clone()
    out[:, slots] = guided[:, slots]
    return out


def apg_schedule(num_steps: int, w0: float = 7.0, decay: float = 0.9) -> Tensor:
    """APG step sizes ``s_k = w0 * decay^(num_steps - 1 - k)`` for k = 0..num_steps-1.

    With the defaults and 42 steps: 0.093 at the first (noisiest) step, 7 at the last.

    Returns:
        (num_steps,) float32.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    k = torch.arange(num_steps, dtype=torch.float64)
    return (w0 * decay ** (num_steps - 1 - k)).float()
