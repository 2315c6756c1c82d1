"""InterHand2.6M readers on a miniature dataset written in the official layout (tests/interhand_fixture.py)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import roma
import torch

from datasets.intaghand import IntagHandAnno
from datasets.interhand import (
    R_CAMERA_MISSING,
    R_IMAGE_MISSING,
    R_JOINTS_MISSING,
    InterHandImages,
    InterHandMano,
    collate_two_hands,
)
from datasets.interhand_annot import (
    InterHandFormatError,
    WristModel,
    annotation_path,
    hands_to_camera,
    project,
)
from datasets.safe_pickle import UnsafePickleError, load_pickle
from prior.hands import LEFT, RIGHT, TwoHands
from tests.interhand_fixture import (
    ABSENT_CAM,
    CAMS,
    DELETED_IMAGE,
    FRAMES,
    HEIGHT,
    INVALID_JOINT,
    SPLIT,
    WIDTH,
    FixtureTruth,
    write_intaghand_fixture,
    write_interhand_fixture,
)


@pytest.fixture(scope="module")
def truth(tmp_path_factory, mano) -> FixtureTruth:
    return write_interhand_fixture(tmp_path_factory.mktemp("ih26m"), mano, seed=0)


@pytest.fixture(scope="module")
def images(truth, mano) -> InterHandImages:
    return InterHandImages(truth.root, SPLIT, mano=mano)


def _cam_rt(truth: FixtureTruth, cam: str) -> tuple[torch.Tensor, torch.Tensor]:
    rot, pos = truth.cameras[cam]
    return torch.as_tensor(rot), torch.as_tensor(-rot @ pos / 1000.0)


def test_fixture_follows_official_layout(truth):
    for kind in ("data", "camera", "joint_3d", "MANO_NeuralAnnot"):
        assert annotation_path(truth.root, SPLIT, kind).is_file()
    ann = truth.root / "annotations" / SPLIT
    data = json.loads((ann / f"InterHand2.6M_{SPLIT}_data.json").read_text())
    img0 = data["images"][0]
    assert set(img0) == {"id", "file_name", "width", "height", "capture", "subject", "seq_name",
                         "camera", "frame_idx"}
    assert img0["file_name"] == f"Capture1/{img0['seq_name']}/cam{img0['camera']}/image{img0['frame_idx']}.jpg"
    assert (truth.root / "images" / SPLIT / img0["file_name"]).is_file()
    j3d = json.loads((ann / f"InterHand2.6M_{SPLIT}_joint_3d.json").read_text())
    rec = j3d["1"]["10"]
    assert len(rec["world_coord"]) == 42 and len(rec["joint_valid"]) == 42
    mano_json = json.loads((ann / f"InterHand2.6M_{SPLIT}_MANO_NeuralAnnot.json").read_text())
    assert mano_json["1"]["20"]["left"] is None and len(mano_json["1"]["10"]["right"]["pose"]) == 48
    cams = json.loads((ann / f"InterHand2.6M_{SPLIT}_camera.json").read_text())["1"]
    assert set(cams) == {"campos", "camrot", "focal", "princpt"} and set(cams["camrot"]) == set(CAMS)


def test_gt_projects_onto_drawn_hands(images, truth):
    checked = 0
    for i in range(len(images)):
        s = images[i]
        px = project(s.joints_cam, s.K)  # reader: JSON mm -> camera -> pixels
        ref = truth.pixels[s.image_id]  # fixture: posed joints in metres -> pixels, no JSON
        v = s.joint_valid.numpy()
        assert np.abs(px - ref)[v].max() < 1.0
        if s.status != "ok":
            continue
        img = s.load_image()
        assert img.shape == (HEIGHT, WIDTH, 3) and s.image_size == (WIDTH, HEIGHT)
        for side, channel in ((LEFT, 1), (RIGHT, 0)):  # RGB: left drawn green, right red
            other = px[1 - side][v[1 - side]]
            for p in px[side][v[side]]:
                u, w = np.round(p).astype(int)
                near_other = len(other) and np.linalg.norm(other - p, axis=-1).min() < 6.0
                # Where the other hand's disc may cover this one, only require a drawn pixel.
                value = img[w, u].max() if near_other else img[w, u, channel]
                assert value > 150, (s.image_id, side, u, w)
                checked += 1
    assert checked > 200


def test_hand_axis_validity_and_masking(images, truth):
    by_frame = {(s.frame, s.cam): s for s in (images[i] for i in range(len(images)))}
    right_only = by_frame[("20", CAMS[0])]
    assert right_only.hand_type == "right" and not right_only.interacting
    assert not right_only.joint_valid[LEFT].any() and right_only.joint_valid[RIGHT].all()
    assert by_frame[("30", CAMS[0])].joint_valid[RIGHT].sum() == 0
    f, side, j = INVALID_JOINT
    s = by_frame[(str(f), CAMS[1])]
    assert not s.joint_valid[side, j] and s.joint_valid.sum() == 41
    # Hand axis: the camera-frame joints of hand 0 are the left hand's (stand-in joints, no JSON).
    h = truth.hands[10]
    rot, t = _cam_rt(truth, CAMS[0])
    s10 = by_frame[("10", CAMS[0])]
    wrists = (h.transl[0] @ rot.T + t).float()  # stand-in's rest wrist is ~0, so wrist ~ transl
    assert (s10.joints_cam[:, 20] - wrists).norm(dim=-1).max() < 2e-3
    assert s10.K[0, 0] == 600.0 and s10.K[1, 2] == 256.0


def test_mano_gt_reproduces_gt_joints(images, mano):
    samples = [images[i] for i in range(len(images)) if images[i].mano_gt is not None]
    joints = mano(TwoHands.cat([s.mano_gt for s in samples])).joints
    ok = torch.stack([s.joint_valid & s.mano_valid[:, None] for s in samples])
    assert (joints - torch.stack([s.joints_cam for s in samples]))[ok].abs().max() < 1e-5
    assert int(ok.any(-1).sum()) == 20  # frames 10-12: 12 hands; 13, 20, 21, 30: one fitted+valid hand x 2 views


def test_camera_frame_params_equal_transformed_meshes(truth, mano):
    world = InterHandMano(truth.root, SPLIT, dedupe_views=False, frame="world")
    cam = InterHandMano(truth.root, SPLIT, frame="camera", mano=mano)
    absent = f"image {truth.image_ids[(12, ABSENT_CAM)]} (Capture1/0000_twohands/cam{ABSENT_CAM}/image12.jpg)"
    assert dict(cam.skipped)[absent] == R_CAMERA_MISSING and absent in world.ids
    assert [i for i in world.ids if ABSENT_CAM not in i] == cam.ids
    vw = mano(TwoHands.cat([world[world.ids.index(i)][0] for i in cam.ids])).verts.double()
    vc = mano(cam.all_hands()).verts.double()
    rt = [_cam_rt(truth, ident.split("/cam")[1].split("/")[0]) for ident in cam.ids]
    rot, t = torch.stack([r for r, _ in rt]), torch.stack([t for _, t in rt])
    expect = vw @ rot[:, None].transpose(-1, -2) + t[:, None, None]
    assert (expect - vc).abs().max() < 1e-5


def test_hands_to_camera_formula_with_far_wrist():
    """The transl update rotates about J0: check the formula on MANO's posing rule with a large J0."""
    g = torch.Generator().manual_seed(3)
    b = 4
    hands = TwoHands(torch.zeros(b, 2, 15, 3, dtype=torch.float64), torch.zeros(b, 2, 10, dtype=torch.float64),
                     roma.rotvec_to_rotmat(torch.randn(b, 2, 3, generator=g, dtype=torch.float64)),
                     0.1 * torch.randn(b, 2, 3, generator=g, dtype=torch.float64))
    j0 = 0.05 * torch.randn(b, 2, 3, generator=g, dtype=torch.float64)
    x = 0.1 * torch.randn(b, 2, 50, 3, generator=g, dtype=torch.float64)  # rest-pose points

    def pose(h: TwoHands) -> torch.Tensor:  # MANO: R (X - J0) + J0 + t
        return (x - j0[:, :, None]) @ h.rot_mat.transpose(-1, -2) + (j0 + h.transl)[:, :, None]

    c = roma.rotvec_to_rotmat(torch.randn(b, 3, generator=g, dtype=torch.float64))
    tc = torch.randn(b, 3, generator=g, dtype=torch.float64)
    expect = pose(hands) @ c[:, None].transpose(-1, -2) + tc[:, None, None]
    got = pose(hands_to_camera(hands, c, tc, j0))
    assert (got - expect).abs().max() < 1e-12
    naive = pose(hands_to_camera(hands, c, tc, torch.zeros_like(j0)))  # ignoring J0 is wrong
    assert (naive - expect).abs().max() > 1e-3


