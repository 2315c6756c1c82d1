"""Image to two hands: detection, camera, initialisation and fitting orchestration, outputs.

Re-exports (imported lazily, so that ``import recon.camera`` stays light)::

    from recon import ReconConfig, build_pipeline, reconstruct_batch, Reconstruction
    from recon import HandDetector, DetectConfig, load_image, intrinsics
    from recon import write_outputs, render_meshes, render_views, draw_keypoints
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ReconConfig": "recon.pipeline", "CameraConfig": "recon.pipeline", "OutputConfig": "recon.pipeline",
    "Pipeline": "recon.pipeline", "Reconstruction": "recon.pipeline", "build_pipeline": "recon.pipeline",
    "reconstruct_batch": "recon.pipeline", "PipelineSetupError": "recon.pipeline",
    "DetectConfig": "recon.detect", "DetectionResult": "recon.detect", "HandDetection": "recon.detect",
    "HandDetector": "recon.detect", "detect_hands": "recon.detect",
    "ImageError": "recon.image_io", "load_image": "recon.image_io", "intrinsics": "recon.camera",
    "InitConfig": "recon.init", "init_from_detections": "recon.init",
    "observation_from_detections": "recon.init",
    "write_outputs": "recon.outputs", "write_summary": "recon.outputs", "parse_save": "recon.outputs",
    "render_meshes": "recon.render", "render_views": "recon.render", "draw_keypoints": "recon.render",
}  # fmt: skip
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recon' has no attribute {name!r}")
