"""Hand anatomy that any MANO-format model implies: joint axes, limits and a finger-pose sampler.

Axes are computed from the model's *rest* skeleton, so the same code serves the stand-in model
and the official MANO files. In MANO's linear blend skinning every joint frame is aligned with the
model frame at rest, so an axis computed at rest is the axis of that joint's local rotation.

Per finger joint we use two axes (all vectors are in the rest model frame):

* flexion ``a_flex = normalise(b x n)``: a positive angle turns the bone ``b`` towards the palmar
  normal ``n`` (curling the finger into the palm);
* abduction ``a_abd = n``: a positive angle swings the finger sideways in the palm plane.

The palmar normal of a right hand is ``normalise((index_mcp - wrist) x (pinky_mcp - wrist))``; a left
hand is the mirror image, so its cross product changes sign and ``side_sign`` restores it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# MANO16 finger chains: (joint, child) with child index >= 16 meaning tip number (child - 16).
FINGERS = {
    "index": (1, 2, 3),
    "middle": (4, 5, 6),
    "pinky": (7, 8, 9),
    "ring": (10, 11, 12),
    "thumb": (13, 14, 15),
}
TIP_OF = {"thumb": 0, "index": 1, "middle": 2, "ring": 3, "pinky": 4}

# Joint limits in radians, (min, max), per position along the chain (proximal, middle, distal).
FLEX_LIMITS = ((-0.35, 1.55), (0.0, 1.85), (-0.1, 1.35))
ABD_LIMITS = ((-0.35, 0.35), (-0.05, 0.05), (-0.05, 0.05))
THUMB_FLEX_LIMITS = ((-0.35, 0.9), (-0.25, 1.0), (-0.35, 1.35))
THUMB_ABD_LIMITS = ((-0.6, 0.6), (-0.15, 0.15), (-0.05, 0.05))


@dataclass(frozen=True)
class HandAxes:
    """Per-finger-joint axes of one hand side.

    flex: (15, 3) unit flexion axes, for MANO joints 1..15 (pose_aa order)
    abd:  (15, 3) unit abduction axes
    flex_limits, abd_limits: (15, 2) radians
    """

    flex: Tensor
    abd: Tensor
    flex_limits: Tensor
    abd_limits: Tensor


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def palmar_normal(joints16: Tensor, side_sign: float) -> Tensor:
    """(16, 3) rest joints -> (3,) unit normal pointing out of the palm."""
    wrist, index_mcp, pinky_mcp = joints16[0], joints16[1], joints16[7]
    return _unit(side_sign * torch.linalg.cross(index_mcp - wrist, pinky_mcp - wrist))


def hand_axes(joints16: Tensor, tips: Tensor, side_sign: float) -> HandAxes:
    """Flexion/abduction axes of the 15 finger joints.

    Args:
        joints16: (16, 3) rest joints in MANO order.
        tips: (5, 3) rest fingertip vertices (thumb, index, middle, ring, pinky).
        side_sign: +1 for a right hand, -1 for a left hand.
    """
    n = palmar_normal(joints16, side_sign)
    palm_centre = 0.5 * (joints16[0] + joints16[4]) + 0.02 * n
    flex = torch.zeros(15, 3, dtype=joints16.dtype)
    abd = torch.zeros(15, 3, dtype=joints16.dtype)
    flex_lim = torch.zeros(15, 2, dtype=joints16.dtype)
    abd_lim = torch.zeros(15, 2, dtype=joints16.dtype)
    for name, chain in FINGERS.items():
        for k, j in enumerate(chain):
            child = joints16[chain[k + 1]] if k + 1 < len(chain) else tips[TIP_OF[name]]
            bone = _unit(child - joints16[j])
            if name == "thumb":
                # The thumb curls towards the palm centre, not along the fingers' palmar normal.
                towards = palm_centre - joints16[j]
                pad = _unit(towards - (towards @ bone) * bone)
                flex[j - 1] = _unit(torch.linalg.cross(bone, pad))
                abd[j - 1] = pad
                fl, al = THUMB_FLEX_LIMITS[k], THUMB_ABD_LIMITS[k]
            else:
                flex[j - 1] = _unit(torch.linalg.cross(bone, n))
                abd[j - 1] = n
                fl, al = FLEX_LIMITS[k], ABD_LIMITS[k]
            flex_lim[j - 1] = torch.tensor(fl)
            abd_lim[j - 1] = torch.tensor(al)
    return HandAxes(flex, abd, flex_lim, abd_lim)


def angles_to_pose(flex: Tensor, abd: Tensor, axes: HandAxes) -> Tensor:
    """Flexion/abduction angles -> absolute axis-angle finger pose.

    Args:
        flex: (N, 15) flexion angles, radians.
        abd: (N, 15) abduction angles, radians.
    Returns:
        (N, 15, 3) axis-angle (absolute, i.e. not relative to a hand mean).
    """
    return flex[..., None] * axes.flex.to(flex) + abd[..., None] * axes.abd.to(abd)


# Finger curl families: per finger (thumb, index, middle, ring, pinky) a curl range in [0, 1].
POSE_FAMILIES: dict[str, tuple[tuple[float, float], ...]] = {
    "open": ((0.0, 0.25),) * 5,
    "relaxed": ((0.1, 0.35), (0.15, 0.4), (0.2, 0.45), (0.25, 0.5), (0.3, 0.55)),
    "fist": ((0.5, 0.9), (0.75, 1.0), (0.75, 1.0), (0.75, 1.0), (0.75, 1.0)),
    "point": ((0.4, 0.8), (0.0, 0.15), (0.7, 1.0), (0.7, 1.0), (0.7, 1.0)),
    "victory": ((0.4, 0.8), (0.0, 0.15), (0.0, 0.15), (0.7, 1.0), (0.7, 1.0)),
    "pinch": ((0.35, 0.6), (0.35, 0.6), (0.1, 0.6), (0.1, 0.7), (0.1, 0.8)),
    "grasp": ((0.3, 0.6), (0.35, 0.65), (0.35, 0.65), (0.35, 0.65), (0.35, 0.65)),
    "thumbs_up": ((0.0, 0.15), (0.75, 1.0), (0.75, 1.0), (0.75, 1.0), (0.75, 1.0)),
}
_FINGER_ORDER = ("thumb", "index", "middle", "ring", "pinky")


def sample_finger_angles(
    n: int, axes: HandAxes, generator: torch.Generator, families: tuple[str, ...] | None = None
) -> tuple[Tensor, Tensor, list[str]]:
    """Sample anatomically plausible flexion/abduction angles.

    Each sample picks a family (uniformly from ``families``), draws one curl per finger in the
    family's range, spreads it over the finger's three joints with correlated noise (the DIP
    follows the PIP, as tendons couple them), adds a spread (abduction) shared by the fingers,
    and clamps everything to the joint limits.

    Returns:
        flex (n, 15), abd (n, 15) in radians, and the family name of each sample.
    """
    families = families or tuple(POSE_FAMILIES)
    fam_idx = torch.randint(len(families), (n,), generator=generator)
    lo = torch.tensor([[r[0] for r in POSE_FAMILIES[f]] for f in families])[fam_idx]  # (n,5)
    hi = torch.tensor([[r[1] for r in POSE_FAMILIES[f]] for f in families])[fam_idx]
    curl = lo + (hi - lo) * torch.rand(n, 5, generator=generator)
    flex = torch.zeros(n, 15)
    abd = torch.zeros(n, 15)
    spread = 0.15 * torch.randn(n, 1, generator=generator)  # shared finger spread
    for fi, name in enumerate(_FINGER_ORDER):
        chain = FINGERS[name]
        for k, j in enumerate(chain):
            lim = axes.flex_limits[j - 1]
            jitter = 0.08 * torch.randn(n, generator=generator)
            flex[:, j - 1] = curl[:, fi] * lim[1] * (0.9 if k == 2 else 1.0) + jitter
        side = {"index": -1.0, "middle": 0.0, "ring": 1.0, "pinky": 2.0, "thumb": -1.5}[name]
        a_noise = 0.05 * torch.randn(n, generator=generator)
        # Curled fingers spread less (they converge in a fist).
        abd[:, chain[0] - 1] = (side * spread[:, 0] + a_noise) * (1.0 - 0.7 * curl[:, fi])
    flex = torch.maximum(torch.minimum(flex, axes.flex_limits[:, 1]), axes.flex_limits[:, 0])
    abd = torch.maximum(torch.minimum(abd, axes.abd_limits[:, 1]), axes.abd_limits[:, 0])
    return flex, abd, [families[i] for i in fam_idx.tolist()]
