"""The two-hand layer and the InterHandGen diffusion prior.

Public names are re-exported lazily (on first attribute access) so that importing the hand layer
(``prior.hands``) does not import the whole diffusion stack.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TwoHands": "prior.hands",
    "HandMeshes": "prior.hands",
    "ManoPair": "prior.hands",
    "LEFT": "prior.hands",
    "RIGHT": "prior.hands",
    "Prior": "prior.checkpoint",
    "load_prior": "prior.checkpoint",
    "save_prior": "prior.checkpoint",
    "SamplerConfig": "prior.sampling",
    "sample_two_hands": "prior.sampling",
    "sds_loss": "prior.sds",
    "sds_loss_hands": "prior.sds",
    "sample_vectors": "prior.sampling",
    "apg_factory": "prior.sampling",
    "HandCodec": "prior.codec",
    "TrainConfig": "prior.train",
    "train": "prior.train",
    "DenoiserConfig": "prior.denoiser",
    "DiffusionConfig": "prior.diffusion",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'prior' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