def test_wrist_model_matches_direct_evaluation(mano):
    g = torch.Generator().manual_seed(1)
    betas = 2.0 * torch.randn(5, 2, 10, generator=g)
    z = TwoHands.zeros(5)
    direct = mano(TwoHands(z.pose_aa, betas, z.rot_mat, z.transl)).root_joints().double()
    assert (WristModel(mano)(betas) - direct).abs().max() < 1e-6


def test_robustness_cases_counted_with_reasons(images, truth):
    assert images.counts[R_IMAGE_MISSING] == 1
    assert images.counts[R_CAMERA_MISSING] == 1
    assert images.counts[R_JOINTS_MISSING] == 2  # frame 14, both cameras
    assert images.counts["left MANO null"] == 4  # frames 13 and 20, two cameras each
    assert images.counts["right MANO null"] == 2
    reasons = dict(images.skipped)
    assert reasons[f"image {truth.image_ids[(12, ABSENT_CAM)]} (Capture1/0000_twohands/cam{ABSENT_CAM}/image12.jpg)"] \
        == R_CAMERA_MISSING
    assert sorted(r for _, r in images.skipped) == sorted([R_CAMERA_MISSING] + [R_JOINTS_MISSING] * 2)
    n_images = sum(2 for _ in FRAMES) + 1
    assert len(images) + len(images.skipped) == n_images
    missing = [images[i] for i in range(len(images)) if images[i].status != "ok"]
    assert len(missing) == 1 and (missing[0].frame, missing[0].cam) == tuple(map(str, DELETED_IMAGE))
    with pytest.raises(FileNotFoundError, match="image11.jpg"):
        missing[0].load_image()
    nulls = [images[i] for i in range(len(images)) if images[i].frame == "13"]
    assert all(s.notes == ("left MANO null",) and s.mano_valid.tolist() == [False, True] for s in nulls)


