"""Per-image result files and the run summary, all written atomically.

For an image named ``<stem>`` the folder ``<out>/<stem>/`` receives (each optional, ``save``):

* ``left.obj`` / ``right.obj``: each found hand, camera frame (OpenCV), metres.
* ``hands.glb``: both hands in one scene, camera frame, vertex colours per side (left blue,
  right orange, as in every picture of the project).
* ``params.npz`` / ``params.json``: MANO parameters per hand (``pose_aa`` 15x3, ``betas`` 10,
  root rotation as axis-angle and matrix, ``transl``), camera ``K``, image size, the hand model,
  the pose convention (``flat_hand_mean``) and which hand was found by which detection stage.
* ``overlay.png``: shaded meshes over the photo with the detected keypoints.
* ``views.png``: the two hands from the front, the right side and the top.

Images without hands get ``params.json`` (status only) and an ``overlay.png`` saying so; images
that failed get no folder. ``summary.json`` (run level) lists every image with its status.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import roma
import torch
import trimesh

from prior.atomic import atomic_path, write_json_atomic
from prior.hands import SIDES
from recon.pipeline import OUTPUT_KINDS, Reconstruction
from recon.render import SIDE_COLORS, draw_keypoints, render_meshes, render_views

__all__ = [
    "OUTPUT_KINDS",
    "parse_save",
    "write_outputs",
    "summary_entry",
    "write_summary",
    "hand_meshes_np",
]

log = logging.getLogger(__name__)
POSE_CONVENTION = {
    False: "pose_aa is relative to the hand model's mean pose (flat_hand_mean=False, InterHand2.6M)",
    True: "pose_aa is absolute (flat_hand_mean=True)",
}
FRAME = "camera frame, OpenCV axes (x right, y down, z forward), metres"


def parse_save(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"obj,glb"`` or a list -> validated tuple of output kinds (``all`` = every kind)."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if items == ["all"]:
        return OUTPUT_KINDS
    bad = [s for s in items if s not in OUTPUT_KINDS]
    if bad:
        raise ValueError(f"unknown output kind(s) {bad}; choose from {list(OUTPUT_KINDS)} or 'all'")
    return tuple(dict.fromkeys(items))


def hand_meshes_np(rec: Reconstruction) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(side, verts (V, 3), faces (F, 3)) for every fitted hand of ``rec``."""
    if rec.meshes is None:
        return []
    verts = rec.meshes.verts[0].detach().cpu().numpy()
    faces = rec.meshes.faces.cpu().numpy()
    return [(s, verts[s], faces[s]) for s in (0, 1) if rec.present[s]]


def _stage_info(rec: Reconstruction) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {s: {"found": False} for s in SIDES}
    if rec.detection is not None:
        for h in rec.detection.hands:
            out[h.side] = {
                "found": True, "stage": h.stage, "handedness_source": h.handedness_source,
                "score": round(float(h.score), 4),
            }  # fmt: skip
    return out


def _params(rec: Reconstruction, model_name: str, flat_hand_mean: bool) -> tuple[dict, dict]:
    """(json-able dict, npz arrays) of the reconstruction's parameters."""
    found = _stage_info(rec)
    meta = {
        "image": rec.name, "status": rec.status, "message": rec.message,
        "image_size": list(rec.image_size) if rec.image_size else None,
        "K": rec.K.tolist() if rec.K is not None else None, "K_source": rec.K_source,
        "hand_model": model_name, "flat_hand_mean": flat_hand_mean,
        "pose_convention": POSE_CONVENTION[flat_hand_mean], "frame": FRAME,
        "reprojection_error_px": rec.reprojection_px, "penetration_depth_mm": rec.penetration_mm,
    }  # fmt: skip
    arrays: dict[str, np.ndarray] = {"present": rec.present.astype(bool)}
    hands_json: dict[str, Any] = {}
    if rec.hands is not None:
        h = rec.hands.detach().to("cpu", torch.float64)
        rot_aa = roma.rotmat_to_rotvec(h.rot_mat[0]).numpy()
        arrays.update(pose_aa=h.pose_aa[0].numpy(), betas=h.betas[0].numpy(), rot_aa=rot_aa,
                      rot_mat=h.rot_mat[0].numpy(), transl=h.transl[0].numpy())  # fmt: skip
        if rec.meshes is not None:
            arrays["joints_ih26m"] = rec.meshes.joints[0].double().numpy()
            arrays["verts"] = rec.meshes.verts[0].double().numpy()
        if rec.observation is not None:
            arrays["keypoints_2d"] = rec.observation.keypoints_2d[0].double().numpy()
            arrays["keypoint_confidence"] = rec.observation.confidence[0].double().numpy()
    for s, side in enumerate(SIDES):
        entry = dict(found[side])
        if rec.hands is not None and rec.present[s]:
            entry.update(
                pose_aa=arrays["pose_aa"][s].tolist(), betas=arrays["betas"][s].tolist(),
                rot_aa=arrays["rot_aa"][s].tolist(), rot_mat=arrays["rot_mat"][s].tolist(),
                transl=arrays["transl"][s].tolist(),
            )  # fmt: skip
            if "joints_ih26m" in arrays:
                entry["wrist"] = arrays["joints_ih26m"][s][20].tolist()
        hands_json[side] = entry
    meta["hands"] = hands_json
    npz = dict(arrays)
    npz.update(K=np.asarray(rec.K if rec.K is not None else np.full((3, 3), np.nan)),
               image_size=np.asarray(rec.image_size or (0, 0)), hand_model=np.asarray(model_name),
               flat_hand_mean=np.asarray(flat_hand_mean),
               stages=np.asarray([found[s].get("stage", "") for s in SIDES]))  # fmt: skip
    return meta, npz


