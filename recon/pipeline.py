"""Image to two hands, wiring only: detection, initialisation, one batched fit, metrics.

:func:`build_pipeline` loads the heavy parts once (MediaPipe graph, hand model, prior);
:func:`reconstruct_batch` runs detection per image, the initialisation of all images of the
batch at once, then ONE fit over every image with at least one hand (a one-hand image is in the
same batch with its missing hand masked out by ``Observation.present``: that hand is fitted
alone, and the result says so).

Failures are per image and never silent: an image without hands gets status ``"no-hands"``; the
project's own expected errors (:class:`recon.image_io.ImageError`, a ValueError from bad input)
give status ``"error"`` with their one-line message; any other exception also gives ``"error"``,
with a traceback summary in the record, and is logged at error level with the full traceback.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fitting.observation import Observation
from fitting.optimize import FitConfig, fit
from prior.checkpoint import Prior, load_prior
from prior.hands import SIDES, HandMeshes, ManoPair, TwoHands
from recon.camera import DEFAULT_FOV_DEG
from recon.detect import DetectConfig, DetectionResult, HandDetector
from recon.image_io import ImageError
from recon.init import InitConfig, observation_from_detections

__all__ = [
    "STATUSES", "CameraConfig", "OutputConfig", "ReconConfig", "Pipeline", "Reconstruction",
    "PipelineSetupError", "build_pipeline", "reconstruct_batch", "failed_reconstruction",
]  # fmt: skip

log = logging.getLogger(__name__)
STATUSES = ("ok", "one-hand", "no-hands", "error")
OUTPUT_KINDS = ("obj", "glb", "npz", "json", "overlay", "views")
EXPECTED_ERRORS = (ImageError,)


class PipelineSetupError(RuntimeError):
    """The pipeline cannot be built (missing prior checkpoint, hand model mismatch...)."""


@dataclass
class CameraConfig:
    """Intrinsics when ``--K`` is not given: focal_px (``--focal``) wins, then EXIF (if
    use_exif), then ``fov_deg`` across the longer side (see ``recon.camera``)."""

    focal_px: float | None = None
    use_exif: bool = True
    fov_deg: float = DEFAULT_FOV_DEG


@dataclass
class OutputConfig:
    """save: which per-image outputs to write (subset of obj, glb, npz, json, overlay, views).
    overlay_max_side: overlays of larger images are downscaled to this longer side (px).
    views_size: side of each panel of views.png (px)."""

    save: tuple[str, ...] = OUTPUT_KINDS
    overlay_max_side: int = 2048
    views_size: int = 400


@dataclass
class ReconConfig:
    """Everything ``run_fit.py`` needs (``configs/recon.yaml``).

    prior_ckpt: the prior checkpoint (relative paths are resolved by the entry point).
    use_prior: False fits without the prior's SDS term (``--no-prior``).
    mano_dir: official MANO folder; None uses the built-in stand-in hand model.
    flat_hand_mean: MANO pose convention (False: pose relative to the hand mean, InterHand2.6M).
    batch_size: images per batched fit. device: torch device of the fit (``fit.seed`` seeds it).
    """

    detect: DetectConfig = field(default_factory=DetectConfig)
    init: InitConfig = field(default_factory=InitConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    prior_ckpt: Path | None = Path("checkpoints/prior_default.pt")
    use_prior: bool = True
    mano_dir: Path | None = None
    flat_hand_mean: bool = False
    batch_size: int = 8
    device: str = "cpu"


@dataclass
class Pipeline:
    """The loaded parts (built once by :func:`build_pipeline`)."""

    cfg: ReconConfig
    detector: HandDetector
    mano: ManoPair
    prior: Prior | None
    device: torch.device
    init_mano: ManoPair | None = None  # CPU copy for the initialisation (None: ``mano``)

    def close(self) -> None:
        self.detector.close()


@dataclass
class Reconstruction:
    """The result for one image.

    status: one of :data:`STATUSES`; message: one human-readable line.
    image_size: (width, height); K: (3, 3) with K_source (see ``recon.camera``).
    present: (2,) bool, left/right hand found and fitted.
    hands / meshes / observation: batch 1, camera frame (None unless a hand was fitted).
    reprojection_px: confidence-weighted mean distance of the fitted joints to the keypoints.
    penetration_mm: deepest vertex of one hand inside the other (both hands only).
    times: seconds per stage (detect, init, fit; init and fit are the batch's share).
    error_trace: traceback summary of an unexpected error, else None.
    """

    name: str
    status: str
    message: str
    image_size: tuple[int, int] | None = None
    K: np.ndarray | None = None
    K_source: str = ""
    detection: DetectionResult | None = None
    present: np.ndarray = field(default_factory=lambda: np.zeros(2, bool))
    hands: TwoHands | None = None
    meshes: HandMeshes | None = None
    observation: Observation | None = None
    reprojection_px: float | None = None
    penetration_mm: float | None = None
    times: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    error_trace: str | None = None


def build_pipeline(cfg: ReconConfig, device: torch.device | str = "cpu") -> Pipeline:
    """Load the detector, the hand model and (unless ``cfg.use_prior`` is False) the prior once.

    Raises:
        PipelineSetupError: missing or unusable prior checkpoint (one line naming the file).
    """
    device = torch.device(device)
    path = None if cfg.prior_ckpt is None else Path(cfg.prior_ckpt)
    if cfg.use_prior and (path is None or not path.is_file()):
        where = "no prior checkpoint configured" if path is None else f"prior checkpoint {path} not found"
        raise PipelineSetupError(
            f"{where}: train one (python -m prior train), pass --prior-ckpt PATH, or run "
            "without the prior (--no-prior)"
        )
    mano = ManoPair(model_dir=cfg.mano_dir, flat_hand_mean=cfg.flat_hand_mean).to(device)
    prior = None
    if cfg.use_prior:
        try:
            prior = load_prior(path, device, hand_model=mano.model_name)
        except ValueError as e:  # CheckpointError: one line naming the file
            raise PipelineSetupError(str(e)) from e
    init_mano = None if device.type == "cpu" else ManoPair(cfg.mano_dir, cfg.flat_hand_mean)
    detector = HandDetector(cfg.detect)
    return Pipeline(cfg, detector, mano, prior, device, init_mano)


def failed_reconstruction(
    name: str, exc: BaseException, times: dict[str, float] | None = None
) -> Reconstruction:
    """Record of an image that failed: expected errors keep their message, others also get a
    traceback summary and are logged at error level."""
    if isinstance(exc, EXPECTED_ERRORS):
        log.warning("%s: %s", name, exc)
        return Reconstruction(name, "error", str(exc), times=dict(times or {}))
    log.error("%s: unexpected %s", name, type(exc).__name__, exc_info=exc)
    tb = traceback.extract_tb(exc.__traceback__)[-3:]
    trace = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(tb))
    first = (str(exc).strip().splitlines() or [""])[0]
    msg = f"unexpected {type(exc).__name__}: {first}"
    return Reconstruction(name, "error", msg, times=dict(times or {}), error_trace=trace)


def _detect(image: np.ndarray, pipeline: Pipeline) -> DetectionResult:
    return pipeline.detector(image)


def reconstruct_batch(
    images: Sequence[np.ndarray],
    Ks: Sequence[np.ndarray],
    pipeline: Pipeline,
    names: Sequence[str] | None = None,
    K_sources: Sequence[str] | None = None,
    detections: Sequence[DetectionResult | None] | None = None,
    generator: torch.Generator | None = None,
) -> list[Reconstruction]:
    """Reconstruct the hands of a batch of images.

    Args:
        images: (H, W, 3) uint8 RGB each.
        Ks: (3, 3) intrinsics each (see ``recon.camera.intrinsics``).
        pipeline: from :func:`build_pipeline`.
        names: labels for logs and records (default ``image<i>``).
        K_sources: where each K came from (recorded).
        detections: precomputed detections (None entries are detected here), e.g. for the demo.
        generator: randomness of the fit (default: each batch seeded from ``cfg.fit.seed``).
    Returns:
        One :class:`Reconstruction` per image, in order. No per-image failure raises.
    """
    n = len(images)
    names = list(names) if names is not None else [f"image{i}" for i in range(n)]
    K_sources = list(K_sources) if K_sources is not None else ["given-K"] * n
    given = list(detections) if detections is not None else [None] * n
    if not (len(Ks) == len(names) == len(K_sources) == len(given) == n):
        raise ValueError("images, Ks, names, K_sources and detections must have the same length")
    recs: list[Reconstruction] = []
    for i in range(n):
        t0 = time.perf_counter()
        try:
            image = images[i]
            if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
                    and image.dtype == np.uint8):  # fmt: skip
                raise ImageError(f"{names[i]}: expected an (H, W, 3) uint8 RGB image, got "
                                 f"{getattr(image, 'dtype', type(image).__name__)} "
                                 f"{getattr(image, 'shape', '')}")  # fmt: skip
            det = given[i] if given[i] is not None else _detect(image, pipeline)
            h, w = image.shape[:2]
            rec = Reconstruction(names[i], "no-hands", "no hands found", (w, h),
                                 np.asarray(Ks[i], np.float64), K_sources[i], det)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - recorded per image, logged, never silent
            rec = failed_reconstruction(names[i], e)
        rec.times["detect"] = time.perf_counter() - t0
        recs.append(rec)
    todo = [r for r in recs if r.detection is not None and r.detection.hands]
    if todo:
        _fit_group(todo, pipeline, generator)
    return recs


def _fit_group(
    recs: list[Reconstruction], pipeline: Pipeline, generator: torch.Generator | None
) -> None:
    """Init and fit all images of ``recs`` together; on failure, retry one by one."""
    try:
        _fit_together(recs, pipeline, generator)
    except Exception as e:  # noqa: BLE001
        if len(recs) == 1:
            times = recs[0].times
            new = failed_reconstruction(recs[0].name, e, times)
            recs[0].status, recs[0].message, recs[0].error_trace = (
                new.status,
                new.message,
                new.error_trace,
            )
            return
        log.warning("batched fit of %d images failed (%s: %s); fitting them one by one",
                    len(recs), type(e).__name__, e)  # fmt: skip
        for r in recs:
            _fit_group([r], pipeline, generator)


def _fit_together(
    recs: list[Reconstruction], pipeline: Pipeline, generator: torch.Generator | None
) -> None:
    cfg, dev, b = pipeline.cfg, pipeline.device, len(recs)
    t0 = time.perf_counter()
    K = torch.as_tensor(np.stack([r.K for r in recs]), dtype=torch.float32)
    size = torch.as_tensor([r.image_size for r in recs], dtype=torch.float32)
    init_mano = pipeline.init_mano or pipeline.mano
    obs = observation_from_detections(
        [r.detection.hands for r in recs], K, size, init_mano, cfg.init
    )
    obs = obs.to(dev).validate()
    t1 = time.perf_counter()
    result = fit(obs, pipeline.prior, pipeline.mano, cfg.fit, generator)
    with torch.no_grad():
        hands = result.hands.detach()
        meshes = pipeline.mano(hands).detach()
        reproj = result.final["reproj_px"].double().cpu().numpy()
        depth = result.final["pen_depth"].double().cpu().numpy() * 1000.0
        depth[~obs.present.all(1).cpu().numpy()] = np.nan  # only meaningful with both hands
    t2 = time.perf_counter()
    present = obs.present.cpu().numpy()
    hist = {k: [float(x) for x in v] for k, v in result.history.items()}
    for i, r in enumerate(recs):
        r.present = present[i].copy()
        r.hands, r.meshes, r.observation = hands[i].to("cpu"), meshes[i].to("cpu"), obs[i].to("cpu")
        r.reprojection_px = _finite(reproj[i])
        r.penetration_mm = _finite(depth[i])
        r.times["init"] = (t1 - t0) / b
        r.times["fit"] = (t2 - t1) / b
        r.history = hist
        stages = {SIDES[h.is_right]: h.stage for h in r.detection.hands}
        if present[i].all():
            r.status = "ok"
            r.message = f"both hands found (left: {stages['left']}, right: {stages['right']})"
        else:
            side = SIDES[int(present[i].argmax())]
            r.status = "one-hand"
            r.message = f"only the {side} hand was found ({stages[side]}); fitted it alone"


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None
