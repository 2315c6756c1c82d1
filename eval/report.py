"""Report of a generative evaluation: markdown table, histograms and a grid of rendered pairs.

Pictures use matplotlib's Agg backend (no display, no GL). Every file is written atomically.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from eval.penetration import PenetrationMetrics
from prior.atomic import atomic_path, write_text_atomic
from prior.hands import HandMeshes

__all__ = ["format_value", "markdown_table", "write_report", "histograms", "render_grid"]

_SIDE_COLORS = ((0.35, 0.55, 0.9), (0.95, 0.55, 0.35))  # left blue, right orange


def _plt():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def format_value(mean: float, ci: float, digits: int = 3) -> str:
    """``mean ± ci`` with ``digits`` significant decimals; ``n/a`` for NaN."""
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(ci):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def markdown_table(rows: Mapping[str, Mapping[str, Any]], metrics: Mapping[str, str]) -> str:
    """One row per setting, one column per metric (``mean ± 95% CI``).

    Args:
        rows: setting name -> summary dict (``{metric: {"mean", "ci95"}}``).
        metrics: metric key -> column title.
    """
    head = "| setting | " + " | ".join(metrics.values()) + " |"
    sep = "|---" * (len(metrics) + 1) + "|"
    lines = [head, sep]
    for name, summary in rows.items():
        cells = [format_value(summary[k]["mean"], summary[k]["ci95"]) if k in summary else "n/a"
                 for k in metrics]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    summary: Mapping[str, Any], metrics: Mapping[str, str], path: Path, pictures: list[str]
) -> str:
    """Write ``report.md`` (metric table transposed: one row per metric) and return the table."""
    meta = summary.get("meta", {})
    lines = ["| metric | mean ± 95% CI | per run |", "|---|---|---|"]
    for key, title in metrics.items():
        s = summary[key]
        per_run = ", ".join("nan" if not math.isfinite(v) else f"{v:.4g}" for v in s["values"])
        lines.append(f"| {title} | {format_value(s['mean'], s['ci95'], 4)} | {per_run} |")
    table = "\n".join(lines)
    fails = summary["penetration_failures"]
    text = [
        "# Generative evaluation", "",
        f"- prior: `{meta.get('checkpoint')}` ({meta.get('hand_model')} hand model), mode "
        f"**{meta.get('mode')}**, CFG weight {meta.get('cfg_weight')}, APG {meta.get('apg')}",
        f"- {meta.get('runs')} runs × {meta.get('n')} samples (seed {meta.get('seed')}); "
        f"reference `{meta.get('ref')}` ({meta.get('n_reference')} pairs)",
        f"- features: `{meta.get('features')}` ({meta.get('features_meta')})",
        f"- penetration: evaluated {fails['evaluated_per_run']} samples per run, failed "
        f"{fails['failed_per_run']} (failures are excluded from the means and counted here, "
        "never counted as 0)", "",
        table, "",
    ]  # fmt: skip
    text += [f"![{Path(p).stem}]({p})" for p in pictures]
    write_text_atomic(path, "\n".join(text) + "\n")
    return table


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _plt().close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path


def histograms(pen: PenetrationMetrics, out_dir: Path) -> list[Path]:
    """Histograms of the penetration volume/depth and of the hands' minimum distance (contact).

    Returns:
        The two PNG paths.
    """
    plt = _plt()
    ok = ~pen.failed
    vol = pen.volume_cm3[ok].numpy()
    depth = pen.depth_m[ok].numpy() * 1e3
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].hist(vol, bins=40, color="tab:red")
    ax[0].set(xlabel="penetration volume (cm³)", ylabel="samples",
              title=f"{(vol > 0).mean() * 100 if vol.size else 0:.1f}% penetrating")  # fmt: skip
    ax[1].hist(depth, bins=40, color="tab:purple")
    ax[1].set(xlabel="penetration depth (mm)", ylabel="samples")
    fig.tight_layout()
    paths = [_save(fig, out_dir / "hist_penetration.png")]
    dmin = pen.min_distance_m[ok].numpy() * 1e3
    contact = pen.contact[ok].numpy()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(np.clip(dmin, 0, 100), bins=50, color="tab:green")
    ax.set(xlabel="closest vertex distance between hands (mm, clipped at 100)", ylabel="samples",
           title=f"contact ratio {contact.mean() if contact.size else float('nan'):.3f}")  # fmt: skip
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "hist_contact.png"))
    return paths


def render_grid(meshes: HandMeshes, count: int, path: Path, cols: int = 4) -> Path:
    """Flat-shaded renders of the first ``count`` pairs (left blue, right orange), one PNG.

    A depth-sorted polygon painter (matplotlib ``Poly3DCollection``) with Lambert shading.
    """
    plt = _plt()
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection  # noqa: PLC0415

    count = max(1, min(count, meshes.batch_size))
    rows = math.ceil(count / cols)
    fig = plt.figure(figsize=(3 * cols, 3 * rows))
    light = np.array([0.3, -0.5, -0.8])
    light /= np.linalg.norm(light)
    faces = meshes.faces.cpu().numpy()
    for i in range(count):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        verts = meshes.verts[i].detach().cpu().to(torch.float64).numpy()
        center = verts.reshape(-1, 3).mean(0)
        for side in (0, 1):
            tri = verts[side][faces[side]] - center
            normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
            shade = 0.35 + 0.65 * np.abs(normal @ light)
            color = np.clip(np.array(_SIDE_COLORS[side])[None] * shade[:, None], 0, 1)
            ax.add_collection3d(Poly3DCollection(tri, facecolors=color, edgecolors="none"))
        r = np.abs(verts.reshape(-1, 3) - center).max()
        ax.set(xlim=(-r, r), ylim=(-r, r), zlim=(-r, r))
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=-60, azim=-90)
        ax.set_axis_off()
        ax.set_title(f"#{i}", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
