"""``python -m eval generative`` end to end on a tiny prior, tiny extractor and tiny reference."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.features import FeatureNetConfig, TwoHandPointNet, save_features
from eval.train_features import rest_geometry
from prior.checkpoint import Prior, save_prior
from prior.codec import HandCodec, NormStats
from prior.denoiser import DenoiserConfig, HandDenoiser
from prior.diffusion import DiffusionConfig, GaussianDiffusion
from prior.hands import ManoPair, TwoHands

TINY = DenoiserConfig(hidden=48, emb=32, ff_dim=64, layers=3, skips=(1,))
KEYS = ("fid", "kid1", "kid3", "diversity_fake", "diversity_real", "precision", "recall",
        "pen_volume_cm3", "pen_depth_mm", "contact_ratio", "penetrating_ratio")  # fmt: skip



@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny untrained prior whose stats keep the hands ~30 cm apart, an extractor, a reference."""
    root = tmp_path_factory.mktemp("evalcli")
    mano = ManoPair()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        denoiser = HandDenoiser(TINY).eval()
        net = TwoHandPointNet(FeatureNetConfig(points_per_hand=32, widths=(16, 32), feat_dim=16))
    rel_mean = torch.tensor([1.0, 0, 0, 0, 1, 0, 0.3, 0, 0])
    rel_scale = torch.tensor([0.05] * 6 + [0.01] * 3)
    stats = NormStats(torch.zeros(55), 0.2 * torch.ones(55), rel_mean, rel_scale)
    prior = Prior(denoiser, GaussianDiffusion(DiffusionConfig()), HandCodec(stats=stats), mano.model_name)
    save_prior(root / "prior.pt", prior, step=0)
    net.set_geometry(*rest_geometry(mano))
    save_features(root / "feat.pt", net, {"hand_model": mano.model_name})
    # Reference: 80 pairs, left at the origin, right 25 cm away (no overlap: cheap penetration).
    g = torch.Generator().manual_seed(1)
    n = 80
    ref = TwoHands(0.2 * torch.randn(n, 2, 15, 3, generator=g), 0.3 * torch.randn(n, 2, 10, generator=g),
                   torch.eye(3).expand(n, 2, 3, 3).clone(),
                   torch.stack([torch.zeros(n, 3), torch.tensor([0.25, 0, 0]).expand(n, 3)], 1))  # fmt: skip
    np.savez(root / "ref.npz", **ref.as_numpy())
    return {"root": root, "prior": root / "prior.pt", "feat": root / "feat.pt", "ref": root / "ref.npz"}


def _run(assets: dict[str, Path], out: Path, *extra: str) -> int:
    from eval.__main__ import main

    return main(["generative", "--ckpt", str(assets["prior"]), "--ref", str(assets["ref"]),
                 "--features", str(assets["feat"]), "--n", "48", "--runs", "2", "--out", str(out),
                 "--no-apg", "--pen-samples", "6", "--set", "kid_subsets=5",
                 "--set", "kid_subset_size=24", "--set", "grid=2",
                 "--set", "sampler.steps=6", "--set", "sampler.horizon=120", *extra])  # fmt: skip


def test_generative_cli_end_to_end(assets: dict[str, Path]) -> None:
    out = assets["root"] / "report"
    assert _run(assets, out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in KEYS:
        entry = metrics[key]
        assert len(entry["values"]) == 2
        assert entry["mean"] is not None and math.isfinite(entry["mean"])
        assert entry["ci95"] is not None and entry["ci95"] >= 0
    # An untrained prior is far from the reference, and the hands never touch.
    assert metrics["fid"]["mean"] > 0
    assert 0 <= metrics["precision"]["mean"] <= 1 and 0 <= metrics["recall"]["mean"] <= 1
    assert metrics["pen_volume_cm3"]["values"] == [0.0, 0.0]
    assert metrics["contact_ratio"]["values"] == [0.0, 0.0]
    fails = metrics["penetration_failures"]
    assert fails["failed_per_run"] == [0, 0] and fails["evaluated_per_run"] == [6, 6]
    assert fails["failed_total"] == 0
    assert metrics["meta"]["mode"] == "cascade" and metrics["meta"]["apg"] is False
    for name in ("report.md", "config.resolved.yaml", "hist_penetration.png", "hist_contact.png",
                 "samples_grid.png"):  # fmt: skip
        assert (out / name).stat().st_size > 100, name
    report = (out / "report.md").read_text()
    assert "FID" in report and "±" in report
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.tmp"))


def test_parallel_mode_and_seed_reproducibility(assets: dict[str, Path]) -> None:
    from eval.eval_samples import GenerativeEvalConfig, sample_meshes
    from prior.checkpoint import load_prior

    mano = ManoPair()
    prior = load_prior(assets["prior"])
    cfg = GenerativeEvalConfig(n=8, batch_size=8)
    cfg.sampler.steps = 6
    cfg.sampler.apg = False
    a, _ = sample_meshes(prior, mano, cfg, torch.Generator().manual_seed(4))
    b, _ = sample_meshes(prior, mano, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(a.verts, b.verts)
    cfg.mode = "parallel"
    c, hands = sample_meshes(prior, mano, cfg, torch.Generator().manual_seed(4))
    assert c.verts.shape == (8, 2, 778, 3) and torch.isfinite(c.verts).all()
    assert not torch.allclose(a.verts, c.verts)


def test_bad_inputs_are_one_line_errors(assets: dict[str, Path], capsys) -> None:
    out = assets["root"] / "bad"
    assert _run({**assets, "ref": assets["root"] / "missing.npz"}, out) == 2
    assert "missing.npz" in capsys.readouterr().err
    assert _run({**assets, "feat": assets["prior"]}, out) == 2
    assert "feature" in capsys.readouterr().err


def test_dispatch_is_lazy(capsys) -> None:
    from eval.__main__ import main

    sys.modules.pop("eval.cli_recon", None)
    assert main(["generative", "--ckpt", "x.pt", "--out", "y", "--dry-run"]) == 0
    assert "sampler:" in capsys.readouterr().out
    assert "eval.cli_recon" not in sys.modules
    assert main(["nonsense"]) == 2
