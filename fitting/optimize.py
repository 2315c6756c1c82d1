"""The one fitting loop: MANO parameters of both hands against an :class:`Observation`.

One Adam optimiser runs over a whole batch of images. Stages:

1. **global** (``cfg.global_steps``): root rotation and translation only, against the 2D
   keypoints and the initial 3D landmarks;
2. **full** (the remaining steps): finger pose, shape, root rotation and translation, with every
   term: reprojection, initial landmarks/parameters, shape and pose regularisers, two-hand
   penetration and the prior's score distillation (SDS).

``total = sum_k weights[k] * terms[k]`` is formed in one place. Hands that are not present are
masked out of every term and their parameters are frozen (zero gradient, so Adam leaves them).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import roma
import torch
from torch import Tensor

from fitting import objectives as O
from fitting.observation import KEYPOINT_ORDER, Observation
from fitting.sds import SLOTS, prior_loss
from prior.checkpoint import Prior
from prior.hands import ManoPair, TwoHands
from prior.kinematics import JointModel, PosedHands
from prior.topology import close_holes

__all__ = ["FitConfig", "FitResult", "fit", "TERMS"]

log = logging.getLogger(__name__)
TERMS = ("reproj", "init", "init_param", "shape", "pose", "pen", "sds")
GLOBAL_TERMS = ("reproj", "init")
PEN_TESTS = ("winding", "normals")


def _default_weights() -> dict[str, float]:
    return {"reproj": 1.0, "init": 20.0, "init_param": 0.0, "shape": 0.05, "pose": 10.0,
            "pen": 3.0, "sds": 5.0}  # fmt: skip


@dataclass
class FitConfig:
    """Fitting settings (defaults mirror ``configs/fit.yaml``).

    steps: total Adam steps; the first ``global_steps`` move only root rotation and translation.
    lr: Adam learning rate of pose (rad), rotation (6D) and shape; ``transl_lr`` of translation (m).
    weights: per-term weights, keys in :data:`TERMS` (a missing key counts as 0).
    reproj_rho: GMoF scale of the reprojection term, px.
    pen_rho: GMoF scale of the penetration term, m. pen_every: evaluate penetration only every
        k-th step (the other steps skip the term; its pair search poses both full meshes).
    sds_t_range, cfg_weight, sds_weighting, sds_symmetric: score distillation options
        (:func:`prior.sds.sds_loss`). sds_every: evaluate SDS every k steps.
    sds_slots: "relative" (gradient through the other hand's relative rotation/translation
        only) or "all"; sds_clip: clip the normalised vector to +-sds_clip before denoising
        (<= 0: no clip); see :mod:`fitting.sds`. sds_start: first step with SDS (it is never on
        in the global stage). sds_t_anneal: the upper end of ``sds_t_range`` decays linearly to
        its lower end over the SDS steps. sds_apg: > 0: one anti-penetration guidance step of
        this size on the prior's x0 prediction of the other hand (the prior as SDS *and* APG).
    polish_steps: the last k steps (at most the full stage) run without SDS and with the
        penetration term at every step (the prior places the hands, data and collision settle them).
    seed: seeds the generator when ``fit`` gets none.
    """

    steps: int = 150
    global_steps: int = 30
    lr: float = 0.02
    transl_lr: float = 0.005
    weights: dict[str, float] = field(default_factory=_default_weights)
    reproj_rho: float = 100.0
    pen_rho: float = 0.05
    pen_every: int = 5
    pen_test: str = "winding"
    sds_t_range: tuple[float, float] = (0.05, 0.5)
    cfg_weight: float = 0.0
    sds_weighting: str = "uniform"
    sds_symmetric: bool = False
    sds_every: int = 1
    sds_slots: str = "relative"
    sds_clip: float = 5.0
    sds_start: int = 0
    sds_t_anneal: bool = False
    sds_apg: float = 0.0
    polish_steps: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(TERMS)
        if unknown:
            raise ValueError(f"FitConfig.weights: unknown terms {sorted(unknown)}; known: {TERMS}")
        if not 0 <= self.global_steps <= self.steps:
            raise ValueError(f"FitConfig: need 0 <= global_steps <= steps, got {self.global_steps}, {self.steps}")
        if self.polish_steps < 0:
            raise ValueError(f"FitConfig: polish_steps must be >= 0, got {self.polish_steps}")
        if self.pen_every < 1 or self.sds_every < 1:
            raise ValueError("FitConfig: pen_every and sds_every must be >= 1")
        if self.pen_test not in PEN_TESTS:
            raise ValueError(f"FitConfig.pen_test: {self.pen_test!r} is not one of {PEN_TESTS}")
        if self.sds_slots not in SLOTS:
            raise ValueError(f"FitConfig.sds_slots: {self.sds_slots!r} is not one of {SLOTS}")


@dataclass(frozen=True)
class FitResult:
    """Fitted hands and diagnostics.

    hands: TwoHands (B) in the camera frame (absent hands keep their initial values).
    history: per term (weighted, batch mean) and "total", one float per step.
    final: per-image (B,) tensors: ``reproj_px`` (NaN without keypoints), ``pen_depth`` (m, deepest
        vertex inside the other hand by the winding number, distance to its nearest vertex;
        0 unless both hands are present) and each unweighted term at the end.
    present: (B, 2) bool, which hands were fitted.
    seconds: wall time of the fit.
    """

    hands: TwoHands
    history: dict[str, list[float]]
    final: dict[str, Tensor]
    present: Tensor
    seconds: float


class _Params:
    """All free variables in ONE leaf tensor ``x`` (B, 2, 64) = [pose 45 | betas 10 | rot 6D 6 |
    transl 3], so a step costs one Adam update. The translation is stored divided by
    ``transl_lr / lr``, which gives it its own effective learning rate under one optimiser.
    """

    POSE, BETAS, ROT6D, TRANSL = slice(0, 45), slice(45, 55), slice(55, 61), slice(61, 64)

    def __init__(self, init: TwoHands, transl_scale: float) -> None:
        b = init.batch_size
        self.transl_scale = transl_scale
        x = torch.cat([init.pose_aa.reshape(b, 2, 45), init.betas,
                       init.rot_mat[..., :2].reshape(b, 2, 6),  # first two columns
                       init.transl / transl_scale], -1)  # fmt: skip
        self.x = x.detach().clone().requires_grad_(True)

    def hands(self) -> TwoHands:
        x, b = self.x, self.x.shape[0]
        rot = roma.special_gramschmidt(x[..., self.ROT6D].reshape(b, 2, 3, 2))
        return TwoHands(x[..., self.POSE].reshape(b, 2, 15, 3), x[..., self.BETAS], rot,
                        x[..., self.TRANSL] * self.transl_scale)  # fmt: skip

    def grad_mask(self, present: Tensor, full: bool) -> Tensor:
        """(B, 2, 64) 1 where a variable may move: present hands; the global stage moves only
        the root rotation and translation."""
        mask = present[..., None].to(self.x).expand(-1, -1, 64).clone()
        if not full:
            mask[..., : self.ROT6D.start] = 0.0
        return mask


def _terms(
    hands: TwoHands, posed: PosedHands, obs: Observation, prior: Prior | None,
    kinematics: JointModel, mano: ManoPair, cfg: FitConfig, active: set[str],
    limits: O.PoseLimits, generator: torch.Generator, t_range: tuple[float, float] | None = None,
    closed_faces: Tensor | None = None,
) -> dict[str, Tensor]:  # fmt: skip
    """Unweighted (B,) loss terms named in ``active``; ``posed = kinematics.pose(hands)``;
    ``closed_faces``: the capped faces for the winding-number penetration test (None: normals)."""
    present = obs.present
    joints = posed.joints_in(KEYPOINT_ORDER)
    out: dict[str, Tensor] = {}
    if "reproj" in active:
        out["reproj"] = O.reprojection_loss(joints, obs, cfg.reproj_rho, order=KEYPOINT_ORDER)
    if "init" in active and obs.landmarks_3d is not None:
        out["init"] = O.init_landmark_loss(joints, obs.landmarks_3d, present, order=KEYPOINT_ORDER)
    if "init_param" in active:
        out["init_param"] = O.init_param_loss(hands, obs.init, present)
    if "shape" in active:
        out["shape"] = O.shape_loss(hands.betas, present)
    if "pose" in active:
        out["pose"] = O.pose_loss(hands.pose_aa, present, limits)
    if "pen" in active:
        out["pen"] = O.sparse_penetration_loss(hands, posed, kinematics, mano, present, cfg.pen_rho,
                                               closed_faces)  # fmt: skip
    if "sds" in active and prior is not None:
        # The codec reads joints only: the joints-only model stands in for the ManoPair.
        out["sds"] = prior_loss(prior, hands, kinematics, present, cfg, generator, t_range, mano,
                                posed.middle_mcp())  # fmt: skip
    return out


def _polish(cfg: FitConfig) -> int:
    """Number of polish steps: ``cfg.polish_steps``, at most the full stage."""
    return min(cfg.polish_steps, cfg.steps - cfg.global_steps)


def _t_range(cfg: FitConfig, step: int) -> tuple[float, float]:
    """SDS timestep range at ``step``: fixed, or with the upper end annealed linearly to the lower."""
    lo, hi = (float(v) for v in cfg.sds_t_range)
    if not cfg.sds_t_anneal:
        return lo, hi
    first = max(cfg.global_steps, cfg.sds_start)
    last = cfg.steps - _polish(cfg) - 1
    frac = min(max((step - first) / max(last - first, 1), 0.0), 1.0)
    return lo, max(lo, hi + (lo - hi) * frac)


def _keep_absent(hands: TwoHands, init: TwoHands, present: Tensor) -> TwoHands:
    """Absent hands get their initial parameters back exactly (6D re-orthonormalisation aside)."""
    def pick(fitted: Tensor, initial: Tensor) -> Tensor:
        mask = present.view(*present.shape, *([1] * (fitted.dim() - 2)))
        return torch.where(mask, fitted, initial)

    return TwoHands(pick(hands.pose_aa, init.pose_aa), pick(hands.betas, init.betas),
                    pick(hands.rot_mat, init.rot_mat), pick(hands.transl, init.transl))  # fmt: skip


def _raise_non_finite(step: int, stage: str, terms: dict[str, Tensor]) -> None:
    for name, value in terms.items():
        if not torch.isfinite(value).all():
            bad = (~torch.isfinite(value)).nonzero()[:, 0].tolist()
            raise FloatingPointError(f"fit step {step} ({stage}): term {name!r} is not finite for images {bad}")
    raise FloatingPointError(f"fit step {step} ({stage}): the weighted total is not finite (a weight is inf?)")


def fit(
    obs: Observation,
    prior: Prior | None,
    mano: ManoPair,
    cfg: FitConfig,
    generator: torch.Generator | None = None,
) -> FitResult:
    """Fit both hands of every image in the batch.

    Args:
        obs: observation (validated here).
        prior: the two-hand prior for the SDS term; None disables it (ablations, tests).
        mano: hand model (the prior's, when a prior is given).
        cfg: settings.
        generator: randomness of the SDS term (default: seeded from ``cfg.seed``).
    Returns:
        FitResult with the fitted hands in the camera frame.
    Raises:
        FloatingPointError: a term or parameter became NaN/Inf (names the step and term).
    """
    start = time.perf_counter()
    obs.validate()
    device = obs.device
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
    if prior is not None and cfg.weights.get("sds", 0.0) > 0 and prior.hand_model != mano.model_name:
        raise ValueError(f"prior was trained with hand model {prior.hand_model!r}, fitting uses {mano.model_name!r}")
    limits = O.pose_limits(mano).to(device)
    kinematics = JointModel(mano).to(device)
    closed = torch.stack([close_holes(mano.faces[h]) for h in range(2)]).to(device)
    pen_faces = closed if cfg.pen_test == "winding" else None
    params = _Params(obs.init, cfg.transl_lr / cfg.lr)
    masks = {full: params.grad_mask(obs.present, full) for full in (False, True)}
    optimizer = torch.optim.Adam([params.x], lr=cfg.lr, fused=True)  # one tensor: fused is cheapest
    weights = {k: float(v) for k, v in cfg.weights.items() if v}
    logged: list[Tensor] = []  # per step: weighted batch means of (*weights, total)
    nan = torch.tensor(float("nan"), device=device)
    for step in range(cfg.steps):
        full = step >= cfg.global_steps
        active = set(TERMS) if full else set(GLOBAL_TERMS)
        polish = step >= cfg.steps - _polish(cfg)
        if step % cfg.pen_every and not polish:
            active.discard("pen")
        if step % cfg.sds_every or step < cfg.sds_start or polish:
            active.discard("sds")
        active &= set(weights)
        hands = params.hands()
        terms = _terms(hands, kinematics.pose(hands), obs, prior, kinematics, mano, cfg, active,
                       limits, generator, _t_range(cfg, step), pen_faces)  # fmt: skip
        total = sum(weights[k] * v for k, v in terms.items())
        if not torch.isfinite(total).all():
            _raise_non_finite(step, "full" if full else "global", terms)
        logged.append(torch.stack([weights[k] * terms[k].detach().mean() if k in terms else nan
                                   for k in weights] + [total.detach().mean()]))  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        if not total.requires_grad:  # every active term is constant here (e.g. no penetration)
            continue
        total.sum().backward()
        # Absent hands are frozen throughout, finger pose and shape in the global stage.
        params.x.grad.mul_(masks[full])
        optimizer.step()
        if not torch.isfinite(params.x).all():
            raise FloatingPointError(f"fit step {step}: a parameter became non-finite")
    table = torch.stack(logged).T.tolist() if logged else [[] for _ in range(len(weights) + 1)]
    history = dict(zip([*weights, "total"], table))
    with torch.no_grad():
        hands = _keep_absent(params.hands().detach(), obs.init, obs.present)
        meshes = mano(hands)
        terms = _terms(hands, kinematics.pose(hands), obs, prior, kinematics, mano, cfg, set(TERMS),
                       limits, generator, None, pen_faces)  # fmt: skip
        final = {k: v.detach() for k, v in terms.items()}
        final["reproj_px"] = O.reprojection_error_px(meshes.joints, obs)
        final["pen_depth"] = O.penetration_depth(meshes, obs.present, closed)
    seconds = time.perf_counter() - start
    log.info("fitted %d image(s) in %.2f s (%d steps)", obs.batch_size, seconds, cfg.steps)
    return FitResult(hands, history, final, obs.present.clone(), seconds)
