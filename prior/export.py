"""Publish a trained prior: the checkpoint plus a record of how it was made.

``python -m prior export --run out/prior_default --out checkpoints/prior_default.pt`` copies the
run's ``prior.pt`` (EMA weights) and writes, next to it, ``<name>.json`` (resolved config, data
seed, step, final training and held-out losses, wall time, code commit) and ``<name>_loss.png``
(the training curve).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from prior.atomic import atomic_path, write_json_atomic
from prior.checkpoint import load_prior

__all__ = ["export_prior"]


def _git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _plot(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    train = [h for h in history if "loss" in h]
    val = [h for h in history if "val_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("loss", "train (both hands)"), ("loss_anchor", "train anchor"),
                       ("loss_other", "train other")):  # fmt: skip
        ax.plot([h["step"] for h in train], [h[key] for h in train], label=label, lw=1)
    ax.plot([h["step"] for h in val], [h["val_loss"] for h in val], "o-", label="held-out", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("x0 MSE (normalised)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def export_prior(
    run_dir: Path, out: Path, hand_model: str | None = None, commit: str | None = None
) -> dict[str, Any]:
    """Copy ``run_dir/prior.pt`` to ``out`` and write its record; returns the record.

    ``commit`` is the code version the run was trained with (default: the current HEAD).
    """
    run_dir, out = Path(run_dir), Path(out)
    src = run_dir / "prior.pt"
    prior = load_prior(src, "cpu", hand_model=hand_model)  # validates before publishing
    history = json.loads((run_dir / "history.json").read_text())
    config = yaml.safe_load((run_dir / "config.resolved.yaml").read_text())
    train = [h for h in history if "loss" in h]
    val = [h for h in history if "val_loss" in h]
    n_params = sum(p.numel() for p in prior.denoiser.parameters())
    record = {
        "checkpoint": out.name,
        "hand_model": prior.hand_model,
        "step": train[-1]["step"] if train else 0,
        "epoch": train[-1].get("epoch") if train else None,
        "parameters": n_params,
        "final_train_loss": train[-1]["loss"] if train else None,
        "final_val_loss": val[-1]["val_loss"] if val else None,
        "val_curve": [(h["step"], h["val_loss"]) for h in val],
        "data": config.get("data"),
        "config": config,
        "code_commit": commit or _git_commit(Path(__file__).resolve().parents[1]),
        "reproduce": "OMP_NUM_THREADS=1 python -m prior train --config configs/prior_default.yaml"
        f" --set train.max_steps={train[-1]['step'] if train else 0}",
    }
    with atomic_path(out) as tmp:
        shutil.copyfile(src, tmp)
    write_json_atomic(out.with_suffix(".json"), record)
    _plot(history, out.with_name(out.stem + "_loss.png"))
    return record
