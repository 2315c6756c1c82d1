"""``python -m eval recon``: two-hand reconstruction benchmark on InterHand2.6M.

Usage::

    python -m eval recon --data ROOT --split test [--subset interacting] [--max-images N]
        [--every-k K] [--captures 0 1] [--seqs NAME ...] --out report/
        [--predictions preds.npz] [--no-prior] [--set pipeline.fit.steps=100] [--check-gt]
    torchrun --nproc_per_node 2 -m eval.cli_recon --data ROOT --out report/   # sharded

Without ``--predictions`` the full image pipeline (detection -> initialisation -> fit) runs on
every image with the image's own camera K; with it, the file is scored (format:
``eval.recon_runner``). Writes into ``--out``: ``metrics.json`` (both root protocols, labelled),
``per_sequence.csv``, ``overlays/`` (best/median/worst), ``predictions.npz`` (merged, same format
as ``--predictions``), ``predictions/`` (resumable shards) and ``config.resolved.yaml``.
Rerunning with the same ``--out`` skips images already predicted. ``--check-gt`` only draws GT
joints projected on a few images into ``<out>/check_gt/`` (a frame/camera alignment check).

Exit codes: 0 done; 1 setup error (bad flags/config, unreadable dataset, missing checkpoint).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "eval_recon.yaml"
log = logging.getLogger("eval.recon")


class SetupError(ValueError):
    """The run cannot start (one line naming the file or option)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval recon", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--data", type=Path, help="InterHand2.6M root (contains annotations/ and images/)")
    p.add_argument("--split", help="train | val | test (default: config, test)")
    p.add_argument("--subset", choices=("all", "interacting", "single"), help="hand-type subset")
    p.add_argument("--max-images", type=int, help="evaluate at most N images")
    p.add_argument("--every-k", type=int, help="every k-th frame of each capture/sequence/camera")
    p.add_argument("--captures", nargs="+", help="capture ids to keep")
    p.add_argument("--seqs", nargs="+", help="sequence names to keep")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--predictions", type=Path, help="score this predictions .npz instead of running the pipeline")
    p.add_argument("--no-prior", action="store_true", help="fit without the interaction prior")
    p.add_argument("--prior-ckpt", type=Path, help="prior checkpoint (pipeline.prior_ckpt)")
    p.add_argument("--mano-dir", type=Path, help="official MANO folder (else $MANO_DIR, else stand-in)")
    p.add_argument("--device", help="torch device of the fit (default: config; cuda:<local rank> under torchrun)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML config (EvalReconConfig)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. pipeline.fit.steps=50 or chunk_size=4 (repeatable)")  # fmt: skip
    p.add_argument("--check-gt", action="store_true", help="only draw projected GT joints on a few images")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return p


def resolve_config(args: argparse.Namespace):
    """Config file + ``--set`` + flags -> EvalReconConfig."""
    from configs import from_dict, load  # noqa: PLC0415
    from eval.recon_runner import EvalReconConfig  # noqa: PLC0415

    cfg = from_dict(EvalReconConfig, load(args.config, args.overrides))
    for flag, key in (("data", "data"), ("split", "split"), ("subset", "subset"), ("max_images", "max_images"),
                      ("every_k", "every_k"), ("captures", "captures"), ("seqs", "seqs")):  # fmt: skip
        if getattr(args, flag) is not None:
            setattr(cfg, key, getattr(args, flag))
    pipe = dict(cfg.pipeline)
    if args.no_prior:
        pipe["use_prior"] = False
    if args.prior_ckpt is not None:
        pipe["prior_ckpt"] = str(args.prior_ckpt)
    if args.device:
        pipe["device"] = args.device
    if args.mano_dir is not None:
        pipe["mano_dir"] = str(args.mano_dir)
    cfg.pipeline = pipe
    if cfg.data is None:
        raise ValueError("no dataset root: pass --data ROOT (or set data in the config)")
    return cfg


def _pipeline_config(cfg, ctx_local_rank: int):
    """The ReconConfig of the pipeline section (relative checkpoint paths resolved)."""
    from configs import from_dict  # noqa: PLC0415
    from prior.distributed import resolve_device  # noqa: PLC0415
    from prior.mano_assets import resolve_mano_dir  # noqa: PLC0415
    from recon.pipeline import ReconConfig  # noqa: PLC0415

    rc = from_dict(ReconConfig, cfg.pipeline, _prefix="pipeline.")
    rc.mano_dir = resolve_mano_dir(rc.mano_dir)
    rc.output.save = ()
    if rc.prior_ckpt is not None and not Path(rc.prior_ckpt).is_absolute() and not Path(rc.prior_ckpt).exists():
        rc.prior_ckpt = REPO / rc.prior_ckpt
    rc.device = str(resolve_device(rc.device, ctx_local_rank))
    return rc


def run(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415

    from configs import dump  # noqa: PLC0415
    from datasets.interhand import InterHandImages  # noqa: PLC0415
    from eval import recon_report as rr  # noqa: PLC0415
    from eval import recon_runner as runner  # noqa: PLC0415
    from prior.distributed import init_distributed, shutdown  # noqa: PLC0415
    from prior.hands import ManoPair  # noqa: PLC0415
    from prior.mano_assets import resolve_mano_dir  # noqa: PLC0415

    cfg = resolve_config(args)
    if args.dry_run:
        import yaml  # noqa: PLC0415

        from configs import to_dict  # noqa: PLC0415
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")  # noqa: T201
        return 0
    ctx, _ = init_distributed(os.environ, "cpu")
    try:
        mano_dir = resolve_mano_dir(cfg.pipeline.get("mano_dir"))
        mano = ManoPair(model_dir=mano_dir)
        ds = InterHandImages(cfg.data, cfg.split, subset=cfg.subset, captures=cfg.captures, seqs=cfg.seqs,
                             every_k=cfg.every_k, max_images=cfg.max_images, mano=mano)  # fmt: skip
        out = Path(args.out)
        if args.check_gt:
            if ctx.is_main:
                paths = rr.write_check_gt(out / "check_gt", [ds[i] for i in range(len(ds))], cfg.check_gt_images)
                print(f"wrote {len(paths)} GT projection picture(s) to {out / 'check_gt'}")  # noqa: T201
            return 0
        pipeline = None
        if args.predictions is not None:
            predict = runner.FilePredictor(args.predictions)
            source = {"source": "predictions file", "path": str(Path(args.predictions).resolve()),
                      "sha256": runner.file_digest(args.predictions)}
        else:
            from configs import to_dict  # noqa: PLC0415
            from recon.pipeline import PipelineSetupError, build_pipeline  # noqa: PLC0415

            rc = _pipeline_config(cfg, ctx.local_rank)
            source = {"source": "image pipeline", "pipeline": to_dict(rc) | {"device": "any"}}
            try:
                pipeline = build_pipeline(rc, torch.device(rc.device))
            except PipelineSetupError as e:
                raise SetupError(str(e)) from e
            predict = runner.PipelinePredictor(pipeline)
        store = runner.PredictionStore(out / "predictions", source)
        t0 = time.perf_counter()
        try:
            stats = runner.run_predictions(ds, predict, store, ctx, cfg.chunk_size)
        finally:
            if pipeline is not None:
                pipeline.close()
        all_stats = ctx.gather_objects(stats)
        if not ctx.is_main:
            return 0
        preds, dup = store.load()
        result = runner.score(ds, preds, mano, image_required=args.predictions is None)
        runner.write_predictions_file(out / "predictions.npz", [preds[i] for i in sorted(preds)])
        extra = {"source": source, "data": str(cfg.data), "split": cfg.split, "subset": cfg.subset,
                 "hand_model": mano.model_name, "world_size": ctx.world_size, "duplicate_predictions": dup,
                 "this_run": {"predicted": int(sum(s["predicted"] for s in all_stats)),
                              "already_predicted": int(sum(s["skipped_done"] for s in all_stats)),
                              "wall_s": time.perf_counter() - t0}}  # fmt: skip
        doc = rr.metrics_document(result, dict(ds.counts), ds.skipped, extra)
        rr.write_metrics(out / "metrics.json", doc)
        rr.write_sequence_csv(out / "per_sequence.csv", rr.sequence_rows(result))
        rr.write_overlays(out / "overlays", result, cfg.overlays)
        dump(cfg, out / "config.resolved.yaml")
        print("\n".join(result.report.table()))  # noqa: T201
        print(f"prediction status: {doc['prediction_status']}; dataset: {doc['dataset_records']['counts']}")  # noqa: T201
        print(f"time per image: {doc['time_per_image']}; report in {out}")  # noqa: T201
        return 0
    finally:
        shutdown(ctx)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m eval recon``; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    from configs import ConfigError  # noqa: PLC0415

    try:
        return run(args)
    except (ConfigError, ValueError, FileNotFoundError) as e:  # SetupError is a ValueError
        log.debug("setup error", exc_info=e)
        print(f"error: {e}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main())
