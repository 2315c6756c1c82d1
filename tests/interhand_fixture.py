"""Writes a miniature InterHand2.6M in exactly the official layout, plus IntagHand anno pkls.

Official layout (formats.md): ``images/{split}/Capture{c}/{seq}/cam{cam}/image{frame}.jpg`` and
``annotations/{split}/InterHand2.6M_{split}_{data,camera,joint_3d,MANO_NeuralAnnot}.json`` with
string keys, 42 joints (right 0-20, left 21-41, mm), nested ``joint_valid`` ``[[0/1] x 42]``,
``hand_type``/``hand_type_valid`` and ``null`` for hands without a MANO fit.

GT joints are the stand-in ManoPair's joints of known parameters (mm, IH order, right first), so
MANO params and joints are consistent here. (On real data they are not exactly: InterHand2.6M
regresses its 21 joints from MANO vertices with ``J_regressor_mano_ih26m.npy``, which is not
shipped; ManoPair gives 16 kinematic joints + 5 tip vertices.)

Images are black with one filled disc per valid joint (left green, right red) at pixels computed
here directly from the posed joints in metres, independently of the JSON path the reader takes.

Contents (capture 1, cameras 400001 and 400002):
    frames 10, 11, 12  interacting, both hands fitted (frame 12: right pinky tip invalid)
    frame 13           interacting, left MANO null              (robustness: null MANO entry)
    frame 14           interacting, absent from joint_3d.json   (robustness: missing frame)
    frame 20           right hand only (left MANO null, left joints invalid zeros)
    frame 21           right hand only, but both hands have a MANO fit (a non-interacting pair)
    frame 30           left hand only (right MANO null)
    image of frame 12 from camera 400099, absent from camera.json (robustness)
    image of frame 11 from camera 400002 deleted                  (robustness: missing file)
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import roma
import torch

from prior.hands import LEFT, RIGHT, TwoHands

SPLIT = "test"
CAPTURE = 1
CAMS = ("400001", "400002")
ABSENT_CAM = "400099"
WIDTH, HEIGHT = 334, 512
FOCAL, PRINCPT = (600.0, 610.0), (167.0, 256.0)
# frame -> (seq_name, hand_type, has_left_mano, has_right_mano, in_joint_3d)
FRAMES: dict[int, tuple[str, str, bool, bool, bool]] = {
    10: ("0000_twohands", "interacting", True, True, True),
    11: ("0000_twohands", "interacting", True, True, True),
    12: ("0000_twohands", "interacting", True, True, True),
    13: ("0000_twohands", "interacting", False, True, True),
    14: ("0000_twohands", "interacting", True, True, False),
    20: ("0001_right", "right", False, True, True),
    21: ("0001_right", "right", True, True, True),
    30: ("0002_left", "left", True, False, True),
}
INVALID_JOINT = (12, RIGHT, 0)  # frame 12: right thumb tip (IH index 0) marked invalid
DELETED_IMAGE = (11, "400002")
COLORS = {LEFT: (0, 255, 0), RIGHT: (0, 0, 255)}  # BGR: left green, right red


@dataclass
class FixtureTruth:
    """What the fixture wrote, computed without the JSON path."""

    root: Path
    split: str
    hands: dict[int, TwoHands]  # frame -> world-frame params (batch 1), both hands
    cameras: dict[str, tuple[np.ndarray, np.ndarray]]  # cam -> (camrot (3,3), campos_mm (3,))
    pixels: dict[int, np.ndarray] = field(default_factory=dict)  # image id -> (2,21,2) px
    image_ids: dict[tuple[int, str], int] = field(default_factory=dict)  # (frame, cam) -> id
    joint_valid: dict[int, np.ndarray] = field(default_factory=dict)  # image id -> (2,21) bool


def _camera(yaw_deg: float, dist_mm: float = 700.0) -> tuple[np.ndarray, np.ndarray]:
    """camrot/campos of a camera looking at the world origin from distance ``dist_mm``."""
    rot = roma.rotvec_to_rotmat(
        torch.tensor([0.1, np.deg2rad(yaw_deg), 0.05], dtype=torch.float64)
    ).numpy()
    campos = -rot.T @ np.array([0.0, 0.0, dist_mm])  # origin lands at (0, 0, dist) in the camera
    return rot, campos


def _hands(gen: torch.Generator, n: int) -> TwoHands:
    pose = 0.25 * torch.randn(n, 2, 15, 3, generator=gen, dtype=torch.float64)
    betas = 1.0 * torch.randn(n, 2, 10, generator=gen, dtype=torch.float64)
    rot = roma.rotvec_to_rotmat(0.4 * torch.randn(n, 2, 3, generator=gen, dtype=torch.float64))
    transl = 0.01 * torch.randn(n, 2, 3, generator=gen, dtype=torch.float64)
    transl[:, LEFT, 0] += 0.07  # left fingers point to -x: put the wrist on the +x side
    transl[:, RIGHT, 0] -= 0.07
    return TwoHands(pose, betas, rot, transl)


def _valid42(valid: np.ndarray) -> list[list[int]]:
    """(2,21) bool (0 = left) -> [[v] x 42] with right first."""
    return [[int(v)] for v in np.concatenate([valid[RIGHT], valid[LEFT]])]


def write_interhand_fixture(root: Path, mano: torch.nn.Module, seed: int = 0) -> FixtureTruth:
    """Write the miniature dataset under ``root`` and return the truth used to write it."""
    gen = torch.Generator().manual_seed(seed)
    frames = sorted(FRAMES)
    all_hands = _hands(gen, len(frames))
    with torch.no_grad():
        joints_m = mano(all_hands.to(dtype=torch.float32)).joints.double().numpy()  # (N,2,21,3)
    truth = FixtureTruth(
        root=root,
        split=SPLIT,
        hands={f: all_hands[i] for i, f in enumerate(frames)},
        cameras={c: _camera(y) for c, y in zip(CAMS, (-15.0, 25.0))},
    )
    cam_json = {"campos": {}, "camrot": {}, "focal": {}, "princpt": {}}
    for cam, (rot, pos) in truth.cameras.items():
        cam_json["campos"][cam], cam_json["camrot"][cam] = pos.tolist(), rot.tolist()
        cam_json["focal"][cam], cam_json["princpt"][cam] = list(FOCAL), list(PRINCPT)
    joint_3d: dict[str, dict] = {}
    mano_json: dict[str, dict] = {}
    images, annotations = [], []
    for i, f in enumerate(frames):
        seq, htype, has_l, has_r, in_j3d = FRAMES[f]
        valid = np.ones((2, 21), dtype=bool)
        if htype == "right":
            valid[LEFT] = False
        if htype == "left":
            valid[RIGHT] = False
        world_mm = joints_m[i] * 1000.0
        world_mm[~valid] = 0.0  # absent hand: meaningless coordinates, masked by joint_valid
        if in_j3d:
            joint_3d[str(f)] = {
                "world_coord": np.concatenate([world_mm[RIGHT], world_mm[LEFT]]).tolist(),
                "joint_valid": _valid42(valid),
                "hand_type": htype,
                "hand_type_valid": 1,
            }
        h = truth.hands[f]
        entry = {}
        for side, has in (("left", has_l), ("right", has_r)):
            s = LEFT if side == "left" else RIGHT
            root_aa = roma.rotmat_to_rotvec(h.rot_mat[0, s])
            entry[side] = (
                None
                if not has
                else {
                    "pose": torch.cat([root_aa, h.pose_aa[0, s].reshape(45)]).tolist(),
                    "shape": h.betas[0, s].tolist(),
                    "trans": h.transl[0, s].tolist(),
                }
            )
        mano_json[str(f)] = entry
        cams = list(CAMS) + ([ABSENT_CAM] if f == 12 else [])
        for cam in cams:
            img_id = len(images)
            fname = f"Capture{CAPTURE}/{seq}/cam{cam}/image{f}.jpg"
            images.append(
                {
                    "id": img_id,
                    "file_name": fname,
                    "width": WIDTH,
                    "height": HEIGHT,
                    "capture": CAPTURE,
                    "subject": 0,
                    "seq_name": seq,
                    "camera": cam,
                    "frame_idx": f,
                }
            )
            ann_valid = valid.copy()
            if f == INVALID_JOINT[0]:
                ann_valid[INVALID_JOINT[1], INVALID_JOINT[2]] = False
            annotations.append(
                {
                    "id": img_id,
                    "image_id": img_id,
                    "bbox": [0, 0, WIDTH, HEIGHT],
                    "joint_valid": _valid42(ann_valid),
                    "hand_type": htype,
                    "hand_type_valid": 1,
                }
            )
            truth.image_ids[(f, cam)] = img_id
            truth.joint_valid[img_id] = ann_valid
            if cam == ABSENT_CAM:
                continue
            rot, pos = truth.cameras[cam]
            xc = (joints_m[i] - pos / 1000.0) @ rot.T  # metres, camera frame
            px = np.stack(
                [
                    FOCAL[0] * xc[..., 0] / xc[..., 2] + PRINCPT[0],
                    FOCAL[1] * xc[..., 1] / xc[..., 2] + PRINCPT[1],
                ],
                -1,
            )
            truth.pixels[img_id] = px
            if (f, cam) == DELETED_IMAGE:
                continue
            img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
            for s in (LEFT, RIGHT):
                for j in np.flatnonzero(valid[s]):
                    x, y = px[s, j]
                    cv2.circle(
                        img,
                        (int(round(x * 4)), int(round(y * 4))),
                        12,
                        COLORS[s],
                        -1,
                        lineType=cv2.LINE_AA,
                        shift=2,
                    )
            path = root / "images" / SPLIT / fname
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    ann_dir = root / "annotations" / SPLIT
    ann_dir.mkdir(parents=True, exist_ok=True)
    for kind, obj in (
        ("data", {"images": images, "annotations": annotations}),
        ("camera", {str(CAPTURE): cam_json}),
        ("joint_3d", {str(CAPTURE): joint_3d}),
        ("MANO_NeuralAnnot", {str(CAPTURE): mano_json}),
    ):
        (ann_dir / f"InterHand2.6M_{SPLIT}_{kind}.json").write_text(json.dumps(obj))
    return truth


def write_intaghand_fixture(
    root: Path, mano: torch.nn.Module, truth: FixtureTruth, protocols: tuple[int, ...] = (2, 4, 5)
) -> list[tuple[int, str]]:
    """Write ``root/{split}/anno/{idx}.pkl`` in IntagHand's layout for every interacting frame with
    both MANO fits and each camera view (one pkl per image). Returns [(frame, cam)] per idx."""
    comps = mano.hands_components().double()
    inv = torch.linalg.inv(comps)  # PCA coefficients = (aa_abs - mean) @ inv(components)
    anno = root / truth.split / "anno"
    anno.mkdir(parents=True, exist_ok=True)
    order = []
    for f in sorted(FRAMES):
        seq, htype, has_l, has_r, _ = FRAMES[f]
        if htype != "interacting" or not (has_l and has_r):
            continue
        h = truth.hands[f]
        for cam in CAMS:
            idx = len(order)
            rot, pos = truth.cameras[cam]
            params = {
                side: {
                    "R": h.rot_mat[0, s].numpy().astype(np.float32)[None],
                    "pose": (h.pose_aa[0, s].reshape(1, 45) @ inv[s]).numpy().astype(np.float32),
                    "shape": h.betas[0, s].numpy().astype(np.float32)[None],
                    "trans": h.transl[0, s].numpy().astype(np.float32)[None],
                }
                for side, s in (("left", LEFT), ("right", RIGHT))
            }
            data = {
                "inter_idx": idx,
                "image": {
                    "file_name": f"Capture{CAPTURE}/{seq}/cam{cam}/image{f}.jpg",
                    "capture": CAPTURE,
                    "camera": cam,
                    "frame_idx": f,
                    "subject": 0,
                    "seq_name": seq,
                },
                "annotation": {
                    "bbox": [0, 0, WIDTH, HEIGHT],
                    "hand_type": htype,
                    "hand_type_valid": 1,
                    "joint_valid": [[1]] * 42,
                },
                "mano_params": params,
                "camera": {
                    "R": rot.astype(np.float32),
                    "t": (-rot @ pos / 1000.0).astype(np.float32),
                    "camera": np.eye(3, dtype=np.float32),
                },
            }
            proto = protocols[idx % len(protocols)]
            (anno / f"{idx}.pkl").write_bytes(pickle.dumps(data, protocol=proto))
            order.append((f, cam))
    return order
