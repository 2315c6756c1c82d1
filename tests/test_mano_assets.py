"""Official-format MANO loading: chumpy-free restricted unpickler, cache, clear errors."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch

from prior.hands import ManoPair, TwoHands
from prior.mano_assets import MANOFileError, load_mano_arrays, read_mano_pickle


def _install_fake_chumpy(monkeypatch):
    """A module named like chumpy whose Ch pickles its value in state['x'], as chumpy does."""
    chumpy = types.ModuleType("chumpy")
    ch = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)

        def __getstate__(self):
            return {"x": self.x, "_dirty_vars": set()}

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    ch.Ch = Ch
    chumpy.ch = ch
    monkeypatch.setitem(sys.modules, "chumpy", chumpy)
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch)
    return Ch


def _write_official(folder: Path, arrays: dict, Ch, protocol: int = 2) -> None:
    """Write MANO_{RIGHT,LEFT}.pkl like the official release (chumpy arrays, sparse regressor).

    The left file carries the official left-model bug: shapedirs[:, 0, :] has the wrong sign.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for side in ("right", "left"):
        a = arrays[side]
        shapedirs = a["shapedirs"].copy()
        if side == "left":
            shapedirs[:, 0, :] *= -1
        data = {
            "v_template": Ch(a["v_template"]),
            "f": a["f"].astype(np.uint32),
            "J_regressor": scipy.sparse.csc_matrix(a["J_regressor"]),
            "kintree_table": a["kintree_table"],
            "weights": Ch(a["weights"]),
            "posedirs": Ch(a["posedirs"]),
            "shapedirs": Ch(shapedirs),
            "hands_components": Ch(a["hands_components"]),
            "hands_mean": Ch(a["hands_mean"]),
            "hands_coeffs": np.zeros((10, 45)),
            "bs_style": "lbs",
            "bs_type": "lrotmin",
        }
        with (folder / f"MANO_{side.upper()}.pkl").open("wb") as f:
            pickle.dump(data, f, protocol=protocol)


@pytest.fixture(scope="module")
def standin_arrays():
    return load_mano_arrays(None)[0]


@pytest.mark.parametrize("protocol", [0, 2])
def test_chumpy_pickle_loads_identically(tmp_path, monkeypatch, standin_arrays, protocol):
    Ch = _install_fake_chumpy(monkeypatch)
    _write_official(tmp_path / "models", standin_arrays, Ch, protocol)
    monkeypatch.delitem(sys.modules, "chumpy")  # loading must not need chumpy
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    right = read_mano_pickle(tmp_path / "models" / "MANO_RIGHT.pkl")
    for key, value in right.items():
        assert np.array_equal(value, standin_arrays["right"][key]), key


def test_left_fix_applied_exactly_once_and_cached(tmp_path, monkeypatch, standin_arrays):
    Ch = _install_fake_chumpy(monkeypatch)
    _write_official(tmp_path / "models", standin_arrays, Ch)
    cache = tmp_path / "cache"
    for _ in range(2):  # first run converts, second run reads the cache
        arrays, name = load_mano_arrays(tmp_path / "models", cache_dir=cache)
        assert name.startswith("mano-")
        assert np.array_equal(arrays["left"]["shapedirs"], standin_arrays["left"]["shapedirs"])
    assert len(list(cache.glob("*.npz"))) == 2
    # The whole layer gives the stand-in's exact mirror symmetry back through the official path.
    mano = ManoPair(tmp_path / "models", cache_dir=cache)
    h = TwoHands.zeros(1)
    betas = torch.zeros(1, 2, 10)
    betas[..., 0] = 1.5
    out = mano(TwoHands(h.pose_aa, betas, h.rot_mat, h.transl))
    assert torch.allclose(out.verts[:, 0], out.verts[:, 1] * torch.tensor([-1.0, 1, 1]), atol=1e-6)


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps({"v_template": Evil()}))
    with pytest.raises(MANOFileError, match=r"refusing to unpickle global (posix|os)\.system"):
        read_mano_pickle(path)
    assert not marker.exists()


def test_clear_errors(tmp_path, monkeypatch, standin_arrays):
    with pytest.raises(MANOFileError, match="MANO folder not found"):
        load_mano_arrays(tmp_path / "nope")
    Ch = _install_fake_chumpy(monkeypatch)
    _write_official(tmp_path / "m", standin_arrays, Ch)
    (tmp_path / "m" / "MANO_LEFT.pkl").unlink()
    with pytest.raises(MANOFileError, match="MANO left model missing"):
        load_mano_arrays(tmp_path / "m", cache_dir=tmp_path / "c")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"this is not a pickle")
    with pytest.raises(MANOFileError, match="bad.pkl: not a MANO pickle"):
        read_mano_pickle(bad)
    wrong = tmp_path / "wrong.pkl"
    arrays = dict(standin_arrays["right"])
    arrays["weights"] = arrays["weights"][:, :15]
    wrong.write_bytes(pickle.dumps(arrays))
    with pytest.raises(MANOFileError, match=r"weights has shape \(778, 15\)"):
        read_mano_pickle(wrong)
    missing = tmp_path / "missing.pkl"
    missing.write_bytes(pickle.dumps({"v_template": arrays["v_template"]}))
    with pytest.raises(MANOFileError, match="not a MANO model, missing keys"):
        read_mano_pickle(missing)
