"""YAML -> typed dataclasses: overrides, unknown keys, wrong types, resolved dump."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from configs import ConfigError, apply_overrides, dump, from_dict, load


@dataclass
class Inner:
    steps: int = 10
    lr: float = 0.01
    mode: Literal["fast", "exact"] = "fast"


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    name: str = "x"
    path: Path | None = None
    weights: dict[str, float] = field(default_factory=dict)
    stages: tuple[int, ...] = (1, 2)


def test_load_with_overrides_and_types(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("inner:\n  steps: 5\nname: hi\nweights: {a: 1}\n")
    d = load(p, ["inner.lr=0.5", "path=/tmp/x", "stages=[3, 4]", "inner.mode=exact"])
    cfg = from_dict(Outer, d)
    assert cfg.inner.steps == 5 and cfg.inner.lr == 0.5 and cfg.inner.mode == "exact"
    assert cfg.path == Path("/tmp/x") and cfg.stages == (3, 4) and cfg.weights == {"a": 1.0}


@pytest.mark.parametrize(
    "d, message",
    [
        ({"inner": {"stepz": 1}}, "unknown config key inner.stepz"),
        ({"inner": {"steps": "ten"}}, "inner.steps: expected an integer"),
        ({"inner": {"steps": 1.5}}, "inner.steps: expected an integer"),
        ({"inner": {"mode": "slow"}}, "inner.mode: 'slow' is not one of"),
        ({"weights": {"a": "b"}}, "weights.a: expected a number"),
        ({"inner": 3}, "inner: expected a mapping"),
    ],
)
def test_errors_name_the_key(d, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, d)


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load(bad)
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        apply_overrides({}, ["novalue"])


def test_dump_round_trips(tmp_path):
    cfg = Outer(inner=Inner(steps=3), path=Path("/a"), stages=(5,))
    dump(cfg, tmp_path / "out" / "config.resolved.yaml")
    back = from_dict(Outer, yaml.safe_load((tmp_path / "out" / "config.resolved.yaml").read_text()))
    assert back == cfg
    assert not list((tmp_path / "out").glob(".*tmp*"))
