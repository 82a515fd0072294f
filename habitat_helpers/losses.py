"""Contrastive losses.

Symmetric InfoNCE (the CLIP loss; Radford et al. 2021, van den Oord et al. 2018)
---------------------------------------------------------------------------------
For a batch of ``n`` pairs ``(a_i, b_i)`` (rows of two ``n x d`` tensors), with
``â = a / ||a||`` and ``b̂ = b / ||b||`` and temperature ``τ``::

    logits_ij = â_i · b̂_j / τ
    L_a→b = -(1/n) Σ_i log( exp(logits_ii) / Σ_j exp(logits_ij) )     (rows)
    L_b→a = -(1/n) Σ_j log( exp(logits_jj) / Σ_i exp(logits_ij) )     (columns)
    L     = (L_a→b + L_b→a) / 2

Pair ``i`` is the positive of row ``i``; the other ``n - 1`` items of the batch are its
negatives. A small ``τ`` sharpens the softmax.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE of paired embeddings ``a``, ``b`` (``n x d`` each); see the module docstring."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must be n x d tensors of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    targets = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


class LearnableTemperature(nn.Module):
    """A temperature learned through its logarithm, initialised at ``init`` (0.07, as in CLIP).

    The value is clamped to ``[min_value, max_value]`` so the logits cannot blow up
    (CLIP clamps its logit scale at 100, i.e. ``τ >= 0.01``).
    """

    def __init__(self, init: float = 0.07, min_value: float = 0.01, max_value: float = 1.0):
        super().__init__()
        if not min_value <= init <= max_value:
            raise ValueError(f"init {init} must lie in [{min_value}, {max_value}]")
        self.log_tau = nn.Parameter(torch.tensor(math.log(init)))
        self.min_value, self.max_value = min_value, max_value

    def forward(self) -> torch.Tensor:
        return self.log_tau.exp().clamp(self.min_value, self.max_value)
