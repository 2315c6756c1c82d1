"""Prior checkpoints: round trip and one-line errors naming the file."""

from __future__ import annotations

import pickle

import pytest
import torch

from prior.checkpoint import CheckpointError, Prior, load_prior, save_checkpoint, save_prior
from prior.codec import CodecConfig, HandCodec, NormStats
from prior.denoiser import DenoiserConfig, HandDenoiser
from prior.diffusion import DiffusionConfig, GaussianDiffusion

TINY = DenoiserConfig(hidden=48, emb=32, ff_dim=64, layers=3, skips=(1,))



def make_prior(cfg: DenoiserConfig = TINY, norm: str = "std") -> Prior:
    torch.manual_seed(0)
    stats = NormStats(torch.randn(55), torch.rand(55) + 0.5, torch.randn(9), torch.rand(9) + 0.5)
    return Prior(HandDenoiser(cfg).eval(), GaussianDiffusion(DiffusionConfig()),
                 HandCodec(CodecConfig(norm=norm), stats), "standin")  # fmt: skip


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "prior.pt"
    prior = make_prior()
    save_prior(path, prior, step=7, extra_config={"lr": 1e-3})
    return path, prior


def error_of(path, **kw) -> str:
    with pytest.raises(CheckpointError) as info:
        load_prior(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_round_trip(saved):
    path, prior = saved
    loaded = load_prior(path, hand_model="standin")
    assert not loaded.denoiser.training and loaded.hand_model == "standin"
    g = torch.Generator().manual_seed(1)
    x, c = torch.randn(4, 64, generator=g), torch.randn(4, 64, generator=g)
    t = torch.tensor([0, 5, 60, 128])
    with torch.no_grad():
        torch.testing.assert_close(loaded.denoiser(x, t, c), prior.denoiser(x, t, c), rtol=0, atol=0)
    torch.testing.assert_close(loaded.codec.hand_scale, prior.codec.hand_scale)
    assert not list(path.parent.glob(".*tmp*"))  # atomic write left no temporary file


def test_missing_truncated_and_corrupt_files(saved, tmp_path):
    path, _ = saved
    assert "not found" in error_of(tmp_path / "nope.pt")
    data = path.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    assert "truncated" in error_of(trunc)
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(bytes(range(256)) * 40)
    assert "not a readable checkpoint" in error_of(bad)


def test_foreign_objects_are_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"kind": "twohand_prior", "format_version": 1, "x": pickle.PickleError("x")}, evil)
    assert "not a readable checkpoint" in error_of(evil)  # weights_only rejects foreign globals
    other = tmp_path / "list.pt"
    torch.save([1, 2, 3], other)
    assert "no format header" in error_of(other)


def test_wrong_kind_and_version(saved, tmp_path):
    path, _ = saved
    obj = torch.load(path, weights_only=True)
    wrong_kind = tmp_path / "state.pt"
    save_checkpoint(wrong_kind, {**obj, "kind": "twohand_prior_train_state"})
    assert "expected 'twohand_prior'" in error_of(wrong_kind)
    future = tmp_path / "future.pt"
    save_checkpoint(future, {**obj, "format_version": 99})
    assert "format version 99" in error_of(future)


def test_config_codec_and_hand_model_mismatch(saved, tmp_path):
    path, _ = saved
    obj = torch.load(path, weights_only=True)
    cfg = {**obj["config"], "denoiser": {**obj["config"]["denoiser"], "hidden": 40}}
    shape = tmp_path / "shape.pt"
    save_checkpoint(shape, {**obj, "config": cfg})
    assert "denoiser weights do not match its config" in error_of(shape)
    unknown = tmp_path / "unknown.pt"
    save_checkpoint(unknown, {**obj, "config": {**obj["config"], "denoiser": {"widthh": 3}}})
    assert "invalid prior config" in error_of(unknown)
    codec = tmp_path / "codec.pt"
    save_checkpoint(codec, {**obj, "codec_signature": obj["codec_signature"].replace("std", "variance_quirk")})
    assert "codec signature" in error_of(codec)
    assert "hand model 'standin'" in error_of(path, hand_model="mano_v1_2")
    nan = tmp_path / "nan.pt"
    weights = {k: v.clone() for k, v in obj["denoiser"].items()}
    next(iter(weights.values())).fill_(float("nan"))
    save_checkpoint(nan, {**obj, "denoiser": weights})
    assert "NaN" in error_of(nan)
