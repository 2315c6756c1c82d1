"""Atomic writes: nothing half-written, usual file modes."""

from __future__ import annotations

import os
import stat

import pytest

from prior.atomic import atomic_path, write_json_atomic


def test_success_renames_with_default_mode(tmp_path):
    write_json_atomic(tmp_path / "a" / "x.json", {"k": 1})
    path = tmp_path / "a" / "x.json"
    assert path.read_text().strip().startswith("{")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_failure_leaves_nothing(tmp_path):
    target = tmp_path / "y.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crash mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []
