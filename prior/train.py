"""The one training loop of the two-hand prior (InterHandGen reference §4).

Each step: per-sample left/right swap (mirroring), normalise, then ONE forward of 2B rows
``[anchor | null cond ; other | cond = clean anchor]`` with shared antithetic t. Loss = masked
MSE on the anchor's 55 learned dims + MSE on the other hand's 64 dims (x0-prediction). Adam(W),
grad clip, step LR, EMA, periodic atomic checkpoints, exact ``resume``, data-parallel via
:class:`prior.distributed.DistContext`.

Randomness is a pure function of ``(seed, step)`` (batch order of ``(seed, epoch)``), drawn for
the global batch and sliced per rank. A resumed run therefore replays exactly what an
uninterrupted run would do, with no RNG state to restore beyond the optimiser/EMA state.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from configs import to_dict
from prior.atomic import write_json_atomic
from prior.checkpoint import (
    TRAIN_KIND,
    CheckpointError,
    Prior,
    load_checkpoint,
    save_checkpoint,
    save_prior,
)  # fmt: skip
from prior.codec import CodecConfig, HandCodec, NormStats, swap_sides
from prior.denoiser import DenoiserConfig, HandDenoiser
from prior.diffusion import DiffusionConfig, GaussianDiffusion
from prior.distributed import DistContext
from prior.ema import EMA
from prior.hands import ManoPair, TwoHands

__all__ = ["TrainConfig", "EncodedData", "encode_dataset", "training_step", "evaluate_loss", "train"]

log = logging.getLogger(__name__)
# Keys that may change between a run and its resumption (they do not affect a step's math).
RESUMABLE_KEYS = ("epochs", "max_steps", "checkpoint_every", "log_every")


@dataclass
class TrainConfig:
    """Training options; defaults reproduce InterHandGen (Adam 1e-3, batch 256, 80 epochs).

    ``cond_drop_prob`` additionally trains the other hand with the null condition (0 = the
    original, whose only unconditional branch is the anchor's, so CFG's unconditional
    rotation/translation come from an untrained head). ``ema_rate`` 0 = EMA off (the original had none).
    ``lr_decay_every`` is in epochs: ``lr * gamma^(epoch // every)``. ``batch_size`` is the global
    batch (split across ranks). ``val_size`` samples are held out for the denoising loss.
    """

    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    batch_size: int = 256
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_decay_every: int = 20
    lr_gamma: float = 0.9
    grad_clip: float = 4.0
    cond_drop_prob: float = 0.0
    swap_prob: float = 0.5
    ema_rate: float = 0.999
    epochs: int = 80
    max_steps: int | None = None
    seed: int = 0
    val_size: int = 0
    checkpoint_every: int = 1000
    log_every: int = 50


def _seed(*parts: object) -> int:
    """Stable 63-bit seed from a tuple (no Python hash randomisation)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def _generator(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*parts))


@dataclass
class EncodedData:
    """Raw (un-normalised) vectors of a dataset in both orientations.

    plain: (N, 2, 64) ``[anchor, other]`` with the left hand as anchor.
    mirrored: (N, 2, 64) the same pairs mirrored (the right hand becomes the left anchor).
    """

    plain: Tensor
    mirrored: Tensor

    def __len__(self) -> int:
        return self.plain.shape[0]

    def select(self, idx: Tensor, swap: Tensor) -> tuple[Tensor, Tensor]:
        """Raw (anchor, other), each (B, 64), for rows ``idx``; mirrored where ``swap``."""
        x = torch.where(swap[:, None, None], self.mirrored[idx], self.plain[idx])
        return x[:, 0], x[:, 1]


@torch.no_grad()
def encode_dataset(hands: TwoHands, codec: HandCodec, mano: ManoPair, chunk: int = 4096) -> EncodedData:
    """Encode every pair in both orientations (done once, so MANO is not in the training loop)."""
    plain, mirrored = [], []
    flip = torch.ones(chunk, dtype=torch.bool)
    for i in range(0, hands.batch_size, chunk):
        h = hands[i : i + chunk]
        plain.append(torch.stack(codec.encode_raw(h, mano), dim=1))
        mirrored.append(torch.stack(codec.encode_raw(swap_sides(h, flip[: h.batch_size]), mano), 1))
    return EncodedData(torch.cat(plain), torch.cat(mirrored))


