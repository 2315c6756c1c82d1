"""Reconstruct both hands from photos: ``python run_fit.py photo.jpg|folder|glob ... --out out/``.

Each image gets its own folder ``<out>/<image stem>/`` (see ``recon.outputs``); the run writes
``<out>/summary.json`` (per image: status ok / one-hand / no-hands / error with a message, the
hands found and by which detection stage, reprojection error, penetration depth, time) and
``<out>/config.resolved.yaml``.

Exit codes:
    0  the run completed and summary.json was written (bad inputs, images without hands and
       one-hand images are per-image statuses, not failures);
    1  fatal setup error (bad config or flags, no input images, missing prior checkpoint...);
    2  the run completed but at least one image hit an unexpected internal error (a bug: its
       traceback summary is in summary.json and the log).

Options: ``--device cpu``, ``--batch-size 8``, ``--no-prior``, ``--mano-dir DIR`` (else
``$MANO_DIR``, else the built-in stand-in hand model), ``--prior-ckpt PATH``, ``--focal PX`` or
``--K k.json`` (a 3x3 list, or {"K": ...}, or {"fx", "fy", "cx", "cy"}), ``--save obj,glb,...``,
``--set fit.steps=200`` (any config key), ``--config configs/recon.yaml``, ``--dry-run`` (print
the resolved config and exit).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent
DEFAULT_CONFIG = REPO / "configs" / "recon.yaml"
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
log = logging.getLogger("run_fit")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("inputs", nargs="*", help="image files, folders or glob patterns")
    p.add_argument("--out", type=Path, default=Path("out"), help="output folder (default out/)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML config (ReconConfig)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. fit.steps=200 (repeatable)")  # fmt: skip
    p.add_argument("--device", help="torch device (cpu, cuda)")
    p.add_argument("--batch-size", type=int, help="images per batched fit")
    p.add_argument("--no-prior", action="store_true", help="fit without the interaction prior")
    p.add_argument("--prior-ckpt", type=Path, help="prior checkpoint")
    p.add_argument("--mano-dir", type=Path, help="official MANO models folder (else $MANO_DIR)")
    cam = p.add_mutually_exclusive_group()
    cam.add_argument("--focal", type=float, help="focal length in px for every image")
    cam.add_argument("--K", type=Path, help="JSON file with 3x3 intrinsics for every image")
    p.add_argument("--save", help="outputs to write: comma list of obj,glb,npz,json,overlay,views or all")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return p


def resolve_config(args: argparse.Namespace):
    """Config file + ``--set`` + flags -> ReconConfig (relative paths resolved)."""
    from configs import from_dict, load
    from prior.mano_assets import resolve_mano_dir
    from recon.outputs import parse_save
    from recon.pipeline import ReconConfig

    overrides = list(args.overrides)
    d = load(args.config, overrides) if args.config is not None else {}
    cfg = from_dict(ReconConfig, d)
    if args.device:
        cfg.device = args.device
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        cfg.batch_size = args.batch_size
    if args.no_prior:
        cfg.use_prior = False
    if args.prior_ckpt is not None:
        cfg.prior_ckpt = args.prior_ckpt
    if args.focal is not None:
        cfg.camera.focal_px = args.focal
    if args.save:
        cfg.output.save = parse_save(args.save)
    cfg.output.save = parse_save(cfg.output.save)
    cfg.mano_dir = resolve_mano_dir(args.mano_dir if args.mano_dir is not None else cfg.mano_dir)
    if cfg.prior_ckpt is not None and not Path(cfg.prior_ckpt).is_absolute():
        here = Path(cfg.prior_ckpt)
        cfg.prior_ckpt = here if here.exists() else REPO / here
    return cfg


def read_K(path: Path) -> np.ndarray:
    """--K file: a 3x3 list, {"K": 3x3}, or {"fx", "fy", "cx", "cy"}."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read intrinsics JSON ({e})") from None
    if isinstance(obj, dict) and "K" in obj:
        obj = obj["K"]
    elif isinstance(obj, dict) and {"fx", "fy", "cx", "cy"} <= set(obj):
        obj = [[obj["fx"], 0, obj["cx"]], [0, obj["fy"], obj["cy"]], [0, 0, 1]]
    K = np.asarray(obj, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"{path}: K must be 3x3, got shape {K.shape}")
    return K


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given; folders -> their image files (sorted); anything else as a glob."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
            skipped = sum(1 for f in p.iterdir() if f.is_file()) - len(files)
            if skipped:
                log.info("%s: skipped %d non-image file(s)", p, skipped)
            out += files
        elif p.exists() or not any(c in item for c in "*?["):
            out.append(p)  # a missing plain path becomes a per-image error
        else:
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                raise ValueError(f"{item}: no file matches this pattern")
            out += matches
    return list(dict.fromkeys(out))


