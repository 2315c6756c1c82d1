"""End-to-end time of the generative evaluation of 10,000 samples (features + all metrics, 1 run).

Usage::

    PYTHONPATH=. python bench/eval.py [--n 10000] [--pen-samples K] [--threads 2]

What is timed: embedding the generated and the reference meshes with the default feature
extractor, FID, KID (degree 1 and 3), diversity, precision/recall, and the penetration volume,
depth and contact of every generated sample (as ``python -m eval generative`` does for one run).
What is not timed: making the meshes (sampling the prior is benchmarked by the prior itself).

Meshes: ``--base`` synthetic pairs (datasets.synthetic, seeded) are expanded to ``n`` distinct
pairs by re-drawing the shapes and jittering the finger poses, then meshed; the "generated" and
"reference" sets use different seeds. Their contact statistics are those of the synthetic data.

With ``--pen-samples K < n`` the penetration is timed on K samples and scaled to n (the output
says so). The last line is machine readable: ``eval_10k_s=<seconds>`` (scaled to 10,000 samples
when ``--n`` differs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datasets.synthetic import SyntheticGenerator, random_two_hands  # noqa: E402
from eval.eval_samples import GenerativeEvalConfig  # noqa: E402
from eval.features import extract_features, load_features  # noqa: E402
from eval.generative_runner import measure  # noqa: E402
from prior.hands import HandMeshes, ManoPair, TwoHands  # noqa: E402


def make_meshes(mano: ManoPair, n: int, base: int, seed: int) -> HandMeshes:
    """``n`` distinct synthetic-like pairs from ``base`` generated ones (see the module doc)."""
    g = torch.Generator().manual_seed(seed)
    hands, _ = random_two_hands(base, g, synth=SyntheticGenerator(mano))
    idx = torch.arange(n) % base
    h = hands[idx]
    h = TwoHands(h.pose_aa + 0.03 * torch.randn(h.pose_aa.shape, generator=g),
                 (h.betas + 0.2 * torch.randn(h.betas.shape, generator=g)).clamp(-2, 2),
                 h.rot_mat, h.transl)  # fmt: skip
    with torch.no_grad():
        return HandMeshes.cat([mano(h[s : s + 1000]) for s in range(0, n, 1000)])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--base", type=int, default=1000, help="synthetic pairs generated per set")
    p.add_argument("--pen-samples", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--features", default=str(REPO / "checkpoints" / "features_default.pt"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {os.cpu_count()} CPUs, torch threads {args.threads}, load average "
          f"{os.getloadavg()[0]:.1f} (before)")  # fmt: skip
    mano = ManoPair()
    t = time.perf_counter()
    fake = make_meshes(mano, args.n, min(args.base, args.n), seed=1)
    real = make_meshes(mano, args.n, min(args.base, args.n), seed=2)
    print(f"meshes made (not timed): {time.perf_counter() - t:.1f} s")
    net, _ = load_features(args.features)
    cfg = GenerativeEvalConfig(n=args.n, runs=1, pen_samples=args.pen_samples)

    t0 = time.perf_counter()
    real_feats = extract_features(net, real)
    fake_feats = extract_features(net, fake)
    t_feat = time.perf_counter() - t0
    metrics, _ = measure(fake_feats, real_feats, fake, cfg, torch.Generator().manual_seed(0))
    total = time.perf_counter() - t0
    pen_n = metrics.n_pen_evaluated + metrics.n_pen_failed
    t_dist, t_pen = metrics.seconds["distribution_s"], metrics.seconds["penetration_s"]
    print(f"features (2 x {args.n}): {t_feat:.1f} s; FID/KID/diversity/P&R: {t_dist:.1f} s; "
          f"penetration+contact on {pen_n} samples: {t_pen:.1f} s ({t_pen / max(pen_n, 1) * 1e3:.1f} ms/sample)")  # fmt: skip
    print("metrics:", {k: round(v, 4) for k, v in metrics.values.items()})
    est = total
    if pen_n < args.n:
        est = t_feat + t_dist + t_pen * args.n / max(pen_n, 1)
        print(f"penetration measured on {pen_n} of {args.n} samples: total scaled to n")
    if args.n != 10_000:
        est *= 10_000 / args.n
        print(f"n={args.n}: scaled linearly to 10,000 samples")
    print(f"load average {os.getloadavg()[0]:.1f} (after); measured wall {total:.1f} s")
    print(f"eval_10k_s={est:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
