"""Training recipe of the feature extractor (:mod:`eval.features`), so FID/KID have a provenance.

Data: synthetic two-hand interactions (:class:`datasets.synthetic.SyntheticGenerator`, seeded)
through the hand model; each pair is mirrored (sides swapped) with probability 0.5, the 50/50
mixture the prior is trained on, and brought to the anchor frame by :func:`eval.features.to_points`
(canonical=False, the same path the evaluation uses).

Targets (multi-task, so the features see both hand shape/pose and the interaction):

* regression of the pair's 119 raw parameters of :mod:`prior.codec` minus its constant slots
  (anchor: 45 pose PCA + 10 betas; other hand: 45 + 10 + 6D relative rotation + relative
  translation at the middle MCPs), each standardised by the training-set mean/std, MSE;
* classification of the generator's interaction type, cross-entropy (weight ``class_weight``).

Adam, cosine learning rate, fixed epochs, deterministic given the seeds.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional as F

from datasets.synthetic import INTERACTIONS, SyntheticGenerator, random_two_hands
from eval.features import PALM_JOINTS, FeatureNetConfig, TwoHandPointNet, to_points
from prior.codec import HandCodec, swap_sides
from prior.hands import LEFT, ManoPair, TwoHands

__all__ = ["FeatureTrainConfig", "FeatureData", "make_feature_data", "train_feature_net"]

log = logging.getLogger(__name__)
KINDS = tuple(INTERACTIONS)


@dataclass
class FeatureTrainConfig:
    """Recipe of the feature extractor (defaults = ``checkpoints/features_default.pt``)."""

    net: FeatureNetConfig = field(default_factory=FeatureNetConfig)
    n_train: int = 5000
    n_val: int = 1000
    data_seed: int = 1234
    mirror_prob: float = 0.5
    gen_batch: int = 500
    epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    class_weight: float = 0.5
    seed: int = 0


@dataclass
class FeatureData:
    """Network inputs and targets.

    points: (N, 2K, 5). params: (N, 119) raw (un-standardised). kinds: (N,) long.
    """

    points: Tensor
    params: Tensor
    kinds: Tensor


def rest_geometry(mano: ManoPair) -> tuple[Tensor, Tensor]:
    """Rest left hand (mean pose, zero shape, identity rotation): verts (778, 3), palm (6, 3).

    The palm joints are relative to the middle MCP (the anchor origin).
    """
    with torch.no_grad():
        m = mano(TwoHands.zeros(1))
    mcp = m.middle_mcp()[0, LEFT]
    return m.verts[0, LEFT] - mcp, m.joints[0, LEFT, list(PALM_JOINTS)] - mcp


def pair_params(hands: TwoHands, mano: ManoPair) -> Tensor:
    """(B, 119) raw codec parameters without the anchor's constant rotation/translation slots."""
    anchor, other = HandCodec().encode_raw(hands, mano)
    return torch.cat([anchor[:, :55], other], dim=1)


def make_feature_data(
    mano: ManoPair, net: TwoHandPointNet, n: int, seed: int, mirror_prob: float, batch: int = 500
) -> FeatureData:
    """Generate ``n`` synthetic pairs, mirror some, and build inputs and targets.

    Args:
        mano: hand model. net: gives the vertex subset. n: pairs. seed: data seed.
        mirror_prob: chance of swapping the sides by mirroring. batch: generator batch.
    """
    g = torch.Generator().manual_seed(seed)
    gen = SyntheticGenerator(mano)
    pts, params, kinds = [], [], []
    have = 0
    while have < n:
        hands, names = random_two_hands(min(batch, n - have), g, synth=gen)
        swap = torch.rand(len(names), generator=g) < mirror_prob
        hands = swap_sides(hands, swap)
        with torch.no_grad():
            meshes = mano(hands)
            pts.append(to_points(meshes, net, canonical=False))
            params.append(pair_params(hands, mano))
        kinds.append(torch.tensor([KINDS.index(k) for k in names]))
        have += len(names)
        log.info("feature data: %d / %d pairs", have, n)
    return FeatureData(torch.cat(pts)[:n], torch.cat(params)[:n], torch.cat(kinds)[:n])