def unique_names(paths: list[Path]) -> list[str]:
    """Image stems, with ``_2``, ``_3``... appended to repeated stems."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        stem = p.stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return names


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    from configs import ConfigError, to_dict

    try:
        cfg = resolve_config(args)
        K_given = read_K(args.K) if args.K is not None else None
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)  # noqa: T201
        return 1
    if args.dry_run:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")  # noqa: T201
        return 0
    try:
        paths = expand_inputs(args.inputs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)  # noqa: T201
        return 1
    if not paths:
        print("error: no input images (give files, folders or glob patterns)", file=sys.stderr)  # noqa: T201
        return 1
    return run(cfg, paths, args.out, K_given, progress=not args.quiet)


def run(cfg, paths: list[Path], out: Path, K_given: np.ndarray | None, progress: bool = True) -> int:
    """Reconstruct ``paths`` in batches, write outputs and summary.json. Returns the exit code."""
    from tqdm import tqdm

    from configs import dump
    from recon.camera import intrinsics
    from recon.image_io import exif_focal_px, load_image
    from recon.outputs import summary_entry, write_outputs, write_summary
    from recon.pipeline import (
        PipelineSetupError,
        build_pipeline,
        failed_reconstruction,
        reconstruct_batch,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dump(cfg, out / "config.resolved.yaml")
    t_setup = time.perf_counter()
    try:
        pipeline = build_pipeline(cfg, cfg.device)
    except (PipelineSetupError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)  # noqa: T201
        return 1
    run_info = {
        "hand_model": pipeline.mano.model_name,
        "prior": str(cfg.prior_ckpt) if pipeline.prior is not None else None,
        "device": str(pipeline.device), "batch_size": cfg.batch_size,
        "setup_time_s": round(time.perf_counter() - t_setup, 3),
    }  # fmt: skip
    names = unique_names(paths)
    entries: list[dict] = []
    unexpected = 0
    bar = tqdm(total=len(paths), unit="img", disable=not progress, desc="run_fit")
    try:
        for start in range(0, len(paths), cfg.batch_size):
            batch = list(zip(paths[start : start + cfg.batch_size], names[start : start + cfg.batch_size]))
            loaded, recs = [], {}
            for path, name in batch:
                t0 = time.perf_counter()
                try:
                    image = load_image(path)
                    h, w = image.shape[:2]
                    exif = exif_focal_px(path, w, h) if cfg.camera.use_exif else None
                    K, src = intrinsics(w, h, cfg.camera.focal_px, K_given, exif, cfg.camera.fov_deg)
                    loaded.append((name, image, K, src, time.perf_counter() - t0))
                except Exception as e:  # noqa: BLE001 - per-image status, logged
                    recs[name] = failed_reconstruction(name, e, {"load": time.perf_counter() - t0})
            done = reconstruct_batch([x[1] for x in loaded], [x[2] for x in loaded], pipeline,
                                     names=[x[0] for x in loaded], K_sources=[x[3] for x in loaded])
            images = {x[0]: x[1] for x in loaded}
            for (name, _, _, _, t_load), rec in zip(loaded, done):
                rec.times = {"load": t_load, **rec.times}
                recs[name] = rec
            for path, name in batch:
                rec = recs[name]
                t0 = time.perf_counter()
                try:
                    write_outputs(rec, images.get(name), out / name, cfg.output.save,
                                  pipeline.mano.model_name, cfg.flat_hand_mean,
                                  cfg.output.overlay_max_side, cfg.output.views_size)  # fmt: skip
                except Exception as e:  # noqa: BLE001 - per-image status, logged at error level
                    bad = failed_reconstruction(name, e)
                    rec.status, rec.error_trace = "error", bad.error_trace
                    rec.message = f"writing outputs failed: {bad.message}"
                rec.times["write"] = time.perf_counter() - t0
                unexpected += rec.error_trace is not None
                entries.append(summary_entry(rec, str(path), out / name))
                bar.update(1)
            del images, loaded
            write_summary(out / "summary.json", entries, run_info)
    finally:
        bar.close()
        pipeline.close()
    counts: dict[str, int] = {}
    for e in entries:
        counts[e["status"]] = counts.get(e["status"], 0) + 1
    print(f"{len(entries)} image(s): " + ", ".join(f"{k} {v}" for k, v in counts.items())  # noqa: T201
          + f"; summary: {out / 'summary.json'}")  # fmt: skip
    if unexpected:
        print(f"{unexpected} image(s) hit an unexpected error: see summary.json", file=sys.stderr)  # noqa: T201
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