def training_step(
    model: Callable[[Tensor, Tensor, Tensor], Tensor],
    diffusion: GaussianDiffusion,
    anchor: Tensor,
    other: Tensor,
    anchor_mask: Tensor,
    t: Tensor,
    noise: Tensor,
    drop: Tensor,
) -> dict[str, Tensor]:
    """Loss of one batch (deterministic given its inputs).

    Args:
        model: the denoiser (possibly DDP-wrapped).
        anchor, other: (B, 64) normalised clean vectors.
        anchor_mask: (64,) weights of the anchor's dims (``codec.anchor_loss_mask()``).
        t: (B,) long timesteps shared by both hands.
        noise: (2, B, 64) standard normal noise for the anchor and the other hand.
        drop: (B,) bool, True where the other hand's condition is replaced by the null one.
    Returns:
        {"loss", "loss_anchor", "loss_other"} scalars.
    """
    b = anchor.shape[0]
    # Condition of the other hand: the clean anchor vector, or null where dropped.
    cond_other = torch.where(drop[:, None], torch.zeros_like(anchor), anchor)
    # One forward of 2B: [anchor | null ; other | anchor].
    weight = torch.cat([anchor_mask.expand(b, -1), torch.ones_like(other)])
    per_sample = diffusion.training_loss(
        model,
        torch.cat([anchor, other]),
        torch.cat([torch.zeros_like(anchor), cond_other]),
        torch.cat([t, t]),
        noise.reshape(2 * b, -1),
        weight,
    )
    loss_anchor, loss_other = per_sample[:b].mean(), per_sample[b:].mean()
    return {"loss": loss_anchor + loss_other, "loss_anchor": loss_anchor, "loss_other": loss_other}


def _draw(cfg: TrainConfig, diffusion: GaussianDiffusion, b: int, step: int) -> dict[str, Tensor]:
    """Per-step randomness for the GLOBAL batch: t, noise, swap, condition dropout."""
    g = _generator(cfg.seed, "step", step)
    return {
        "t": diffusion.antithetic_t(b, g),
        "noise": torch.randn(2, b, 64, generator=g),
        "swap": torch.rand(b, generator=g) < cfg.swap_prob,
        "drop": torch.rand(b, generator=g) < cfg.cond_drop_prob,
    }


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    diffusion: GaussianDiffusion,
    codec: HandCodec,
    data: EncodedData,
    seed: int = 0,
    chunk: int = 1024,
) -> dict[str, float]:
    """Denoising loss of a held-out set, both orientations, fixed t/noise (eval mode)."""
    was = model.training
    model.eval()
    sums = {"loss": 0.0, "loss_anchor": 0.0, "loss_other": 0.0}
    n = len(data)
    mask = codec.anchor_loss_mask()
    dev = mask.device
    for orient in (False, True):
        g = _generator(seed, "eval", orient)
        for i in range(0, n, chunk):
            idx = torch.arange(i, min(i + chunk, n))
            b = len(idx)
            a, o = codec.normalize(*data.select(idx, torch.full((b,), orient)))
            out = training_step(model, diffusion, a.to(dev), o.to(dev), mask,
                                diffusion.antithetic_t(b, g).to(dev),
                                torch.randn(2, b, 64, generator=g).to(dev),
                                torch.zeros(b, dtype=torch.bool, device=dev))  # fmt: skip
            for k in sums:
                sums[k] += float(out[k]) * b
    model.train(was)
    return {k: v / (2 * n) for k, v in sums.items()}


def _hands_digest(hands: TwoHands) -> str:
    h = hashlib.sha256()
    for v in hands.as_numpy().values():
        h.update(v.astype("float32").tobytes())
    return h.hexdigest()[:16]


def _check_resume(path: Path, saved: dict, cfg: TrainConfig, digest: str, hand_model: str) -> None:
    now, then = to_dict(cfg), dict(saved["config"])
    for k in RESUMABLE_KEYS:
        now.pop(k, None)
        then.pop(k, None)
    if now != then:
        diff = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
        raise CheckpointError(f"{path}: cannot resume, config differs in {diff}")
    if saved["data_digest"] != digest or saved["hand_model"] != hand_model:
        raise CheckpointError(f"{path}: cannot resume, the training data or hand model differ")


