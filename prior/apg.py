"""Anti-penetration guidance (APG) on the other hand's x0 prediction (InterHandGen, reference §6).

At reverse step k the sampler calls ``guide_x0(x0_hat_other, k)``; APG returns
``x0_hat - s_k * grad_x0 L_pen`` with ``s_k = w0 * decay^(K-1-k)`` (7 * 0.9^(41-k)), where the
last step moves the 3 translation dims with ``s_k`` and the other 61 with
``last_step_scale * s_k`` (0.7). ``L_pen`` is :func:`prior.penetration.penetration_energy` of the
fixed anchor hand and the decoded other hand, summed over samples.

:func:`penetration_guidance` does this for the whole batch at once (the guided-diffusion
``cond_fn`` pattern: gradients inside ``torch.enable_grad()``):

1. decode + hand model for all samples without a graph, and find the penetrating vertex pairs
   (bounding-box culled, see ``prior.penetration``);
2. only the samples that penetrate are decoded again with a graph, and the energy is evaluated
   on their pairs alone; the rest keep ``x0_hat`` unchanged (their gradient is exactly zero);
3. steps whose schedule weight is below ``min_step_weight`` are skipped (the early, noisy steps,
   whose x0 prediction the network re-estimates anyway).

:func:`penetration_guidance_loop` is the reference with the original's structure: a batched
decode, then the exact vertex-level energy one sample at a time, at every step.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import Tensor

from prior.codec import TRANSL, HandCodec
from prior.guidance import GuideFn, apg_schedule
from prior.hands import ManoPair, TwoHands
from prior.penetration import Mode, PenetrationPairs, energy_from_pairs, find_penetrations

__all__ = [
    "DecodeFn", "gradient_preconditioner", "penetration_guidance", "penetration_guidance_loop",
    "step_sizes",
]  # fmt: skip

# decode(anchor (B,64), other (B,64)) -> TwoHands in the anchor frame.
DecodeFn = Callable[[Tensor, Tensor], TwoHands]
log = logging.getLogger(__name__)


def _decoder(codec: HandCodec | DecodeFn, mano: ManoPair) -> DecodeFn:
    if isinstance(codec, HandCodec):
        return lambda anchor, other: codec.decode(anchor, other, mano)
    if not callable(codec):
        raise ValueError(
            f"codec must be a HandCodec or a decode(anchor, other) callable, got {codec!r}"
        )
    return codec


def step_sizes(
    num_steps: int, weight: float, decay: float, last_step_scale: float, dim: int = 64
) -> Tensor:
    """Per-step, per-dimension APG step sizes.

    Returns:
        (num_steps, dim): ``s_k`` everywhere, except the last step where the non-translation dims
        get ``last_step_scale * s_k``.
    """
    s = apg_schedule(num_steps, weight, decay)[:, None].repeat(1, dim)
    keep = torch.zeros(dim, dtype=torch.bool)
    keep[TRANSL] = True
    s[-1, ~keep] *= last_step_scale
    return s


def gradient_preconditioner(codec: HandCodec | DecodeFn, dim: int = 64) -> Tensor | float:
    """Per-dimension factor that makes the original's step sizes mean the same in metres.

    InterHandGen's schedule (7 * 0.9^k) was tuned in its variance-normalised space, where one
    unit of the translation is ~2 mm. Moving raw parameters by ``-s * var^2 * grad_raw`` there
    equals moving our std-normalised vector by ``-s * std^2 * grad_x``: without this factor a
    step would be ~600x larger in metres and throws hands metres apart.
    """
    if isinstance(codec, HandCodec) and codec.cfg.norm == "std":
        return torch.cat([codec.hand_scale, codec.rel_scale]).detach().square()
    return 1.0


def _setup(codec, mano, anchor: Tensor, num_steps, weight, decay, last_step_scale):
    """What both APG variants share: the decoder, the step sizes and the preconditioner."""
    sizes = step_sizes(num_steps, weight, decay, last_step_scale, anchor.shape[1]).to(anchor)
    return _decoder(codec, mano), sizes, gradient_preconditioner(codec, anchor.shape[1])


def _check_x0(x0_hat: Tensor, anchor: Tensor, step: int, num_steps: int) -> None:
    if x0_hat.shape != anchor.shape:
        raise ValueError(
            f"x0_hat {tuple(x0_hat.shape)} must match the anchor {tuple(anchor.shape)}"
        )
    if not 0 <= step < num_steps:
        raise ValueError(f"step {step} outside 0..{num_steps - 1}")


def penetration_guidance(
    codec: HandCodec | DecodeFn,
    mano: ManoPair,
    anchor: Tensor,
    num_steps: int = 42,
    weight: float = 7.0,
    decay: float = 0.9,
    last_step_scale: float = 0.1,
    rho: float = 0.05,
    scale: float = 1000.0,
    mode: Mode = "fast",
    min_step_weight: float = 0.0,
) -> GuideFn:
    """Batched APG for the other hand given a fixed anchor.

    Args:
        codec: the prior's codec (``codec.decode(anchor, other, mano)``) or a
            ``decode(anchor, other) -> TwoHands`` callable.
        mano: the hand model.
        anchor: (B, 64) normalised anchor vectors (fixed during the other hand's loop).
        num_steps, weight, decay, last_step_scale: the schedule (see the module doc).
        rho, scale: GMoF scale (metres) and energy multiplier.
        mode: penetration search mode ("fast" culls by bounding boxes; "exact" as the original).
        min_step_weight: skip steps with ``s_k`` below this (0 applies APG at every step).
    Returns:
        ``guide_x0(x0_hat (B, 64), step) -> (B, 64)``.
    """
    decode, sizes, precond = _setup(codec, mano, anchor, num_steps, weight, decay, last_step_scale)
    anchor = anchor.detach()

    def guide_x0(x0_hat: Tensor, step: int) -> Tensor:
        _check_x0(x0_hat, anchor, step, num_steps)
        if float(sizes[step].max()) < min_step_weight:
            return x0_hat
        x = x0_hat.detach()
        with torch.no_grad():
            pairs = find_penetrations(mano(decode(anchor, x)), mode=mode)
        active = pairs.samples_with_pairs().nonzero(as_tuple=True)[0]
        if active.numel() == 0:
            return x0_hat
        # Re-index the pairs to the active subset and differentiate only there.
        pos = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        pos[active] = torch.arange(active.numel(), device=x.device)
        sub = PenetrationPairs(pos[pairs.sample], pairs.side, pairs.query, pairs.target,
                               active.numel())  # fmt: skip
        with torch.enable_grad():
            xa = x[active].requires_grad_(True)
            verts = mano(decode(anchor[active], xa)).verts
            energy = energy_from_pairs(verts, sub, rho=rho, scale=scale).sum()
            (grad,) = torch.autograd.grad(energy, xa)
        out = x0_hat.clone()
        out[active] = x0_hat[active] - sizes[step] * precond * grad
        return out

    return guide_x0


def penetration_guidance_loop(
    codec: HandCodec | DecodeFn,
    mano: ManoPair,
    anchor: Tensor,
    num_steps: int = 42,
    weight: float = 7.0,
    decay: float = 0.9,
    last_step_scale: float = 0.1,
    rho: float = 0.05,
    scale: float = 1000.0,
) -> GuideFn:
    """Reference APG with the original's structure (for benchmarks and tests, not for use).

    A batched decode with a graph, then the exact vertex-level energy of each sample in a Python
    loop, summed into one loss, one gradient, at every step. Same arguments as
    :func:`penetration_guidance`.
    """
    decode, sizes, precond = _setup(codec, mano, anchor, num_steps, weight, decay, last_step_scale)
    anchor = anchor.detach()

    def guide_x0(x0_hat: Tensor, step: int) -> Tensor:
        _check_x0(x0_hat, anchor, step, num_steps)
        with torch.enable_grad():
            x = x0_hat.detach().requires_grad_(True)
            meshes = mano(decode(anchor, x))
            total = x.new_zeros(())
            for i in range(x.shape[0]):
                verts = meshes.verts[i : i + 1]
                pairs = find_penetrations(verts, meshes.faces, mode="exact")
                total = total + energy_from_pairs(verts, pairs, rho=rho, scale=scale).sum()
            (grad,) = torch.autograd.grad(total, x)
        return x0_hat - sizes[step] * precond * grad

    return guide_x0
