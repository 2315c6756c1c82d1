"""Sampling benchmark: plain cascade vs batched APG vs the per-sample-loop APG reference.

Usage: ``PYTHONPATH=. python bench/sampling.py [--batch 256] [--quick]``

For each network size (the paper's ``DenoiserConfig()`` and a small default-checkpoint-sized
one) it prints samples/s of

* plain: anchor loop (null condition) + other-hand loop with CFG, no APG;
* apg: the same with ``prior.apg.penetration_guidance`` as the sampler runs it by default
  (``SamplerConfig``: batched, fast mode, steps with ``s_k < apg_min_step_weight`` skipped, at
  most ``apg_max_queries`` queried vertices per hand; override with the flags);
* loop: the original's structure (``penetration_guidance_loop``: exact energy one sample at a
  time, every step). Its guidance cost is MEASURED on ``--loop-subset`` samples for
  ``--loop-steps`` steps and EXTRAPOLATED linearly to the batch and 42 steps; its penetration
  outcome is computed with the batched exact-every-step guidance, which gives the same update
  (tests/test_apg.py), on the first ``--ref-batch`` samples.

The anchor loop is shared by all modes (it has no guidance): it is run once and its time is
added to each mode. Networks have random weights (no checkpoint needed); the codec's
normalisation statistics are fitted on synthetic pairs so decoded hands are plausible.
Penetration of the outputs: mean energy (fast mode) and mean/max depth (mm), on the same
samples for each mode. Last line (paper size): ``apg_over_plain=<r> loop_over_apg=<r>`` where
apg_over_plain is total sampling time with APG over without (guidance calls timed, not a
difference of two totals, which the machine's noise swamps), and loop_over_apg compares the
guidance cost alone, from the PAIRED measurement: batched guidance (42 steps, whole batch) and
the loop (``--loop-steps`` late steps on ``--loop-subset`` samples, extrapolated) timed
alternately ``--rounds`` times on the same fixed x0 (the plain samples), medians. The ratio from
the sampling run's own timings is printed too (``sampling_run_loop_over_apg``); it moved from
11x to 22x between runs of the same code because the loop is timed in another phase.

Random weights are a worst case for the guidance: every sample of an untrained network is the
same gross overlap, so every sample is active at every guided step. ``--ckpt`` replaces the
default-size network by a trained checkpoint (its own codec), whose samples touch realistically.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from datasets.synthetic import random_two_hands
from prior.apg import penetration_guidance, penetration_guidance_loop
from prior.checkpoint import Prior, load_prior
from prior.codec import HandCodec, NormStats
from prior.denoiser import DenoiserConfig, HandDenoiser
from prior.diffusion import DiffusionConfig, GaussianDiffusion
from prior.hands import ManoPair
from prior.penetration import penetration_depth, penetration_energy
from prior.sampling import SamplerConfig, ddim_loop


def _timed_guide(guide, clock: list[float]):
    def wrapped(x0, k):
        t = time.perf_counter()
        out = guide(x0, k)
        clock[0] += time.perf_counter() - t
        return out

    return wrapped


def _penetration(prior: Prior, mano: ManoPair, anchor, other) -> tuple[float, float, float]:
    with torch.no_grad():
        meshes = mano(prior.codec.decode(anchor, other, mano))
        e = penetration_energy(meshes)
        d = penetration_depth(meshes)
    return float(e.mean()), float(d.mean() * 1000), float(d.max() * 1000)


def _paired_costs(guide, loop_guide, x0, s: int, steps: int, args) -> tuple[float, float]:
    """Batched guidance (all 42 steps, whole batch) and the loop (late steps, first ``s``
    samples) timed alternately on the same fixed x0, ``args.rounds`` times: medians of the
    batched seconds and of the loop's seconds per sample-step. Both see the same inputs and the
    same machine state, which the sampling-run timings above do not (the loop's cost per
    sample-step has varied 1.6-2.8 ms between runs of the same code)."""
    batched, loop = [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        for k in range(steps):
            guide(x0, k)
        batched.append(time.perf_counter() - t)
        t = time.perf_counter()
        for k in range(steps - args.loop_steps, steps):
            loop_guide(x0[:s], k)
        loop.append((time.perf_counter() - t) / (s * args.loop_steps))
    return statistics.median(batched), statistics.median(loop)


def run_size(name: str, cfg: DenoiserConfig | Prior, stats: NormStats, mano: ManoPair, args) -> dict:
    """Time plain / batched APG / loop APG for one network (random weights, or a trained Prior)."""
    weights = "trained checkpoint" if isinstance(cfg, Prior) else "random weights"
    torch.manual_seed(0)
    if isinstance(cfg, Prior):
        prior = cfg
        cfg = prior.denoiser.cfg
    else:
        prior = Prior(HandDenoiser(cfg).eval(), GaussianDiffusion(DiffusionConfig()),
                      HandCodec(stats=stats), mano.model_name)  # fmt: skip
    params = sum(p.numel() for p in prior.denoiser.parameters())
    scfg = SamplerConfig()
    model, diff = prior.denoiser, prior.diffusion
    g = torch.Generator().manual_seed(1)
    n = args.batch
    z_anchor, z_other = torch.randn(n, 64, generator=g), torch.randn(n, 64, generator=g)
    t = time.perf_counter()
    anchor = prior.codec.fix_anchor_slots(ddim_loop(model, diff, z_anchor, None, scfg))
    t_anchor = time.perf_counter() - t

    t = time.perf_counter()
    plain = ddim_loop(model, diff, z_other, anchor, scfg)
    t_plain = t_anchor + time.perf_counter() - t

    clock = [0.0]
    guide = penetration_guidance(prior.codec, mano, anchor, min_step_weight=args.min_step_weight,
                                 max_queries=args.max_queries, full_last_steps=args.full_last_steps,
                                 max_shift=args.max_shift)  # fmt: skip
    t = time.perf_counter()
    apg = ddim_loop(model, diff, z_other, anchor, scfg, _timed_guide(guide, clock))
    t_apg = t_anchor + time.perf_counter() - t

    # Reference outcome: exact energy at every step (same update as the loop), first ref samples.
    r = min(args.ref_batch, n)
    ref_guide = penetration_guidance(prior.codec, mano, anchor[:r], mode="exact")
    ref = ddim_loop(model, diff, z_other[:r], anchor[:r], scfg, ref_guide)

    # Loop cost: measured on a subset for a few late steps, extrapolated to n samples x 42 steps.
    s = min(args.loop_subset, n)
    loop_guide = penetration_guidance_loop(prior.codec, mano, anchor[:s])
    loop_guide(plain[:s], scfg.steps - 1)  # warm-up (first-call allocations)
    t = time.perf_counter()
    for k in range(scfg.steps - args.loop_steps, scfg.steps):
        loop_guide(plain[:s], k)
    per_sample_step = (time.perf_counter() - t) / (s * args.loop_steps)
    loop_guidance = per_sample_step * n * scfg.steps
    t_loop = t_plain + loop_guidance
    paired = _paired_costs(guide, loop_guide, plain, s, scfg.steps, args)

    pen = {
        "plain": _penetration(prior, mano, anchor[:r], plain[:r]),
        "apg": _penetration(prior, mano, anchor[:r], apg[:r]),
        "reference": _penetration(prior, mano, anchor[:r], ref),
    }
    print(f"\n== {name}: {params / 1e6:.1f}M parameters (hidden {cfg.hidden}, {weights}), batch {n}")
    print(
        f"plain cascade : {n / t_plain:8.2f} samples/s  ({t_plain:.1f} s; anchor loop {t_anchor:.1f} s)"
    )
    print(
        f"batched APG   : {n / t_apg:8.2f} samples/s  ({t_apg:.1f} s; guidance {clock[0]:.1f} s, "
        f"min step weight {args.min_step_weight}, max queries {args.max_queries}, all at the "
        f"last {args.full_last_steps} steps, max shift {args.max_shift} m)"
    )
    print(
        f"loop APG (ref): {n / t_loop:8.2f} samples/s  ({t_loop:.1f} s; guidance "
        f"{loop_guidance:.1f} s EXTRAPOLATED from {s} samples x {args.loop_steps} steps = "
        f"{per_sample_step * 1000:.1f} ms per sample-step)"
    )
    print(f"paired, {args.rounds} alternating rounds on the plain samples (fixed x0, medians): batched "
          f"{paired[0]:.2f} s for 42 steps, loop {paired[1] * 1000:.1f} ms per sample-step -> "
          f"{paired[1] * n * scfg.steps / paired[0]:.1f}x")  # fmt: skip
    print(f"penetration on the first {r} samples (energy mean, depth mean mm, depth max mm):")
    for key, (e, dm, dx) in pen.items():
        print(f"  {key:9s}: {e:9.2f} {dm:7.2f} {dx:7.2f}")
    return {"apg_over_plain": t_apg / t_plain, "loop_over_apg": loop_guidance / max(clock[0], 1e-9),
            "paired_loop_over_apg": paired[1] * n * scfg.steps / paired[0],
            "loop_total_over_apg_total": t_loop / t_apg}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--min-step-weight", type=float, default=SamplerConfig.apg_min_step_weight)
    ap.add_argument("--max-queries", type=int, default=SamplerConfig.apg_max_queries)
    ap.add_argument("--full-last-steps", type=int, default=SamplerConfig.apg_full_last_steps)
    ap.add_argument("--max-shift", type=float, default=SamplerConfig.apg_max_shift)
    ap.add_argument("--ckpt", default=None, help="trained checkpoint for the default size")
    ap.add_argument("--ref-batch", type=int, default=256)
    ap.add_argument("--loop-subset", type=int, default=32)
    ap.add_argument("--loop-steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="alternating paired timing rounds")
    ap.add_argument("--small-hidden", type=int, default=384, help="default checkpoint: 384")
    ap.add_argument("--quick", action="store_true", help="small size only (smoke run)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    mano = ManoPair()
    t = time.perf_counter()
    hands, _ = random_two_hands(1024, torch.Generator().manual_seed(0), mano=mano)
    print(f"synthetic pairs for normalisation stats: 1024 in {time.perf_counter() - t:.1f} s")
    stats = NormStats.fit(*HandCodec().encode_raw(hands, mano))
    small = DenoiserConfig(hidden=args.small_hidden, emb=128, ff_dim=512)  # configs/prior_default.yaml
    if args.ckpt:
        small = load_prior(args.ckpt, "cpu", mano.model_name)
    ratios = run_size("default-checkpoint size", small, stats, mano, args)
    if not args.quick:
        ratios = run_size("paper size", DenoiserConfig(), stats, mano, args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak memory (ru_maxrss): {peak:.0f} MiB")
    print(f"loop_total_over_apg_total={ratios['loop_total_over_apg_total']:.2f} "
          f"sampling_run_loop_over_apg={ratios['loop_over_apg']:.1f}")  # fmt: skip
    print(
        f"apg_over_plain={ratios['apg_over_plain']:.3f} loop_over_apg={ratios['paired_loop_over_apg']:.1f}"
    )


if __name__ == "__main__":
    main()
