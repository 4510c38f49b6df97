"""The MLP-Mixer fusion network of the ``mixer`` meta-learner (torch; imported only when used)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class Mixer(nn.Module):
    """One token per store (its embedding projected to ``d``), one Mixer block (token mixing
    over the stores, channel mixing over ``d``), LayerNorm, mean over tokens, MLP head."""

    def __init__(self, groups: Sequence[int], n_classes: int, *, d: int = 64, dropout: float = 0.1):
        super().__init__()
        m = len(groups)
        self.bounds = [int(b) for b in np.cumsum([0, *groups])]
        self.proj = nn.ModuleList(nn.Linear(g, d) for g in groups)
        self.norm1 = nn.LayerNorm(d)
        self.token_mlp = nn.Sequential(nn.Linear(m, 2 * m), nn.GELU(), nn.Linear(2 * m, m))
        self.norm2 = nn.LayerNorm(d)
        self.channel_mlp = nn.Sequential(
            nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d, d)
        )
        self.norm3 = nn.LayerNorm(d)
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(d, d), nn.GELU(), nn.Linear(d, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = torch.stack(
            [p(x[:, a:b]) for p, a, b in zip(self.proj, self.bounds[:-1], self.bounds[1:])], dim=1
        )
        tokens = tokens + self.token_mlp(self.norm1(tokens).transpose(1, 2)).transpose(1, 2)
        tokens = tokens + self.channel_mlp(self.norm2(tokens))
        return self.head(self.norm3(tokens).mean(1))
