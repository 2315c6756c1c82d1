"""InterHand2.6M datasets: MANO parameters for the prior and images + GT for benchmarking.

* :class:`InterHandMano` - official ``MANO_NeuralAnnot`` fits as :class:`TwoHands` (metres), in the
  world frame (optionally one sample per frame instead of per camera view) or a camera frame.
* :class:`InterHandImages` - one :class:`InterHandSample` per image: intrinsics, 21+21 GT joints in
  the camera frame, validity, hand type and camera-frame MANO GT when fitted.
* :class:`IntagHandAnno` (defined in :mod:`datasets.intaghand`, re-exported here) - IntagHand's
  preprocessed ``{split}/anno/{idx}.pkl`` (what InterHandGen trains on).

Nothing is silently dropped: every record that cannot be used is appended to ``dataset.skipped``
as ``(id, reason)`` and counted in ``dataset.counts`` (logged once at construction). Parsing and
frame geometry live in :mod:`datasets.interhand_annot`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datasets.intaghand import IntagHandAnno
from datasets.interhand_annot import (
    CameraParams,
    SkipLog,
    WristModel,
    annotation_path,
    every_k_positions,
    hands_to_camera,
    ih42_to_hands,
    image_ids,
    load_data_json,
    mano_records_to_hands,
    parse_cameras,
    parse_joint_3d,
    parse_mano,
    read_json,
)
from prior.hands import SIDES, TwoHands

__all__ = ["InterHandMano", "InterHandImages", "InterHandSample", "IntagHandAnno", "collate_two_hands",
           "R_MANO_MISSING", "R_JOINTS_MISSING", "R_CAMERA_MISSING", "R_IMAGE_MISSING", "R_NO_ANNOT"]

log = logging.getLogger(__name__)

# Reasons (stable strings, used as keys of ``dataset.counts``).
R_MANO_MISSING = "frame missing from MANO_NeuralAnnot.json"
R_JOINTS_MISSING = "frame missing from joint_3d.json"
R_CAMERA_MISSING = "camera id absent from camera.json"
R_IMAGE_MISSING = "missing image file"
R_NO_ANNOT = "image has no annotation record in data.json"
R_FILTERED = "filtered out (subset/selection)"


def _null_reason(valid: Tensor) -> str | None:
    missing = [s for s, v in zip(SIDES, valid.tolist()) if not v]
    return None if not missing else ("both" if len(missing) == 2 else missing[0]) + " MANO null"


class InterHandMano(Dataset, SkipLog):
    """MANO NeuralAnnot two-hand samples: ``(TwoHands with batch 1, interacting: bool)``, metres.

    Args:
        root: dataset root (contains ``annotations/``).
        split: ``train`` | ``val`` | ``test``.
        interacting_only: keep only records labelled ``interacting`` with ``hand_type_valid``.
        dedupe_views: one sample per (capture, frame) instead of one per camera image (the world
            parameters are identical across views). Default: True in the world frame; camera
            frame samples differ per view, so ``True`` with ``frame='camera'`` is an error.
        frame: ``world`` (NeuralAnnot's frame) or ``camera`` (per image, needs ``mano``).
        mano: ManoPair used for the rest wrist J0 in the camera-frame conversion.
    Frames without both MANO hands are skipped (the prior needs pairs) and recorded.
    """

    def __init__(
        self,
        root: Path | str,
        split: str,
        interacting_only: bool = False,
        dedupe_views: bool | None = None,
        frame: Literal["world", "camera"] = "world",
        mano: torch.nn.Module | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        SkipLog.__init__(self)
        if frame not in ("world", "camera"):
            raise ValueError(f"frame must be 'world' or 'camera', got {frame!r}")
        if dedupe_views is None:
            dedupe_views = frame == "world"
        if dedupe_views and frame == "camera":
            raise ValueError("dedupe_views=True needs frame='world' (camera-frame samples differ per view)")
        if frame == "camera" and mano is None:
            raise ValueError("frame='camera' needs a ManoPair (mano=...) for the rest wrist J0")
        self.root, self.split, self.frame = Path(root), split, frame
        self.ids: list[str] = []
        mano_path = annotation_path(root, split, "MANO_NeuralAnnot")
        mano_recs = parse_mano(read_json(mano_path), mano_path)
        joints_path = annotation_path(root, split, "joint_3d")
        if dedupe_views:
            # Hand type per frame comes from joint_3d.json (data.json is not needed here).
            joint_recs = parse_joint_3d(read_json(joints_path), joints_path)
            items = []
            for key, (left, right) in mano_recs.items():
                ident = f"capture {key[0]} frame {key[1]}"
                jr = joint_recs.get(key)
                if jr is None:
                    self.skip(ident, R_JOINTS_MISSING)
                    continue
                items.append((ident, key, left, right, jr.hand_type == "interacting" and jr.hand_type_valid,
                              None))
        else:
            images, anns = load_data_json(self.root, split)
            cams: dict[tuple[str, str], CameraParams] = {}
            if frame == "camera":
                cam_path = annotation_path(root, split, "camera")
                cams = parse_cameras(read_json(cam_path), cam_path)
            items = []
            for img in images:
                cap, fr, cam = image_ids(img)
                ident = f"image {img['id']} ({img.get('file_name', '?')})"
                ann = anns.get(int(img["id"]))
                if ann is None:
                    self.skip(ident, R_NO_ANNOT)
                    continue
                if (cap, fr) not in mano_recs:
                    self.skip(ident, R_MANO_MISSING)
                    continue
                camera = cams.get((cap, cam)) if frame == "camera" else None
                if frame == "camera" and camera is None:
                    self.skip(ident, R_CAMERA_MISSING)
                    continue
                inter = ann.get("hand_type") == "interacting" and bool(ann.get("hand_type_valid", 0))
                items.append((ident, (cap, fr), *mano_recs[(cap, fr)], inter, camera))
        hands, inter, rots, ts = [], [], [], []
        cache: dict[tuple[str, str], tuple[TwoHands, Tensor]] = {}  # views share a frame's fit
        for ident, key, left, right, is_inter, camera in items:
            if key not in cache:
                cache[key] = mano_records_to_hands(left, right, dtype=torch.float64)
            h, valid = cache[key]
            reason = _null_reason(valid)
            if reason is not None:
                self.skip(ident, reason)
                continue
            if interacting_only and not is_inter:
                self.counts[R_FILTERED] += 1
                continue
            hands.append(h)
            inter.append(bool(is_inter))
            self.ids.append(ident)
            if camera is not None:
                rots.append(camera.rot)
                ts.append(camera.pos_mm)
        if not hands:
            self._hands = TwoHands.zeros(0, dtype=dtype)
        else:
            all_h = TwoHands.cat(hands)
            if frame == "camera":
                rot, campos = np.stack(rots), np.stack(ts)
                t = torch.as_tensor(-np.einsum("nij,nj->ni", rot, campos) / 1000.0)  # -camrot campos
                all_h = hands_to_camera(all_h, torch.as_tensor(rot), t, WristModel(mano)(all_h.betas))
            self._hands = all_h.to(dtype=dtype)
        self.interacting = torch.as_tensor(inter, dtype=torch.bool)
        self.log_summary(f"InterHandMano({split}, {frame}, dedupe={dedupe_views})", len(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, idx: int) -> tuple[TwoHands, bool]:
        return self._hands[int(idx)], bool(self.interacting[idx])

    def all_hands(self) -> TwoHands:
        """Every sample at once: TwoHands with batch ``len(self)``."""
        return self._hands


@dataclass(frozen=True)
class InterHandSample:
    """One InterHand2.6M image with its ground truth (camera frame, metres, 0 = left, 1 = right).

    K: (3, 3) intrinsics; image_size: (width, height); joints_cam: (2, 21, 3) InterHand2.6M joint
    order per hand; joint_valid: (2, 21) bool; mano_gt: TwoHands (batch 1) or None when neither
    hand was fitted; mano_valid: (2,) bool (placeholders where False); status: ``"ok"`` or a reason
    the image cannot be used; notes: other recorded facts (e.g. ``"left MANO null"``).
    """

    image_id: int
    image_path: Path
    capture: str
    seq: str
    cam: str
    frame: str
    K: Tensor
    image_size: tuple[int, int]
    joints_cam: Tensor
    joint_valid: Tensor
    hand_type: str
    hand_type_valid: bool
    mano_gt: TwoHands | None
    mano_valid: Tensor
    status: str
    notes: tuple[str, ...]

    @property
    def interacting(self) -> bool:
        return self.hand_type == "interacting"

    def load_image(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB. Raises FileNotFoundError / ValueError naming the file."""
        import cv2  # noqa: PLC0415  (only needed when images are read)

        if not self.image_path.is_file():
            raise FileNotFoundError(f"{self.image_path}: image file not found")
        bgr = cv2.imread(str(self.image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{self.image_path}: cannot decode image")
        return bgr[:, :, ::-1].copy()


@dataclass(frozen=True)
class _ImageRow:
    image_id: int
    path: str
    capture: str
    seq: str
    cam: str
    frame: str
    image_size: tuple[int, int]
    hand_type: str
    hand_type_valid: bool
    mano_valid: Tensor
    status: str
    notes: tuple[str, ...]


class InterHandImages(Dataset, SkipLog):
    """InterHand2.6M images with GT, for reconstruction benchmarks.

    Args:
        root, split: dataset root and split.
        subset: ``all`` | ``interacting`` | ``single`` (annotation ``hand_type``).
        captures, seqs: optional filters (capture ids, sequence names).
        every_k: keep every k-th frame of each (capture, sequence, camera) stream.
        max_images: stop after this many usable samples.
        mano: ManoPair for camera-frame MANO GT; None -> ``mano_gt`` is None everywhere.
    Unusable images (camera id absent, frame missing from joint_3d.json, no annotation) are in
    ``skipped``; images whose file is missing are yielded with ``status`` set and counted.
    ``joint_valid`` is the image annotation's (as InterHand2.6M's own loader), falling back to
    joint_3d.json's. Note: ``ManoPair(mano_gt)`` joints are MANO's 16 joints + 5 tip vertices;
    InterHand2.6M's GT joints are regressed from MANO vertices with its own
    ``J_regressor_mano_ih26m.npy`` (not shipped), so on real data they differ by a few mm.
    """

    def __init__(
        self,
        root: Path | str,
        split: str,
        subset: Literal["all", "interacting", "single"] = "all",
        captures: Iterable[int | str] | None = None,
        seqs: Iterable[str] | None = None,
        every_k: int = 1,
        max_images: int | None = None,
        mano: torch.nn.Module | None = None,
    ) -> None:
        SkipLog.__init__(self)
        if subset not in ("all", "interacting", "single"):
            raise ValueError(f"subset must be all|interacting|single, got {subset!r}")
        if every_k < 1:
            raise ValueError(f"every_k must be >= 1, got {every_k}")
        self.root, self.split = Path(root), split
        images, anns = load_data_json(self.root, split)
        paths = {k: annotation_path(root, split, k) for k in ("camera", "joint_3d", "MANO_NeuralAnnot")}
        cams = parse_cameras(read_json(paths["camera"]), paths["camera"])
        joints = parse_joint_3d(read_json(paths["joint_3d"]), paths["joint_3d"])
        mano_recs = parse_mano(read_json(paths["MANO_NeuralAnnot"]), paths["MANO_NeuralAnnot"])
        cap_set = None if captures is None else {str(c) for c in captures}
        seq_set = None if seqs is None else set(seqs)
        kept_pos = every_k_positions(images, every_k)
        img_dir = os.path.join(str(self.root), "images", split)
        self._rows: list[_ImageRow] = []
        world, valids, cam_keys, frame_pos = [], [], [], []
        frame_index: dict[tuple[str, str], int] = {}  # views share their frame's MANO fit
        frame_hands: list[TwoHands] = []
        frame_valid: list[Tensor] = []
        for pos, img in enumerate(images):
            if max_images is not None and len(self._rows) >= max_images:
                break
            cap, fr, cam = image_ids(img)
            ann = anns.get(int(img["id"]))
            htype = "" if ann is None else str(ann.get("hand_type", ""))
            if (pos not in kept_pos or (cap_set is not None and cap not in cap_set)
                    or (seq_set is not None and str(img.get("seq_name")) not in seq_set)
                    or (subset == "interacting" and htype != "interacting")
                    or (subset == "single" and htype not in ("left", "right"))):
                self.counts[R_FILTERED] += 1
                continue
            ident = f"image {img['id']} ({img.get('file_name', '?')})"
            jr = joints.get((cap, fr))
            if ann is None or (cap, cam) not in cams or jr is None:
                self.skip(ident, R_NO_ANNOT if ann is None else R_CAMERA_MISSING
                          if (cap, cam) not in cams else R_JOINTS_MISSING)
                continue
            path = os.path.join(img_dir, str(img["file_name"]))
            status = "ok" if os.path.isfile(path) else R_IMAGE_MISSING
            if status != "ok":
                self.counts[R_IMAGE_MISSING] += 1
            notes: list[str] = []
            if (cap, fr) not in frame_index:
                frame_index[(cap, fr)] = len(frame_hands)
                h, mvalid = mano_records_to_hands(*mano_recs.get((cap, fr), (None, None)), dtype=torch.float64)
                frame_hands.append(h)
                frame_valid.append(mvalid)
            mvalid = frame_valid[frame_index[(cap, fr)]]
            if (cap, fr) not in mano_recs:
                notes.append(R_MANO_MISSING)
            elif _null_reason(mvalid) is not None:
                notes.append(_null_reason(mvalid))
            for n in notes:
                self.counts[n] += 1
            valid = np.asarray(ann["joint_valid"] if "joint_valid" in ann else jr.valid, dtype=np.float64)
            if valid.size != 42:
                raise ValueError(f"{paths['joint_3d'].parent}: {ident} joint_valid has {valid.size} entries")
            self._rows.append(_ImageRow(
                int(img["id"]), path, cap, str(img.get("seq_name", "")), cam, fr,
                (int(img["width"]), int(img["height"])), htype, bool(ann.get("hand_type_valid", 0)),
                mvalid, status, tuple(notes)))
            world.append(jr.world_mm)
            valids.append(valid.reshape(42))
            cam_keys.append((cap, cam))
            frame_pos.append(frame_index[(cap, fr)])
        # Geometry for all images at once: X_cam = camrot @ (X_world - campos), mm -> m.
        n = len(self._rows)
        rot = np.stack([cams[k].rot for k in cam_keys]) if n else np.zeros((0, 3, 3))
        campos = np.stack([cams[k].pos_mm for k in cam_keys]) if n else np.zeros((0, 3))
        world_mm = np.stack(world) if n else np.zeros((0, 42, 3))
        cam_m = np.einsum("nij,nkj->nki", rot, world_mm - campos[:, None]) / 1000.0
        self._joints = torch.as_tensor(ih42_to_hands(cam_m, axis=1), dtype=torch.float32)  # (N,2,21,3)
        self._valid = torch.as_tensor(ih42_to_hands(np.stack(valids) > 0 if n else np.zeros((0, 42), bool), axis=1))
        self._K = {k: torch.as_tensor(c.K(), dtype=torch.float32) for k, c in cams.items()}
        self._cam_keys = cam_keys
        self._mano: TwoHands | None = None
        if n and mano is not None:
            all_h = TwoHands.cat(frame_hands)[torch.as_tensor(frame_pos)]
            t = -np.einsum("nij,nj->ni", rot, campos) / 1000.0
            wrist = WristModel(mano)(all_h.betas)
            self._mano = hands_to_camera(all_h, torch.as_tensor(rot), torch.as_tensor(t), wrist).to(
                dtype=torch.float32)
        elif mano is None:
            log.info("InterHandImages: no ManoPair given, mano_gt is None for every sample")
        self.log_summary(f"InterHandImages({split}, {subset})", n)

    def __len__(self) -> int:
        return len(self._rows)

    def image_id(self, idx: int) -> int:
        """The data.json ``id`` of sample ``idx`` (without building the sample)."""
        return self._rows[int(idx)].image_id

    def __getitem__(self, idx: int) -> InterHandSample:
        i = int(idx)
        r = self._rows[i]
        mano_gt = self._mano[i] if self._mano is not None and bool(r.mano_valid.any()) else None
        return InterHandSample(
            image_id=r.image_id, image_path=Path(r.path), capture=r.capture, seq=r.seq, cam=r.cam,
            frame=r.frame, K=self._K[self._cam_keys[i]].clone(), image_size=r.image_size,
            joints_cam=self._joints[i], joint_valid=self._valid[i], hand_type=r.hand_type,
            hand_type_valid=r.hand_type_valid, mano_gt=mano_gt, mano_valid=r.mano_valid,
            status=r.status, notes=r.notes)


def collate_two_hands(items: Sequence[tuple[TwoHands, bool]]) -> tuple[TwoHands, Tensor]:
    """DataLoader collate: list of (TwoHands batch 1, interacting) -> (TwoHands batch N, (N,) bool)."""
    return TwoHands.cat([h for h, _ in items]), torch.as_tensor([bool(i) for _, i in items])
