"""Sample sets of the generative evaluation: its config, the two sampling modes, the reference.

Sampling modes:

* ``cascade`` (the method): the anchor with the null condition, then the other hand conditioned
  on it, with CFG (``sampler.cfg_weight``) and APG (``sampler.apg``).
* ``parallel`` (the no-conditioning baseline): both hands drawn independently from the null
  condition; the other hand keeps the relative rotation/translation its own unconditional
  sample outputs, so the placement never sees the anchor. No CFG exists without a condition; APG
  (which would couple the hands) is honoured only if asked for. See docs/evaluation.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from prior.checkpoint import Prior
from prior.hands import HandMeshes, ManoPair, TwoHands
from prior.sampling import SamplerConfig, apg_factory, ddim_loop, sample_vectors

__all__ = ["GenerativeEvalConfig", "sample_parallel_vectors", "sample_meshes", "parse_ref",
           "load_reference"]  # fmt: skip


@dataclass
class GenerativeEvalConfig:
    """Options of ``python -m eval generative`` (all overridable with ``--set key=value``)."""

    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    mode: Literal["cascade", "parallel"] = "cascade"
    n: int = 10_000
    runs: int = 5
    seed: int = 0
    batch_size: int = 1000
    ref: str = "synthetic:seed=123"
    ref_mirror: float = 0.5
    features: str = "checkpoints/features_default.pt"
    pen_samples: int | None = None
    pen_voxel: float = 0.002
    contact_eps: float = 0.005
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    diversity_pairs: int = 200
    pr_k: int = 5
    pr_max_samples: int = 1000
    grid: int = 12
    device: str = "cpu"
    mano_dir: str | None = None


# ----------------------------------------------------------------------------- sampling
def sample_parallel_vectors(
    prior: Prior, n: int, cfg: SamplerConfig, generator: torch.Generator, guide=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both hands from the null condition, independently (the "parallel" baseline).

    Returns:
        anchor (n, 64) with its constant slots fixed, other (n, 64), normalised.
    """
    model = prior.denoiser
    model.eval()
    device = prior.device
    z_anchor = torch.randn(n, 64, generator=generator).to(device)
    z_other = torch.randn(n, 64, generator=generator).to(device)
    anchor = ddim_loop(model, prior.diffusion, z_anchor, None, cfg, None, generator)
    anchor = prior.codec.fix_anchor_slots(anchor)
    guide_x0 = guide(anchor) if guide is not None else None
    other = ddim_loop(model, prior.diffusion, z_other, None, cfg, guide_x0, generator)
    return anchor, other


def sample_meshes(
    prior: Prior, mano: ManoPair, cfg: GenerativeEvalConfig, generator: torch.Generator
) -> tuple[HandMeshes, TwoHands]:
    """``cfg.n`` sampled pairs as meshes (anchor frame) and parameters."""
    guide = apg_factory(prior, mano, cfg.sampler) if cfg.sampler.apg else None
    sample = sample_vectors if cfg.mode == "cascade" else sample_parallel_vectors
    hands, meshes = [], []
    for s in range(0, cfg.n, cfg.batch_size):
        anchor, other = sample(prior, min(cfg.batch_size, cfg.n - s), cfg.sampler, generator, guide)
        with torch.no_grad():
            h = prior.codec.decode(anchor, other, mano)
            hands.append(h.to("cpu"))
            meshes.append(mano(h).detach().to("cpu"))
    return HandMeshes.cat(meshes), TwoHands.cat(hands)


# ----------------------------------------------------------------------------- reference
def parse_ref(spec: str) -> tuple[str, dict[str, str]]:
    """``synthetic:seed=123,n=5000`` -> ("synthetic", {...}); a path -> ("npz", {"path": ...})."""
    if spec.startswith("synthetic"):
        _, _, rest = spec.partition(":")
        opts = {}
        for item in filter(None, rest.split(",")):
            key, eq, value = item.partition("=")
            if not eq or key not in ("seed", "n"):
                raise ValueError(f"--ref {spec!r}: options are seed=INT,n=INT, got {item!r}")
            opts[key] = value
        return "synthetic", opts
    return "npz", {"path": spec}


def _mirror_some(meshes: HandMeshes, prob: float, generator: torch.Generator) -> HandMeshes:
    """Swap the sides of a random share ``prob`` of the samples by mirroring the scene."""
    swap = torch.rand(meshes.batch_size, generator=generator) < prob
    mirrored = meshes.mirror()
    sel = swap[:, None, None, None]
    return HandMeshes(torch.where(sel, mirrored.verts, meshes.verts),
                      torch.where(sel, mirrored.joints, meshes.joints), meshes.faces)  # fmt: skip


def load_reference(spec: str, n: int, mano: ManoPair, mirror: float, seed: int) -> HandMeshes:
    """Reference meshes from a dataset spec or an ``.npz`` (``verts`` (+``joints``) or TwoHands).

    The reference is the 50/50 mirrored mixture (``mirror``) the prior is trained on.
    """
    kind, opts = parse_ref(spec)
    g = torch.Generator().manual_seed(seed)
    if kind == "synthetic":
        from datasets.synthetic import SyntheticGenerator, random_two_hands  # noqa: PLC0415

        count = int(opts.get("n", n))
        gen, gg = SyntheticGenerator(mano), torch.Generator().manual_seed(int(opts.get("seed", 123)))
        hands, _ = random_two_hands(count, gg, synth=gen, chunk=1000)
        with torch.no_grad():
            meshes = HandMeshes.cat([mano(hands[s : s + 1000]).detach()
                                     for s in range(0, count, 1000)])  # fmt: skip
    else:
        path = Path(opts["path"])
        if not path.is_file():
            raise ValueError(f"--ref {path}: file not found (use synthetic:seed=N or a .npz)")
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if {"pose_aa", "betas", "rot_mat", "transl"} <= keys:
                hands = TwoHands(*(torch.from_numpy(z[k]).float() for k in ("pose_aa", "betas", "rot_mat", "transl")))
                with torch.no_grad():
                    meshes = HandMeshes.cat([mano(hands[s : s + 1000]).detach()
                                             for s in range(0, len(hands), 1000)])  # fmt: skip
            elif {"verts", "joints"} <= keys:
                meshes = HandMeshes(torch.from_numpy(z["verts"]).float(),
                                    torch.from_numpy(z["joints"]).float(), mano.faces.cpu())  # fmt: skip
            else:
                raise ValueError(f"--ref {path}: needs arrays pose_aa/betas/rot_mat/transl or "
                                 f"verts/joints, has {sorted(keys)}")  # fmt: skip
    if mirror > 0:
        meshes = _mirror_some(meshes, mirror, g)
    return meshes
