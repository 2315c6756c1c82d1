"""MANO model arrays: the official pickles read without chumpy, or the built-in stand-in.

The official ``MANO_{RIGHT,LEFT}.pkl`` files are Python 2 pickles in which several arrays are
``chumpy`` objects. chumpy does not import on current Pythons, and a pickle can run arbitrary
code, so :class:`RestrictedUnpickler` admits only the numpy / scipy.sparse reconstruction globals
and chumpy's array classes (turned into plain ndarrays); any other global (``os.system``,
``builtins.eval``, ...) is refused before anything runs. Converted arrays are cached as ``.npz``
in a user cache folder, keyed by the SHA-256 of the source file.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from prior.atomic import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "MANOFileError",
    "RestrictedUnpickler",
    "load_mano_arrays",
    "read_mano_pickle",
    "resolve_mano_dir",
    "default_cache_dir",
    "validate_arrays",
]

# key -> expected shape (None = any length on that axis)
REQUIRED_SHAPES: dict[str, tuple[int | None, ...]] = {
    "v_template": (778, 3),
    "f": (None, 3),
    "J_regressor": (16, 778),
    "kintree_table": (2, 16),
    "weights": (778, 16),
    "posedirs": (778, 3, 135),
    "shapedirs": (778, 3, 10),
    "hands_components": (45, 45),
    "hands_mean": (45,),
}
CACHE_FORMAT = "mano-npz-v1"


class MANOFileError(ValueError):
    """A MANO folder or file is missing, unsafe or malformed (the message names the file)."""


class _ChumpyArray:
    """Stand-in for chumpy objects: keeps the pickled state, exposes it as an ndarray."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_array(self) -> np.ndarray:
        state = self.state
        if isinstance(state, dict):
            for key in ("x", "r", "a"):  # chumpy keeps its value in 'x' (Ch) or 'r'/'a'
                if key in state and state[key] is not None:
                    value = state[key]
                    return value.to_array() if isinstance(value, _ChumpyArray) else np.asarray(value)
        raise MANOFileError(f"chumpy object without array data (state keys {sorted(state or {})})")


_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    # Protocol 0/1 pickles rebuild objects through copyreg; its class arguments are themselves
    # resolved by find_class, so only the classes admitted here can be built.
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    # Byte buffers pickled by Python 3 with protocol < 3 go through codecs.encode(str, "latin1").
    ("_codecs", "encode"),
}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_SPARSE_CLASSES = {"csc_matrix", "csr_matrix", "coo_matrix"}
_SPARSE_MODULES = {"scipy.sparse.csc", "scipy.sparse.csr", "scipy.sparse.coo", "scipy.sparse._csc",
                   "scipy.sparse._csr", "scipy.sparse._coo", "scipy.sparse"}  # fmt: skip


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only array classes; everything else raises MANOFileError."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        if (module, name) in _NUMPY_GLOBALS:
            mod = importlib.import_module(module)
            return getattr(mod, name)
        if module in _SPARSE_MODULES and name in _SPARSE_CLASSES:
            import scipy.sparse  # noqa: PLC0415

            return getattr(scipy.sparse, name)
        if module.split(".")[0] == "chumpy":
            return _ChumpyArray
        raise MANOFileError(
            f"{self.source}: refusing to unpickle global {module}.{name} "
            "(only numpy/scipy/chumpy arrays are allowed in a MANO file)"
        )


def _to_numpy(value: Any) -> Any:
    if isinstance(value, _ChumpyArray):
        return value.to_array()
    if hasattr(value, "toarray"):  # scipy sparse
        return value.toarray()
    return value


