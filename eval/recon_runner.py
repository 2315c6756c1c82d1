"""InterHand2.6M reconstruction benchmark runner: predict (resumable, sharded), then score.

Flow: every rank takes its slice ``positions[rank::world_size]`` of the dataset, skips images
already in the prediction store, calls ``predict_fn`` on chunks of ``chunk_size`` samples and
appends each chunk to the store as one atomically written ``.npz`` shard; after a barrier rank 0
merges all shards and scores them with :func:`eval.reconstruction.aggregate`. Rerunning in the
same output folder predicts only what is missing, so an interrupted run resumes and gives the
same metrics as an uninterrupted one.

Predictions file format (``--predictions preds.npz``, also written by every run as
``<out>/predictions.npz``), one row per image:

* ``image_id`` (N,) int: the ``id`` of the image in ``InterHand2.6M_{split}_data.json``;
* ``joints`` (N, 2, 21, 3) float: camera frame of that image (OpenCV axes), metres,
  InterHand2.6M joint order within a hand (wrist 20, middle MCP 11), hand 0 = left, 1 = right;
* ``present`` (N, 2) bool, optional: hand predicted (default: the hand's joints are finite);
* ``verts`` (N, 2, 778, 3) float, optional: MANO-topology meshes in the same frame (MPVPE).

An image without a row, or a hand marked absent, is a *missing prediction*: counted, never
scored as 0. Library code: no argument parsing, no environment (see ``eval.cli_recon``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from datasets.interhand import R_IMAGE_MISSING, InterHandImages, InterHandSample
from eval.reconstruction import PROTOCOL_ROOT, ReconReport, aggregate, mpjpe, mpvpe, mrrpe
from prior.atomic import atomic_path, write_json_atomic
from prior.distributed import DistContext
from prior.hands import TwoHands

__all__ = [
    "EvalReconConfig", "ImagePrediction", "PredictionStore", "FilePredictor", "EvalResult",
    "PipelinePredictor", "PredictFn", "R_NO_ROW", "run_predictions", "score", "write_predictions_file", "file_digest",
]  # fmt: skip

log = logging.getLogger(__name__)
R_NO_ROW = "no prediction in file"
NUM_VERTS = 778


@dataclass
class EvalReconConfig:
    """``configs/eval_recon.yaml``. data/split/subset/captures/seqs/every_k/max_images select
    images (see :class:`datasets.interhand.InterHandImages`); chunk_size: images per prediction
    call and per shard file; overlays: images drawn for each of best/median/worst;
    check_gt_images: images drawn by ``--check-gt``; pipeline: a ``recon.pipeline.ReconConfig``
    mapping (validated only when the pipeline runs, so scoring a file never loads it)."""

    data: Path | None = None
    split: str = "test"
    subset: str = "all"
    captures: list[str] | None = None
    seqs: list[str] | None = None
    every_k: int = 1
    max_images: int | None = None
    chunk_size: int = 8
    overlays: int = 2
    check_gt_images: int = 6
    pipeline: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImagePrediction:
    """One image's prediction. joints (2, 21, 3) metres (NaN for absent hands); present (2,)
    bool; verts (2, 778, 3) or None; status: pipeline status (ok / one-hand / no-hands / error)
    or a runner reason; seconds: prediction time (NaN when not measured)."""

    image_id: int
    status: str
    message: str
    joints: np.ndarray
    present: np.ndarray
    verts: np.ndarray | None = None
    seconds: float = float("nan")

    @staticmethod
    def missing(image_id: int, status: str, message: str = "") -> ImagePrediction:
        return ImagePrediction(image_id, status, message or status, np.full((2, 21, 3), np.nan),
                               np.zeros(2, bool))  # fmt: skip


PredictFn = Callable[[Sequence[InterHandSample]], list[ImagePrediction]]


def file_digest(path: Path) -> str:
    """sha256 of a file (identifies a predictions source in the store)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read predictions npz ({e})") from None


