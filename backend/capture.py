"""One forward pass over a batch that records every layer: the Trace.

The Trace is the one contract between capture and the analyses (ANALYSES.md section 0):

- ``attentions[k-1]``: block k's attention probabilities after softmax, ``(B, heads, N, N)``, prefix included,
  relative position bias included where the model has one;
- ``x_attn[k-1]``: block k's residual stream after attention, ``x + Attn(LN1(x))`` (the input of ``norm2``);
- ``x_out[k]``: block k's output, ``x_out[0]`` the token sequence entering block 1;

all ``(B, N, C)`` with ``N = num_prefix_tokens + H * W`` and patch tokens in row-major order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class Trace:
    attentions: list[Tensor]
    x_attn: list[Tensor]
    x_out: list[Tensor]
    grid: tuple[int, int]
    patch_size: int
    num_prefix_tokens: int
    model_id: str = ""
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len(self.attentions)

    @property
    def num_heads(self) -> int:
        return int(self.attentions[0].shape[1])

    @property
    def batch_size(self) -> int:
        return int(self.x_out[0].shape[0])

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def patch_tokens(self, state: Tensor) -> Tensor:
        """Drop the prefix tokens (CLS, registers) of a ``(B, N, C)`` state."""
        return state[:, self.num_prefix_tokens :]
