"""Noise schedule and single-step diffusion math (no loops, no network internals).

Notation: ``alpha_bar[t] = prod_{s<=t} (1 - beta_s)`` for ``t = 0..T-1`` and, as in DDIM's
``compute_alpha``, ``alpha_bar(-1) = 1`` (the clean end of the chain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor, nn

__all__ = ["DiffusionConfig", "GaussianDiffusion", "StepRule"]

StepRule = Literal["interhandgen", "ddim"]


@dataclass
class DiffusionConfig:
    """Noise schedule (InterHandGen: linear betas 1e-4..1e-2 over T = 129 steps)."""

    schedule: Literal["linear"] = "linear"
    beta_start: float = 1e-4
    beta_end: float = 1e-2
    num_steps: int = 129

    def __post_init__(self) -> None:
        if not 0 < self.beta_start <= self.beta_end < 1 or self.num_steps < 2:
            raise ValueError(
                f"need 0 < beta_start <= beta_end < 1 and num_steps >= 2, got {self.beta_start}, "
                f"{self.beta_end}, {self.num_steps}"
            )


class GaussianDiffusion(nn.Module):
    """Forward process, x0-prediction loss and the deterministic/stochastic reverse step."""

    def __init__(self, cfg: DiffusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        betas = torch.linspace(cfg.beta_start, cfg.beta_end, cfg.num_steps, dtype=torch.float64)
        alpha_bar = torch.cumprod(1.0 - betas, dim=0)
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alpha_bar", alpha_bar.float(), persistent=False)

    @property
    def num_steps(self) -> int:
        return self.cfg.num_steps

    def alpha_bar_at(self, t: Tensor) -> Tensor:
        """(B,) ``alpha_bar[t]`` with ``alpha_bar(-1) = 1``; t is (B,) long in -1..T-1."""
        t = t.to(self.alpha_bar.device)
        if bool(((t < -1) | (t >= self.num_steps)).any()):
            raise ValueError(f"timesteps must lie in -1..{self.num_steps - 1}")
        padded = torch.cat([self.alpha_bar.new_ones(1), self.alpha_bar])
        return padded[t + 1]

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Forward process ``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise``.

        Args:
            x0: (B, D) clean vectors; t: (B,) long; noise: (B, D) standard normal.
        Returns:
            (B, D) noisy vectors.
        """
        ab = self.alpha_bar_at(t).to(x0)[:, None]
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0_hat: Tensor) -> Tensor:
        """Noise implied by an x0 prediction: ``(x_t - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t)``."""
        ab = self.alpha_bar_at(t).to(x_t)[:, None]
        return (x_t - ab.sqrt() * x0_hat) / (1.0 - ab).sqrt()

    def training_loss(
        self,
        model: Callable[[Tensor, Tensor, Tensor], Tensor],
        x0: Tensor,
        cond: Tensor,
        t: Tensor,
        noise: Tensor,
        weight: Tensor | None = None,
    ) -> Tensor:
        """Masked MSE between the network's x0 prediction and x0.

        Args:
            model: ``f(x_t, t, cond) -> x0_hat``.
            x0: (B, D) clean vectors; cond: (B, D); t: (B,) long; noise: (B, D).
            weight: (D,) or (B, D) non-negative per-dimension weights (e.g. a 0/1 mask);
                None = all ones.
        Returns:
            (B,) per-sample ``sum(w (x0_hat - x0)^2) / sum(w)``, i.e. the mean over the
            weighted dimensions.
        """
        x0_hat = model(self.q_sample(x0, t, noise), t, cond)
        w = torch.ones_like(x0) if weight is None else weight.to(x0).expand_as(x0)
        return (w * (x0_hat - x0) ** 2).sum(1) / w.sum(1).clamp_min(1e-12)

    def ddim_step(
        self,
        x_t: Tensor,
        x0_hat: Tensor,
        t: Tensor,
        t_prev: Tensor,
        eta: float = 0.0,
        noise: Tensor | None = None,
        rule: StepRule = "interhandgen",
    ) -> Tensor:
        """One reverse step ``t -> t_prev`` from an x0 prediction (DDIM, Song et al. 2021 eq. 12).

        ``rule="ddim"`` uses the implied noise ``eps = (x_t - sqrt(ab_t) x0_hat)/sqrt(1-ab_t)``;
        ``rule="interhandgen"`` reproduces the original code, which plugs ``x0_hat - x_t`` in
        where ``eps`` belongs. Both return ``x0_hat`` exactly when ``t_prev = -1``.

        Args:
            x_t: (B, D); x0_hat: (B, D); t, t_prev: (B,) long, t_prev < t (t_prev may be -1).
            eta: DDIM stochasticity (0 = deterministic).
            noise: (B, D) standard normal, required when eta > 0.
            rule: "interhandgen" or "ddim".
        Returns:
            (B, D) x at t_prev.
        """
        ab_t = self.alpha_bar_at(t).to(x_t)[:, None]
        ab_prev = self.alpha_bar_at(t_prev).to(x_t)[:, None]
        # Noise scale c1 and direction scale c2 (eta = 0: c1 = 0, deterministic DDIM).
        c1 = eta * ((1 - ab_t / ab_prev) * (1 - ab_prev) / (1 - ab_t)).clamp_min(0).sqrt()
        c2 = (1 - ab_prev - c1**2).clamp_min(0).sqrt()
        if rule == "ddim":
            direction = self.eps_from_x0(x_t, t, x0_hat)
        elif rule == "interhandgen":
            direction = x0_hat - x_t
        else:
            raise ValueError(f"unknown step rule {rule!r}; use 'interhandgen' or 'ddim'")
        x_prev = ab_prev.sqrt() * x0_hat + c2 * direction
        if eta > 0:
            if noise is None:
                raise ValueError("ddim_step with eta > 0 needs noise")
            x_prev = x_prev + c1 * noise
        return x_prev

    def sampling_timesteps(
        self, num: int = 42, skip: Literal["uniform", "quad"] = "uniform", horizon: int = 126
    ) -> Tensor:
        """Decreasing timesteps of the reverse loop (the next step after the last is -1).

        ``uniform`` is the original's ``range(0, horizon, horizon // num)`` reversed: with the
        defaults, 42 steps 123, 120, ..., 0. ``quad`` spaces them quadratically (DDIM's option).

        Returns:
            (num,) long, strictly decreasing, ending at 0.
        """
        if not 1 <= num <= horizon <= self.num_steps:
            raise ValueError(f"need 1 <= num ({num}) <= horizon ({horizon}) <= T ({self.num_steps})")
        if skip == "uniform":
            seq = torch.arange(0, horizon, horizon // num)[:num]
        elif skip == "quad":
            seq = (torch.linspace(0, (0.8 * horizon) ** 0.5, num) ** 2).long()
            seq = torch.unique(seq)
        else:
            raise ValueError(f"unknown skip {skip!r}; use 'uniform' or 'quad'")
        return seq.flip(0)

    def antithetic_t(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Antithetic timesteps: ``t1 ~ U{0..T-1}`` then ``cat(t1, T-1-t1)[:n]`` (original).

        Returns:
            (n,) long on the generator's device (CPU when None).
        """
        device = generator.device if generator is not None else "cpu"
        t1 = torch.randint(0, self.num_steps, (n // 2 + 1,), generator=generator, device=device)
        return torch.cat([t1, self.num_steps - 1 - t1])[:n]