def _losses(net: TwoHandPointNet, data: FeatureData, mean: Tensor, std: Tensor,
            class_weight: float) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    pred, logits, _ = net(data.points)
    reg = F.mse_loss(pred, (data.params - mean) / std)
    cls = F.cross_entropy(logits, data.kinds)
    return reg + class_weight * cls, reg, cls


def _evaluate(net: TwoHandPointNet, data: FeatureData, mean: Tensor, std: Tensor,
              cfg: FeatureTrainConfig) -> dict[str, float]:  # fmt: skip
    net.eval()
    totals = torch.zeros(4)
    with torch.no_grad():
        for s in range(0, data.points.shape[0], 512):
            sub = FeatureData(data.points[s : s + 512], data.params[s : s + 512], data.kinds[s : s + 512])
            loss, reg, cls = _losses(net, sub, mean, std, cfg.class_weight)
            acc = (net(sub.points)[1].argmax(1) == sub.kinds).float().mean()
            totals += torch.stack([loss, reg, cls, acc]) * sub.points.shape[0]
    totals /= data.points.shape[0]
    return dict(zip(("loss", "reg_mse", "class_ce", "class_acc"), totals.tolist()))


def train_feature_net(
    cfg: FeatureTrainConfig, mano: ManoPair
) -> tuple[TwoHandPointNet, dict[str, object]]:
    """Generate data and train the extractor; returns the net (eval mode) and its metadata."""
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # seeded weight init, global RNG left untouched
        torch.manual_seed(cfg.seed)
        net = TwoHandPointNet(cfg.net)
    net.set_geometry(*rest_geometry(mano))
    train = make_feature_data(mano, net, cfg.n_train, cfg.data_seed, cfg.mirror_prob, cfg.gen_batch)
    val = make_feature_data(mano, net, cfg.n_val, cfg.data_seed + 1, cfg.mirror_prob, cfg.gen_batch)
    t_data = time.perf_counter() - t0
    mean, std = train.params.mean(0), train.params.std(0).clamp_min(1e-6)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(cfg.n_train / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    g = torch.Generator().manual_seed(cfg.seed)
    history = []
    for epoch in range(cfg.epochs):
        net.train()
        perm = torch.randperm(cfg.n_train, generator=g)
        for s in range(0, cfg.n_train, cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            loss, _, _ = _losses(net, FeatureData(train.points[idx], train.params[idx],
                                                  train.kinds[idx]), mean, std, cfg.class_weight)  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        stats = _evaluate(net, val, mean, std, cfg)
        history.append({"epoch": epoch + 1, **stats})
        log.info("epoch %d: val %s", epoch + 1, {k: round(v, 4) for k, v in stats.items()})
    net.eval()
    train_stats = _evaluate(net, train, mean, std, cfg)
    meta: dict[str, object] = {
        "hand_model": mano.model_name,
        "data": f"datasets.synthetic.SyntheticGenerator seed={cfg.data_seed} (val seed="
                f"{cfg.data_seed + 1}), n_train={cfg.n_train}, n_val={cfg.n_val}, "
                f"mirror_prob={cfg.mirror_prob}",  # fmt: skip
        "kinds": list(KINDS),
        "targets": "119 raw codec params (anchor pose45+betas10, other pose45+betas10+rot6d+"
                   "transl) standardised + interaction-type classification",  # fmt: skip
        "train": {k: round(v, 5) for k, v in train_stats.items()},
        "val": {k: round(v, 5) for k, v in history[-1].items() if k != "epoch"},
        "history": history,
        "data_seconds": round(t_data, 1),
        "train_seconds": round(time.perf_counter() - t0 - t_data, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "torch": str(torch.__version__),
    }
    return net, meta
