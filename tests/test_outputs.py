"""Per-image outputs: written atomically, loadable, with the documented keys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from prior.hands import TwoHands
from recon.detect import DetectionResult, HandDetection
from recon.outputs import OUTPUT_KINDS, parse_save, summary_entry, write_outputs, write_summary
from recon.pipeline import Reconstruction
from recon.render import LEFT_COLOR, RIGHT_COLOR

K = np.array([[600.0, 0, 159.5], [0, 600.0, 119.5], [0, 0, 1]])


def _record(mano, present=(True, True)) -> Reconstruction:
    h = TwoHands.zeros(1)
    transl = torch.tensor([[[0.07, -0.02, 0.5], [-0.07, -0.02, 0.5]]])
    hands = TwoHands(h.pose_aa, h.betas, h.rot_mat, transl)
    with torch.no_grad():
        meshes = mano(hands)
    kp = meshes.joints_in("mediapipe")[0].numpy() @ K.T
    kp = kp[..., :2] / kp[..., 2:]
    dets = [HandDetection(kp[s], np.full(21, 0.9), None, bool(s), 0.9, "mediapipe", "classifier")
            for s in (0, 1) if present[s]]  # fmt: skip
    status = "ok" if all(present) else "one-hand"
    return Reconstruction("img", status, "test", (320, 240), K, "given-K", DetectionResult(dets),
                          np.array(present), hands, meshes, reprojection_px=1.5, penetration_mm=0.0)  # fmt: skip


def test_parse_save() -> None:
    assert parse_save("obj, glb") == ("obj", "glb")
    assert parse_save("all") == OUTPUT_KINDS
    with pytest.raises(ValueError, match="unknown output kind"):
        parse_save("obj,png")


def test_all_outputs_load(mano, tmp_path: Path) -> None:
    rec = _record(mano)
    image = np.full((240, 320, 3), 120, np.uint8)
    written = write_outputs(rec, image, tmp_path / "img", OUTPUT_KINDS, mano.model_name, False)
    names = sorted(p.name for p in written)
    assert names == sorted(["left.obj", "right.obj", "hands.glb", "params.json", "params.npz",
                            "overlay.png", "views.png"])  # fmt: skip
    assert not [p for p in (tmp_path / "img").iterdir() if p.name.startswith(".")]  # no temp files
    for side in ("left", "right"):
        m = trimesh.load(tmp_path / "img" / f"{side}.obj", process=False)
        assert m.vertices.shape == (778, 3)
        np.testing.assert_allclose(m.vertices, rec.meshes.verts[0, int(side == "right")].numpy(), atol=1e-5)
    scene = trimesh.load(tmp_path / "img" / "hands.glb")
    geoms = {k: g for k, g in scene.geometry.items()}
    assert set(geoms) == {"left_hand", "right_hand"}
    for name, color in (("left_hand", LEFT_COLOR), ("right_hand", RIGHT_COLOR)):
        assert geoms[name].visual.kind == "vertex"
        vc = np.asarray(geoms[name].visual.vertex_colors)[:, :3]
        assert vc.shape == (778, 3) and (vc == color).all()
    meta = json.loads((tmp_path / "img" / "params.json").read_text())
    for key in ("K", "image_size", "hand_model", "flat_hand_mean", "pose_convention", "hands", "status"):
        assert key in meta
    assert meta["hand_model"] == mano.model_name and meta["image_size"] == [320, 240]
    left = meta["hands"]["left"]
    assert left["found"] and left["stage"] == "mediapipe"
    for key in ("pose_aa", "betas", "rot_aa", "rot_mat", "transl"):
        assert key in left
    assert np.asarray(left["pose_aa"]).shape == (15, 3) and np.asarray(left["rot_mat"]).shape == (3, 3)
    npz = np.load(tmp_path / "img" / "params.npz")
    assert npz["pose_aa"].shape == (2, 15, 3) and npz["betas"].shape == (2, 10)
    assert npz["rot_mat"].shape == (2, 3, 3) and npz["transl"].shape == (2, 3)
    np.testing.assert_allclose(npz["K"], K)
    assert str(npz["hand_model"]) == mano.model_name
    import cv2

    overlay = cv2.imread(str(tmp_path / "img" / "overlay.png"))
    assert overlay.shape == (240, 320, 3)
    assert (overlay != 120).any(-1).mean() > 0.05  # meshes and keypoints were drawn


def test_one_hand_and_no_hands(mano, tmp_path: Path) -> None:
    rec = _record(mano, present=(False, True))
    written = {p.name for p in write_outputs(rec, None, tmp_path / "one", ("obj", "json"), "standin", False)}
    assert written == {"right.obj", "params.json"}
    meta = json.loads((tmp_path / "one" / "params.json").read_text())
    assert meta["hands"]["left"] == {"found": False} and meta["hands"]["right"]["found"]
    none = Reconstruction("x", "no-hands", "no hands found", (320, 240), K, "default-fov", DetectionResult([]))
    image = np.zeros((240, 320, 3), np.uint8)
    written = {p.name for p in write_outputs(none, image, tmp_path / "none", OUTPUT_KINDS, "standin", False)}
    assert written == {"params.json", "overlay.png"}
    err = Reconstruction("y", "error", "broken")
    assert write_outputs(err, None, tmp_path / "err", OUTPUT_KINDS, "standin", False) == []
    assert not (tmp_path / "err").exists()
    entries = [summary_entry(r, f"{r.name}.jpg", tmp_path / r.name) for r in (rec, none, err)]
    write_summary(tmp_path / "summary.json", entries, {"hand_model": "standin"})
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["counts"] == {"one-hand": 1, "no-hands": 1, "error": 1}
    assert s["images"][0]["hands"]["right"]["stage"] == "mediapipe"
    assert s["images"][2]["out_dir"] is None


def test_failed_write_leaves_nothing(mano, tmp_path: Path, monkeypatch) -> None:
    rec = _record(mano)

    def boom(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(trimesh.Trimesh, "export", boom)
    with pytest.raises(OSError, match="disk full"):
        write_outputs(rec, None, tmp_path / "img", ("obj",), "standin", False)
    assert list((tmp_path / "img").iterdir()) == []  # neither the file nor a temp file