def test_selection_filters(truth):
    root = truth.root
    assert len(InterHandImages(root, SPLIT, subset="interacting")) == 8  # frames 10-13 x 2 cameras
    assert len(InterHandImages(root, SPLIT, subset="single")) == 6
    assert len(InterHandImages(root, SPLIT, captures=[2])) == 0
    assert len(InterHandImages(root, SPLIT, seqs=["0002_left"])) == 2
    every2 = InterHandImages(root, SPLIT, every_k=2, seqs=["0000_twohands"])
    assert sorted({s.frame for s in (every2[i] for i in range(len(every2)))}) == ["10", "12"]
    capped = InterHandImages(root, SPLIT, max_images=3)
    assert len(capped) == 3 and capped[0].mano_gt is None  # no ManoPair given -> no MANO GT


def test_mano_reader_dedupe_interacting_and_values(truth):
    ds = InterHandMano(truth.root, SPLIT)  # world frame, one sample per (capture, frame)
    assert ds.ids == ["capture 1 frame 10", "capture 1 frame 11", "capture 1 frame 12", "capture 1 frame 21"]
    assert ds.interacting.tolist() == [True, True, True, False]
    assert dict(ds.skipped) == {"capture 1 frame 13": "left MANO null", "capture 1 frame 14": R_JOINTS_MISSING,
                                "capture 1 frame 20": "left MANO null", "capture 1 frame 30": "right MANO null"}
    h, inter = ds[0]
    ref = truth.hands[10]
    for name in ("pose_aa", "betas", "rot_mat", "transl"):
        assert (getattr(h, name).double() - getattr(ref, name)).abs().max() < 1e-6
    assert inter is True and h.pose_aa.dtype == torch.float32
    inter_only = InterHandMano(truth.root, SPLIT, interacting_only=True)
    assert len(inter_only) == 3 and inter_only.interacting.all()
    hands, flags = collate_two_hands([ds[i] for i in range(len(ds))])
    assert hands.batch_size == 4 and flags.tolist() == [True, True, True, False]
    per_view = InterHandMano(truth.root, SPLIT, dedupe_views=False)
    assert len(per_view) == 11  # frames 10,11,12,14,21 x 2 cameras + the 400099 view of frame 12
    with pytest.raises(ValueError, match="dedupe_views"):
        InterHandMano(truth.root, SPLIT, frame="camera", dedupe_views=True)