def _mesh(verts: np.ndarray, faces: np.ndarray, side: int) -> trimesh.Trimesh:
    color = np.array([*SIDE_COLORS[side], 255], np.uint8)
    return trimesh.Trimesh(
        verts, faces, vertex_colors=np.tile(color, (len(verts), 1)), process=False
    )


def _overlay(rec: Reconstruction, image: np.ndarray, max_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    img = image.copy()  # the caller's array may be read-only
    if scale < 1.0:
        img = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    sx, sy = img.shape[1] / w, img.shape[0] / h
    S = np.diag([sx, sy, 1.0])
    meshes = hand_meshes_np(rec)
    if meshes and rec.K is not None:
        K = S @ rec.K
        K[0, 2], K[1, 2] = (rec.K[0, 2] + 0.5) * sx - 0.5, (rec.K[1, 2] + 0.5) * sy - 0.5
        img = render_meshes(img, [v for _, v, _ in meshes], [f for _, _, f in meshes], K,
                            colors=[SIDE_COLORS[s] for s, _, _ in meshes], alpha=0.7)  # fmt: skip
    if rec.detection is not None:
        for hand in rec.detection.hands:
            kp = (hand.keypoints_2d + 0.5) * [sx, sy] - 0.5
            dark = tuple(int(c * 0.55) for c in SIDE_COLORS[int(hand.is_right)])
            img = draw_keypoints(img, kp, hand.confidence, dark)
    _caption(img, rec)
    return img


def _caption(img: np.ndarray, rec: Reconstruction) -> None:
    text = f"{rec.status}: {rec.message}"
    if rec.reprojection_px is not None:
        text += f" | reproj {rec.reprojection_px:.1f} px"
    (tw1, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)
    scale = max(0.3, min(img.shape[1] / 1600, (img.shape[1] - 10) / max(tw1, 1)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(img, (0, 0), (min(tw + 10, img.shape[1]), th + base + 8), (255, 255, 255), -1)
    cv2.putText(
        img, text, (5, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), 1, cv2.LINE_AA
    )


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB image as PNG, atomically."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[..., ::-1])):
            raise OSError(f"{path}: cv2.imwrite failed")


def write_outputs(
    rec: Reconstruction,
    image: np.ndarray | None,
    out_dir: Path,
    save: Sequence[str],
    model_name: str,
    flat_hand_mean: bool,
    overlay_max_side: int = 2048,
    views_size: int = 400,
) -> list[Path]:
    """Write the chosen outputs of one image into ``out_dir`` (created), atomically.

    Args:
        rec: the image's reconstruction (status "error" writes nothing).
        image: (H, W, 3) uint8 RGB, needed for ``overlay``.
        out_dir: the image's own folder.
        save: output kinds (see :func:`parse_save`).
        model_name: ``ManoPair.model_name``. flat_hand_mean: the pose convention used.
    Returns:
        The files written.
    """
    save = parse_save(save)
    if rec.status == "error":
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    meshes = hand_meshes_np(rec)
    if "obj" in save:
        for s, v, f in meshes:
            path = out_dir / f"{SIDES[s]}.obj"
            with atomic_path(path) as tmp:
                _mesh(v, f, s).export(tmp, file_type="obj", include_color=True)
            written.append(path)
    if "glb" in save and meshes:
        scene = trimesh.Scene()
        for s, v, f in meshes:
            scene.add_geometry(
                _mesh(v, f, s), node_name=f"{SIDES[s]}_hand", geom_name=f"{SIDES[s]}_hand"
            )
        path = out_dir / "hands.glb"
        with atomic_path(path) as tmp:
            tmp.write_bytes(scene.export(file_type="glb"))
        written.append(path)
    if "json" in save or "npz" in save:
        meta, arrays = _params(rec, model_name, flat_hand_mean)
        if "json" in save:
            write_json_atomic(out_dir / "params.json", meta)
            written.append(out_dir / "params.json")
        if "npz" in save and rec.hands is not None:
            path = out_dir / "params.npz"
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)
            written.append(path)
    if "overlay" in save and image is not None:
        write_png(out_dir / "overlay.png", _overlay(rec, image, overlay_max_side))
        written.append(out_dir / "overlay.png")
    if "views" in save and meshes:
        views = render_views([v for _, v, _ in meshes], [f for _, _, f in meshes],
                             [SIDE_COLORS[s] for s, _, _ in meshes], size=views_size)  # fmt: skip
        write_png(out_dir / "views.png", views)
        written.append(out_dir / "views.png")
    return written


def summary_entry(rec: Reconstruction, source: str, out_dir: Path | None) -> dict[str, Any]:
    """One image's line of ``summary.json``."""
    entry = {
        "image": source, "name": rec.name, "status": rec.status, "message": rec.message,
        "out_dir": str(out_dir) if out_dir is not None and rec.status != "error" else None,
        "hands": _stage_info(rec),
        "reprojection_error_px": _round(rec.reprojection_px),
        "penetration_depth_mm": _round(rec.penetration_mm),
        "time_s": round(sum(rec.times.values()), 3),
        "time_split_s": {k: round(v, 3) for k, v in rec.times.items()},
        "K_source": rec.K_source or None,
    }  # fmt: skip
    if rec.error_trace:
        entry["traceback"] = rec.error_trace
    return entry


def write_summary(path: Path, entries: list[dict[str, Any]], run_info: dict[str, Any]) -> None:
    """Write ``summary.json``: run info, counts per status and the per-image entries."""
    counts: dict[str, int] = {}
    for e in entries:
        counts[e["status"]] = counts.get(e["status"], 0) + 1
    write_json_atomic(
        path, {**run_info, "n_images": len(entries), "counts": counts, "images": entries}
    )


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)
