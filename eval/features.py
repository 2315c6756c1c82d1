"""Point-cloud feature extractor for the generative metrics (FID/KID/diversity/precision-recall).

InterHandGen embeds both hands' 1556 vertices (x10, i.e. decimetres, plus a one-hot side label)
with a PointNet++ regressor whose training was never released (reference section 7). We keep
its input convention and replace the network by a small PointNet that is cheap on a CPU:

* a fixed vertex subset per hand (deterministic farthest-point sampling of the rest hand, stored
  in the weights), so 10,000 samples embed in seconds and features are deterministic;
* a shared per-point MLP, max + mean pooling, then a 256-D layer whose (pre-activation) output
  is the feature space of the metrics;
* two heads used only for training (see :mod:`eval.train_features`): regression of the pair's
  normalised parameters and classification of the interaction type.

Input frame: InterHandGen's canonical frame, i.e. the anchor (left) hand with identity root
rotation and the origin at its middle MCP, coordinates x10. Meshes in any other frame are
brought there by :func:`to_points` with ``canonical=False`` (a Kabsch fit of the left hand's
palm joints, which move rigidly with the root, to their rest positions).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from prior.hands import LEFT, NUM_VERTS, HandMeshes

__all__ = [
    "FeatureNetConfig", "TwoHandPointNet", "PALM_JOINTS", "SCALE", "FEATURE_KIND",
    "canonicalize", "to_points", "extract_features", "save_features", "load_features",
    "FeatureCheckpointError",
]  # fmt: skip

log = logging.getLogger(__name__)

SCALE = 10.0  # metres -> decimetres, as InterHandGen's preprocess
FEATURE_KIND = "twohand_feature_net"
FORMAT_VERSION = 1
# IH26M indices of the wrist and the first joint of each finger: in MANO these are the root and
# its direct children, so they move rigidly with the root rotation whatever the finger pose.
PALM_JOINTS = (20, 3, 7, 11, 15, 19)


class FeatureCheckpointError(ValueError):
    """A feature-extractor checkpoint cannot be used (one line naming the file)."""


@dataclass
class FeatureNetConfig:
    """Sizes of :class:`TwoHandPointNet`.

    Attributes:
        points_per_hand: vertices kept per hand (fixed farthest-point subset).
        widths: per-point MLP widths (input is 5 channels: xyz + 2-channel side label).
        feat_dim: dimension of the feature space (InterHandGen: 256).
        num_params: regression outputs. num_classes: interaction-type classes.
    """

    points_per_hand: int = 128
    widths: tuple[int, ...] = (64, 128, 128)
    feat_dim: int = 256
    num_params: int = 119
    num_classes: int = 7


def farthest_point_indices(points: Tensor, k: int) -> Tensor:
    """Deterministic farthest-point sampling starting at index 0.

    Args:
        points: (V, 3). k: number of indices (<= V).
    Returns:
        (k,) long indices.
    """
    if k > points.shape[0] or k < 1:
        raise ValueError(f"cannot pick {k} of {points.shape[0]} points")
    idx = torch.zeros(k, dtype=torch.long)
    dist = (points - points[0]).square().sum(-1)
    for i in range(1, k):
        idx[i] = torch.argmax(dist)
        dist = torch.minimum(dist, (points - points[idx[i]]).square().sum(-1))
    return idx


def _kabsch(src: Tensor, dst: Tensor) -> Tensor:
    """Rotation R (B, 3, 3) minimising |R src_i - dst_i| for centred (B, P, 3) point sets."""
    h = src.transpose(1, 2) @ dst  # (B, 3, 3)
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(vt.transpose(1, 2) @ u.transpose(1, 2)))
    diag = torch.ones_like(h[:, 0])
    diag[:, 2] = d
    return vt.transpose(1, 2) @ torch.diag_embed(diag) @ u.transpose(1, 2)


def canonicalize(meshes: HandMeshes, rest_palm: Tensor | None, canonical: bool) -> Tensor:
    """Vertices in the anchor frame (origin at the left middle MCP), metres.

    Args:
        meshes: HandMeshes (B).
        rest_palm: (6, 3) the left hand's :data:`PALM_JOINTS` at identity root rotation, relative
            to its middle MCP; needed when ``canonical`` is False.
        canonical: True when the meshes are already in the anchor frame (e.g. prior samples):
            only the translation is removed.
    Returns:
        (B, 2, 778, 3) vertices.
    """
    origin = meshes.middle_mcp()[:, LEFT]  # (B, 3)
    verts = meshes.verts - origin[:, None, None]
    if canonical:
        return verts
    if rest_palm is None:
        raise ValueError("canonicalize: rest_palm is required when canonical=False")
    palm = meshes.joints[:, LEFT, list(PALM_JOINTS)] - origin[:, None]  # (B, 6, 3)
    rest = rest_palm.to(palm).expand_as(palm)
    # palm = R rest  =>  canonical = R^T (x - origin); fit on centred sets.
    rot = _kabsch(rest - rest.mean(1, keepdim=True), palm - palm.mean(1, keepdim=True))
    return verts @ rot[:, None]  # row vectors: (R^T x)^T = x^T R


class TwoHandPointNet(nn.Module):
    """PointNet over both hands' vertex subsets with a side label.

    Buffers ``vertex_ids`` (K,) and ``rest_palm`` (6, 3) travel with the weights so that a
    checkpoint fully defines the feature map.
    """

    def __init__(self, cfg: FeatureNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or FeatureNetConfig()
        layers: list[nn.Module] = []
        width = 5
        for w in cfg.widths:
            layers += [nn.Linear(width, w), nn.ReLU()]
            width = w
        self.point_mlp = nn.Sequential(*layers[:-1])  # last layer linear before pooling
        self.embed = nn.Sequential(nn.Linear(2 * width, 512), nn.ReLU(), nn.Linear(512, cfg.feat_dim))
        self.head_params = nn.Sequential(nn.ReLU(), nn.Linear(cfg.feat_dim, cfg.num_params))
        self.head_class = nn.Sequential(nn.ReLU(), nn.Linear(cfg.feat_dim, cfg.num_classes))
        self.register_buffer("vertex_ids", torch.arange(cfg.points_per_hand))
        self.register_buffer("rest_palm", torch.zeros(len(PALM_JOINTS), 3))

    def set_geometry(self, rest_verts: Tensor, rest_palm: Tensor) -> None:
        """Fix the vertex subset (FPS of one rest hand (778, 3)) and the rest palm (6, 3)."""
        self.vertex_ids.copy_(farthest_point_indices(rest_verts.float().cpu(), self.cfg.points_per_hand))
        self.rest_palm.copy_(rest_palm.float())

    def features(self, points: Tensor) -> Tensor:
        """(B, N, 5) points -> (B, feat_dim) features (pre-activation)."""
        h = self.point_mlp(points)
        return self.embed(torch.cat([h.amax(1), h.mean(1)], dim=-1))

    def forward(self, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, N, 5) -> (params (B, num_params), logits (B, num_classes), feats (B, feat_dim))."""
        f = self.features(points)
        return self.head_params(f), self.head_class(f), f


