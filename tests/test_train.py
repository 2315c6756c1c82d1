"""Training loop: step mechanics, exact resume after an interruption, torchrun, learning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from prior.__main__ import DataConfig, _random_pairs
from prior.checkpoint import CheckpointError, load_prior
from prior.codec import HandCodec, NormStats
from prior.denoiser import DenoiserConfig, HandDenoiser
from prior.diffusion import DiffusionConfig, GaussianDiffusion
from prior.penetration import penetration_energy
from prior.sampling import SamplerConfig, sample_two_hands
from prior.train import TrainConfig, encode_dataset, evaluate_loss, train, training_step

ROOT = Path(__file__).resolve().parents[1]
TINY = DenoiserConfig(hidden=48, emb=32, ff_dim=64, layers=3, skips=(1,))
SMALL = TrainConfig(denoiser=TINY, batch_size=32, max_steps=8, checkpoint_every=4, log_every=2,
                    val_size=32, cond_drop_prob=0.2, ema_rate=0.9)  # fmt: skip




@pytest.fixture(scope="module")
def hands(mano):
    return _random_pairs(DataConfig(kind="random", n=256, seed=1), mano)


def test_training_step_masks_the_anchor_constants():
    torch.manual_seed(0)
    model = HandDenoiser(TINY)
    diffusion = GaussianDiffusion(DiffusionConfig())
    g = torch.Generator().manual_seed(0)
    anchor, other = torch.randn(4, 64, generator=g), torch.randn(4, 64, generator=g)
    mask = HandCodec().anchor_loss_mask()
    args = (mask, torch.tensor([0, 40, 80, 128]), torch.randn(2, 4, 64, generator=g))
    out = training_step(model, diffusion, anchor, other, *args, torch.zeros(4, dtype=torch.bool))
    assert set(out) == {"loss", "loss_anchor", "loss_other"}
    torch.testing.assert_close(out["loss"], out["loss_anchor"] + out["loss_other"])
    # The anchor's rot/transl targets carry no loss; the other hand's do.
    moved = anchor.clone()
    moved[:, 55:] += 10.0
    out2 = training_step(lambda x, t, c: torch.zeros_like(x), diffusion, moved, other, *args,
                         torch.zeros(4, dtype=torch.bool))  # fmt: skip
    out3 = training_step(lambda x, t, c: torch.zeros_like(x), diffusion, anchor, other, *args,
                         torch.zeros(4, dtype=torch.bool))  # fmt: skip
    torch.testing.assert_close(out2["loss_anchor"], out3["loss_anchor"])
    # Condition dropout replaces the other hand's condition by zeros.
    seen = []
    training_step(lambda x, t, c: seen.append(c) or torch.zeros_like(x), diffusion, anchor, other,
                  *args, torch.tensor([True, False, False, True]))  # fmt: skip
    cond = seen[0]
    assert cond.shape == (8, 64) and (cond[:4] == 0).all()
    assert (cond[[4, 7]] == 0).all() and torch.equal(cond[[5, 6]], anchor[[1, 2]])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, hands, mano):
    full = tmp_path / "full"
    train(SMALL, hands, mano, full, progress=False)

    class Killed(Exception):
        pass

    def kill_at_6(step, _losses):
        if step == 6:
            raise Killed

    cut = tmp_path / "cut"
    with pytest.raises(Killed):
        train(SMALL, hands, mano, cut, progress=False, hook=kill_at_6)
    assert _weights(cut / "train_state.pt")["step"] == 4  # last checkpoint before the kill
    assert not list(cut.glob(".*tmp*"))
    with pytest.raises(CheckpointError, match="resume"):
        train(SMALL, hands, mano, cut, progress=False)  # refuses to overwrite silently
    with pytest.raises(CheckpointError, match="config differs in \\['lr'\\]"):
        train(replace(SMALL, lr=5e-4), hands, mano, cut, progress=False, resume=True)
    train(SMALL, hands, mano, cut, progress=False, resume=True)
    a, b = _weights(full / "train_state.pt"), _weights(cut / "train_state.pt")
    assert a["step"] == b["step"] == 8
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"
    assert a["history"] == b["history"]
    summary = json.loads((cut / "train_summary.json").read_text())
    assert summary["steps"] == 8 and summary["steps_this_run"] == 4
    prior = load_prior(cut / "prior.pt", hand_model=mano.model_name)
    assert torch.equal(prior.denoiser.state_dict()["fc_output.weight"], a["ema"]["fc_output.weight"])


def test_torchrun_two_processes_agree(tmp_path, hands, mano):
    out = tmp_path / "ddp"
    sets = ["out_dir=" + str(out), "device=cpu", "data.kind=random", "data.n=256", "data.seed=1",
            "train.denoiser.hidden=48", "train.denoiser.emb=32", "train.denoiser.ff_dim=64",
            "train.denoiser.layers=3", "train.denoiser.skips=[1]", "train.denoiser.attn_dropout=0.0",
            "train.batch_size=32", "train.max_steps=4", "train.checkpoint_every=4",
            "train.val_size=0", "train.ema_rate=0.0", "train.cond_drop_prob=0.2"]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "prior", "train", "--config", str(ROOT / "configs" / "prior.yaml")]  # fmt: skip
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert len(summary["rank_param_digests"]) == 2 and summary["ranks_agree"]
    assert (out / "config.resolved.yaml").is_file()
    # Each rank takes half of every global batch: the result equals a single-process run.
    cfg = TrainConfig(denoiser=replace(TINY, attn_dropout=0.0), batch_size=32, max_steps=4,
                      checkpoint_every=4, val_size=0, ema_rate=0.0, cond_drop_prob=0.2)  # fmt: skip
    single = tmp_path / "single"
    train(cfg, hands, mano, single, progress=False)
    a, b = _weights(out / "train_state.pt")["model"], _weights(single / "train_state.pt")["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-4, msg=name)


def _learning_run(tmp_path, hands, mano, steps: int) -> tuple[float, float, Path]:
    cfg = TrainConfig(denoiser=DenoiserConfig(hidden=96, emb=32, ff_dim=64, layers=3, skips=(1,)),
                      batch_size=64, lr=2e-3, max_steps=steps, checkpoint_every=steps,
                      log_every=steps, val_size=0, ema_rate=0.0)  # fmt: skip
    path = train(cfg, hands[:192], mano, tmp_path / "learn", progress=False)
    prior = load_prior(path)
    held_out = encode_dataset(hands[192:], prior.codec, mano)
    trained = evaluate_loss(prior.denoiser, prior.diffusion, prior.codec, held_out)["loss"]
    torch.manual_seed(0)
    untrained = evaluate_loss(HandDenoiser(cfg.denoiser), prior.diffusion, prior.codec, held_out)["loss"]
    return trained, untrained, path


def test_a_tiny_model_learns_to_denoise(tmp_path, hands, mano):
    # Normalised data has unit variance per dim: predicting 0 costs ~2 (two hands), the best
    # denoiser ~0.5. An untrained network is near 2; 150 steps must get well below it.
    trained, untrained, path = _learning_run(tmp_path, hands, mano, 150)
    assert untrained > 1.5
    assert trained < 0.6 * untrained, (trained, untrained)
    # Its samples penetrate less with anti-penetration guidance, and APG moves hands by
    # millimetres, not metres (the step is preconditioned for the std normalisation).
    prior = load_prior(path)
    energy, distance = {}, {}
    for apg in (False, True):
        hands_s = sample_two_hands(prior, mano, 16, SamplerConfig(apg=apg),
                                   torch.Generator().manual_seed(5))  # fmt: skip
        meshes = mano(hands_s)
        energy[apg] = penetration_energy(meshes, mode="exact").mean().item()
        distance[apg] = (meshes.middle_mcp()[:, 1] - meshes.middle_mcp()[:, 0]).norm(dim=-1)
    assert energy[False] > 0, "the unguided samples should penetrate for this test to mean anything"
    print("penetration energy without / with APG:", energy)
    assert energy[True] < 0.5 * energy[False], energy
    assert distance[True].max() < 1.0 and (distance[True] - distance[False]).abs().median() < 0.02


def test_norm_stats_are_stored_with_the_prior(tmp_path, hands, mano):
    cfg = replace(SMALL, max_steps=2, checkpoint_every=2, val_size=0)
    prior = load_prior(train(cfg, hands, mano, tmp_path / "stats", progress=False))
    codec = HandCodec()
    enc = encode_dataset(hands, codec, mano)
    x = torch.cat([enc.plain, enc.mirrored])
    want = NormStats.fit(x[:, 0], x[:, 1])
    torch.testing.assert_close(prior.codec.rel_scale, want.rel_scale)
    torch.testing.assert_close(prior.codec.hand_mean, want.hand_mean, rtol=0, atol=1e-5)
