"""``python -m eval generative`` and ``python -m eval train-features`` (entry points).

Generative evaluation of the prior (InterHandGen protocol, reference section 7): for each of
``runs`` generator-seeded runs, sample ``n`` pairs, mesh them, embed them with the feature
extractor and compute FID, KID (degree 1 as InterHandGen, and degree 3), diversity, precision
and recall against a fixed reference set, plus penetration volume/depth and contact. Reports the
mean and a 95% Student-t interval over runs. Sampling modes: see :mod:`eval.eval_samples`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch
import yaml

import configs
from eval.eval_samples import GenerativeEvalConfig
from eval.features import FeatureCheckpointError
from prior.checkpoint import CheckpointError
from prior.hands import ManoPair

log = logging.getLogger("eval.generative")
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- entry points
def _resolve(args: argparse.Namespace) -> GenerativeEvalConfig:
    d = configs.to_dict(GenerativeEvalConfig())
    over = list(args.set)
    for key, value in (("n", args.n), ("runs", args.runs), ("seed", args.seed), ("ref", args.ref),
                       ("features", args.features), ("mode", args.mode),
                       ("sampler.cfg_weight", args.cfg_weight),
                       ("pen_samples", args.pen_samples)):  # fmt: skip
        if value is not None:
            over.insert(0, f"{key}={value}")
    if args.no_apg:
        over.insert(0, "sampler.apg=false")
    return configs.from_dict(GenerativeEvalConfig, configs.apply_overrides(d, over))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval generative", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--ckpt", required=True, help="prior checkpoint (python -m prior train)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--ref", help="synthetic:seed=N[,n=M] or samples.npz")
    p.add_argument("--n", type=int, help="samples per run")
    p.add_argument("--runs", type=int, help="repeated sample sets (mean and 95%% CI)")
    p.add_argument("--seed", type=int)
    p.add_argument("--features", help="feature extractor checkpoint")
    p.add_argument("--mode", choices=["cascade", "parallel"])
    p.add_argument("--cfg-weight", type=float, help="classifier-free guidance weight (0 = off)")
    p.add_argument("--no-apg", action="store_true", help="disable anti-penetration guidance")
    p.add_argument("--pen-samples", type=int, help="penetration on the first K samples per run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    from eval.generative_runner import run_generative  # noqa: PLC0415

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = _resolve(args)
        if args.dry_run:
            print(yaml.safe_dump(configs.to_dict(cfg), sort_keys=False), end="")  # noqa: T201
            return 0
        result = run_generative(cfg, Path(args.ckpt), Path(args.out))
    except (configs.ConfigError, CheckpointError, FeatureCheckpointError, ValueError,
            FileNotFoundError, ImportError) as e:  # fmt: skip
        print(f"error: {e}", file=sys.stderr)  # noqa: T201 (CLI output)
        return 2
    print(result.table)  # noqa: T201 (CLI output)
    return 0


def main_train_features(argv: list[str] | None = None) -> int:
    """``python -m eval train-features --config configs/eval_features.yaml --out PATH``."""
    from eval.features import save_features  # noqa: PLC0415
    from eval.train_features import FeatureTrainConfig, train_feature_net  # noqa: PLC0415
    from prior.atomic import write_json_atomic  # noqa: PLC0415
    from prior.mano_assets import resolve_mano_dir  # noqa: PLC0415

    p = argparse.ArgumentParser(prog="python -m eval train-features")
    p.add_argument("--config", default=str(configs.CONFIG_DIR / "eval_features.yaml"))
    p.add_argument("--out", default=str(REPO / "checkpoints" / "features_default.pt"))
    p.add_argument("--mano-dir", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = configs.from_dict(FeatureTrainConfig, configs.load(args.config, args.set))
    except configs.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)  # noqa: T201
        return 2
    if args.dry_run:
        print(yaml.safe_dump(configs.to_dict(cfg), sort_keys=False), end="")  # noqa: T201
        return 0
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    mano = ManoPair(resolve_mano_dir(args.mano_dir))
    net, meta = train_feature_net(cfg, mano)
    meta["config"] = configs.to_dict(cfg)
    meta["command"] = "python -m eval train-features " + " ".join(argv or sys.argv[1:])
    meta["wall_seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    save_features(out, net, meta)
    write_json_atomic(out.with_suffix(".json"), {k: v for k, v in meta.items()})
    print(f"feature extractor written to {out} ({meta['wall_seconds']} s; val {meta['val']})")  # noqa: T201
    return 0


__all__ = ["main", "main_train_features"]