def to_points(meshes: HandMeshes, net: TwoHandPointNet, canonical: bool = False) -> Tensor:
    """Network input: the subset of both hands, anchor frame x10, side label [0,1] left, [1,0] right.

    Args:
        meshes: HandMeshes (B).
        net: gives the vertex subset and rest palm.
        canonical: see :func:`canonicalize`.
    Returns:
        (B, 2K, 5) float32, the left hand's K points first.
    """
    ids = net.vertex_ids.to(meshes.verts.device)
    verts = canonicalize(meshes, net.rest_palm, canonical)[:, :, ids] * SCALE  # (B, 2, K, 3)
    b, k = verts.shape[0], ids.shape[0]
    label = verts.new_tensor([[0.0, 1.0], [1.0, 0.0]])[None, :, None].expand(b, 2, k, 2)
    return torch.cat([verts, label], dim=-1).reshape(b, 2 * k, 5).float()


def extract_features(
    net: TwoHandPointNet, meshes: HandMeshes | Tensor, batch: int = 1024, canonical: bool = False
) -> Tensor:
    """Features of many samples, deterministic (no random sampling anywhere).

    Args:
        net: the extractor (put in eval mode here).
        meshes: HandMeshes (N), or already-built points (N, 2K, 5) from :func:`to_points`.
        batch: samples per forward.
        canonical: see :func:`canonicalize` (ignored for points).
    Returns:
        (N, feat_dim) float32 on the CPU.
    """
    net.eval()
    n = meshes.batch_size if isinstance(meshes, HandMeshes) else meshes.shape[0]
    out = []
    with torch.no_grad():
        for s in range(0, n, batch):
            chunk = meshes[s : s + batch]
            pts = to_points(chunk, net, canonical) if isinstance(chunk, HandMeshes) else chunk
            out.append(net.features(pts.to(next(net.parameters()).device)).cpu())
    return torch.cat(out) if out else torch.zeros(0, net.cfg.feat_dim)


def save_features(path: Path | str, net: TwoHandPointNet, metadata: dict[str, Any]) -> None:
    """Write weights + config + plain metadata (loadable with ``weights_only=True``), atomically."""
    from prior.atomic import atomic_path  # noqa: PLC0415

    cfg = asdict(net.cfg)
    cfg["widths"] = list(cfg["widths"])
    # Plain JSON types only, so that the file loads with weights_only=True.
    metadata = json.loads(json.dumps(metadata, default=str))
    with atomic_path(path) as tmp:
        torch.save({"kind": FEATURE_KIND, "format_version": FORMAT_VERSION, "config": cfg,
                    "state_dict": net.state_dict(), "metadata": metadata}, tmp)  # fmt: skip


def load_features(path: Path | str, device: torch.device | str = "cpu") -> tuple[TwoHandPointNet, dict]:
    """Load an extractor saved by :func:`save_features` (eval mode).

    Returns:
        ``(net, metadata)``.
    Raises:
        FeatureCheckpointError: one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureCheckpointError(f"{path}: feature-extractor checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- re-raised as one line naming the file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FeatureCheckpointError(f"{path}: not a readable checkpoint: {first}") from e
    if not isinstance(obj, dict) or obj.get("kind") != FEATURE_KIND:
        raise FeatureCheckpointError(f"{path}: not a {FEATURE_KIND} checkpoint")
    if obj.get("format_version") != FORMAT_VERSION:
        raise FeatureCheckpointError(f"{path}: unsupported format version {obj.get('format_version')}")
    try:
        cfg_d = dict(obj["config"])
        cfg_d["widths"] = tuple(cfg_d["widths"])
        net = TwoHandPointNet(FeatureNetConfig(**cfg_d))
        net.load_state_dict(obj["state_dict"], strict=True)
    except (KeyError, TypeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise FeatureCheckpointError(f"{path}: weights do not match their config: {first}") from e
    if net.vertex_ids.max() >= NUM_VERTS:
        raise FeatureCheckpointError(f"{path}: vertex subset out of range")
    net.eval()
    return net.to(device), dict(obj.get("metadata", {}))


def feature_metadata_summary(meta: dict[str, Any]) -> str:
    """One line describing an extractor's provenance (for reports)."""
    return (f"hand_model={meta.get('hand_model')}, data={meta.get('data')}, "
            f"val_loss={meta.get('val_loss')}, train_s={meta.get('train_seconds')}")  # fmt: skip