class FilePredictor:
    """``predict_fn`` that looks predictions up in a predictions file (format: module doc)."""

    def __init__(self, path: Path) -> None:
        z = _npz(Path(path))
        for key in ("image_id", "joints"):
            if key not in z:
                raise ValueError(f"{path}: predictions file lacks '{key}'")
        ids, joints = z["image_id"].astype(np.int64).reshape(-1), z["joints"].astype(np.float64)
        n = len(ids)
        if joints.shape != (n, 2, 21, 3):
            raise ValueError(f"{path}: joints must be (N, 2, 21, 3) with N={n}, got {joints.shape}")
        present = z.get("present", np.isfinite(joints).all((2, 3)))
        if present.shape != (n, 2):
            raise ValueError(f"{path}: present must be (N, 2), got {present.shape}")
        verts = z.get("verts")
        if verts is not None and verts.shape != (n, 2, NUM_VERTS, 3):
            raise ValueError(f"{path}: verts must be (N, 2, {NUM_VERTS}, 3), got {verts.shape}")
        if len(set(ids.tolist())) != n:
            raise ValueError(f"{path}: image_id has duplicates")
        self.path, self._joints, self._present = Path(path), joints, present.astype(bool)
        self._verts = None if verts is None else verts.astype(np.float64)
        self._row = {int(i): r for r, i in enumerate(ids)}

    def __call__(self, samples: Sequence[InterHandSample]) -> list[ImagePrediction]:
        out = []
        for s in samples:
            r = self._row.get(s.image_id)
            if r is None:
                out.append(ImagePrediction.missing(s.image_id, R_NO_ROW))
                continue
            p = self._present[r]
            out.append(ImagePrediction(
                s.image_id, "ok" if p.all() else "one-hand" if p.any() else "no-hands", "from file",
                self._joints[r], p, None if self._verts is None else self._verts[r]))  # fmt: skip
        return out


