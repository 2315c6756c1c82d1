"""Time the penetration metrics (eval.penetration) on 10,000 realistic two-hand pairs.

Usage::

    PYTHONPATH=. python bench/penetration.py [--n 10000] [--threads 2] [--method surface]
        [--cache /tmp/pen_pairs.pt] [--check 200]

Pairs: ``datasets.synthetic.random_two_hands`` (seeded), meshed with the stand-in ``ManoPair()``
(interacting pairs in contact, about 15% "apart"), and a share ``--pushed`` (20%) of them pushed
into each other: the right hand moves along the direction of the closest vertex pair by that
distance plus 3-5 mm. Making the pairs is not timed (``--cache`` keeps them for reruns).

What is timed: ``evaluate_penetration`` (intersection volume, depth, minimum distance, contact)
of every pair, wall and CPU time (``time.process_time``, all threads). Default ``--threads 1``:
the kernels are many small tensor ops, and on a busy 2-core machine a second torch thread made
them about 4x slower (thread spin-waits); on a quiet machine compare ``--threads 2``. ``--check K`` compares
the volumes of the first K penetrating pairs with the voxel reference at ``--ref-voxel``
(not timed). The last line is machine readable: ``pen_10k_s=<wall seconds scaled to 10,000>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datasets.synthetic import SyntheticGenerator, random_two_hands  # noqa: E402
from eval.penetration import evaluate_penetration, intersection_volume, min_distance  # noqa: E402
from prior.hands import ManoPair  # noqa: E402


def make_pairs(n: int, seed: int, pushed: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertices (n, 2, 778, 3) and faces (2, F, 3) of the benchmark pairs (see module doc)."""
    mano = ManoPair()
    g = torch.Generator().manual_seed(seed)
    hands, _ = random_two_hands(n, g, synth=SyntheticGenerator(mano))
    with torch.no_grad():
        verts = torch.cat([mano(hands[s : s + 1000]).verts for s in range(0, n, 1000)])
    k = int(round(pushed * n))
    idx = torch.randperm(n, generator=g)[:k]
    v = verts[idx].double()
    d2 = torch.cdist(v[:, 0], v[:, 1]).flatten(1)
    best = d2.argmin(1)
    nv = v.shape[2]
    a, b = v[torch.arange(k), 0, best // nv], v[torch.arange(k), 1, best % nv]
    direction = torch.nn.functional.normalize(a - b, dim=-1)
    push = (a - b).norm(dim=-1) + 0.003 + 0.002 * torch.rand(k, generator=g, dtype=torch.float64)
    verts[idx, 1] += (direction * push[:, None]).float()[:, None]
    return verts, mano.faces


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pushed", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: see module doc)")
    p.add_argument("--method", default="surface", choices=("surface", "voxel"))
    p.add_argument("--cache", default=None, help="load/save the pairs here")
    p.add_argument("--check", type=int, default=0, help="compare K penetrating pairs with voxels")
    p.add_argument("--ref-voxel", type=float, default=0.0005)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.exists():
        data = torch.load(cache, weights_only=True)
        verts, faces = data["verts"][: args.n], data["faces"]
    else:
        t = time.perf_counter()
        verts, faces = make_pairs(args.n, args.seed, args.pushed)
        print(f"made {args.n} pairs in {time.perf_counter() - t:.1f} s")
        if cache is not None:
            torch.save({"verts": verts, "faces": faces}, cache)
    print(f"pairs {tuple(verts.shape)}, faces {tuple(faces.shape)}, threads {args.threads}")
    t0, c0 = time.perf_counter(), time.process_time()
    m = evaluate_penetration(verts, faces, method=args.method)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = m.summary()
    print(", ".join(f"{k} {v:.4g}" for k, v in s.items()))
    print(
        f"volume > 0: {int((m.volume_cm3 > 0).sum())}, depth > 2 mm: {int((m.depth_m > 0.002).sum())}"
    )
    print(f"evaluate_penetration: wall {wall:.1f} s, cpu {cpu:.1f} s for n={args.n}")
    t1 = time.perf_counter()
    min_distance(verts)
    print(f"  of which min_distance alone: {time.perf_counter() - t1:.1f} s")
    if args.check:
        sel = torch.nonzero(m.volume_cm3 > 0).squeeze(1)[: args.check]
        ref, _ = intersection_volume(verts[sel], faces, voxel=args.ref_voxel, method="voxel")
        got = m.volume_cm3[sel]
        big = ref > 0.05
        rel = ((got - ref).abs() / ref)[big]
        print(f"check vs voxel {args.ref_voxel * 1e3:.2f} mm on {len(sel)} pairs: total "
              f"{float(got.sum()):.3f} vs {float(ref.sum()):.3f} cm3; on {int(big.sum())} pairs "
              f"> 0.05 cm3 relative error median {float(rel.median()):.3f}, "
              f"max {float(rel.max()):.3f}; abs error max {float((got - ref).abs().max()):.4f} cm3")  # fmt: skip
    print(f"pen_10k_s={wall / args.n * 10_000:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
