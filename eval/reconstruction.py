"""Two-hand reconstruction metrics: MPJPE, PA-MPJPE, MPVPE, MRRPE under both root protocols.

Conventions:

* Joints are (B, 2, 21, 3) in InterHand2.6M order (hand 0 = left, 1 = right; wrist 20,
  middle MCP 11). The per-sample functions are unit-agnostic (result in the unit of the input);
  :func:`aggregate` takes metres and reports **millimetres**.
* Protocols: ``"wrist"`` = wrist-rooted (InterWild; MRRPE on the right-wrist-minus-left-wrist
  vector), ``"middle_mcp"`` = middle-MCP-rooted (IntagHand). Every aggregated number carries its
  protocol label.
* Invalid joints are excluded. As in InterHand2.6M's loader, a hand whose root joint is invalid
  has no root-relative error (its root-relative coordinates are meaningless) and is excluded.
  Per-sample values that cannot be computed are NaN, never 0.
* Per-hand MPJPE is the mean over that hand's valid joints; aggregated means are over hands.
* Missing predictions are counted per (subset, metric, hand) as ``missing`` and excluded from the
  mean; they are never scored as 0 and never silently dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "PROTOCOL_ROOT", "PROTOCOL_LABEL", "MetricStat", "ReconReport", "root_valid_mask",
    "mpjpe", "pa_mpjpe", "mpvpe", "mrrpe", "procrustes_align", "aggregate",
]

Protocol = Literal["wrist", "middle_mcp"]
PROTOCOL_ROOT: dict[str, int] = {"wrist": 20, "middle_mcp": 11}
PROTOCOL_LABEL: dict[str, str] = {
    "wrist": "wrist-rooted (InterWild protocol)",
    "middle_mcp": "middle-MCP-rooted (IntagHand protocol)",
}
SUBSETS = ("all", "interacting", "single")
HANDS = ("left", "right", "both")


def _root(protocol: str) -> int:
    if protocol not in PROTOCOL_ROOT:
        raise ValueError(f"unknown root protocol {protocol!r}; use 'wrist' or 'middle_mcp'")
    return PROTOCOL_ROOT[protocol]


def _check_joints(name: str, x: Tensor) -> None:
    if x.dim() != 4 or x.shape[1:] != (2, 21, 3):
        raise ValueError(f"{name} must have shape (B, 2, 21, 3), got {tuple(x.shape)}")


def root_valid_mask(valid: Tensor, protocol: Protocol) -> Tensor:
    """(B, 2, 21) bool -> (B, 2, 21) bool with every joint of a root-invalid hand set False."""
    return valid.bool() & valid.bool()[:, :, _root(protocol), None]


def _masked_mean(err: Tensor, mask: Tensor) -> Tensor:
    """Mean of err over the last axis where mask; NaN where the mask is empty."""
    n = mask.sum(-1)
    s = torch.where(mask, err, torch.zeros_like(err)).sum(-1)
    return torch.where(n > 0, s / n.clamp(min=1), torch.full_like(s, float("nan")))


def mpjpe(pred: Tensor, gt: Tensor, valid: Tensor, root: Protocol | None = "wrist") -> Tensor:
    """Mean per-joint position error per hand.

    Args:
        pred, gt: (B, 2, 21, 3) joints (same unit).
        valid: (B, 2, 21) bool GT validity.
        root: ``"wrist"`` | ``"middle_mcp"``: both are made relative to that joint first (hands
            with an invalid root are NaN); None: absolute positions.
    Returns:
        (B, 2) error in the input unit; NaN where a hand has no usable joint.
    """
    _check_joints("pred", pred)
    _check_joints("gt", gt)
    mask = valid.bool()
    if root is not None:
        r = _root(root)
        pred, gt = pred - pred[:, :, r : r + 1], gt - gt[:, :, r : r + 1]
        mask = root_valid_mask(mask, root)
    return _masked_mean((pred - gt).norm(dim=-1), mask)


def procrustes_align(pred: Tensor, gt: Tensor, weight: Tensor) -> Tensor:
    """Similarity (scale, rotation, translation) alignment of pred onto gt, batched and weighted.

    Args:
        pred, gt: (N, J, 3); weight: (N, J) 0/1 weights (joints used for the fit).
    Returns:
        (N, J, 3) aligned pred, float64 (undefined rows where fewer than 3 weights are set).
    """
    p, g, w = pred.double(), gt.double(), weight.double()[..., None]
    n = w.sum(1, keepdim=True).clamp(min=1e-12)
    mu_p, mu_g = (w * p).sum(1, keepdim=True) / n, (w * g).sum(1, keepdim=True) / n
    pc, gc = p - mu_p, g - mu_g
    h = (w * pc).transpose(1, 2) @ gc  # (N, 3, 3) = sum_i w_i p_i g_i^T
    u, s, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(vt.transpose(1, 2) @ u.transpose(1, 2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    diag = torch.ones_like(s)
    diag[:, 2] = d  # reflection fix: R = V diag(1, 1, d) U^T
    rot = vt.transpose(1, 2) @ torch.diag_embed(diag) @ u.transpose(1, 2)
    var = (w * pc.pow(2)).sum((1, 2)).clamp(min=1e-18)
    scale = (s * diag).sum(1) / var
    return scale[:, None, None] * pc @ rot.transpose(1, 2) + mu_g


def pa_mpjpe(pred: Tensor, gt: Tensor, valid: Tensor) -> Tensor:
    """MPJPE after per-hand Procrustes alignment with scale on the valid joints.

    Args:
        pred, gt: (B, 2, 21, 3); valid: (B, 2, 21) bool.
    Returns:
        (B, 2) error in the input unit; NaN where a hand has fewer than 3 valid joints.
        Root-independent (the alignment removes translation), so equal under both protocols.
    """
    _check_joints("pred", pred)
    _check_joints("gt", gt)
    b = pred.shape[0]
    mask = valid.bool().reshape(b * 2, 21)
    p, g = pred.reshape(b * 2, 21, 3), gt.reshape(b * 2, 21, 3)
    finite = torch.isfinite(p).all(-1) & torch.isfinite(g).all(-1)  # (2B, 21)
    ok = (mask.sum(-1) >= 3) & (finite | ~mask).all(-1)  # non-finite valid joint -> NaN
    mask = mask & finite
    p, g = torch.where(finite[..., None], p, 0.0), torch.where(finite[..., None], g, 0.0)
    aligned = procrustes_align(p, g, mask)
    err = _masked_mean((aligned - g.double()).norm(dim=-1), mask)
    err = torch.where(ok, err, torch.full_like(err, float("nan")))
    return err.reshape(b, 2).to(pred.dtype)


def mpvpe(pred_verts: Tensor, gt_verts: Tensor, pred_root: Tensor, gt_root: Tensor,
          valid_hand: Tensor) -> Tensor:
    """Mean per-vertex position error per hand, each mesh relative to its own root.

    Args:
        pred_verts, gt_verts: (B, 2, V, 3); pred_root, gt_root: (B, 2, 3) root joints of the
            protocol; valid_hand: (B, 2) bool (GT mesh available).
    Returns:
        (B, 2) error in the input unit; NaN where ``valid_hand`` is False.
    """
    if pred_verts.shape != gt_verts.shape or pred_verts.dim() != 4 or pred_verts.shape[1] != 2:
        raise ValueError(f"verts must both be (B, 2, V, 3), got {tuple(pred_verts.shape)} "
                         f"and {tuple(gt_verts.shape)}")
    err = ((pred_verts - pred_root[:, :, None]) - (gt_verts - gt_root[:, :, None])).norm(dim=-1).mean(-1)
    return torch.where(valid_hand.bool(), err, torch.full_like(err, float("nan")))


def mrrpe(pred_joints: Tensor, gt_joints: Tensor, valid: Tensor, root: Protocol = "wrist") -> Tensor:
    """Mean relative-root position error: error of the right-root-minus-left-root vector.

    Args:
        pred_joints, gt_joints: (B, 2, 21, 3); valid: (B, 2, 21) bool; root: which root joint.
    Returns:
        (B,) error in the input unit; NaN unless both GT roots are valid.
    """
    _check_joints("pred_joints", pred_joints)
    _check_joints("gt_joints", gt_joints)
    r = _root(root)
    rel_p = pred_joints[:, 1, r] - pred_joints[:, 0, r]
    rel_g = gt_joints[:, 1, r] - gt_joints[:, 0, r]
    err = (rel_p - rel_g).norm(dim=-1)
    ok = valid.bool()[:, 0, r] & valid.bool()[:, 1, r]
    return torch.where(ok, err, torch.full_like(err, float("nan")))


@dataclass(frozen=True)
class MetricStat:
    """One aggregated number: mean in millimetres (None when nothing was evaluated), the number
    of hands (hand pairs for MRRPE) evaluated, and how many had GT but no prediction."""

    mean_mm: float | None
    count: int
    missing: int


@dataclass(frozen=True)
class ReconReport:
    """Aggregated metrics. ``results[protocol][subset][metric][hand]`` with hand in
    left/right/both (MRRPE: both only); ``labels[protocol]`` names the protocol."""

    unit: str
    n_samples: dict[str, int]
    labels: dict[str, str]
    results: dict[str, dict[str, dict[str, dict[str, MetricStat]]]]

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> list[str]:
        """Markdown table lines (``both`` column), one row per protocol/subset."""
        metrics = ("mpjpe", "pa_mpjpe", "mpvpe", "mrrpe")
        lines = ["| protocol | subset | n | " + " | ".join(f"{m} ({self.unit})" for m in metrics) + " |",
                 "|---" * (3 + len(metrics)) + "|"]
        for proto, subsets in self.results.items():
            for subset, ms in subsets.items():
                cells = []
                for m in metrics:
                    st = ms.get(m, {}).get("both")
                    if st is None:
                        cells.append("n/a")
                    else:
                        mean = "n/a" if st.mean_mm is None else f"{st.mean_mm:.2f}"
                        cells.append(f"{mean} (n={st.count}, missing={st.missing})")
                lines.append(f"| {self.labels[proto]} | {subset} | {self.n_samples[subset]} | "
                             + " | ".join(cells) + " |")
        return lines


def _stat(values: Tensor, evaluated: Tensor, missing: Tensor, to_mm: float) -> MetricStat:
    vals = values[evaluated]
    if not torch.isfinite(vals).all():
        raise ValueError("non-finite metric value for an evaluated hand (check predictions)")
    mean = None if vals.numel() == 0 else float(vals.double().mean() * to_mm)
    return MetricStat(mean, int(evaluated.sum()), int(missing.sum()))


def _per_hand(values: Tensor, gt_ok: Tensor, present: Tensor, sel: Tensor, to_mm: float) -> dict[str, MetricStat]:
    """values, gt_ok, present: (B, 2); sel: (B,) subset mask -> {left, right, both}."""
    ev, miss = gt_ok & present & sel[:, None], gt_ok & ~present & sel[:, None]
    out = {h: _stat(values[:, i], ev[:, i], miss[:, i], to_mm) for i, h in enumerate(HANDS[:2])}
    out["both"] = _stat(values, ev, miss, to_mm)
    return out


def aggregate(
    pred_joints: Tensor,
    gt_joints: Tensor,
    joint_valid: Tensor,
    pred_present: Tensor,
    interacting: Tensor,
    pred_verts: Tensor | None = None,
    gt_verts: Tensor | None = None,
    gt_verts_valid: Tensor | None = None,
    pred_mesh_joints: Tensor | None = None,
    gt_mesh_joints: Tensor | None = None,
    protocols: tuple[Protocol, ...] = ("wrist", "middle_mcp"),
    to_mm: float = 1000.0,
) -> ReconReport:
    """Per-hand and per-subset (all / interacting / single) means under each protocol.

    Args:
        pred_joints: (B, 2, 21, 3) metres; rows of absent predictions may hold anything (NaN ok).
        gt_joints: (B, 2, 21, 3) metres; joint_valid: (B, 2, 21) bool.
        pred_present: (B, 2) bool, False where the method returned no hand.
        interacting: (B,) bool; the ``single`` subset is its complement.
        pred_verts, gt_verts: optional (B, 2, V, 3) meshes for MPVPE; gt_verts_valid (B, 2) bool.
        pred_mesh_joints, gt_mesh_joints: (B, 2, 21, 3) joints of those meshes, used for their
            roots (default: pred_joints / gt_joints).
        protocols: which root protocols to report.
        to_mm: factor from the input unit to millimetres.
    Returns:
        :class:`ReconReport` in millimetres.
    """
    present = pred_present.bool()
    inter = interacting.bool()
    pj = torch.where(present[:, :, None, None], pred_joints, torch.zeros_like(pred_joints))
    subsets = {"all": torch.ones_like(inter), "interacting": inter, "single": ~inter}
    pa = pa_mpjpe(pj, gt_joints, joint_valid)
    pa_ok = joint_valid.bool().sum(-1) >= 3
    results: dict[str, dict[str, dict[str, dict[str, MetricStat]]]] = {}
    for proto in protocols:
        r = _root(proto)
        rv = root_valid_mask(joint_valid, proto)
        err = mpjpe(pj, gt_joints, joint_valid, proto)
        mr = mrrpe(pj, gt_joints, joint_valid, proto)
        mr_ok = rv[:, 0, r] & rv[:, 1, r]
        both_present = present.all(1)
        ve = None
        if pred_verts is not None and gt_verts is not None:
            gv_ok = gt_verts_valid.bool() if gt_verts_valid is not None else torch.ones_like(present)
            pmj = pj if pred_mesh_joints is None else pred_mesh_joints
            gmj = gt_joints if gt_mesh_joints is None else gt_mesh_joints
            pv = torch.where(present[:, :, None, None], pred_verts, torch.zeros_like(pred_verts))
            ve = mpvpe(pv, gt_verts, pmj[:, :, r], gmj[:, :, r], gv_ok)
        per_subset = {}
        for name, sel in subsets.items():
            ms = {"mpjpe": _per_hand(err, rv.any(-1), present, sel, to_mm),
                  "pa_mpjpe": _per_hand(pa, pa_ok, present, sel, to_mm),
                  "mrrpe": {"both": _stat(mr, mr_ok & both_present & sel, mr_ok & ~both_present & sel,
                                          to_mm)}}
            if ve is not None:
                ms["mpvpe"] = _per_hand(ve, gv_ok, present, sel, to_mm)
            per_subset[name] = ms
        results[proto] = per_subset
    return ReconReport(
        unit="mm",
        n_samples={k: int(v.sum()) for k, v in subsets.items()},
        labels={p: PROTOCOL_LABEL[p] for p in protocols},
        results=results,
    )
