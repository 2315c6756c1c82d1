"""Anti-penetration guidance (APG) on the other hand's x0 prediction (InterHandGen, reference §6).

At reverse step k the sampler calls ``guide_x0(x0_hat_other, k)``; APG returns
``x0_hat - s_k * grad_x0 L_pen`` with ``s_k = w0 * decay^(K-1-k)`` (7 * 0.9^(41-k)), where the
last step moves the 3 translation dims with ``s_k`` and the other 61 with
``last_step_scale * s_k`` (0.7). ``L_pen`` is :func:`prior.penetration.penetration_energy` of the
fixed anchor hand and the decoded other hand, summed over samples.

:func:`penetration_guidance` does this for the whole batch at once (the guided-diffusion
``cond_fn`` pattern: gradients inside ``torch.enable_grad()``):

1. decode + hand model for all samples without a graph, and find the penetrating vertex pairs
   (bounding-box culled, see ``prior.penetration``); the anchor's mesh and normals are computed
   once per sampling run, only the other hand is posed at each step;
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
from prior.hands import LEFT, RIGHT, ManoPair, TwoHands
from prior.kinematics import JointModel
from prior.penetration import (
    Mode,
    PenetrationPairs,
    energy_from_pairs,
    energy_from_points,
    find_penetrations,
    pair_normals,
    penetrations_from_points,
    vertex_normals,
)

__all__ = [
    "DecodeFn", "apg_step", "gradient_preconditioner", "penetration_guidance",
    "penetration_guidance_loop", "step_sizes",
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


# verts(rows, other) -> (b, 2, V, 3): meshes of the anchor rows ``rows`` (None: all) with the
# other hand's vectors ``other`` (b, 64), differentiable w.r.t. ``other``.
PairVertsFn = Callable[[Tensor | None, Tensor], Tensor]
# normals(verts (B, 2, V, 3) of all rows, detached) -> (B, 2, V, 3) outward unit normals.
PairNormalsFn = Callable[[Tensor], Tensor]
# points(rows, other, pairs) -> (vi, vj) (P, 3): the pairs' query vertices and their nearest
# vertices on the other hand (pairs indexed within ``rows``), differentiable w.r.t. ``other``.
PairPointsFn = Callable[[Tensor, Tensor, PenetrationPairs], tuple[Tensor, Tensor]]


def _translation_scale(codec: HandCodec | DecodeFn) -> Tensor | None:
    """(3,) metres per unit of the other hand's normalised translation slots (None when the
    codec is a decode callable, whose units are unknown)."""
    if not isinstance(codec, HandCodec):
        return None
    return torch.cat([codec.hand_scale, codec.rel_scale]).detach()[TRANSL]  # raw = x * scale + mean


def _pair_verts(
    codec: HandCodec | DecodeFn, mano: ManoPair, anchor: Tensor
) -> tuple[PairVertsFn, PairNormalsFn, PairPointsFn]:
    """Both hands' vertices and normals for a fixed anchor, and the pairs' points.

    With a HandCodec the anchor's mesh and normals are computed once and each call runs the hand
    model for the other hand only, once (:meth:`HandCodec.decode_verts`); the differentiable
    pair points skin only the other hand's vertices that are in a pair
    (:meth:`prior.kinematics.JointModel.vertices_at`), not its whole mesh. A decode callable gets
    ``mano(decode(anchor, other))`` for everything."""
    faces = mano.faces
    if isinstance(codec, HandCodec):
        joints = JointModel(mano).to(anchor.device)
        with torch.no_grad():
            left = codec.decode_verts(anchor, torch.zeros_like(anchor), mano, LEFT)
            left_normals = vertex_normals(left, faces[LEFT])

        def verts(rows: Tensor | None, other: Tensor) -> Tensor:
            anc, lv = (anchor, left) if rows is None else (anchor[rows], left[rows])
            return torch.stack([lv, codec.decode_verts(anc, other, mano, RIGHT)], dim=1)

        def normals(v: Tensor) -> Tensor:
            return torch.stack([left_normals, vertex_normals(v[:, RIGHT], faces[RIGHT])], dim=1)

        def points(rows: Tensor, other: Tensor, pairs: PenetrationPairs) -> tuple[Tensor, Tensor]:
            hands = codec.decode(anchor[rows], other, joints)
            right_query = (pairs.side == RIGHT)[:, None]  # a right vertex inside the left hand
            rid = torch.where(right_query[:, 0], pairs.query, pairs.target)
            lid = torch.where(right_query[:, 0], pairs.target, pairs.query)
            right = joints.vertices_at(joints.pose(hands), pairs.sample,
                                       torch.full_like(rid, RIGHT), rid, hands.betas)  # fmt: skip
            lft = left[rows][pairs.sample, lid]
            return torch.where(right_query, right, lft), torch.where(right_query, lft, right)

        return verts, normals, points
    decode = _decoder(codec, mano)

    def decoded(rows: Tensor | None, other: Tensor) -> Tensor:
        return mano(decode(anchor if rows is None else anchor[rows], other)).verts

    def gathered(rows: Tensor, other: Tensor, pairs: PenetrationPairs) -> tuple[Tensor, Tensor]:
        v = decoded(rows, other)
        return (v[pairs.sample, pairs.side, pairs.query],
                v[pairs.sample, 1 - pairs.side, pairs.target])  # fmt: skip

    return decoded, lambda v: pair_normals(v, faces), gathered


def _setup(codec, mano, anchor: Tensor, num_steps, weight, decay, last_step_scale):
    """What both APG variants share: the geometry, the step sizes and the preconditioner."""
    sizes = step_sizes(num_steps, weight, decay, last_step_scale, anchor.shape[1]).to(anchor)
    return (*_pair_verts(codec, mano, anchor.detach()), sizes,
            gradient_preconditioner(codec, anchor.shape[1]))  # fmt: skip


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
    max_queries: int = 0,
    last_step_repeats: int = 1,
    full_last_steps: int = 0,
    max_shift: float = 0.0,
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
        max_queries: > 0: in a gross overlap query at most about this many vertices per hand
            (an evenly strided subset of those inside the other hand's box; the energy is a mean
            over pairs, which the subset estimates); 0: all (``prior.penetration._strided``).
        last_step_repeats: apply the last step's update this many times (each on the result of
            the previous one, penetration searched again): after the last step the network no
            longer re-predicts x0, so the final guidance decides what penetration is left.
        full_last_steps: the last this many steps query every candidate vertex (``max_queries``
            applies to the earlier ones): the strided subset is cheap while the network still
            re-predicts x0, the final steps decide what penetration is left.
        max_shift: > 0: a sample's update is scaled down so that it moves the other hand's
            translation by at most this many metres per step (a departure from the original:
            a sample with a single penetrating pair can get a step of metres, which throws the
            hand away and dominates FID; with a HandCodec only, whose scales give metres).
    Returns:
        ``guide_x0(x0_hat (B, 64), step) -> (B, 64)``.
    """
    metres = _translation_scale(codec) if max_shift > 0 else None
    verts_of, normals_of, points_of, sizes, precond = _setup(codec, mano, anchor, num_steps, weight,
                                                             decay, last_step_scale)  # fmt: skip
    anchor = anchor.detach()

    def update(x0_hat: Tensor, step: int) -> Tensor:
        x = x0_hat.detach()
        with torch.no_grad():
            verts = verts_of(None, x)
            full = step >= num_steps - full_last_steps
            pairs = penetrations_from_points(verts, normals_of(verts), mode=mode,
                                             max_queries=0 if full else max_queries)  # fmt: skip
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
            energy = energy_from_points(*points_of(active, xa, sub), sub, rho=rho, scale=scale).sum()
            (grad,) = torch.autograd.grad(energy, xa)
        delta = sizes[step] * precond * grad
        if metres is not None:
            shift = (delta[:, TRANSL] * metres).norm(dim=-1)  # (A,) metres moved this step
            delta = delta * (max_shift / shift.clamp_min(max_shift))[:, None]
        out = x0_hat.clone()
        out[active] = x0_hat[active] - delta
        return out

    def guide_x0(x0_hat: Tensor, step: int) -> Tensor:
        _check_x0(x0_hat, anchor, step, num_steps)
        if float(sizes[step].max()) < min_step_weight:
            return x0_hat
        for _ in range(last_step_repeats if step == num_steps - 1 else 1):
            x0_hat = update(x0_hat, step)
        return x0_hat

    return guide_x0