class PredictionStore:
    """Append-only shards ``<folder>/chunk_<first image id>.npz`` plus ``source.json``.

    Each shard is written atomically, so a killed run leaves only whole shards. ``source.json``
    identifies what made the predictions; resuming with a different source is an error.
    """

    def __init__(self, folder: Path, source: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "source.json"
        if meta.is_file():
            old = json.loads(meta.read_text())
            if old != json.loads(json.dumps(source)):
                raise ValueError(f"{meta}: predictions in this folder come from another source or "
                                 "config; use a new --out folder or delete it")  # fmt: skip
        else:
            write_json_atomic(meta, source)

    def shards(self) -> list[Path]:
        return sorted(self.folder.glob("chunk_*.npz"))

    def done_ids(self) -> set[int]:
        """Image ids with a stored prediction."""
        return {int(i) for p in self.shards() for i in _npz(p)["image_id"]}

    def append(self, preds: Sequence[ImagePrediction]) -> Path:
        """Write one shard with ``preds`` (non-empty); returns its path."""
        if not preds:
            raise ValueError("append needs at least one prediction")
        arrays = {
            "image_id": np.array([p.image_id for p in preds], np.int64),
            "joints": np.stack([p.joints for p in preds]).astype(np.float32),
            "present": np.stack([p.present for p in preds]).astype(bool),
            "status": np.array([p.status for p in preds]),
            "message": np.array([p.message for p in preds]),
            "seconds": np.array([p.seconds for p in preds], np.float64),
            "has_verts": np.array([p.verts is not None for p in preds]),
        }
        if arrays["has_verts"].any():
            arrays["verts"] = np.stack([p.verts if p.verts is not None
                                        else np.full((2, NUM_VERTS, 3), np.nan) for p in preds]).astype(np.float32)
        path = self.folder / f"chunk_{preds[0].image_id:09d}.npz"
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.savez(f, **arrays)
        return path

    def load(self) -> tuple[dict[int, ImagePrediction], int]:
        """All stored predictions by image id (first shard wins) and the number of duplicates."""
        out: dict[int, ImagePrediction] = {}
        dup = 0
        for path in self.shards():
            z = _npz(path)
            for r, i in enumerate(z["image_id"].tolist()):
                if i in out:
                    dup += 1
                    continue
                verts = z["verts"][r].astype(np.float64) if bool(z["has_verts"][r]) else None
                out[i] = ImagePrediction(i, str(z["status"][r]), str(z["message"][r]),
                                         z["joints"][r].astype(np.float64), z["present"][r].astype(bool),
                                         verts, float(z["seconds"][r]))  # fmt: skip
        return out, dup


class PipelinePredictor:
    """``predict_fn`` running the image pipeline (``recon.pipeline``) with each image's own K.

    Images whose file is missing or unreadable get a missing prediction with that reason; the
    pipeline's own per-image statuses (no-hands, one-hand, error) are kept. seconds = image
    loading + the pipeline's detect/init/fit times of that image.
    """

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def __call__(self, samples: Sequence[InterHandSample]) -> list[ImagePrediction]:
        from recon.pipeline import reconstruct_batch  # noqa: PLC0415 (heavy: MediaPipe, fitting)

        out: list[ImagePrediction | None] = [None] * len(samples)
        images, Ks, idx, load_s = [], [], [], []
        for i, s in enumerate(samples):
            if s.status != "ok":
                out[i] = ImagePrediction.missing(s.image_id, s.status)
                continue
            t0 = time.perf_counter()
            try:
                images.append(s.load_image())
            except (FileNotFoundError, ValueError) as e:
                out[i] = ImagePrediction.missing(s.image_id, "error", str(e))
                continue
            Ks.append(s.K.double().numpy())
            idx.append(i)
            load_s.append(time.perf_counter() - t0)
        names = [f"image {samples[i].image_id}" for i in idx]
        recs = reconstruct_batch(images, Ks, self.pipeline, names=names, K_sources=["dataset"] * len(idx)) \
            if idx else []
        for i, r, ls in zip(idx, recs, load_s):
            joints, verts = np.full((2, 21, 3), np.nan), None
            present = np.asarray(r.present, bool).copy()
            if r.meshes is not None and present.any():
                joints = r.meshes.joints[0].double().numpy().copy()
                verts = r.meshes.verts[0].double().numpy().copy()
                joints[~present], verts[~present] = np.nan, np.nan
            else:
                present[:] = False
            out[i] = ImagePrediction(samples[i].image_id, r.status, r.message, joints, present, verts,
                                     ls + float(sum(r.times.values())))  # fmt: skip
        return [p for p in out if p is not None]


def run_predictions(dataset: InterHandImages, predict_fn: PredictFn, store: PredictionStore,
                    ctx: DistContext, chunk_size: int) -> dict[str, float]:
    """Predict this rank's not-yet-stored images in chunks, then wait for every rank.

    Returns:
        this rank's counters: ``predicted`` images, ``skipped_done`` (already stored), ``seconds``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    done = store.done_ids()
    mine = list(range(ctx.rank, len(dataset), ctx.world_size))
    todo = [p for p in mine if dataset.image_id(p) not in done]
    log.info("rank %d: %d images in slice, %d already predicted, %d to do",
             ctx.rank, len(mine), len(mine) - len(todo), len(todo))  # fmt: skip
    t0 = time.perf_counter()
    for start in range(0, len(todo), chunk_size):
        samples = [dataset[p] for p in todo[start:start + chunk_size]]
        preds = predict_fn(samples)
        if [p.image_id for p in preds] != [s.image_id for s in samples]:
            raise ValueError("predict_fn must return one prediction per sample, in order")
        store.append(preds)
        log.info("rank %d: %d/%d images predicted", ctx.rank, start + len(samples), len(todo))
    stats = {"predicted": float(len(todo)), "skipped_done": float(len(mine) - len(todo)),
             "seconds": time.perf_counter() - t0}  # fmt: skip
    ctx.barrier()
    return stats


@dataclass
class EvalResult:
    """Scores of a run. report: aggregated metrics (mm); per-image arrays in dataset order:
    image_ids (N,), mpjpe_wrist (N, 2) m (NaN where not evaluated), mrrpe_wrist (N,) m;
    status_counts: prediction status per image; samples: the dataset samples;
    preds: the prediction of each sample (missing ones synthesised)."""

    report: ReconReport
    image_ids: np.ndarray
    mpjpe_wrist: np.ndarray
    mrrpe_wrist: np.ndarray
    status_counts: dict[str, int]
    samples: list[InterHandSample]
    preds: list[ImagePrediction]
    has_verts: bool
    mpvpe_wrist: np.ndarray | None = None


def _gt_meshes(samples: Sequence[InterHandSample], mano: torch.nn.Module | None, chunk: int = 256):
    """(verts (N,2,778,3), joints (N,2,21,3), valid (N,2)) of the MANO GT, or None without mano."""
    if mano is None:
        return None
    verts, joints = [], []
    for i in range(0, len(samples), chunk):
        part = samples[i:i + chunk]
        h = TwoHands.cat([s.mano_gt if s.mano_gt is not None else TwoHands.zeros(1) for s in part])
        with torch.no_grad():
            m = mano(h.to(dtype=torch.float32))
        verts.append(m.verts.double())
        joints.append(m.joints.double())
    # A GT mesh counts where the hand was fitted AND is in the image (some valid joint): a
    # single-hand frame may carry a fit of the absent hand, which no method should be scored on.
    valid = torch.stack([s.mano_valid.bool() & (s.mano_gt is not None) & s.joint_valid.any(-1) for s in samples])
    return torch.cat(verts), torch.cat(joints), valid


def score(dataset: InterHandImages, preds: dict[int, ImagePrediction],
          mano: torch.nn.Module | None = None, image_required: bool = True) -> EvalResult:
    """Score stored predictions against the dataset GT (every sample, in dataset order).

    Args:
        dataset: the evaluated images.
        preds: predictions by image id; images without one count as missing predictions.
        mano: hand model for the GT meshes (MPVPE); None skips MPVPE.
        image_required: an image whose file is missing counts as a missing prediction
            (True for the image pipeline; a predictions file is scored without the images).
    """
    samples = [dataset[i] for i in range(len(dataset))]
    rows = []
    for s in samples:
        p = preds.get(s.image_id)
        if image_required and s.status == R_IMAGE_MISSING:
            p = ImagePrediction.missing(s.image_id, R_IMAGE_MISSING)
        rows.append(p if p is not None else ImagePrediction.missing(s.image_id, "not predicted"))
    n = len(samples)
    dt = torch.float64
    pj = torch.as_tensor(np.stack([r.joints for r in rows]) if n else np.zeros((0, 2, 21, 3)), dtype=dt)
    present = torch.as_tensor(np.stack([r.present for r in rows]) if n else np.zeros((0, 2), bool))
    gt = torch.stack([s.joints_cam for s in samples]).to(dt) if n else torch.zeros(0, 2, 21, 3, dtype=dt)
    valid = torch.stack([s.joint_valid for s in samples]) if n else torch.zeros(0, 2, 21, dtype=torch.bool)
    inter = torch.as_tensor([s.interacting for s in samples], dtype=torch.bool)
    kw: dict[str, Any] = {}
    has_verts = n > 0 and all(r.verts is not None for r in rows if r.present.any())
    has_verts = has_verts and any(r.present.any() for r in rows)
    gm = _gt_meshes(samples, mano) if has_verts else None
    if gm is not None:
        pv = np.stack([r.verts if r.verts is not None else np.zeros((2, NUM_VERTS, 3)) for r in rows])
        kw = {"pred_verts": torch.as_tensor(pv, dtype=dt), "gt_verts": gm[0], "gt_verts_valid": gm[2],
              "gt_mesh_joints": gm[1]}
    elif any(r.present.any() for r in rows) and mano is not None:
        log.info("MPVPE skipped: not every predicted hand has vertices")
    report = aggregate(pj, gt, valid, present, inter, **kw)
    pz = torch.where(present[:, :, None, None], pj, torch.zeros_like(pj))
    per_hand = mpjpe(pz, gt, valid, "wrist")
    per_hand = torch.where(present, per_hand, torch.full_like(per_hand, float("nan")))
    mr = mrrpe(pz, gt, valid, "wrist")
    mr = torch.where(present.all(1), mr, torch.full_like(mr, float("nan")))
    ve = None
    if gm is not None:
        r = PROTOCOL_ROOT["wrist"]
        ve = mpvpe(kw["pred_verts"], gm[0], pz[:, :, r], gm[1][:, :, r], gm[2] & present).numpy()
    return EvalResult(report, np.array([s.image_id for s in samples], np.int64), per_hand.numpy(),
                      mr.numpy(), dict(Counter(r.status for r in rows)), samples, rows, gm is not None, ve)


def write_predictions_file(path: Path, preds: Sequence[ImagePrediction]) -> None:
    """Write predictions in the documented predictions-file format (atomically)."""
    arrays = {"image_id": np.array([p.image_id for p in preds], np.int64),
              "joints": np.stack([p.joints for p in preds]) if preds else np.zeros((0, 2, 21, 3)),
              "present": np.stack([p.present for p in preds]) if preds else np.zeros((0, 2), bool)}
    if any(p.verts is not None for p in preds):  # rows without a mesh: NaN (their hands are absent)
        arrays["verts"] = np.stack([p.verts if p.verts is not None else np.full((2, NUM_VERTS, 3), np.nan)
                                    for p in preds])
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)
