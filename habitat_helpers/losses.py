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

Spatial multi-positive InfoNCE (this project's loss)
----------------------------------------------------
A batch holds ``N`` *items*: one embedding ``z_i`` of one site in one modality (photo,
satellite, GPS …), with the site's id ``s_i``, coordinates and modality ``m_i``. For an
anchor ``i``:

* candidates ``C(i)``: the items ``j != i`` whose modality pair ``(m_i, m_j)`` is contrasted
  (by default every pair of different modalities, as in CLIP);
* positives ``P(i) ⊆ C(i)``: candidates of the same site, plus (when ``r > 0``) candidates
  within ``r`` km of the anchor (haversine);
* every other candidate is a negative. Items of the anchor's own site are always positives
  or not candidates at all, so they are never negatives (false-negative masking).

With weights ``w_ip`` over the positives (uniform, or soft ``∝ exp(-d_ip / ℓ)`` when a
length scale ``ℓ`` is given; same site: ``d = 0``) and ``Σ_p w_ip = 1``::

    L_i = - Σ_{p ∈ P(i)} w_ip · log( exp(ẑ_i·ẑ_p / τ) / Σ_{j ∈ C(i)} exp(ẑ_i·ẑ_j / τ) )
    L   = mean of L_i over the anchors that have at least one positive

This is the "outside" multi-positive form of supervised contrastive learning (Khosla et
al. 2020), with positives defined by distance instead of labels. Every item is an anchor,
so the loss is symmetric. With two modalities, one item per site and ``r = 0`` each anchor
has exactly one positive and ``L`` equals :func:`info_nce` of the two modalities.

What a neighbour within ``r`` is (``positives``; the first is the default above):

``"radius"``
    a positive, weighted like the anchor's own site;
``"own_half"``
    a positive, but the anchor's own-site items keep half of the weight between them (all of
    it when no neighbour is in the batch; the neighbours share all of it when no own-site item
    is): the anchor still learns its own place first;
``"site"``
    a negative like any other item (only the own site is positive; ``r`` then only brings
    neighbours into the batch, as hard negatives);
``"not_negative"``
    neither: removed from the anchor's candidates (false-negative masking only), the own site
    alone is positive.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .spatial import EARTH_RADIUS_KM


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE of paired embeddings ``a``, ``b`` (``n x d`` each); see the module docstring."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must be n x d tensors of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    targets = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def pairwise_haversine_km(lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
    """``N x N`` great-circle distances in km between points given in degrees."""

    lat, lon = torch.deg2rad(lat.double()), torch.deg2rad(lon.double())
    dlat = lat[:, None] - lat[None, :]
    dlon = lon[:, None] - lon[None, :]
    a = torch.sin(dlat / 2) ** 2 + torch.cos(lat)[:, None] * torch.cos(lat)[None, :] * torch.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * torch.arcsin(torch.sqrt(a.clamp(0, 1)))


#: What a neighbour within the radius is for an anchor (module docstring).
POSITIVES = ("radius", "own_half", "site", "not_negative")


