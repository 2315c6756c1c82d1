"""Exponential moving average of model weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA:
    """``shadow <- rate * shadow + (1 - rate) * weights`` after each optimiser step.

    ``rate = 0`` makes the shadow a copy of the weights (EMA off, the original's setting).
    Warm-up: after ``n`` updates the effective rate is ``min(rate, (1 + n) / (10 + n))``, so
    short runs are not dominated by the initial weights. Buffers are copied, not averaged.
    """

    def __init__(self, model: nn.Module, rate: float) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"EMA rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.shadow: dict[str, Tensor] = {
            k: v.detach().clone() for k, v in model.state_dict().items()
        }

    @torch.no_grad()
    def update(self, model: nn.Module, num_updates: int) -> None:
        """Blend in the current weights; ``num_updates`` = optimiser steps done before this one."""
        rate = min(self.rate, (1.0 + num_updates) / (10.0 + num_updates))
        params = dict(model.named_parameters())
        for name, value in model.state_dict().items():
            if name in params and value.is_floating_point():
                self.shadow[name].lerp_(value.detach(), 1.0 - rate)
            else:
                self.shadow[name].copy_(value)

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.clone() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} entries, e.g. {sorted(missing)[0]}")
        for k in self.shadow:
            self.shadow[k].copy_(state[k])

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow)
