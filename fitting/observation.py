"""The recon -> fitting contract: what one batch of images tells the fitter.

Keypoints are in **MediaPipe order** (0 wrist, 1-4 thumb, 5-8 index, 9-12 middle, 13-16 ring,
17-20 pinky), exactly as the detector returns them; the fitter converts the model's joints with
:func:`prior.hands.convert_joints` instead of reordering observations. Hand axis: 0 left,
1 right. Everything is in the camera frame (OpenCV, metres, pixels).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from prior.hands import TwoHands

__all__ = ["KEYPOINT_ORDER", "Observation"]

KEYPOINT_ORDER = "mediapipe"


@dataclass(frozen=True)
class Observation:
    """Observed 2D evidence and the initial estimate for a batch of B images.

    keypoints_2d: (B, 2, 21, 2) px in the full image, MediaPipe order.
    confidence:   (B, 2, 21) in [0, 1]; 0 marks a missing keypoint.
    K:            (B, 3, 3) pixel intrinsics.
    image_size:   (B, 2) (width, height) px.
    init:         TwoHands (B) initial estimate in the camera frame.
    present:      (B, 2) bool; a hand that is not present is neither fitted nor scored
                  (a one-hand image fits that hand alone).
    landmarks_3d: (B, 2, 21, 3) optional initial 3D landmarks in the camera frame, metres,
                  MediaPipe order, at the hand model's scale (see ``recon.init``); the fitter
                  keeps the root-relative joints close to them.
    """

    keypoints_2d: Tensor
    confidence: Tensor
    K: Tensor
    image_size: Tensor
    init: TwoHands
    present: Tensor
    landmarks_3d: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.keypoints_2d.shape[0]

    @property
    def device(self) -> torch.device:
        return self.keypoints_2d.device

    def validate(self) -> Observation:
        """Check shapes, dtypes, ranges and finiteness.

        Returns:
            self, so that ``obs = obs.validate()`` chains.
        Raises:
            ValueError: one line naming the field and the problem.
        """
        t = self.keypoints_2d
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise ValueError(f"Observation.keypoints_2d must be a (B, 2, 21, 2) tensor, got {_desc(t)}")
        b = t.shape[0]
        if b == 0:
            raise ValueError("Observation has an empty batch (B = 0)")
        expect = {
            "keypoints_2d": (b, 2, 21, 2),
            "confidence": (b, 2, 21),
            "K": (b, 3, 3),
            "image_size": (b, 2),
            "present": (b, 2),
        }
        if self.landmarks_3d is not None:
            expect["landmarks_3d"] = (b, 2, 21, 3)
        for name, shape in expect.items():
            value = getattr(self, name)
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                raise ValueError(f"Observation.{name} must have shape {shape}, got {_desc(value)}")
            if value.device != t.device:
                raise ValueError(f"Observation.{name} is on {value.device}, keypoints on {t.device}")
            if name == "present":
                if value.dtype != torch.bool:
                    raise ValueError(f"Observation.present must be torch.bool, got {value.dtype}")
                continue
            if not value.is_floating_point():
                raise ValueError(f"Observation.{name} must be floating point, got {value.dtype}")
            if not torch.isfinite(value).all():
                raise ValueError(f"Observation.{name} contains NaN or Inf")
        if not isinstance(self.init, TwoHands) or self.init.batch_size != b:
            got = self.init.batch_size if isinstance(self.init, TwoHands) else type(self.init).__name__
            raise ValueError(f"Observation.init must be TwoHands with batch {b}, got {got}")
        for f in fields(TwoHands):
            if not torch.isfinite(getattr(self.init, f.name)).all():
                raise ValueError(f"Observation.init.{f.name} contains NaN or Inf")
        c = self.confidence
        if (c < 0).any() or (c > 1).any():
            raise ValueError(
                f"Observation.confidence must lie in [0, 1], got [{c.min().item():.3g}, {c.max().item():.3g}]"
            )
        if (self.image_size <= 0).any():
            raise ValueError("Observation.image_size must be positive (width, height)")
        focal = torch.stack([self.K[:, 0, 0], self.K[:, 1, 1]], -1)
        if (focal <= 0).any() or (self.K[:, 2] != self.K.new_tensor([0.0, 0.0, 1.0])).any():
            raise ValueError("Observation.K must have positive focal lengths and last row [0, 0, 1]")
        depth = self._root_depth()
        if (depth[self.present] <= 0).any():
            raise ValueError("Observation.init puts a present hand behind the camera (root z <= 0)")
        return self

    def _root_depth(self) -> Tensor:
        """(B, 2) z of the init's translation (a cheap behind-the-camera check)."""
        return self.init.transl[..., 2]

    def to(self, device: torch.device | str) -> Observation:
        """Copy to ``device`` (every tensor, the init included)."""
        lm = None if self.landmarks_3d is None else self.landmarks_3d.to(device)
        return Observation(
            self.keypoints_2d.to(device), self.confidence.to(device), self.K.to(device),
            self.image_size.to(device), self.init.to(device), self.present.to(device), lm,
        )  # fmt: skip

    def __getitem__(self, idx: int | slice) -> Observation:
        """Batch slice (an int keeps the batch axis)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        lm = None if self.landmarks_3d is None else self.landmarks_3d[idx]
        return Observation(
            self.keypoints_2d[idx], self.confidence[idx], self.K[idx], self.image_size[idx],
            self.init[idx], self.present[idx], lm,
        )  # fmt: skip

    @staticmethod
    def cat(items: list[Observation]) -> Observation:
        """Concatenate along the batch (landmarks_3d must be given in all or none)."""
        if not items:
            raise ValueError("Observation.cat needs at least one item")
        has_lm = [o.landmarks_3d is not None for o in items]
        if any(has_lm) and not all(has_lm):
            raise ValueError("Observation.cat: landmarks_3d given for some items only")
        lm = torch.cat([o.landmarks_3d for o in items]) if all(has_lm) else None
        return Observation(
            torch.cat([o.keypoints_2d for o in items]), torch.cat([o.confidence for o in items]),
            torch.cat([o.K for o in items]), torch.cat([o.image_size for o in items]),
            TwoHands.cat([o.init for o in items]), torch.cat([o.present for o in items]), lm,
        )  # fmt: skip


def _desc(value: object) -> str:
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)}"
    return type(value).__name__
