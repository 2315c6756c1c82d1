"""Restricted unpickling for data pickles (IntagHand ``anno/{idx}.pkl``).

A pickle is a program: ``pickle.load`` imports and calls whatever globals the file names. This
module's :class:`SafeUnpickler` admits only the globals that numpy needs to rebuild arrays,
dtypes and scalars (under both the numpy 1.x ``numpy.core`` and the numpy 2.x ``numpy._core``
names) plus ``_codecs.encode``, which protocol-2 pickles written by Python 3 use for raw bytes.
Dicts, lists, tuples, strings and numbers need no globals at all. Any other global (``os.system``,
``builtins.eval``, ``subprocess.Popen`` ...) is refused *before* it is imported or called, with a
one-line :class:`UnsafePickleError` naming the file and the global.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

__all__ = ["ALLOWED_GLOBALS", "UnsafePickleError", "SafeUnpickler", "load_pickle", "loads_pickle"]

_NUMPY_ARRAY_GLOBALS = (
    ("multiarray", "_reconstruct"),  # ndarray.__reduce__ (protocols 0-4)
    ("multiarray", "scalar"),  # numpy scalars (np.float32(1.0))
    ("numeric", "_frombuffer"),  # ndarray.__reduce_ex__ with protocol 5
)

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
    + [(f"numpy.{core}.{mod}", name) for core in ("core", "_core") for mod, name in _NUMPY_ARRAY_GLOBALS]
)


class UnsafePickleError(ValueError):
    """A pickle names a global outside :data:`ALLOWED_GLOBALS`; nothing from it was executed."""


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`ALLOWED_GLOBALS`.

    Args:
        file: binary file object.
        source: name used in error messages (usually the file path).
    """

    def __init__(self, file: io.BufferedIOBase | io.BytesIO, source: str) -> None:
        super().__init__(file, encoding="latin1")  # latin1: Python-2 numpy pickles
        self._source = source

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 (pickle API)
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self._source}: refused pickle global {module}.{name} "
                "(only numpy array reconstruction is allowed; nothing was executed)"
            )
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: refused persistent id {pid!r} in pickle")


def loads_pickle(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler`.

    Raises:
        UnsafePickleError: a global outside the allow-list.
        ValueError: a truncated or corrupt pickle (message names ``source``).
    """
    try:
        return SafeUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError) as exc:
        raise ValueError(f"{source}: corrupt or truncated pickle ({type(exc).__name__}: {exc})") from exc


def load_pickle(path: Path | str) -> Any:
    """Read one pickle file with :class:`SafeUnpickler`.

    Args:
        path: the ``.pkl`` file.
    Returns:
        The unpickled object (dicts/lists/tuples of numbers, strings and numpy arrays).
    Raises:
        FileNotFoundError: the file does not exist.
        UnsafePickleError: the pickle names a foreign global (nothing executed).
        ValueError: the pickle is corrupt or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pickle file not found")
    return loads_pickle(path.read_bytes(), str(path))
