"""InterHand2.6M annotation parsing and frame geometry (official release layout).

Layout (``docs`` formats.md): ``ROOT/annotations/{split}/InterHand2.6M_{split}_{data,camera,
joint_3d,MANO_NeuralAnnot}.json`` and ``ROOT/images/{split}/Capture{c}/{seq}/cam{cam}/image{f}.jpg``.
JSON keys for capture, camera and frame are strings; record fields may be ints or strings, so
every id is normalised with ``str()``.

Geometry (all stated once here):

* World to camera: ``X_cam = camrot @ (X_world - campos)`` in millimetres; this module returns
  metres. Pixel: ``u = fx * x / z + cx``, ``v = fy * y / z + cy``.
* 42-joint arrays are right hand 0-20, left hand 21-41; :func:`ih42_to_hands` puts them on the
  project's hand axis (0 = left, 1 = right). Within a hand the order is InterHand2.6M's (wrist 20).
* MANO NeuralAnnot: world frame, 48 axis-angle values (first 3 = root), fit with
  ``flat_hand_mean=False``; ``trans`` in metres.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import roma
import torch
from torch import Tensor

from prior.hands import LEFT, NUM_BETAS, RIGHT, TwoHands

__all__ = [
    "ANNOT_KINDS", "SkipLog", "CameraParams", "JointRecord", "ManoRecord", "InterHandFormatError",
    "annotation_path", "read_json", "load_data_json", "image_ids", "every_k_positions", "parse_cameras",
    "parse_joint_3d", "parse_mano",
    "ih42_to_hands", "mano_records_to_hands", "parse_intaghand_record", "WristModel", "hands_to_camera", "project",
]

ANNOT_KINDS = ("data", "camera", "joint_3d", "MANO_NeuralAnnot")
log = logging.getLogger(__name__)


class InterHandFormatError(ValueError):
    """An InterHand2.6M file is missing or does not follow the documented layout."""


class SkipLog:
    """Bookkeeping shared by the datasets: skipped ``(id, reason)`` list and reason counts."""

    def __init__(self) -> None:
        self.skipped: list[tuple[str, str]] = []
        self.counts: Counter[str] = Counter()

    def skip(self, ident: str, reason: str) -> None:
        """Record that ``ident`` was not used, and why."""
        self.skipped.append((ident, reason))
        self.counts[reason] += 1

    def log_summary(self, name: str, kept: int) -> None:
        """Log the kept count and the reason counts once."""
        log.info("%s: %d samples kept; %s", name, kept, dict(self.counts) or "nothing skipped")


def annotation_path(root: Path | str, split: str, kind: str) -> Path:
    """``ROOT/annotations/{split}/InterHand2.6M_{split}_{kind}.json``."""
    if kind not in ANNOT_KINDS:
        raise ValueError(f"unknown annotation kind {kind!r}; known: {ANNOT_KINDS}")
    return Path(root) / "annotations" / split / f"InterHand2.6M_{split}_{kind}.json"


def read_json(path: Path) -> Any:
    """Load a JSON file; a missing or unparsable file is a one-line :class:`InterHandFormatError`."""
    if not path.is_file():
        raise InterHandFormatError(f"{path}: file not found")
    try:
        with path.open("r", encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise InterHandFormatError(f"{path}: invalid JSON ({exc})") from exc


def load_data_json(root: Path | str, split: str) -> tuple[list[dict], dict[int, dict]]:
    """data.json -> (``images`` records in file order, {image_id: annotation record})."""
    path = annotation_path(root, split, "data")
    data = read_json(path)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise InterHandFormatError(f"{path}: expected an object with 'images' and 'annotations'")
    return data["images"], {int(a["image_id"]): a for a in data["annotations"]}


def image_ids(img: dict) -> tuple[str, str, str]:
    """(capture, frame_idx, camera) of an ``images`` record, as the string keys the JSONs use."""
    return str(img["capture"]), str(img["frame_idx"]), str(img["camera"])


def every_k_positions(images: list[dict], k: int) -> set[int]:
    """Positions kept when taking every k-th frame (by frame_idx) of each (capture, seq, camera) stream."""
    streams: dict[tuple[str, str, str], list[tuple[int, int]]] = defaultdict(list)
    for pos, img in enumerate(images):
        streams[(str(img["capture"]), str(img.get("seq_name", "")), str(img["camera"]))].append(
            (int(img["frame_idx"]), pos))
    return {pos for s in streams.values() for i, (_, pos) in enumerate(sorted(s)) if i % k == 0}


def _array(value: Any, shape: tuple[int, ...], what: str, path: Path) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InterHandFormatError(f"{path}: {what} is not numeric ({exc})") from exc
    if arr.size != int(np.prod(shape)):
        raise InterHandFormatError(f"{path}: {what} has shape {arr.shape}, expected {shape}")
    return arr.reshape(shape)  # joint_valid comes as [[v] x 42] or [v x 42]


@dataclass(frozen=True)
class CameraParams:
    """One calibrated camera. rot (3,3) world->camera, pos_mm (3,), focal (2,), princpt (2,)."""

    rot: np.ndarray
    pos_mm: np.ndarray
    focal: np.ndarray
    princpt: np.ndarray

    def K(self) -> np.ndarray:
        """(3, 3) float64 intrinsics."""
        return np.array([[self.focal[0], 0.0, self.princpt[0]],
                         [0.0, self.focal[1], self.princpt[1]],
                         [0.0, 0.0, 1.0]])

    def translation_m(self) -> np.ndarray:
        """(3,) t such that ``X_cam = rot @ X_world + t`` in metres (``-rot @ campos / 1000``)."""
        return -self.rot @ self.pos_mm / 1000.0

    def world_mm_to_cam_m(self, x_world_mm: np.ndarray) -> np.ndarray:
        """(..., 3) world millimetres -> (..., 3) camera metres: ``camrot @ (X - campos) / 1000``."""
        return (x_world_mm - self.pos_mm) @ self.rot.T / 1000.0


@dataclass(frozen=True)
class JointRecord:
    """joint_3d.json entry of one frame. world_mm (42,3), valid (42,) bool (right 0-20, left 21-41)."""

    world_mm: np.ndarray
    valid: np.ndarray
    hand_type: str
    hand_type_valid: bool


@dataclass(frozen=True)
class ManoRecord:
    """One hand of MANO_NeuralAnnot.json. pose (48,) axis-angle (root first), shape (10,), trans (3,) m."""

    pose: np.ndarray
    shape: np.ndarray
    trans: np.ndarray


def parse_cameras(obj: Any, path: Path) -> dict[tuple[str, str], CameraParams]:
    """camera.json -> {(capture, camera): CameraParams}."""
    if not isinstance(obj, dict):
        raise InterHandFormatError(f"{path}: expected an object keyed by capture")
    out: dict[tuple[str, str], CameraParams] = {}
    for cap, cams in obj.items():
        for field in ("campos", "camrot", "focal", "princpt"):
            if not isinstance(cams, dict) or field not in cams:
                raise InterHandFormatError(f"{path}: capture {cap} lacks '{field}'")
        for cam in cams["camrot"]:
            if not all(cam in cams[f] for f in ("campos", "focal", "princpt")):
                raise InterHandFormatError(f"{path}: capture {cap} camera {cam} is incomplete")
            where = f"capture {cap} camera {cam}"
            out[(str(cap), str(cam))] = CameraParams(
                rot=_array(cams["camrot"][cam], (3, 3), f"{where} camrot", path),
                pos_mm=_array(cams["campos"][cam], (3,), f"{where} campos", path),
                focal=_array(cams["focal"][cam], (2,), f"{where} focal", path),
                princpt=_array(cams["princpt"][cam], (2,), f"{where} princpt", path),
            )
    return out


def parse_joint_3d(obj: Any, path: Path) -> dict[tuple[str, str], JointRecord]:
    """joint_3d.json -> {(capture, frame): JointRecord}."""
    if not isinstance(obj, dict):
        raise InterHandFormatError(f"{path}: expected an object keyed by capture")
    out: dict[tuple[str, str], JointRecord] = {}
    for cap, frames in obj.items():
        for frame, rec in frames.items():
            where = f"capture {cap} frame {frame}"
            if not isinstance(rec, dict) or "world_coord" not in rec or "joint_valid" not in rec:
                raise InterHandFormatError(f"{path}: {where} lacks world_coord/joint_valid")
            out[(str(cap), str(frame))] = JointRecord(
                world_mm=_array(rec["world_coord"], (42, 3), f"{where} world_coord", path),
                valid=_array(rec["joint_valid"], (42,), f"{where} joint_valid", path) > 0,
                hand_type=str(rec.get("hand_type", "")),
                hand_type_valid=bool(rec.get("hand_type_valid", 0)),
            )
    return out


def parse_mano(obj: Any, path: Path) -> dict[tuple[str, str], tuple[ManoRecord | None, ManoRecord | None]]:
    """MANO_NeuralAnnot.json -> {(capture, frame): (left | None, right | None)} (null = no fit)."""
    if not isinstance(obj, dict):
        raise InterHandFormatError(f"{path}: expected an object keyed by capture")
    out: dict[tuple[str, str], tuple[ManoRecord | None, ManoRecord | None]] = {}
    for cap, frames in obj.items():
        for frame, rec in frames.items():
            hands: list[ManoRecord | None] = []
            for side in ("left", "right"):
                h = rec.get(side) if isinstance(rec, dict) else None
                if h is None:
                    hands.append(None)
                    continue
                where = f"capture {cap} frame {frame} {side}"
                if not all(k in h for k in ("pose", "shape", "trans")):
                    raise InterHandFormatError(f"{path}: {where} lacks pose/shape/trans")
                hands.append(ManoRecord(
                    pose=_array(h["pose"], (48,), f"{where} pose", path),
                    shape=_array(h["shape"], (NUM_BETAS,), f"{where} shape", path),
                    trans=_array(h["trans"], (3,), f"{where} trans", path),
                ))
            out[(str(cap), str(frame))] = (hands[0], hands[1])
    return out


def ih42_to_hands(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """(..., 42, ...) InterHand2.6M (right 0-20, left 21-41) -> (..., 2, 21, ...), 0 = left, 1 = right.

    Args:
        x: array with 42 joints on ``axis``.
        axis: the joint axis; the result has a new hand axis there, followed by 21 joints.
    """
    if x.shape[axis] != 42:
        raise ValueError(f"expected 42 joints on axis {axis}, got shape {x.shape}")
    right, left = np.split(x, [21], axis=axis)
    return np.stack([left, right], axis=axis)


def mano_records_to_hands(
    left: ManoRecord | None, right: ManoRecord | None, dtype: torch.dtype = torch.float32
) -> tuple[TwoHands, Tensor]:
    """NeuralAnnot records (world frame) -> TwoHands (B=1) and per-hand validity.

    ``pose_aa = pose[3:]`` (relative to the hand mean: ManoPair's ``flat_hand_mean=False``),
    ``rot_mat = rotvec_to_rotmat(pose[:3])``, ``transl = trans`` (m). A null hand gets identity /
    zero placeholders and ``valid = False``: never use its parameters without the mask.

    Returns:
        hands: TwoHands with batch 1; valid: (2,) bool.
    """
    h = TwoHands.zeros(1, dtype=torch.float64)
    pose, betas, rot, transl = h.pose_aa.clone(), h.betas.clone(), h.rot_mat.clone(), h.transl.clone()
    valid = torch.zeros(2, dtype=torch.bool)
    for side, rec in ((LEFT, left), (RIGHT, right)):
        if rec is None:
            continue
        p = torch.as_tensor(rec.pose, dtype=torch.float64)
        pose[0, side] = p[3:].reshape(15, 3)
        rot[0, side] = roma.rotvec_to_rotmat(p[:3])
        betas[0, side] = torch.as_tensor(rec.shape, dtype=torch.float64)
        transl[0, side] = torch.as_tensor(rec.trans, dtype=torch.float64)
        valid[side] = True
    return TwoHands(pose, betas, rot, transl).to(dtype=dtype), valid


def _pkl_array(d: dict, key: str, shape: tuple[int, ...], path: Path, where: str) -> Tensor:
    if not isinstance(d, dict) or key not in d:
        raise ValueError(f"{path}: {where} lacks '{key}'")
    arr = np.asarray(d[key], dtype=np.float64)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {where} '{key}' has shape {arr.shape}, expected {shape}")
    return torch.as_tensor(arr.reshape(shape))


def parse_intaghand_record(d: Any, path: Path, components: Tensor) -> tuple[TwoHands, Tensor, Tensor]:
    """One IntagHand ``anno/{idx}.pkl`` dict -> world-frame TwoHands and its camera.

    ``mano_params[side]``: ``R`` (1,3,3) world root rotation, ``pose`` (1,45) PCA coefficients of
    the absolute finger pose (``aa_abs = pose @ hands_components + hands_mean``), ``shape`` (1,10),
    ``trans`` (1,3) m. TwoHands stores the pose relative to the mean (``flat_hand_mean=False``):
    ``pose_aa = aa_abs - hands_mean = pose @ hands_components`` of the matching side.

    Args:
        d: the unpickled dict; path: its file (for errors); components: (2, 45, 45) bases.
    Returns:
        hands (batch 1, float64), camera rotation (3, 3) and translation (3,) in metres
        (``X_cam = R X_world + t``).
    """
    params = d.get("mano_params") if isinstance(d, dict) else None
    if not isinstance(params, dict):
        raise ValueError(f"{path}: no 'mano_params' dict")
    comps = components.detach().double().cpu()
    fields: dict[str, list[Tensor]] = {"pose_aa": [], "betas": [], "rot_mat": [], "transl": []}
    for side_idx, side in enumerate(("left", "right")):
        p = params.get(side)
        pose = _pkl_array(p, "pose", (1, 45), path, f"mano_params[{side}]")
        fields["pose_aa"].append((pose @ comps[side_idx]).reshape(15, 3))
        fields["betas"].append(_pkl_array(p, "shape", (1, 10), path, side).reshape(10))
        fields["rot_mat"].append(_pkl_array(p, "R", (1, 3, 3), path, side).reshape(3, 3))
        fields["transl"].append(_pkl_array(p, "trans", (1, 3), path, side).reshape(3))
    hands = TwoHands(**{k: torch.stack(v)[None] for k, v in fields.items()})
    cam = d.get("camera")
    rot = _pkl_array(cam, "R", (3, 3), path, "camera")
    t = _pkl_array(cam, "t", (3,), path, "camera")
    return hands, rot, t


class WristModel:
    """Rest wrist joint J0(betas) of both hands, exact and fast.

    MANO regresses joints from the shaped template, ``J = J_regressor @ (v_template + shapedirs
    @ betas)``, so the wrist with identity root rotation and zero translation is *affine* in the
    betas: ``J0(b) = J0(0) + sum_k b_k (J0(e_k) - J0(0))``. The 11 probes are posed through the
    given ManoPair (identity rotation, zero translation, read the wrist), so this matches
    whatever hand model the caller uses (stand-in or official MANO).
    """

    def __init__(self, mano: torch.nn.Module) -> None:
        probes = TwoHands.zeros(NUM_BETAS + 1, dtype=torch.float32)
        betas = torch.zeros(NUM_BETAS + 1, 2, NUM_BETAS)
        betas[1:] = torch.eye(NUM_BETAS)[:, None, :]
        probes = TwoHands(probes.pose_aa, betas, probes.rot_mat, probes.transl)
        with torch.no_grad():
            wrist = mano(probes.to(device=mano.faces.device)).root_joints().double().cpu()
        self.offset = wrist[0]  # (2, 3)
        self.basis = wrist[1:] - wrist[:1]  # (10, 2, 3)

    def __call__(self, betas: Tensor) -> Tensor:
        """(B, 2, 10) betas -> (B, 2, 3) rest wrist positions (float64, metres)."""
        return self.offset + torch.einsum("bsk,ksd->bsd", betas.double().cpu(), self.basis)


def hands_to_camera(hands: TwoHands, cam_rot: Tensor, cam_t: Tensor, wrist: Tensor) -> TwoHands:
    """Re-express world-frame MANO parameters in a camera frame ``X_c = C X_w + t_c``.

    MANO poses a hand as ``X_w = R (X - J0) + J0 + t`` (rotation about the rest wrist J0, which
    depends on the betas). Applying the camera transform:
    ``X_c = C R (X - J0) + C (J0 + t) + t_c``, which is again MANO's form with
    ``R' = C R`` and ``J0 + t' = C (J0 + t) + t_c``, i.e. ``t' = C (J0 + t) + t_c - J0``.
    For InterHand2.6M, ``t_c = -C campos / 1000``, so ``t' = C (J0 + t - campos/1000) - J0``.

    Args:
        hands: world-frame TwoHands, batch B.
        cam_rot: (B, 3, 3) world->camera rotation C.
        cam_t: (B, 3) world->camera translation t_c (metres).
        wrist: (B, 2, 3) rest wrist J0 of each hand for its betas (see :class:`WristModel`).
    Returns:
        TwoHands in the camera frame (same dtype as ``hands``).
    """
    dt = torch.float64
    c = cam_rot.to(dt)[:, None]  # (B, 1, 3, 3)
    j0, t = wrist.to(dt), hands.transl.to(dt)
    rot = c @ hands.rot_mat.to(dt)
    transl = (c @ (j0 + t)[..., None])[..., 0] + cam_t.to(dt)[:, None] - j0
    out = TwoHands(hands.pose_aa.to(dt), hands.betas.to(dt), rot, transl)
    return out.to(dtype=hands.pose_aa.dtype)


def project(points: Tensor | np.ndarray, K: Tensor | np.ndarray) -> np.ndarray:
    """Pinhole projection. points (..., 3) camera frame, K (3, 3) -> (..., 2) pixels (float64)."""
    p = np.asarray(points, dtype=np.float64)
    k = np.asarray(K, dtype=np.float64)
    return np.stack([k[0, 0] * p[..., 0] / p[..., 2] + k[0, 2],
                     k[1, 1] * p[..., 1] / p[..., 2] + k[1, 2]], axis=-1)
