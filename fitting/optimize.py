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
from fitting.kinematics import JointModel
from fitting.observation import Observation
from fitting.sds import prior_loss
from prior.checkpoint import Prior
from prior.hands import HandMeshes, ManoPair, TwoHands

__all__ = ["FitConfig", "FitResult", "fit", "TERMS"]

log = logging.getLogger(__name__)
TERMS = ("reproj", "init", "init_param", "shape", "pose", "pen", "sds")
GLOBAL_TERMS = ("reproj", "init")


def _default_weights() -> dict[str, float]:
    return {"reproj": 1.0, "init": 20.0, "init_param": 0.0, "shape": 0.05, "pose": 10.0,
            "pen": 1.0, "sds": 1.0}  # fmt: skip


@dataclass
class FitConfig:
    """Fitting settings (defaults mirror ``configs/fit.yaml``).

    steps: total Adam steps; the first ``global_steps`` move only root rotation and translation.
    lr: Adam learning rate of pose (rad), rotation (6D) and shape; ``transl_lr`` of translation (m).
    weights: per-term weights, keys in :data:`TERMS` (a missing key counts as 0).
    reproj_rho: GMoF scale of the reprojection term, px.
    pen_rho: GMoF scale of the penetration term, m. pen_every: evaluate penetration only every
        k-th step (the other steps skip the term; it is the most expensive one).
    sds_t_range, cfg_weight, sds_weighting, sds_symmetric: score distillation options
        (:func:`prior.sds.sds_loss_hands`). sds_every: evaluate SDS every k steps.
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
    sds_t_range: tuple[float, float] = (0.02, 0.5)
    cfg_weight: float = 0.0
    sds_weighting: str = "uniform"
    sds_symmetric: bool = False
    sds_every: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(TERMS)
        if unknown:
            raise ValueError(f"FitConfig.weights: unknown terms {sorted(unknown)}; known: {TERMS}")
        if not 0 <= self.global_steps <= self.steps:
            raise ValueError(f"FitConfig: need 0 <= global_steps <= steps, got {self.global_steps}, {self.steps}")
        if self.pen_every < 1 or self.sds_every < 1:
            raise ValueError("FitConfig: pen_every and sds_every must be >= 1")


@dataclass(frozen=True)
class FitResult:
    """Fitted hands and diagnostics.

    hands: TwoHands (B) in the camera frame (absent hands keep their initial values).
    history: per term (weighted, batch mean) and "total", one float per step.
    final: per-image (B,) tensors: ``reproj_px`` (NaN without keypoints), ``pen_depth`` (m,
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
    """Leaf tensors of the fit and their masks."""

    def __init__(self, init: TwoHands) -> None:
        self.pose = init.pose_aa.detach().clone().requires_grad_(True)
        self.betas = init.betas.detach().clone().requires_grad_(True)
        self.rot6d = init.rot_mat[..., :2].detach().clone().requires_grad_(True)  # (B,2,3,2)
        self.transl = init.transl.detach().clone().requires_grad_(True)

    def hands(self) -> TwoHands:
        return TwoHands(self.pose, self.betas, roma.special_gramschmidt(self.rot6d), self.transl)

    def named(self) -> dict[str, Tensor]:
        return {"pose": self.pose, "betas": self.betas, "rot6d": self.rot6d, "transl": self.transl}


def _terms(
    hands: TwoHands, joints: Tensor, meshes: HandMeshes | None, obs: Observation,
    prior: Prior | None, kinematics: JointModel, cfg: FitConfig, active: set[str],
    limits: O.PoseLimits, generator: torch.Generator,
) -> dict[str, Tensor]:  # fmt: skip
    """Unweighted (B,) loss terms named in ``active`` (``meshes`` is needed for "pen" only)."""
    present = obs.present
    out: dict[str, Tensor] = {}
    if "reproj" in active:
        out["reproj"] = O.reprojection_loss(joints, obs, cfg.reproj_rho)
    if "init" in active and obs.landmarks_3d is not None:
        out["init"] = O.init_landmark_loss(joints, obs.landmarks_3d, present)
    if "init_param" in active:
        out["init_param"] = O.init_param_loss(hands, obs.init, present)
    if "shape" in active:
        out["shape"] = O.shape_loss(hands.betas, present)
    if "pose" in active:
        out["pose"] = O.pose_loss(hands.pose_aa, present, limits)
    if "pen" in active and meshes is not None:
        out["pen"] = O.penetration_loss(meshes, present, cfg.pen_rho)
    if "sds" in active and prior is not None:
        # The codec reads joints only: the joints-only model stands in for the ManoPair.
        out["sds"] = prior_loss(prior, hands, kinematics, present, cfg, generator)
    return out


def _keep_absent(hands: TwoHands, init: TwoHands, present: Tensor) -> TwoHands:
    """Absent hands get their initial parameters back exactly (6D re-orthonormalisation aside)."""
    def pick(fitted: Tensor, initial: Tensor) -> Tensor:
        mask = present.view(*present.shape, *([1] * (fitted.dim() - 2)))
        return torch.where(mask, fitted, initial)

    return TwoHands(pick(hands.pose_aa, init.pose_aa), pick(hands.betas, init.betas),
                    pick(hands.rot_mat, init.rot_mat), pick(hands.transl, init.transl))  # fmt: skip


def _check_finite(step: int, stage: str, terms: dict[str, Tensor]) -> None:
    for name, value in terms.items():
        if not torch.isfinite(value).all():
            bad = (~torch.isfinite(value)).nonzero()[:, 0].tolist()
            raise FloatingPointError(f"fit step {step} ({stage}): term {name!r} is not finite for images {bad}")


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
    params = _Params(obs.init)
    mask = obs.present.to(params.pose.dtype)
    masks = {"pose": mask[..., None, None], "betas": mask[..., None], "rot6d": mask[..., None, None],
             "transl": mask[..., None]}  # fmt: skip
    optimizer = torch.optim.Adam([
        {"params": [params.pose, params.betas, params.rot6d], "lr": cfg.lr},
        {"params": [params.transl], "lr": cfg.transl_lr},
    ])  # fmt: skip
    weights = {k: float(v) for k, v in cfg.weights.items() if v}
    history: dict[str, list[float]] = {k: [] for k in (*weights, "total")}
    for step in range(cfg.steps):
        stage = "global" if step < cfg.global_steps else "full"
        active = set(GLOBAL_TERMS) if stage == "global" else set(TERMS)
        if step % cfg.pen_every:
            active.discard("pen")
        if step % cfg.sds_every:
            active.discard("sds")
        active &= set(weights)
        hands = params.hands()
        joints = kinematics(hands).joints
        meshes = mano(hands) if "pen" in active else None  # skinning only when needed
        terms = _terms(hands, joints, meshes, obs, prior, kinematics, cfg, active, limits, generator)
        _check_finite(step, stage, terms)
        total = sum(weights[k] * v for k, v in terms.items())
        for k in history:
            if k == "total":
                history[k].append(float(total.detach().mean()))
            else:
                value = float(weights[k] * terms[k].detach().mean()) if k in terms else float("nan")
                history[k].append(value)
        optimizer.zero_grad(set_to_none=True)
        total.sum().backward()
        # Freeze absent hands everywhere and the finger pose/shape in the global stage.
        for name, p in params.named().items():
            if p.grad is None:
                continue
            p.grad.mul_(masks[name])
            if stage == "global" and name in ("pose", "betas"):
                p.grad.zero_()
        optimizer.step()
        for name, p in params.named().items():
            if not torch.isfinite(p).all():
                raise FloatingPointError(f"fit step {step} ({stage}): parameter {name!r} became non-finite")
    with torch.no_grad():
        hands = _keep_absent(params.hands().detach(), obs.init, obs.present)
        meshes = mano(hands)
        terms = _terms(hands, meshes.joints, meshes, obs, prior, kinematics, cfg, set(TERMS),
                       limits, generator)  # fmt: skip
        final = {k: v.detach() for k, v in terms.items()}
        final["reproj_px"] = O.reprojection_error_px(meshes.joints, obs)
        final["pen_depth"] = O.penetration_depth(meshes, obs.present)
    seconds = time.perf_counter() - start
    log.info("fitted %d image(s) in %.2f s (%d steps)", obs.batch_size, seconds, cfg.steps)
    return FitResult(hands, history, final, obs.present.clone(), seconds)