def test_intaghand_reader_matches_official(tmp_path, truth, mano):
    order = write_intaghand_fixture(tmp_path, mano, truth)
    world = IntagHandAnno(tmp_path, SPLIT, mano)
    assert len(world) == len(order) == 8
    for idx, (frame, _) in enumerate(order):
        h, inter = world[idx]
        ref = truth.hands[frame]
        assert inter is True
        for name in ("pose_aa", "betas", "rot_mat", "transl"):
            assert (getattr(h, name).double() - getattr(ref, name)).abs().max() < 1e-5, name
    cam = IntagHandAnno(tmp_path, SPLIT, mano, frame="camera")
    official = InterHandMano(truth.root, SPLIT, frame="camera", mano=mano)
    pos = [official.ids.index(next(i for i in official.ids if f"cam{c}/image{f}.jpg" in i)) for f, c in order]
    v_intag = mano(TwoHands.cat([cam[i][0] for i in range(len(cam))])).verts
    assert (v_intag - mano(official.all_hands()[torch.tensor(pos)]).verts).abs().max() < 1e-5
    dedup = IntagHandAnno(tmp_path, SPLIT, mano, dedupe_views=True)
    assert len(dedup) == 4 and dedup.counts["duplicate camera view"] == 4
    anno = tmp_path / SPLIT / "anno"
    rec = load_pickle(anno / "0.pkl")
    del rec["mano_params"]["right"]["trans"]
    (anno / "0.pkl").write_bytes(pickle.dumps(rec))
    with pytest.raises(ValueError, match=r"0\.pkl: right lacks 'trans'"):
        world[0]
    (anno / "1.pkl").write_bytes(pickle.dumps({"mano_params": _Payload(tmp_path / "pwned")}))
    with pytest.raises(UnsafePickleError, match=r"1\.pkl: refused pickle global"):
        world[1]
    assert not (tmp_path / "pwned").exists()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_safe_pickle_refuses_code_and_reads_arrays(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"mano_params": _Payload(marker)}))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*system"):
        load_pickle(bad)
    assert not marker.exists()
    ev = tmp_path / "eval.pkl"
    ev.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_pickle(ev)
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float32(2.5), "l": [1, "x", (2,)]}
    for proto in (2, 3, 4, 5):
        p = tmp_path / f"ok{proto}.pkl"
        p.write_bytes(pickle.dumps(obj, protocol=proto))
        got = load_pickle(p)
        assert np.array_equal(got["a"], obj["a"]) and got["a"].dtype == np.float32 and got["s"] == 2.5
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(pickle.dumps(obj)[:40])
    with pytest.raises(ValueError, match="trunc.pkl"):
        load_pickle(trunc)


def test_bad_dataset_folders_give_one_line_errors(tmp_path, truth):
    with pytest.raises(InterHandFormatError, match="InterHand2.6M_val_data.json: file not found"):
        InterHandImages(truth.root, "val")
    broken = tmp_path / "broken"
    ann = broken / "annotations" / SPLIT
    ann.mkdir(parents=True)
    src = truth.root / "annotations" / SPLIT
    for f in src.iterdir():
        (ann / f.name).write_bytes(f.read_bytes())
    j3d = json.loads((ann / f"InterHand2.6M_{SPLIT}_joint_3d.json").read_text())
    j3d["1"]["10"]["world_coord"] = j3d["1"]["10"]["world_coord"][:41]
    (ann / f"InterHand2.6M_{SPLIT}_joint_3d.json").write_text(json.dumps(j3d))
    with pytest.raises(InterHandFormatError, match=r"joint_3d.json: capture 1 frame 10 world_coord"):
        InterHandImages(broken, SPLIT)
    (ann / f"InterHand2.6M_{SPLIT}_camera.json").write_text("{not json")
    with pytest.raises(InterHandFormatError, match="camera.json: invalid JSON"):
        InterHandImages(broken, SPLIT)
    with pytest.raises(FileNotFoundError, match="anno"):
        IntagHandAnno(tmp_path / "nothing", SPLIT, mano=None)  # type: ignore[arg-type]
