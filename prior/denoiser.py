"""The x0-predicting two-hand denoiser (InterHandGen's ``TwoHandDiff``, attention fixed).

The network knows nothing about hands beyond the vector width (64) and nothing about the noise
schedule: it maps ``(x_t, t, cond)`` to a prediction of the clean vector ``x0``. A null
condition is a zero vector; condition dropout is done by the training step, never here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["DenoiserConfig", "HandDenoiser", "timestep_embedding"]


@dataclass
class DenoiserConfig:
    """Sizes of :class:`HandDenoiser`; defaults are InterHandGen's (75,461,984 parameters).

    Attributes:
        dim: width of the hand vector.
        hidden: MLP width (the original's ``hid_dim`` 2056, sic).
        emb: embedding width and transformer ``d_model``.
        layers: number of MLP layers.
        skips: MLP layers that also receive the input projection (``init``).
        heads: attention heads.
        transformer_layers: transformer encoder layers over the 3 tokens.
        ff_dim: transformer feed-forward width (PyTorch's default, as in the original).
        attn_dropout: transformer dropout (PyTorch's default 0.1, as in the original).
        attention_over_batch_quirk: reproduce the original's ``batch_first=False`` bug, where
            each token type attends over all samples of the mini-batch. Off: attention runs over
            the 3 tokens of each sample (what the paper describes).
    """

    dim: int = 64
    hidden: int = 2056
    emb: int = 512
    layers: int = 7
    skips: tuple[int, ...] = (1, 3, 5, 6)
    heads: int = 4
    transformer_layers: int = 2
    ff_dim: int = 2048
    attn_dropout: float = 0.1
    attention_over_batch_quirk: bool = False

    def __post_init__(self) -> None:
        if self.emb % 2 or self.emb % self.heads:
            raise ValueError(f"emb={self.emb} must be even and divisible by heads={self.heads}")
        bad = [s for s in self.skips if not 0 <= s < self.layers]
        if bad:
            raise ValueError(f"skips {bad} outside 0..{self.layers - 1}")


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """DDPM/fairseq sinusoidal embedding ``[sin, cos]``.

    Args:
        t: (B,) timesteps (integer or float).
        dim: even embedding width.
    Returns:
        (B, dim) embedding with frequencies ``exp(-k ln(10000) / (dim/2 - 1))``.
    """
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1))
    )
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def _embedder(d_in: int, hidden: int, emb: int) -> nn.Sequential:
    """``Lin(hidden -> emb)(swish(Lin(d_in -> hidden)(.)))``."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, emb))


class HandDenoiser(nn.Module):
    """``f(x_t, t, cond) -> x0_hat`` (InterHandGen ``TwoHandDiff``).

    Three embeddings (time, condition, input) form 3 tokens that go through a small transformer;
    its flattened output starts a skip-connected MLP whose every layer also sees the time and
    condition embeddings.
    """

    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h, e, d = cfg.hidden, cfg.emb, cfg.dim
        self.temb = _embedder(e, h, e)
        self.cemb = _embedder(d, h, e)
        self.iemb = _embedder(d, h, e)
        layer = nn.TransformerEncoderLayer(
            d_model=e,
            nhead=cfg.heads,
            dim_feedforward=cfg.ff_dim,
            dropout=cfg.attn_dropout,
            batch_first=not cfg.attention_over_batch_quirk,
        )
        self.transformer = nn.TransformerEncoder(
            layer, num_layers=cfg.transformer_layers, enable_nested_tensor=False
        )
        self.trans_out = nn.Linear(3 * e, h)
        self.fc_input = nn.Linear(d, h)
        self.mlp = nn.ModuleList(
            nn.Linear(h + (h if i in cfg.skips else 0) + 2 * e, h) for i in range(cfg.layers)
        )
        self.fc_output = nn.Linear(h, d)

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """Predict the clean vector.

        Args:
            x_t: (B, dim) noisy normalised vectors.
            t: (B,) timesteps.
            cond: (B, dim) condition (zeros = null condition).
        Returns:
            (B, dim) prediction of x0.
        """
        if x_t.dim() != 2 or x_t.shape[1] != self.cfg.dim or cond.shape != x_t.shape:
            raise ValueError(
                f"x_t and cond must be (B, {self.cfg.dim}), got {tuple(x_t.shape)} and "
                f"{tuple(cond.shape)}"
            )
        if t.shape != x_t.shape[:1]:
            raise ValueError(f"t must be (B,) = ({x_t.shape[0]},), got {tuple(t.shape)}")
        # Time, condition and input embeddings (each (B, emb)).
        temb = self.temb(timestep_embedding(t, self.cfg.emb))
        cemb = self.cemb(cond)
        iemb = self.iemb(x_t)
        # Self-attention over the 3 tokens of each sample (or over the batch with the quirk).
        tokens = self.transformer(torch.stack([temb, cemb, iemb], dim=1))
        out = self.trans_out(tokens.flatten(1))
        # Skip-connected MLP conditioned on time and condition at every layer.
        init = self.fc_input(x_t)
        for i, lin in enumerate(self.mlp):
            parts = [out, init] if i in self.cfg.skips else [out]
            out = torch.relu(lin(torch.cat([*parts, temb, cemb], dim=1)))
        return self.fc_output(out)
