"""CLI of the two-hand prior.

Examples::

    python -m prior train --config configs/prior.yaml --set train.max_steps=2000 [--resume]
    torchrun --nproc_per_node 2 -m prior train --config configs/prior.yaml
    python -m prior train --config configs/prior.yaml --dry-run
    python -m prior sample --ckpt checkpoints/prior.pt --n 1000 --out samples.npz [--seed 0] [--no-apg]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import yaml

import configs
from prior.atomic import atomic_path
from prior.checkpoint import CheckpointError, load_prior
from prior.distributed import init_distributed, resolve_device, shutdown
from prior.hands import ManoPair, TwoHands
from prior.sampling import SamplerConfig, apg_factory, sample_vectors
from prior.train import TrainConfig, train

log = logging.getLogger("prior")
DataKind = Literal["synthetic", "interhand_json", "intaghand_pkl", "random"]


@dataclass
class DataConfig:
    """Training data. ``synthetic``/``random`` use ``n`` and ``seed``; the InterHand2.6M
    readers use ``root``, ``split``, ``interacting_only`` and ``dedupe_views``."""

    kind: DataKind = "synthetic"
    n: int = 100_000
    seed: int = 0
    root: str | None = None
    split: str = "train"
    interacting_only: bool = True
    dedupe_views: bool = True


@dataclass
class TrainRunConfig:
    out_dir: Path = Path("out/prior")
    device: str = "auto"
    mano_dir: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class SampleRunConfig:
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    n: int = 1000
    seed: int = 0
    batch_size: int = 1000
    device: str = "cpu"
    mano_dir: str | None = None


# ----------------------------------------------------------------------------- data registry
def _random_pairs(cfg: DataConfig, mano: ManoPair) -> TwoHands:
    """Unstructured random pairs (small poses, random relative offset): smoke tests only."""
    import roma  # noqa: PLC0415

    g = torch.Generator().manual_seed(cfg.seed)
    n = cfg.n
    rot_left = roma.rotvec_to_rotmat(torch.randn(n, 3, generator=g))
    rot_rel = roma.rotvec_to_rotmat(0.5 * torch.randn(n, 3, generator=g))
    transl = torch.stack([torch.zeros(n, 3), 0.08 * torch.randn(n, 3, generator=g)], 1)
    return TwoHands(
        pose_aa=0.2 * torch.randn(n, 2, 15, 3, generator=g),
        betas=0.5 * torch.randn(n, 2, 10, generator=g),
        rot_mat=torch.stack([rot_left, rot_left @ rot_rel], 1),
        transl=transl,
    )


def _synthetic(cfg: DataConfig, mano: ManoPair) -> TwoHands:
    try:
        from datasets.synthetic import SyntheticTwoHands  # noqa: PLC0415
    except ImportError as e:
        raise ImportError(f"data.kind=synthetic needs datasets.synthetic ({e})") from e
    return _materialize(SyntheticTwoHands(cfg.n, cfg.seed, mano=mano))


def _need_root(cfg: DataConfig) -> Path:
    if not cfg.root:
        raise configs.ConfigError(f"data.kind={cfg.kind} needs data.root")
    return Path(cfg.root)


def _interhand_json(cfg: DataConfig, mano: ManoPair) -> TwoHands:
    from datasets.interhand import InterHandMano  # noqa: PLC0415

    ds = InterHandMano(_need_root(cfg), cfg.split, interacting_only=cfg.interacting_only,
                       dedupe_views=cfg.dedupe_views)  # fmt: skip
    return _materialize(ds)


def _intaghand_pkl(cfg: DataConfig, mano: ManoPair) -> TwoHands:
    from datasets.interhand import IntagHandAnno  # noqa: PLC0415

    return _materialize(IntagHandAnno(_need_root(cfg), cfg.split, mano, dedupe_views=cfg.dedupe_views))


DATA_LOADERS: dict[str, Callable[[DataConfig, ManoPair], TwoHands]] = {
    "synthetic": _synthetic,
    "interhand_json": _interhand_json,
    "intaghand_pkl": _intaghand_pkl,
    "random": _random_pairs,
}


def _materialize(dataset: object) -> TwoHands:
    """All pairs of a dataset as one TwoHands (items: TwoHands or (TwoHands, ...))."""
    if isinstance(dataset, TwoHands):
        return dataset
    if hasattr(dataset, "all_hands"):
        return dataset.all_hands()
    items = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    hands = [it[0] if isinstance(it, tuple) else it for it in items]
    if not hands:
        raise ValueError(f"{type(dataset).__name__}: the dataset is empty")
    return TwoHands.cat(hands)


# ----------------------------------------------------------------------------- commands
def _load_config(cls: type, path: str, overrides: list[str]) -> object:
    return configs.from_dict(cls, configs.load(path, overrides))


def _mano(mano_dir: str | None) -> ManoPair:
    from prior.mano_assets import resolve_mano_dir  # noqa: PLC0415

    return ManoPair(resolve_mano_dir(mano_dir))


def cmd_train(args: argparse.Namespace) -> int:
    cfg: TrainRunConfig = _load_config(TrainRunConfig, args.config, args.set)  # type: ignore[assignment]
    if args.dry_run:
        print(yaml.safe_dump(configs.to_dict(cfg), sort_keys=False), end="")  # noqa: T201 (CLI output)
        return 0
    ctx, device = init_distributed(os.environ, cfg.device)
    mano = _mano(cfg.mano_dir)
    hands = DATA_LOADERS[cfg.data.kind](cfg.data, mano)
    log.info("rank %d: %d training pairs (%s), device %s", ctx.rank, hands.batch_size,
             cfg.data.kind, device)  # fmt: skip
    if ctx.is_main:
        configs.dump(cfg, cfg.out_dir / "config.resolved.yaml")
    path = train(cfg.train, hands, mano, cfg.out_dir, device, ctx, resume=args.resume)
    if ctx.is_main:
        print(f"prior written to {path}")  # noqa: T201 (CLI output)
    # Leave the process group only after a successful run, and together: a rank that tears
    # gloo down while the other is still in a collective aborted once in CI ("terminate called
    # without an active exception"); destroying it after a failure can deadlock instead
    # (torchtitan does the same), so a failing rank just exits and torchrun stops the others.
    ctx.barrier()
    shutdown(ctx)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    for key, value in (("n", args.n), ("seed", args.seed)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.no_apg:
        overrides.append("sampler.apg=false")
    cfg: SampleRunConfig = _load_config(SampleRunConfig, args.config, overrides)  # type: ignore[assignment]
    if args.dry_run:
        print(yaml.safe_dump(configs.to_dict(cfg), sort_keys=False), end="")  # noqa: T201 (CLI output)
        return 0
    device = resolve_device(cfg.device)
    mano = _mano(cfg.mano_dir).to(device)
    prior = load_prior(args.ckpt, device, hand_model=mano.model_name)
    guide = apg_factory(prior, mano, cfg.sampler) if cfg.sampler.apg else None
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    anchors, others = [], []
    for start in range(0, cfg.n, cfg.batch_size):
        a, o = sample_vectors(prior, min(cfg.batch_size, cfg.n - start), cfg.sampler, gen, guide)
        anchors.append(a)
        others.append(o)
    anchor, other = torch.cat(anchors), torch.cat(others)
    with torch.no_grad():
        hands = prior.codec.decode(anchor, other, mano)
        raw = torch.cat(prior.codec.denormalize(anchor, other), dim=1)
    out = Path(args.out)
    arrays = {k: v.astype(np.float32) for k, v in hands.as_numpy().items()}
    arrays["params"] = raw.cpu().numpy().astype(np.float32)  # (N, 128) [anchor 64 | other 64]
    if args.verts:
        with torch.no_grad():
            arrays["verts"] = mano(hands).verts.cpu().numpy().astype(np.float32)
    with atomic_path(out) as tmp:
        with tmp.open("wb") as f:
            np.savez(f, **arrays, hand_model=np.array(mano.model_name), frame=np.array("anchor"))
    configs.dump(cfg, out.with_name(out.stem + ".config.resolved.yaml"))
    print(f"{cfg.n} samples written to {out}")  # noqa: T201 (CLI output)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from prior.export import export_prior  # noqa: PLC0415

    record = export_prior(Path(args.run), Path(args.out), commit=args.commit)
    print(f"exported step {record['step']} of {args.run} to {args.out} "  # noqa: T201 (CLI output)
          f"(held-out loss {record['final_val_loss']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prior", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train the prior (torchrun-ready)")
    tr.add_argument("--config", default=str(configs.CONFIG_DIR / "prior.yaml"))
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    tr.add_argument("--resume", action="store_true", help="continue from out_dir/train_state.pt")
    tr.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    tr.set_defaults(func=cmd_train)
    sa = sub.add_parser("sample", help="sample two-hand interactions")
    sa.add_argument("--ckpt", required=True)
    sa.add_argument("--out", default="samples.npz")
    sa.add_argument("--n", type=int)
    sa.add_argument("--seed", type=int)
    sa.add_argument("--no-apg", action="store_true", help="disable anti-penetration guidance")
    sa.add_argument("--verts", action="store_true", help="also store (N, 2, 778, 3) vertices")
    sa.add_argument("--config", default=str(configs.CONFIG_DIR / "sample.yaml"))
    sa.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sa.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    sa.set_defaults(func=cmd_sample)
    ex = sub.add_parser("export", help="publish a run's prior.pt with its record and loss curve")
    ex.add_argument("--run", required=True, help="training out_dir")
    ex.add_argument("--out", required=True, help="destination .pt (a .json and _loss.png go beside)")
    ex.add_argument("--commit", help="code commit the run was trained with (default: HEAD)")
    ex.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (configs.ConfigError, CheckpointError, ValueError, ImportError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)  # noqa: T201 (CLI output)
        return 2


if __name__ == "__main__":
    sys.exit(main())