def read_mano_pickle(path: Path) -> dict[str, np.ndarray]:
    """Read an official MANO pickle safely and return plain float/int arrays (validated)."""
    path = Path(path)
    if not path.is_file():
        raise MANOFileError(f"{path}: MANO file not found")
    try:
        with path.open("rb") as f:
            data = RestrictedUnpickler(f, str(path)).load()
    except MANOFileError:
        raise
    except Exception as e:  # any parse failure of an untrusted file becomes a clear error
        raise MANOFileError(f"{path}: not a MANO pickle ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise MANOFileError(f"{path}: not a MANO pickle (top level is {type(data).__name__})")
    out = {k: np.asarray(_to_numpy(data[k])) for k in REQUIRED_SHAPES if k in data}
    validate_arrays(out, path)
    return out


def validate_arrays(arrays: dict[str, np.ndarray], source: Path | str) -> None:
    """Raise MANOFileError naming ``source`` unless every MANO key is there with its shape."""
    missing = [k for k in REQUIRED_SHAPES if k not in arrays]
    if missing:
        raise MANOFileError(f"{source}: not a MANO model, missing keys {missing}")
    for key, shape in REQUIRED_SHAPES.items():
        got = arrays[key].shape
        if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
            raise MANOFileError(f"{source}: {key} has shape {got}, expected {shape}")


def default_cache_dir() -> Path:
    """Per-user cache folder for converted model arrays."""
    return Path.home() / ".cache" / "twohands"


def resolve_mano_dir(explicit: str | Path | None) -> Path | None:
    """Entry-point helper: an explicit path wins, else ``$MANO_DIR``, else None (stand-in)."""
    value = explicit if explicit not in (None, "") else os.environ.get("MANO_DIR") or None
    return None if value is None else Path(value)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with tmp.open("wb") as f:
            np.savez(f, **arrays)


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable cache %s (%s); rebuilding", path, e)
        return None


def _official(model_dir: Path, fix_left_shapedirs: bool, cache_dir: Path) -> dict[str, dict]:
    if not model_dir.is_dir():
        raise MANOFileError(f"{model_dir}: MANO folder not found (expected mano_v1_2/models)")
    out = {}
    for side in ("right", "left"):
        path = model_dir / f"MANO_{side.upper()}.pkl"
        if not path.is_file():
            raise MANOFileError(f"{path}: MANO {side} model missing in {model_dir}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:20]
        fixed = side == "left" and fix_left_shapedirs
        cache = cache_dir / f"mano_{side}_{digest}_{'fixed' if fixed else 'raw'}_{CACHE_FORMAT}.npz"
        arrays = _load_npz(cache) if cache.is_file() else None
        if arrays is None:
            arrays = read_mano_pickle(path)
            if fixed:
                # The official left model's shapedirs[:, 0, :] has the wrong sign. The fixed
                # arrays are what gets cached, so the fix is applied exactly once.
                arrays["shapedirs"] = arrays["shapedirs"].copy()
                arrays["shapedirs"][:, 0, :] *= -1
            _save_npz(cache, arrays)
        validate_arrays(arrays, cache)
        out[side] = arrays
    return out


def model_digest(arrays: dict[str, dict[str, np.ndarray]]) -> str:
    """Short hash of a model's arrays: checkpoints record it so a prior trained on one hand
    model is never silently used with another (a regenerated stand-in included)."""
    h = hashlib.sha256()
    for side in ("right", "left"):
        for key in sorted(REQUIRED_SHAPES):
            h.update(np.ascontiguousarray(arrays[side][key], dtype=np.float64).tobytes())
    return h.hexdigest()[:10]


def load_mano_arrays(
    model_dir: Path | None, fix_left_shapedirs: bool = True, cache_dir: Path | str | None = None
) -> tuple[dict[str, dict[str, np.ndarray]], str]:
    """Arrays of both sides and the model's name.

    Args:
        model_dir: folder with ``MANO_RIGHT.pkl`` and ``MANO_LEFT.pkl``; None for the shipped
            stand-in (:func:`prior.standin.load_standin`).
        fix_left_shapedirs: negate the official left model's ``shapedirs[:, 0, :]`` (once).
        cache_dir: where converted arrays are cached (default :func:`default_cache_dir`).
    Returns:
        ({"right": arrays, "left": arrays}, name) with name "standin-<digest>" or "mano-<digest>"
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if model_dir is None:
        from prior.standin import load_standin  # noqa: PLC0415

        arrays, kind = load_standin(), "standin"
    else:
        arrays, kind = _official(Path(model_dir), fix_left_shapedirs, cache_dir), "mano"
    return arrays, f"{kind}-{model_digest(arrays)}"
