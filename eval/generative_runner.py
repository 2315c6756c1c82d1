"""The ``python -m eval generative`` pipeline: sample, mesh, embed, measure, aggregate, report.

Separated from the argument parsing in :mod:`eval.cli_generative` so that it can be called from
Python (tests, ``bench/eval.py``) with a resolved :class:`GenerativeEvalConfig`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import configs
from eval.eval_samples import GenerativeEvalConfig, load_reference, sample_meshes
from eval.features import TwoHandPointNet, extract_features, load_features
from eval.generative import evaluate_generation, kernel_distance, mean_ci
from eval.penetration import PenetrationMetrics, evaluate_penetration
from eval.report import histograms, render_grid, write_report
from prior.atomic import write_json_atomic
from prior.checkpoint import load_prior
from prior.hands import HandMeshes, ManoPair

__all__ = ["RunMetrics", "GenerativeResult", "measure", "aggregate", "run_generative"]

log = logging.getLogger(__name__)
# Metric keys and their display names, in table order.
METRICS = {
    "fid": "FID (FHID)",
    "kid1": "KID deg 1 (KHID)",
    "kid3": "KID deg 3",
    "diversity_fake": "Diversity (gen)",
    "diversity_real": "Diversity (ref)",
    "precision": "Precision",
    "recall": "Recall",
    "pen_volume_cm3": "Pen. volume (cm³)",
    "pen_depth_mm": "Pen. depth (mm)",
    "contact_ratio": "Contact ratio",
    "penetrating_ratio": "Penetrating ratio",
}


@dataclass
class RunMetrics:
    """Metrics of one sample set: ``values`` (keys of :data:`METRICS`) plus failure counts."""

    values: dict[str, float]
    n_pen_evaluated: int
    n_pen_failed: int
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class GenerativeResult:
    """Aggregated result: per-metric mean/CI/values, failures, the markdown table, the paths."""

    summary: dict[str, Any]
    table: str
    out_dir: Path


def _metric_generator(seed: int, run: int) -> torch.Generator:
    return torch.Generator().manual_seed(1_000_003 * (run + 1) + seed)


def measure(
    fake_feats: Tensor,
    real_feats: Tensor,
    meshes: HandMeshes,
    cfg: GenerativeEvalConfig,
    generator: torch.Generator,
) -> tuple[RunMetrics, PenetrationMetrics]:
    """All metrics of one run.

    Args:
        fake_feats: (N, D) generated features. real_feats: (M, D) reference features.
        meshes: the generated meshes (N); penetration uses the first ``cfg.pen_samples``.
        cfg: metric options. generator: the only randomness of the distribution metrics.
    """
    t0 = time.perf_counter()
    dist = evaluate_generation(
        fake_feats, real_feats, generator, kid_degree=1, kid_subsets=cfg.kid_subsets,
        kid_subset_size=cfg.kid_subset_size, diversity_pairs=cfg.diversity_pairs,
        pr_k=cfg.pr_k, pr_max_samples=cfg.pr_max_samples,
    )  # fmt: skip
    kid3, _ = kernel_distance(real_feats, fake_feats, degree=3, subsets=cfg.kid_subsets,
                              subset_size=cfg.kid_subset_size, generator=generator)  # fmt: skip
    t1 = time.perf_counter()
    k = meshes.batch_size if cfg.pen_samples is None else min(cfg.pen_samples, meshes.batch_size)
    pen = evaluate_penetration(meshes.verts[:k], meshes.faces, voxel=cfg.pen_voxel, eps=cfg.contact_eps)
    t2 = time.perf_counter()
    ps = pen.summary()
    values = {
        "fid": dist["fid"], "kid1": dist["kid_mean"], "kid3": kid3,
        "diversity_fake": dist["diversity_fake"], "diversity_real": dist["diversity_real"],
        "precision": dist["precision"], "recall": dist["recall"],
        **{key: ps[key] for key in ("pen_volume_cm3", "pen_depth_mm", "contact_ratio", "penetrating_ratio")},
    }  # fmt: skip
    return (RunMetrics(values, int(ps["n_evaluated"]), int(ps["n_failed"]),
                       {"distribution_s": t1 - t0, "penetration_s": t2 - t1}), pen)  # fmt: skip


def aggregate(runs: list[RunMetrics]) -> dict[str, Any]:
    """Mean, 95% CI half-width and per-run values of every metric, plus failure totals."""
    out: dict[str, Any] = {}
    for key in METRICS:
        vals = [r.values[key] for r in runs]
        finite = [v for v in vals if math.isfinite(v)]
        mean, ci = mean_ci(finite) if finite else (math.nan, math.nan)
        out[key] = {"mean": mean, "ci95": ci, "values": vals}
    out["penetration_failures"] = {
        "failed_per_run": [r.n_pen_failed for r in runs],
        "evaluated_per_run": [r.n_pen_evaluated for r in runs],
        "failed_total": sum(r.n_pen_failed for r in runs),
    }
    return out


def _embed(net: TwoHandPointNet, meshes: HandMeshes) -> Tensor:
    # Both sets go through the same canonicalisation (Kabsch on the anchor's palm joints).
    return extract_features(net, meshes, batch=1024, canonical=False)


def run_generative(cfg: GenerativeEvalConfig, ckpt: Path, out_dir: Path) -> GenerativeResult:
    """Run the whole evaluation and write ``metrics.json``, ``report.md``, pictures and
    ``config.resolved.yaml`` into ``out_dir`` (each file atomically)."""
    from prior.mano_assets import resolve_mano_dir  # noqa: PLC0415

    if cfg.n < cfg.pr_k + 1 or cfg.runs < 1:
        raise ValueError(f"need n > pr_k ({cfg.pr_k}) and runs >= 1, got n={cfg.n}, runs={cfg.runs}")
    out_dir.mkdir(parents=True, exist_ok=True)
    configs.dump(cfg, out_dir / "config.resolved.yaml")
    device = torch.device(cfg.device)
    mano = ManoPair(resolve_mano_dir(cfg.mano_dir)).to(device)
    prior = load_prior(ckpt, device, hand_model=mano.model_name)
    features_path = Path(cfg.features)
    if not features_path.is_absolute() and not features_path.is_file():
        features_path = Path(__file__).resolve().parents[1] / features_path
    net, feat_meta = load_features(features_path)
    if feat_meta.get("hand_model") not in (None, mano.model_name):
        raise ValueError(f"{features_path}: extractor trained for hand model "
                         f"{feat_meta.get('hand_model')!r}, evaluating {mano.model_name!r}")  # fmt: skip
    timings: dict[str, float] = {}
    t = time.perf_counter()
    ref = load_reference(cfg.ref, cfg.n, mano.to("cpu"), cfg.ref_mirror, cfg.seed)
    timings["reference_s"] = time.perf_counter() - t
    t = time.perf_counter()
    real_feats = _embed(net, ref)
    timings["reference_features_s"] = time.perf_counter() - t
    runs: list[RunMetrics] = []
    first_meshes, first_pen, run_seconds = None, None, []
    for r in range(cfg.runs):
        t = time.perf_counter()
        gen = torch.Generator(device=device).manual_seed(cfg.seed + r)
        meshes, _ = sample_meshes(prior, mano.to(device), cfg, gen)
        t_sample = time.perf_counter() - t
        t = time.perf_counter()
        fake_feats = _embed(net, meshes)
        t_feat = time.perf_counter() - t
        metrics, pen = measure(fake_feats, real_feats, meshes, cfg, _metric_generator(cfg.seed, r))
        metrics.seconds.update(sampling_s=t_sample, features_s=t_feat)
        runs.append(metrics)
        run_seconds.append(metrics.seconds)
        log.info("run %d/%d: %s", r + 1, cfg.runs, {k: round(v, 4) for k, v in metrics.values.items()})
        if first_meshes is None:
            first_meshes, first_pen = meshes, pen
    summary = aggregate(runs)
    meta = {
        "checkpoint": str(ckpt), "features": str(features_path), "features_meta": {
            k: feat_meta.get(k) for k in ("hand_model", "data", "val", "train_seconds")},
        "hand_model": mano.model_name, "mode": cfg.mode, "cfg_weight": cfg.sampler.cfg_weight,
        "apg": cfg.sampler.apg, "n": cfg.n, "runs": cfg.runs, "ref": cfg.ref, "seed": cfg.seed,
        "n_reference": ref.batch_size, "timings": timings, "run_seconds": run_seconds,
        "pen_samples": cfg.pen_samples,
    }  # fmt: skip
    summary["meta"] = meta
    assert first_meshes is not None and first_pen is not None
    pictures = histograms(first_pen, out_dir) + [render_grid(first_meshes, cfg.grid, out_dir / "samples_grid.png")]
    table = write_report(summary, METRICS, out_dir / "report.md", [p.name for p in pictures])
    write_json_atomic(out_dir / "metrics.json", _jsonable(summary))
    return GenerativeResult(summary, table, out_dir)


def _jsonable(obj: Any) -> Any:
    """NaN -> None so the JSON is strict; everything else unchanged."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