def apg_step(
    codec: HandCodec | DecodeFn,
    mano: ManoPair,
    anchor: Tensor,
    x0_hat: Tensor,
    weight: float,
    rho: float = 0.05,
    scale: float = 1000.0,
    max_queries: int = 0,
) -> Tensor:
    """One batched APG update ``x0_hat - weight * P * grad L_pen`` for all 64 dimensions (the
    guidance of a single reverse step, e.g. on the x0 prediction of score distillation).

    Args:
        codec, mano, rho, scale, max_queries: see :func:`penetration_guidance`.
        anchor, x0_hat: (B, 64) normalised anchor and other-hand vectors.
        weight: step size ``s`` (the sampler's last steps use 6-7).
    Returns:
        (B, 64) guided prediction (samples that do not penetrate are returned unchanged).
    """
    guide = penetration_guidance(codec, mano, anchor, num_steps=1, weight=weight, decay=1.0,
                                 last_step_scale=1.0, rho=rho, scale=scale,
                                 max_queries=max_queries)  # fmt: skip
    return guide(x0_hat, 0)


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

    A batched hand-model pass with a graph (the same geometry as the batched version), then the
    exact vertex-level energy of each sample in a Python loop, summed into one loss, one
    gradient, at every step. Same arguments as :func:`penetration_guidance`.
    """
    verts_of, _, _, sizes, precond = _setup(codec, mano, anchor, num_steps, weight, decay,
                                            last_step_scale)  # fmt: skip
    anchor = anchor.detach()
    faces = mano.faces

    def guide_x0(x0_hat: Tensor, step: int) -> Tensor:
        _check_x0(x0_hat, anchor, step, num_steps)
        with torch.enable_grad():
            x = x0_hat.detach().requires_grad_(True)
            all_verts = verts_of(None, x)
            total = x.new_zeros(())
            for i in range(x.shape[0]):
                verts = all_verts[i : i + 1]
                pairs = find_penetrations(verts, faces, mode="exact")
                total = total + energy_from_pairs(verts, pairs, rho=rho, scale=scale).sum()
            (grad,) = torch.autograd.grad(total, x)
        return x0_hat - sizes[step] * precond * grad

    return guide_x0
