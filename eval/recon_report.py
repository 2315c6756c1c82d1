"""Files of a reconstruction benchmark run: metrics.json, per-sequence CSV, pictures.

* ``metrics.json``: the aggregated metrics of both protocols (each labelled), the counts of
  prediction statuses and of dataset records that could not be used (with their reasons), the
  time per image, and the run's source.
* ``per_sequence.csv``: one row per (capture, sequence), ``""`` where a metric is undefined.
* ``overlays/{best,median,worst}_<k>_image<id>.png``: GT joints (hollow, white outline) and
  predicted joints (filled, left blue / right orange) on the image, ranked by the image's mean
  wrist-rooted MPJPE.
* ``check_gt/image<id>.png`` (``--check-gt``): GT joints projected with the image's own camera.

All files are written atomically.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from datasets.interhand import InterHandSample
from datasets.interhand_annot import project
from eval.recon_runner import EvalResult, ImagePrediction
from eval.reconstruction import aggregate
from prior.atomic import atomic_path, write_json_atomic, write_text_atomic
from prior.hands import convert_joints
from recon.render import SIDE_COLORS, draw_keypoints

__all__ = ["CSV_COLUMNS", "time_stats", "metrics_document", "write_metrics", "sequence_rows",
           "write_sequence_csv", "draw_joints", "write_overlays", "write_check_gt"]

log = logging.getLogger(__name__)
CSV_COLUMNS = ("capture", "seq", "images", "interacting", "hands_evaluated", "hands_missing",
               "mpjpe_wrist_mm", "mpjpe_middle_mcp_mm", "pa_mpjpe_mm", "mrrpe_wrist_mm",
               "mrrpe_middle_mcp_mm", "mpvpe_wrist_mm")


def time_stats(preds: Sequence[ImagePrediction]) -> dict[str, Any]:
    """Mean / median seconds per predicted image (images with a measured time)."""
    t = np.array([p.seconds for p in preds], np.float64)
    t = t[np.isfinite(t)]
    if t.size == 0:
        return {"images_timed": 0, "mean_s": None, "median_s": None}
    return {"images_timed": int(t.size), "mean_s": float(t.mean()), "median_s": float(np.median(t))}


def metrics_document(result: EvalResult, dataset_counts: dict[str, int],
                     skipped: Sequence[tuple[str, str]], extra: dict[str, Any]) -> dict[str, Any]:
    """The content of metrics.json (plain JSON types)."""
    return {
        **extra,
        "unit": result.report.unit,
        "protocols": result.report.labels,
        "n_samples": result.report.n_samples,
        "mpvpe_evaluated": result.has_verts,
        "prediction_status": dict(sorted(result.status_counts.items())),
        "dataset_records": {"counts": dict(sorted(dataset_counts.items())),
                            "skipped": [{"record": i, "reason": r} for i, r in skipped]},
        "time_per_image": time_stats(result.preds),
        "results": result.report.to_dict()["results"],
        "table": result.report.table(),
    }


def write_metrics(path: Path, doc: dict[str, Any]) -> None:
    write_json_atomic(path, doc)


def _num(stat: Any) -> str:
    return "" if stat is None or stat.mean_mm is None else f"{stat.mean_mm:.4f}"


def sequence_rows(result: EvalResult) -> list[dict[str, str]]:
    """One row per (capture, seq) with the ``both``-hands metrics of its images."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(result.samples):
        groups.setdefault((s.capture, s.seq), []).append(i)
    rows = []
    for (cap, seq), idx in sorted(groups.items()):
        sub = [result.samples[i] for i in idx]
        preds = [result.preds[i] for i in idx]
        rep = aggregate(torch.as_tensor(np.stack([p.joints for p in preds])),
                        torch.stack([s.joints_cam for s in sub]).double(),
                        torch.stack([s.joint_valid for s in sub]),
                        torch.as_tensor(np.stack([p.present for p in preds])),
                        torch.as_tensor([s.interacting for s in sub]))  # fmt: skip
        w, m = rep.results["wrist"]["all"], rep.results["middle_mcp"]["all"]
        mpvpe = None
        if result.has_verts:
            mpvpe = _mpvpe_subset(result, idx)
        rows.append({
            "capture": cap, "seq": seq, "images": str(len(idx)),
            "interacting": str(sum(s.interacting for s in sub)),
            "hands_evaluated": str(w["mpjpe"]["both"].count), "hands_missing": str(w["mpjpe"]["both"].missing),
            "mpjpe_wrist_mm": _num(w["mpjpe"]["both"]), "mpjpe_middle_mcp_mm": _num(m["mpjpe"]["both"]),
            "pa_mpjpe_mm": _num(w["pa_mpjpe"]["both"]), "mrrpe_wrist_mm": _num(w["mrrpe"]["both"]),
            "mrrpe_middle_mcp_mm": _num(m["mrrpe"]["both"]), "mpvpe_wrist_mm": mpvpe or "",
        })  # fmt: skip
    return rows


