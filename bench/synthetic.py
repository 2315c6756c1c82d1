"""Speed and contact quality of the synthetic two-hand generator (``datasets.synthetic``).

Usage: ``PYTHONPATH=. python bench/synthetic.py [--n 4096] [--threads 1] [--quality 1400]``

Prints pairs/s of wall-clock and of process CPU time (the machine may be shared: CPU time is the
steadier number; with ``--threads 1`` it is the throughput of one core), then per interaction
type the full-resolution penetration depth (``prior.penetration.penetration_depth``, all 778
vertices, the normal test) as median / p90 / max and the contact distance (closest vertex pair
between the hands) as median / p90, all in mm. Last line (machine-readable):
``pairs_per_s=<wall> cpu_pairs_per_s=<cpu>``.
"""

from __future__ import annotations

import argparse
import time

import torch

from datasets.synthetic import INTERACTIONS, SyntheticGenerator, random_two_hands
from prior.hands import ManoPair
from prior.penetration import nearest_vertices, penetration_depth


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4096, help="pairs timed")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--quality", type=int, default=1400, help="pairs measured at full resolution")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    mano = ManoPair()
    synth = SyntheticGenerator(mano)
    random_two_hands(256, torch.Generator().manual_seed(args.seed + 1), synth=synth)  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    hands, kinds = random_two_hands(args.n, torch.Generator().manual_seed(args.seed), synth=synth)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"generated {args.n} pairs on {args.threads} thread(s): wall {wall:.2f} s, CPU {cpu:.2f} s")
    m = min(args.quality, args.n)
    with torch.no_grad():
        meshes = mano(hands[:m])
        depth = penetration_depth(meshes) * 1000
        gap = nearest_vertices(meshes.verts[:, 0], meshes.verts[:, 1])[0].min(1).values * 1000
    print(f"full-resolution quality over {m} pairs (mm):")
    print(f"{'type':16s} {'share':>6s} {'depth med':>9s} {'p90':>5s} {'max':>5s} "
          f"{'contact med':>11s} {'p90':>5s}")  # fmt: skip
    for name in INTERACTIONS:
        sel = torch.tensor([k == name for k in kinds[:m]])
        share = sum(k == name for k in kinds) / len(kinds)
        if not sel.any():
            continue
        d, c = depth[sel], gap[sel]
        print(f"{name:16s} {share:6.3f} {d.median():9.1f} {d.quantile(0.9):5.1f} {d.max():5.1f} "
              f"{c.median():11.1f} {c.quantile(0.9):5.1f}")  # fmt: skip
    print(f"pairs_per_s={args.n / wall:.0f} cpu_pairs_per_s={args.n / cpu:.0f}")


if __name__ == "__main__":
    main()