def spatial_positive_masks(site: torch.Tensor, modality: torch.Tensor, distance_km: torch.Tensor | None,
                           radius_km: float, pairs: torch.Tensor | None = None, positives: str = "radius"
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate and positive masks (``N x N`` booleans) of :func:`spatial_info_nce`.

    ``site`` and ``modality`` are integer codes per item; ``pairs`` is a ``M x M`` boolean table
    of the modality pairs that are contrasted (default: all pairs of different modalities);
    ``positives`` says what a neighbour within ``radius_km`` is (:data:`POSITIVES`)."""
    if positives not in POSITIVES:
        raise ValueError(f"positives must be one of {', '.join(map(repr, POSITIVES))}, not {positives!r}")
    n = len(site)
    if pairs is None:
        candidate = modality[:, None] != modality[None, :]
    else:
        candidate = pairs[modality[:, None], modality[None, :]]
    candidate = candidate & ~torch.eye(n, dtype=torch.bool, device=site.device)
    positive = site[:, None] == site[None, :]
    if radius_km > 0:
        if distance_km is None:
            raise ValueError("radius_km > 0 needs the items' coordinates")
        near = (distance_km <= radius_km) & ~positive
        if positives in ("radius", "own_half"):
            positive = positive | near
        elif positives == "not_negative":
            candidate = candidate & ~near
    return candidate, positive & candidate


def spatial_info_nce(z: torch.Tensor, site: torch.Tensor, modality: torch.Tensor,
                     lat: torch.Tensor | None = None, lon: torch.Tensor | None = None, *,
                     radius_km: float = 0.0, temperature: float | torch.Tensor = 0.07,
                     soft_scale_km: float | None = None, pairs: torch.Tensor | None = None,
                     positives: str = "radius", reduction: str = "mean") -> torch.Tensor:
    """Spatial multi-positive InfoNCE over a batch of items; see the module docstring.

    Parameters
    ----------
    z
        ``N x d`` embeddings (any modality; L2-normalised here).
    site, modality
        ``N`` integer codes (same site -> same code).
    lat, lon
        ``N`` degrees; needed when ``radius_km > 0`` or ``soft_scale_km`` is set.
    radius_km
        positives also include candidates within this distance (0: same site only).
    soft_scale_km
        weight positives by ``exp(-distance / soft_scale_km)`` instead of equally.
    pairs
        ``M x M`` boolean table of contrasted modality pairs (default: all different pairs).
    positives
        what a neighbour within ``radius_km`` is: ``"radius"``, ``"own_half"``, ``"site"`` or
        ``"not_negative"`` (module docstring).
    reduction
        ``"mean"`` over anchors with positives, or ``"none"`` for the ``N`` per-anchor
        losses (NaN where an anchor has no positive).
    """
    if z.ndim != 2 or not (len(site) == len(modality) == len(z)):
        raise ValueError("z must be N x d with one site and one modality code per row")
    if radius_km < 0:
        raise ValueError("radius_km must be >= 0")
    need_xy = radius_km > 0 or soft_scale_km is not None
    if need_xy and (lat is None or lon is None):
        raise ValueError("radius_km > 0 or soft_scale_km needs the items' coordinates (lat, lon)")
    distance = pairwise_haversine_km(lat, lon).to(z.device) if need_xy else None
    candidate, positive = spatial_positive_masks(site, modality, distance, radius_km, pairs, positives)
    zn = F.normalize(z, dim=1)
    logits = zn @ zn.T / temperature
    logits = logits.masked_fill(~candidate, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    if soft_scale_km is None:
        weight = positive.to(z.dtype)
    else:
        weight = torch.where(positive, torch.exp(-distance / soft_scale_km), 0.0).to(z.dtype)
    if positives == "own_half":
        weight = _own_half(weight, positive & (site[:, None] == site[None, :]))
    total = weight.sum(dim=1)
    has_positive = total > 0
    per_anchor = -(torch.where(positive, log_prob, 0.0) * weight).sum(dim=1) / total.clamp_min(1e-12)
    if reduction == "none":
        return torch.where(has_positive, per_anchor, float("nan"))
    if reduction != "mean":
        raise ValueError("reduction must be 'mean' or 'none'")
    if not has_positive.any():
        return z.sum() * 0.0          # keeps the graph; no positive pair in this batch
    return per_anchor[has_positive].mean()


def _own_half(weight: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """Rescale each row of ``weight`` so that the own-site positives (``own``) hold half of it and
    the neighbours the other half; a row with only one kind keeps it all."""
    own_w = torch.where(own, weight, 0.0)
    near_w = weight - own_w
    own_sum, near_sum = own_w.sum(dim=1, keepdim=True), near_w.sum(dim=1, keepdim=True)
    both = (own_sum > 0) & (near_sum > 0)
    own_share = torch.where(both, 0.5, (own_sum > 0).to(weight.dtype))
    return (own_w * own_share / own_sum.clamp_min(1e-12)
            + near_w * (1 - own_share) / near_sum.clamp_min(1e-12))


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