def _mpvpe_subset(result: EvalResult, idx: list[int]) -> str:
    """Mean wrist-rooted MPVPE (mm) over the evaluated hands of the rows ``idx``."""
    vals = result.mpvpe_wrist[idx] if result.mpvpe_wrist is not None else np.zeros((0, 2))
    vals = vals[np.isfinite(vals)]
    return "" if vals.size == 0 else f"{1000.0 * vals.mean():.4f}"


def write_sequence_csv(path: Path, rows: Sequence[dict[str, str]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def _write_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), rgb[:, :, ::-1]):
            raise ValueError(f"{path}: cannot write PNG")


def draw_joints(image: np.ndarray, joints: np.ndarray, K: np.ndarray, mask: np.ndarray,
                hollow: bool = False) -> np.ndarray:
    """Project (2, 21, 3) camera-frame IH-order joints with K and draw the ``mask`` (2, 21) ones."""
    px = project(joints, K)  # (2, 21, 2)
    out = image
    for side in (0, 1):
        ok = mask[side] & np.isfinite(px[side]).all(-1) & (joints[side, :, 2] > 0)
        if not ok.any():
            continue
        mp = convert_joints(torch.as_tensor(px[side]), "ih26m", "mediapipe").numpy()
        conf = convert_joints(torch.as_tensor(ok.astype(np.float64))[:, None], "ih26m", "mediapipe")[:, 0]
        conf = conf.numpy() * (0.3 if hollow else 1.0)
        out = draw_keypoints(out, mp, conf, color=(255, 255, 255) if hollow else SIDE_COLORS[side])
    return out


def _caption(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.putText(out, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
    return out


def write_overlays(folder: Path, result: EvalResult, per_kind: int) -> list[Path]:
    """Draw the ``per_kind`` best, median and worst images (mean wrist MPJPE over their hands)."""
    err = result.mpjpe_wrist
    fin = np.isfinite(err)
    cnt = fin.sum(1)
    score = np.where(cnt > 0, np.where(fin, err, 0.0).sum(1) / np.maximum(cnt, 1), np.nan)
    ranked = [int(i) for i in np.argsort(score, kind="stable") if np.isfinite(score[i])
              and result.samples[i].image_path.is_file()]
    if not ranked or per_kind < 1:
        return []
    mid = len(ranked) // 2
    picks = {"best": ranked[:per_kind], "median": ranked[max(0, mid - per_kind // 2):][:per_kind],
             "worst": ranked[::-1][:per_kind]}
    written = []
    for kind, idx in picks.items():
        for k, i in enumerate(idx):
            s, p = result.samples[i], result.preds[i]
            img = draw_joints(s.load_image(), s.joints_cam.double().numpy(), s.K.double().numpy(),
                              s.joint_valid.numpy(), hollow=True)  # fmt: skip
            img = draw_joints(img, p.joints, s.K.double().numpy(), np.repeat(p.present[:, None], 21, 1))
            img = _caption(img, f"{kind}: image {s.image_id}, wrist MPJPE {1000 * score[i]:.1f} mm")
            path = folder / f"{kind}_{k}_image{s.image_id}.png"
            _write_png(path, img)
            written.append(path)
    return written


def write_check_gt(folder: Path, samples: Sequence[InterHandSample], n: int) -> list[Path]:
    """Draw the GT joints of up to ``n`` images (evenly spread, image present) with their K."""
    usable = [s for s in samples if s.status == "ok"]
    if not usable or n < 1:
        return []
    pos = np.unique(np.linspace(0, len(usable) - 1, min(n, len(usable))).round().astype(int))
    written = []
    for i in pos:
        s = usable[int(i)]
        img = draw_joints(s.load_image(), s.joints_cam.double().numpy(), s.K.double().numpy(),
                          s.joint_valid.numpy())  # fmt: skip
        text = f"image {s.image_id} cap {s.capture} cam {s.cam} frame {s.frame} ({s.hand_type})"
        path = folder / f"image{s.image_id}.png"
        _write_png(path, _caption(img, text))
        written.append(path)
    return written
