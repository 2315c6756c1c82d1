"""Benchmark the image-to-hands pipeline: time per image split into detection, init and fit.

Usage: ``PYTHONPATH=. python bench/fit.py [--images DIR] [--batch 16] [--single 4] [--steps N]
[--prior-ckpt PATH] [--device cpu]``.

For each of "without prior" and "with prior":

* one at a time: ``reconstruct_batch([image])`` for the first ``--single`` images;
* batched: one ``reconstruct_batch`` over ``--batch`` images (the real photos, repeated).

Detection does not batch (MediaPipe runs per image), so it is measured once per distinct photo
and the same detections are fed to every run (``reconstruct_batch(detections=...)``); its time is
added back to every image's end-to-end time. Photos where no hand is found are left out (their
cost is detection only). Without ``checkpoints/prior_default.pt`` (or ``--prior-ckpt``) the "with
prior" rows use an UNTRAINED prior of the default architecture: same cost, meaningless fit.

The last line is machine readable: ``median_s_per_image=<s> batch_speedup=<x>``, both with the
prior: the median end-to-end seconds per image in the batched run (its detection plus its share
of the batch's init and fit), and the one-at-a-time seconds per image over the batched ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from prior.checkpoint import Prior, build_prior, load_prior
from prior.codec import CodecConfig
from prior.denoiser import DenoiserConfig
from prior.diffusion import DiffusionConfig
from recon.camera import intrinsics
from recon.image_io import load_image
from recon.pipeline import ReconConfig, build_pipeline, reconstruct_batch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "images"


def _prior(path: Path, hand_model: str, device: str) -> tuple[Prior, str]:
    if path.is_file():
        return load_prior(path, device, hand_model=hand_model), f"trained ({path.name})"
    config = {"denoiser": dataclasses.asdict(DenoiserConfig()), "diffusion": dataclasses.asdict(DiffusionConfig()),
              "codec": dataclasses.asdict(CodecConfig())}  # fmt: skip
    prior = build_prior(config, hand_model)
    prior.denoiser.eval()
    return prior.to(device), "UNTRAINED (no checkpoint): timing only"


def _row(label: str, recs, det_s: dict[str, float], wall: float) -> tuple[list[float], float]:
    """Print one table row; ``wall``: seconds of all its reconstruct_batch calls (detections
    given). Returns per-image end-to-end seconds and the run's seconds per image."""
    det = [det_s[r.name] for r in recs]
    init = [r.times.get("init", 0.0) for r in recs]
    fit = [r.times.get("fit", 0.0) for r in recs]
    e2e = [d + i + f for d, i, f in zip(det, init, fit)]
    per_image = (sum(det) + wall) / len(recs)
    print(f"{label:<24} {len(recs):>3}  detect {statistics.median(det):6.2f}  init {statistics.median(init):6.2f}  "
          f"fit {statistics.median(fit):6.2f}  end-to-end median {statistics.median(e2e):6.2f}  "
          f"throughput {per_image:6.2f} s/img  [{', '.join(sorted({r.status for r in recs}))}]")  # fmt: skip
    return e2e, per_image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--single", type=int, default=4, help="images run one at a time")
    p.add_argument("--steps", type=int, default=None, help="fit steps (default: FitConfig's)")
    p.add_argument("--prior-ckpt", type=Path, default=REPO / "checkpoints" / "prior_default.pt")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    cfg = ReconConfig(use_prior=False, device=args.device)
    if args.steps is not None:
        cfg.fit.steps = args.steps
        cfg.fit.global_steps = min(cfg.fit.global_steps, args.steps)
    pipeline = build_pipeline(cfg, args.device)
    prior, prior_kind = _prior(args.prior_ckpt, pipeline.mano.model_name, args.device)

    photos, det_s, dets, Ks = [], {}, {}, {}
    for path in sorted(args.images.glob("*.jpg")):
        image = load_image(path)
        pipeline.detector(image)  # warm-up for the first photo's timing
        t = time.perf_counter()
        det = pipeline.detector(image)
        det_s[path.stem] = time.perf_counter() - t
        if not det.hands:
            print(f"{path.name}: no hands found ({det_s[path.stem]:.2f} s), left out")
            continue
        h, w = image.shape[:2]
        Ks[path.stem] = intrinsics(w, h)[0]
        dets[path.stem] = det
        photos.append((path.stem, image))
    if not photos:
        raise SystemExit(f"no photo with hands in {args.images}")
    print(f"{len(photos)} photos with hands; detection median {statistics.median(det_s[n] for n, _ in photos):.2f} s; "
          f"fit steps {cfg.fit.steps}; device {args.device}; threads {torch.get_num_threads()}; prior {prior_kind}")  # fmt: skip
    batch = [photos[i % len(photos)] for i in range(args.batch)]
    names = [n for n, _ in batch]

    def run(items, with_prior: bool):
        pipeline.prior = prior if with_prior else None
        t = time.perf_counter()
        recs = reconstruct_batch([im for _, im in items], [Ks[n] for n, _ in items], pipeline,
                                 names=[n for n, _ in items], detections=[dets[n] for n, _ in items])  # fmt: skip
        return recs, time.perf_counter() - t

    run(photos[:1], False)  # warm-up (allocations, first-call overheads)
    results = {}
    for with_prior in (False, True):
        tag = "prior" if with_prior else "no prior"
        singles, walls = [], []
        for item in photos[: args.single]:
            recs, wall = run([item], with_prior)
            singles += recs
            walls.append(wall)
        e2e_1, per_image_1 = _row(f"one at a time, {tag}", singles, det_s, sum(walls))
        recs, wall = run(batch, with_prior)
        assert [r.name for r in recs] == names
        e2e_b, per_image_b = _row(f"batch of {len(batch)}, {tag}", recs, det_s, wall)
        results[with_prior] = (statistics.median(e2e_1), per_image_1, statistics.median(e2e_b), per_image_b)
    med_1, rate_1, med_b, rate_b = results[True]
    print(f"with prior: one at a time {rate_1:.2f} s/img (median {med_1:.2f}), batched {rate_b:.2f} s/img "
          f"(median {med_b:.2f}); speedup {rate_1 / rate_b:.2f}x")  # fmt: skip
    pipeline.close()
    print(f"median_s_per_image={med_b:.3f} batch_speedup={rate_1 / rate_b:.2f}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
