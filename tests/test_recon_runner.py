"""Benchmark runner (eval.recon_runner / eval.cli_recon) on the miniature InterHand2.6M."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.interhand import R_CAMERA_MISSING, R_IMAGE_MISSING, R_JOINTS_MISSING, InterHandImages
from eval.cli_recon import main
from eval.recon_runner import FilePredictor, PredictionStore, run_predictions, score
from prior.distributed import DistContext
from prior.hands import LEFT, RIGHT, ManoPair, TwoHands
from tests.interhand_fixture import SPLIT, write_interhand_fixture

REPO = Path(__file__).resolve().parents[1]
METRICS = ("mpjpe", "pa_mpjpe", "mrrpe", "mpvpe")



@pytest.fixture(scope="module")
def data(tmp_path_factory, mano) -> Path:
    root = tmp_path_factory.mktemp("ih26m")
    write_interhand_fixture(root, mano, seed=0)
    return root


@pytest.fixture(scope="module")
def ds(data, mano) -> InterHandImages:
    return InterHandImages(data, SPLIT, mano=mano)


def _gt(ds: InterHandImages, mano: ManoPair) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """image ids (N,), GT joints (N,2,21,3), GT meshes (N,2,778,3) (zeros where no MANO fit)."""
    samples = [ds[i] for i in range(len(ds))]
    h = TwoHands.cat([s.mano_gt if s.mano_gt is not None else TwoHands.zeros(1) for s in samples])
    with torch.no_grad():
        verts = mano(h).verts.double().numpy()
    return (np.array([s.image_id for s in samples]), torch.stack([s.joints_cam for s in samples]).double().numpy(),
            verts)


def _write(path: Path, ids, joints, verts=None) -> Path:
    arrays = {"image_id": ids, "joints": joints} | ({} if verts is None else {"verts": verts})
    np.savez(path, **arrays)
    return path


def _cli(data: Path, out: Path, *extra: str) -> dict:
    assert main(["--data", str(data), "--split", SPLIT, "--out", str(out), *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def _means(doc: dict) -> dict:
    return {(p, s, m, h): st["mean_mm"] for p, subs in doc["results"].items() for s, ms in subs.items()
            for m, hands in ms.items() for h, st in hands.items()}


def test_gt_predictions_score_zero_and_robustness_is_counted(tmp_path, data, ds, mano):
    ids, joints, verts = _gt(ds, mano)
    doc = _cli(data, tmp_path / "out", "--predictions", str(_write(tmp_path / "gt.npz", ids, joints, verts)))
    values = _means(doc)
    assert {m for (_, _, m, _) in values} == set(METRICS) and doc["mpvpe_evaluated"]
    assert max(abs(v) for v in values.values() if v is not None) < 1e-4  # mm (PA: SVD round-off)
    w = doc["results"]["wrist"]["all"]
    assert w["mpjpe"]["both"]["count"] == 22 and w["mpjpe"]["both"]["missing"] == 0
    assert w["mrrpe"]["both"]["count"] == 8 and w["mpvpe"]["both"]["count"] == 20  # MANO-null and absent hands excluded
    assert set(doc["protocols"]) == {"wrist", "middle_mcp"} and "InterWild" in doc["protocols"]["wrist"]
    counts = doc["dataset_records"]["counts"]
    assert counts[R_IMAGE_MISSING] == 1 and counts[R_CAMERA_MISSING] == 1 and counts[R_JOINTS_MISSING] == 2
    assert counts["left MANO null"] == 4 and counts["right MANO null"] == 2
    assert len(doc["dataset_records"]["skipped"]) == 3
    rows = list(csv.DictReader((tmp_path / "out" / "per_sequence.csv").open()))
    assert [r["seq"] for r in rows] == ["0000_twohands", "0001_right", "0002_left"]
    assert float(rows[0]["mpjpe_wrist_mm"]) == 0 and rows[1]["mrrpe_wrist_mm"] == ""
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == 6
    assert (tmp_path / "out" / "config.resolved.yaml").is_file()
    merged = np.load(tmp_path / "out" / "predictions.npz")  # same format as the input
    assert FilePredictor(tmp_path / "out" / "predictions.npz")([ds[0]])[0].status == "ok"
    assert np.array_equal(merged["image_id"], np.sort(ids))


def test_offsets_give_the_expected_errors(tmp_path, ds, mano):
    ids, joints, _ = _gt(ds, mano)
    valid = torch.stack([ds[i].joint_valid for i in range(len(ds))]).numpy()
    g = np.random.default_rng(0)
    dirs = g.normal(size=joints.shape)
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    off = joints + 0.005 * dirs
    off[:, :, 20] = joints[:, :, 20]  # 5 mm on every joint but the wrist
    res = _score(tmp_path, ds, ids, off)
    n = valid.sum(-1)[valid[:, :, 20]]  # valid joints of each evaluated hand
    expect = float(np.mean(5.0 * (n - 1) / n))
    assert res.report.results["wrist"]["all"]["mpjpe"]["both"].mean_mm == pytest.approx(expect, abs=1e-4)
    assert res.report.results["wrist"]["all"]["mrrpe"]["both"].mean_mm == pytest.approx(0.0, abs=1e-4)
    moved = joints.copy()
    moved[:, RIGHT] += 0.005 * np.array([0.6, 0.0, 0.8])  # right hand rigidly by 5 mm
    res = _score(tmp_path / "b", ds, ids, moved)
    for proto in ("wrist", "middle_mcp"):
        r = res.report.results[proto]["all"]
        assert r["mrrpe"]["both"].mean_mm == pytest.approx(5.0, abs=1e-4)
        assert r["mpjpe"]["both"].mean_mm == pytest.approx(0.0, abs=1e-4)


def test_swapped_hands_give_twice_the_root_distance(tmp_path, ds, mano):
    ids, joints, _ = _gt(ds, mano)
    res = _score(tmp_path, ds, ids, joints[:, [RIGHT, LEFT]])
    inter = np.array([ds[i].interacting for i in range(len(ds))])
    for proto, r in (("wrist", 20), ("middle_mcp", 11)):
        expect = 2000.0 * np.linalg.norm(joints[inter, RIGHT, r] - joints[inter, LEFT, r], axis=-1).mean()
        got = res.report.results[proto]["interacting"]["mrrpe"]["both"]
        assert got.count == inter.sum() and got.mean_mm == pytest.approx(expect, rel=1e-5)
        assert expect > 50.0


def _score(folder: Path, ds: InterHandImages, ids, joints, chunk: int = 4, predict=None):
    folder.mkdir(parents=True, exist_ok=True)
    path = _write(folder / "p.npz", ids, joints)
    store = PredictionStore(folder / "store", {"source": str(path)})
    run_predictions(ds, predict or FilePredictor(path), store, DistContext(), chunk)
    return score(ds, store.load()[0], mano=None, image_required=False)


def test_interrupted_run_resumes_to_identical_metrics(tmp_path, data, ds, mano):
    ids, joints, _ = _gt(ds, mano)
    joints = joints + 0.003 * np.random.default_rng(1).normal(size=joints.shape)
    preds = str(_write(tmp_path / "p.npz", ids, joints))
    full = _cli(data, tmp_path / "full", "--predictions", preds)
    part = _cli(data, tmp_path / "resumed", "--predictions", preds, "--max-images", "2")
    assert part["this_run"]["predicted"] == 2
    resumed = _cli(data, tmp_path / "resumed", "--predictions", preds)
    assert resumed["this_run"] == resumed["this_run"] | {"predicted": 12, "already_predicted": 2}
    assert resumed["results"] == full["results"] and _means(full)[("wrist", "all", "mpjpe", "both")] > 1.0
    # A crash mid-run keeps the finished shards; the rerun predicts only the rest.
    calls: list[int] = []
    file_pred = FilePredictor(Path(preds))

    def crashing(samples):
        calls.append(len(samples))
        if len(calls) == 2:
            raise RuntimeError("killed")
        return file_pred(samples)

    store = PredictionStore(tmp_path / "crash", {"source": preds})
    with pytest.raises(RuntimeError, match="killed"):
        run_predictions(ds, crashing, store, DistContext(), 4)
    assert len(store.done_ids()) == 4
    stats = run_predictions(ds, file_pred, store, DistContext(), 4)
    assert stats["predicted"] == len(ds) - 4 and stats["skipped_done"] == 4
    again = score(ds, store.load()[0], mano=None, image_required=False).report.results
    assert again["wrist"]["all"]["mpjpe"]["both"].mean_mm == pytest.approx(
        full["results"]["wrist"]["all"]["mpjpe"]["both"]["mean_mm"], abs=1e-9)


def test_missing_predictions_and_bad_inputs_are_reported(tmp_path, data, ds, mano, capsys):
    ids, joints, _ = _gt(ds, mano)
    keep = np.arange(len(ids)) % 3 != 0
    present = np.ones((len(ids), 2), bool)
    present[1, LEFT] = False
    path = tmp_path / "p.npz"
    np.savez(path, image_id=ids[keep], joints=joints[keep], present=present[keep])
    res = score(ds, _load_all(tmp_path, ds, path), mano=None, image_required=True)
    w = res.report.results["wrist"]["all"]["mpjpe"]["both"]
    valid_hands = torch.stack([ds[i].joint_valid[:, 20] for i in range(len(ds))]).numpy()
    dropped = ~keep[:, None] | ~present
    missing_img = np.array([ds[i].status == R_IMAGE_MISSING for i in range(len(ds))])
    dropped |= missing_img[:, None]
    assert w.missing == int((valid_hands & dropped).sum()) and w.count + w.missing == 22
    assert res.status_counts["no prediction in file"] == int((~keep & ~missing_img).sum())
    assert res.status_counts[R_IMAGE_MISSING] == int(missing_img.sum()) == 1
    # Resuming with another source is refused; a malformed file is a one-line error.
    _cli(data, tmp_path / "o", "--predictions", str(path))
    other = _write(tmp_path / "q.npz", ids, joints)
    assert main(["--data", str(data), "--out", str(tmp_path / "o"), "--predictions", str(other)]) == 1
    assert "another source" in capsys.readouterr().err
    bad = _write(tmp_path / "bad.npz", ids, joints[:, :, :20])
    assert main(["--data", str(data), "--out", str(tmp_path / "b"), "--predictions", str(bad)]) == 1
    assert "bad.npz: joints must be (N, 2, 21, 3)" in capsys.readouterr().err


def _load_all(folder: Path, ds: InterHandImages, path: Path):
    store = PredictionStore(folder / "store", {"source": "x"})
    run_predictions(ds, FilePredictor(path), store, DistContext(), 5)
    return store.load()[0]


def test_check_gt_draws_projected_joints(tmp_path, data, ds):
    assert main(["--data", str(data), "--out", str(tmp_path), "--check-gt"]) == 0
    pics = sorted((tmp_path / "check_gt").glob("image*.png"))
    assert len(pics) == 6
    import cv2

    from datasets.interhand_annot import project

    s = next(ds[i] for i in range(len(ds)) if f"image{ds[i].image_id}.png" == pics[0].name)
    img = cv2.imread(str(pics[0]))[:, :, ::-1]
    px = project(s.joints_cam, s.K)[s.joint_valid.numpy()]
    u, v = np.round(px).astype(int).T
    assert (img[v, u] != img[0, 0]).any(-1).mean() > 0.9  # drawn on the joints


def _torchrun(args: list[str], timeout: int = 240) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "eval.cli_recon", *args]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.slow
def test_two_process_sharded_run_equals_single_process(tmp_path, data, ds, mano):
    ids, joints, verts = _gt(ds, mano)
    joints = joints + 0.004 * np.random.default_rng(2).normal(size=joints.shape)
    preds = str(_write(tmp_path / "p.npz", ids, joints, verts))
    single = _cli(data, tmp_path / "one", "--predictions", preds)
    _torchrun(["--data", str(data), "--split", SPLIT, "--out", str(tmp_path / "two"), "--predictions", preds,
               "--set", "chunk_size=3"])
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["world_size"] == 2 and two["results"] == single["results"]
    shards = sorted((tmp_path / "two" / "predictions").glob("chunk_*.npz"))
    assert len(shards) == 6  # 7 images per rank in chunks of 3


def test_image_pipeline_end_to_end_counts_missing(tmp_path, data):
    doc = _cli(data, tmp_path, "--max-images", "2", "--no-prior", "--set", "pipeline.fit.steps=4",
               "--set", "pipeline.fit.global_steps=2", "--set", "pipeline.init.steps=2")
    assert sum(doc["prediction_status"].values()) == 2
    w = doc["results"]["wrist"]["all"]["mpjpe"]["both"]
    assert w["count"] + w["missing"] == 4  # two interacting images: every hand evaluated or counted missing
    assert doc["time_per_image"]["images_timed"] == 2 and doc["time_per_image"]["mean_s"] > 0
    assert doc["source"]["source"] == "image pipeline"
