"""Self-describing checkpoints: the exported prior bundle and the training state.

Files hold state_dicts, plain config dicts and numbers only, and are read with
``torch.load(weights_only=True)``. Every failure (unreadable, truncated, foreign format, weights
that do not fit their config, a codec for another hand model) is a one-line
:class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from configs import ConfigError, from_dict
from prior.atomic import atomic_path
from prior.codec import CODEC_LAYOUT, CodecConfig, HandCodec
from prior.denoiser import DenoiserConfig, HandDenoiser
from prior.diffusion import DiffusionConfig, GaussianDiffusion

__all__ = [
    "FORMAT_VERSION", "CheckpointError", "Prior", "save_prior", "load_prior", "save_checkpoint",
    "load_checkpoint", "prior_config",
]  # fmt: skip

FORMAT_VERSION = 1
PRIOR_KIND = "twohand_prior"
TRAIN_KIND = "twohand_prior_train_state"
log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and the problem (one line)."""


@dataclass
class Prior:
    """Everything needed to sample or score with the prior.

    denoiser: the network (EMA weights after training, eval mode).
    diffusion: the noise schedule. codec: the vector layout and normalisation stats.
    hand_model: name of the hand model the codec's PCA basis and stats belong to.
    """

    denoiser: HandDenoiser
    diffusion: GaussianDiffusion
    codec: HandCodec
    hand_model: str

    def to(self, device: torch.device | str) -> Prior:
        return Prior(self.denoiser.to(device), self.diffusion.to(device), self.codec.to(device),
                     self.hand_model)  # fmt: skip

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device


def prior_config(prior: Prior) -> dict[str, Any]:
    """Resolved config dicts of the three components."""
    return {
        "denoiser": dataclasses.asdict(prior.denoiser.cfg),
        "diffusion": dataclasses.asdict(prior.diffusion.cfg),
        "codec": dataclasses.asdict(prior.codec.cfg),
    }


def save_checkpoint(path: Path | str, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (temporary file + rename) with ``torch.save``."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path | str, kind: str, device: torch.device | str = "cpu") -> dict:
    """Read and validate a checkpoint dict of the given ``kind`` (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 -- re-raised as one line naming the file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated/corrupt?): {first}") from e
    if not isinstance(obj, dict) or "format_version" not in obj or "kind" not in obj:
        raise CheckpointError(f"{path}: not a two-hand prior checkpoint (no format header)")
    if obj["kind"] != kind:
        raise CheckpointError(f"{path}: is a {obj['kind']!r} checkpoint, expected {kind!r}")
    if obj["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {obj['format_version']} unsupported (this code reads "
            f"{FORMAT_VERSION})"
        )
    return obj


def save_prior(
    path: Path | str, prior: Prior, step: int, extra_config: dict[str, Any] | None = None
) -> None:
    """Export the prior bundle (denoiser weights as given, codec stats, resolved configs)."""
    config = prior_config(prior)
    if extra_config:
        config["train"] = extra_config
    save_checkpoint(path, {
        "kind": PRIOR_KIND,
        "format_version": FORMAT_VERSION,
        "denoiser": prior.denoiser.state_dict(),
        "codec": prior.codec.state_dict(),
        "codec_signature": prior.codec.signature(prior.hand_model),
        "hand_model": prior.hand_model,
        "config": config,
        "step": int(step),
    })  # fmt: skip


def _load_state(path: Path, module: nn.Module, state: Any, what: str) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: {what} weights missing")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:200]
        detail = " ".join(str(e).split())[len(first) : len(first) + 160]
        raise CheckpointError(f"{path}: {what} weights do not match its config: {first}{detail}") from e


def build_prior(config: dict[str, Any], hand_model: str, path: Path | str = "<config>") -> Prior:
    """Untrained prior from resolved config dicts (keys denoiser, diffusion, codec)."""
    try:
        den = from_dict(DenoiserConfig, dict(config["denoiser"]))
        dif = from_dict(DiffusionConfig, dict(config["diffusion"]))
        cod = from_dict(CodecConfig, dict(config["codec"]))
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid prior config: {e}") from e
    return Prior(HandDenoiser(den), GaussianDiffusion(dif), HandCodec(cod), hand_model)


def load_prior(
    path: Path | str, device: torch.device | str = "cpu", hand_model: str | None = None
) -> Prior:
    """Load an exported prior in eval mode.

    Args:
        path: file written by :func:`save_prior`.
        device: where to put it.
        hand_model: if given (``ManoPair.model_name``), the checkpoint's codec must belong to
            this hand model (its PCA basis and stats are model-specific).
    Raises:
        CheckpointError: one line naming the file.
    """
    path = Path(path)
    obj = load_checkpoint(path, PRIOR_KIND, "cpu")
    for key in ("denoiser", "codec", "config", "codec_signature", "hand_model", "step"):
        if key not in obj:
            raise CheckpointError(f"{path}: prior checkpoint lacks {key!r}")
    prior = build_prior(obj["config"], obj["hand_model"], path)
    expected = prior.codec.signature(obj["hand_model"])
    if obj["codec_signature"] != expected:
        raise CheckpointError(
            f"{path}: codec signature {obj['codec_signature']!r} does not match this code's "
            f"{expected!r} (layout {CODEC_LAYOUT})"
        )
    if hand_model is not None and hand_model != obj["hand_model"]:
        raise CheckpointError(
            f"{path}: prior was trained with hand model {obj['hand_model']!r}, not {hand_model!r}"
        )
    _load_state(path, prior.denoiser, obj["denoiser"], "denoiser")
    _load_state(path, prior.codec, obj["codec"], "codec")
    if not all(torch.isfinite(v).all() for v in obj["denoiser"].values() if v.is_floating_point()):
        raise CheckpointError(f"{path}: denoiser weights contain NaN/inf")
    prior.denoiser.eval()
    log.info("loaded prior %s (step %d, %s)", path, obj["step"], obj["hand_model"])
    return prior.to(device)