def _param_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for v in model.state_dict().values():
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _fit_stats(data: EncodedData, cfg: TrainConfig) -> NormStats:
    """Stats of the orientation mix the network sees (plain, mirrored or both)."""
    parts = ([data.plain] if cfg.swap_prob < 1 else []) + ([data.mirrored] if cfg.swap_prob > 0 else [])
    x = torch.cat(parts)
    return NormStats.fit(x[:, 0], x[:, 1], cfg.codec.norm)


def train(
    cfg: TrainConfig,
    hands: TwoHands,
    mano: ManoPair,
    out_dir: Path | str,
    device: torch.device | str = "cpu",
    dist: DistContext | None = None,
    resume: bool = False,
    hook: Callable[[int, dict[str, Tensor]], None] | None = None,
    progress: bool = True,
) -> Path:
    """Train the prior on ``hands`` and export it.

    Writes into ``out_dir`` (main process only, all atomically): ``train_state.pt`` (model, EMA,
    optimiser, step, history; every ``checkpoint_every`` steps), ``prior.pt`` (the exported
    prior with EMA weights), ``history.json`` and, at the end, ``train_summary.json``.

    Args:
        cfg: training options.
        hands: the training pairs, TwoHands (N) in any frame (the codec makes them relative).
        mano: hand model (defines the PCA basis and the middle MCP).
        out_dir: output folder.
        device: training device of this process.
        dist: rank context (single process when None).
        resume: continue from ``out_dir/train_state.pt`` if it exists.
        hook: called as ``hook(step, losses)`` after every step (tests, monitoring).
        progress: show a tqdm bar on the main process.
    Returns:
        Path of the exported prior.
    """
    from tqdm import tqdm  # noqa: PLC0415

    dist = dist or DistContext()
    device = torch.device(device)
    out_dir = Path(out_dir)
    state_path, prior_path = out_dir / "train_state.pt", out_dir / "prior.pt"
    n = hands.batch_size
    if not 0 <= cfg.val_size < n:
        raise ValueError(f"val_size {cfg.val_size} must be in [0, {n}) for {n} training pairs")
    # Held-out split, then encode both orientations once.
    split = torch.randperm(n, generator=_generator(cfg.seed, "split"))
    codec = HandCodec(cfg.codec)
    encoded = encode_dataset(hands.to(mano.faces.device), codec, mano)
    train_data = EncodedData(encoded.plain[split[cfg.val_size :]].cpu(),
                             encoded.mirrored[split[cfg.val_size :]].cpu())  # fmt: skip
    val_data = EncodedData(encoded.plain[split[: cfg.val_size]].cpu(),
                           encoded.mirrored[split[: cfg.val_size]].cpu())  # fmt: skip
    steps_per_epoch = len(train_data) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_data)} training pairs are fewer than one batch ({cfg.batch_size})")
    total = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
    codec.set_stats(_fit_stats(train_data, cfg))
    codec.to(device)
    diffusion = GaussianDiffusion(cfg.diffusion).to(device)
    digest = _hands_digest(hands)
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(_seed(cfg.seed, "init"))
        model = HandDenoiser(cfg.denoiser).to(device)
        export = HandDenoiser(cfg.denoiser).to(device).eval()
        ema = EMA(model, cfg.ema_rate)
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        opt = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        step, history = 0, []
        if state_path.exists():
            if not resume:
                raise CheckpointError(f"{state_path}: a training state exists; resume or use another out_dir")
            saved = load_checkpoint(state_path, TRAIN_KIND, device)
            _check_resume(state_path, saved, cfg, digest, mano.model_name)
            model.load_state_dict(saved["model"])
            ema.load_state_dict(saved["ema"])
            opt.load_state_dict(saved["optimizer"])
            codec.load_state_dict(saved["codec"])
            step, history = int(saved["step"]), list(saved["history"])
            log.info("resumed from %s at step %d", state_path, step)
        elif resume:
            log.info("no training state in %s: starting from scratch", out_dir)
        wrapped = dist.wrap(model, device)
        local = dist.local_slice(cfg.batch_size)
        mask = codec.anchor_loss_mask()
        prior = Prior(export, diffusion, codec, mano.model_name)

        def checkpoint() -> None:
            ema.copy_to(export)
            if len(val_data):
                history.append({"step": step, **{f"val_{k}": v for k, v in
                                evaluate_loss(export, diffusion, codec, val_data, cfg.seed).items()}})  # fmt: skip
            save_checkpoint(state_path, {
                "kind": TRAIN_KIND, "format_version": 1, "step": step, "config": to_dict(cfg),
                "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                "codec": codec.state_dict(), "history": history, "data_digest": digest,
                "hand_model": mano.model_name,
            })  # fmt: skip
            save_prior(prior_path, prior, step, to_dict(cfg))
            write_json_atomic(out_dir / "history.json", history)

        bar = tqdm(total=total, initial=step, disable=not (progress and dist.is_main), desc="prior",
                   mininterval=2.0)
        running = torch.zeros(3, dtype=torch.float64)
        count, t_start, start_step = 0, time.perf_counter(), step
        order, order_epoch = None, -1
        while step < total:
            epoch, pos = divmod(step, steps_per_epoch)
            if epoch != order_epoch:  # batch order is a function of (seed, epoch)
                order = torch.randperm(len(train_data), generator=_generator(cfg.seed, "epoch", epoch))
                order_epoch = epoch
            idx = order[pos * cfg.batch_size : (pos + 1) * cfg.batch_size][local]
            r = _draw(cfg, diffusion, cfg.batch_size, step)
            # Per-SAMPLE left/right swap with mirroring. The original flips one coin per batch;
            # the mixture is the same 50/50, but every batch now sees both orientations, which
            # lowers gradient variance and removes batch-level correlation.
            anchor_raw, other_raw = train_data.select(idx, r["swap"][local])
            anchor, other = codec.normalize(anchor_raw.to(device), other_raw.to(device))
            lr = cfg.lr * cfg.lr_gamma ** (epoch // cfg.lr_decay_every) if cfg.lr_decay_every > 0 else cfg.lr
            for group in opt.param_groups:
                group["lr"] = lr
            torch.manual_seed(_seed(cfg.seed, "dropout", dist.rank, step))
            out = training_step(wrapped, diffusion, anchor, other, mask, r["t"][local].to(device),
                                r["noise"][:, local].to(device), r["drop"][local].to(device))  # fmt: skip
            if not torch.isfinite(out["loss"]):
                raise FloatingPointError(f"non-finite training loss at step {step}")
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            ema.update(model, step)
            step += 1
            running += torch.stack([out[k].detach().cpu().double() for k in
                                    ("loss", "loss_anchor", "loss_other")])  # fmt: skip
            count += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == total:
                mean = dist.all_reduce_mean(running / count)
                history.append({"step": step, "epoch": epoch, "lr": lr, "loss": float(mean[0]),
                                "loss_anchor": float(mean[1]), "loss_other": float(mean[2])})  # fmt: skip
                bar.set_postfix(loss=f"{float(mean[0]):.4f}")
                running.zero_()
                count = 0
            if step % cfg.checkpoint_every == 0 or step == total:
                if dist.is_main:
                    checkpoint()
                dist.barrier()
            if hook is not None:
                hook(step, out)
        bar.close()
    wall = time.perf_counter() - t_start
    digests = dist.gather_objects(_param_digest(model))
    if dist.is_main:
        last = [h for h in history if "loss" in h]
        vals = [h for h in history if "val_loss" in h]
        write_json_atomic(out_dir / "train_summary.json", {
            "steps": step, "steps_this_run": step - start_step, "wall_s_this_run": round(wall, 2),
            "world_size": dist.world_size, "train_pairs": len(train_data), "val_pairs": len(val_data),
            "final": last[-1] if last else None, "final_val": vals[-1] if vals else None,
            "rank_param_digests": digests, "ranks_agree": len(set(digests)) == 1,
            "hand_model": mano.model_name, "data_digest": digest,
        })  # fmt: skip
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks ended with different weights: {digests}")
    return prior_path
