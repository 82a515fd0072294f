"""Contrastive alignment: one projection head per modality into a shared space.

Each modality's frozen pre-trained embedding (ground photo, satellite patch, GPS) goes
through its own small MLP head into a ``dim``-dimensional space. A training batch holds
sites; every modality a site has becomes one *item* (every ground view, with photo views as
items, the default). The heads are trained with the spatial multi-positive InfoNCE loss
(:func:`habitat_helpers.losses.spatial_info_nce`): an item's positives are the other items of its
own site; what an item of another site within ``radius_km`` is, is :attr:`AlignConfig.positives`
(by default an ordinary negative, or a positive, or neither); everything else in the batch is a
negative. With ``radius_km = 0`` this is the paired CLIP loss. Batches are built by
:func:`habitat_helpers.spatial.neighbour_batches` so that neighbours share a batch (as positives
or as hard negatives). Labels are never used, so every site, labelled or not, teaches the heads.
The defaults are those that validation blocks chose most often on the demo (book page "When does
alignment pay?", "The alignment settings").

Training keeps the epoch with the best cross-modal retrieval (mean recall@k over the
modality pairs, both directions) on held-out validation blocks (early stopping), can write a
checkpoint after every epoch and resume from it, and gives the same numbers for the same
seed (batch order and dropout are seeded per epoch). Under ``torchrun`` each process embeds
part of every batch and the negatives are gathered across processes.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import cache, datasets, profiles, runtime, spatial
from .datasets import MODALITIES
from .embed import load_site_embeddings, write_atomic
from .encoders import geoclip_output_layer
from .errors import UsageError
from .losses import POSITIVES, LearnableTemperature, spatial_info_nce
from .metrics import retrieval_recall_at_k
from .spatial import neighbour_batches, radius_neighbours


@dataclass
class AlignConfig:
    """Settings of :func:`train_alignment` (saved with every checkpoint)."""

    dim: int = 128
    hidden: int = 512
    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dropout: float = 0.1
    temperature_init: float = 0.07
    learn_temperature: bool = True
    patience: int = 15
    seed: int = 0
    modalities: tuple[str, ...] = ("photo", "satellite", "gps")
    pairs: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # empty: all pairs of modalities
    radius_km: float = 5.0           # spatial positives: items of other sites within this distance (0: paired only)
    #: What a neighbour within radius_km is, one of hh.losses.POSITIVES. With "radius" a positive
    #: like the own site, with "own_half" a positive while the own site keeps half the weight, with
    #: "site" a negative (the default, chosen on validation blocks), with "not_negative" neither.
    positives: str = "site"
    #: With "none" every pair of modalities is contrasted (or ``pairs``). With a modality name
    #: (e.g. "gps") each other modality is contrasted with it only, the hub of the abstract's
    #: authors' code.
    hub: str = "none"
    #: How the several ground photos of a site enter, one of PHOTO_VIEWS. With "mean" the mean of
    #: their embeddings is one item. With "items" (the default, chosen on validation blocks) every
    #: view is an item of its own and the views of one site are positives of each other (photo is
    #: then contrasted with photo too), and a site's aligned photo vector is the mean of its views'
    #: vectors. The views are ``photo_per_view`` and ``photo_site`` of
    #: :func:`habitat_helpers.embed.embed_sites`; without them a site's mean is its one item, as
    #: with "mean".
    photo_views: str = "items"
    #: GeoCLIP's output layer (one per scale), one of LOCATION_LAYERS. With "frozen" the GPS head
    #: reads the GeoCLIP embedding. With "last" that layer is trained with the heads, starting from
    #: GeoCLIP's weights, so the GPS head reads the layer's inputs ``gps_layers``
    #: (:func:`habitat_helpers.embed.location_layer_inputs`).
    location_layers: str = "frozen"
    soft_scale_km: float | None = None   # weight positives by exp(-distance / scale)
    per_anchor: int = 3              # neighbours brought into a batch with each anchor site
    sampler_radius_km: float | None = None   # neighbours for batching (default: radius_km; 0: random batches)
    retrieval_k: int = 10            # early stopping on validation recall@k
    #: Most training sites an epoch draws its batches from, a new random sample each epoch when
    #: the pool is larger (``None``: every site, every epoch). A pool of 400,000 sites then costs
    #: an epoch what 50,000 cost, and early stopping still sees every epoch.
    epoch_sites: int | None = 50_000
    #: Most validation sites early stopping scores (loss and recall@k), one random sample kept for
    #: all epochs (``None``: all). Recall@k ranks every site against every other, so it grows with
    #: the square of the sites; and recall among more candidates is lower, so a sample of fixed
    #: size also keeps the stopping rule's scale the same at every study size.
    val_sites: int | None = 5_000

    def __post_init__(self):
        if self.positives not in POSITIVES:
            raise ValueError(f"positives must be one of {', '.join(map(repr, POSITIVES))}, not {self.positives!r}")
        if self.hub != "none" and self.hub not in self.modalities:
            raise ValueError(f"hub must be 'none' or one of the modalities {list(self.modalities)}, not {self.hub!r}")
        if self.hub != "none" and self.pairs:
            raise ValueError("give hub or pairs, not both")
        if self.photo_views not in PHOTO_VIEWS:
            raise ValueError(f"photo_views must be one of {', '.join(map(repr, PHOTO_VIEWS))}, not {self.photo_views!r}")
        if self.location_layers not in LOCATION_LAYERS:
            raise ValueError(f"location_layers must be one of {', '.join(map(repr, LOCATION_LAYERS))}, "
                             f"not {self.location_layers!r}")
        for name in ("epoch_sites", "val_sites"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 2):
                raise ValueError(f"{name} must be an integer of at least 2 or None, not {value!r}")

    def input_key(self, modality: str) -> str:
        """The entry of the embeddings that the ``modality`` head reads (the modality itself,
        ``photo_per_view`` for photo views as items, ``gps_layers`` for a trainable GeoCLIP layer)."""
        if modality == "photo" and self.photo_views == "items":
            return "photo_per_view"
        if modality == "gps" and self.location_layers == "last":
            return "gps_layers"
        return modality

    def modality_pairs(self) -> list[tuple[str, str]]:
        """The contrasted pairs of different modalities (retrieval is measured on these)."""
        if self.hub != "none":
            return [(m, self.hub) for m in self.modalities if m != self.hub]
        return list(self.pairs) if self.pairs else list(itertools.combinations(self.modalities, 2))

    def pair_table(self, inputs: dict[str, HeadInputs] | None = None) -> torch.Tensor:
        """``M x M`` boolean table of contrasted modality pairs (order of ``modalities``). On the
        diagonal, a head that reads several items per site (photo views as items) contrasts each
        item with its site's other items. Which heads do is read from ``inputs`` (the heads'
        :func:`head_inputs`, which give one item per site when the embeddings have no views);
        without ``inputs``, from the config (:meth:`input_key`)."""
        pos = {m: i for i, m in enumerate(self.modalities)}
        table = torch.zeros(len(pos), len(pos), dtype=torch.bool)
        for a, b in self.modality_pairs():
            table[pos[a], pos[b]] = table[pos[b], pos[a]] = True
        for m, i in pos.items():
            table[i, i] = (inputs[m].site is not None) if inputs is not None else \
                self.input_key(m) == "photo_per_view"
        return table


#: How a site's ground photos enter the alignment (:attr:`AlignConfig.photo_views`).
PHOTO_VIEWS = ("mean", "items")
#: Whether GeoCLIP's output layer is trained with the heads (:attr:`AlignConfig.location_layers`).
LOCATION_LAYERS = ("frozen", "last")


#: Rows read at a time for the heads' standardisation (:func:`column_stats`): the training rows
#: may be a memory map of more photos than fit in memory (:func:`habitat_helpers.embed.read_items`).
STATS_CHUNK = 16_384


def _chunks(x: np.ndarray, rows: np.ndarray | None):
    """``x[rows]`` in pieces of :data:`STATS_CHUNK` rows, rows with NaN left out."""
    rows = np.arange(len(x)) if rows is None else np.asarray(rows)
    for start in range(0, max(len(rows), 1), STATS_CHUNK):
        part = np.asarray(x[rows[start:start + STATS_CHUNK]])
        yield part[~np.isnan(part).any(axis=1)]


def column_stats(chunks) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each column over the rows of ``chunks`` (arrays read one
    after the other, so the rows are never in memory together). A single chunk gives numpy's own
    ``mean`` and ``std``; several are merged exactly (pairwise update of counts, means and sums of
    squared deviations, in float64). NaN when there are no rows."""
    parts, single = [], None
    for chunk in chunks:
        if len(chunk) == 0:
            single = chunk if not parts else single
            continue
        single = chunk if not parts else None
        as64 = chunk.astype(np.float64)
        mu = as64.mean(axis=0)
        parts.append((len(chunk), mu, ((as64 - mu) ** 2).sum(axis=0)))
    if len(parts) <= 1:
        with np.errstate(invalid="ignore", divide="ignore"):
            return single.mean(axis=0), single.std(axis=0)
    n = sum(k for k, _, _ in parts)
    mean = sum(k * mu for k, mu, _ in parts) / n
    m2 = sum(ss + k * (mu - mean) ** 2 for k, mu, ss in parts)
    return mean.astype(np.float32), np.sqrt(m2 / n).astype(np.float32)


class ProjectionHead(nn.Module):
    """Standardise a frozen embedding, then Linear -> GELU -> Dropout -> Linear."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.1):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, out_dim))

    def set_standardisation(self, x: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Standardise with the mean and standard deviation of ``x[rows]`` (every row by default;
        rows with NaN left out), read :data:`STATS_CHUNK` rows at a time."""
        self.use_stats(*column_stats(_chunks(x, rows)))

    def use_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Standardise with these per-column statistics (a small constant keeps the spread above 0)."""
        self.mean.copy_(torch.from_numpy(mean))
        self.std.copy_(torch.from_numpy(std + 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


class LocationLayerHead(nn.Module):
    """GeoCLIP's output layer made trainable, then a :class:`ProjectionHead`.

    GeoCLIP sums the outputs of one linear layer (1024 -> 512) per scale; side by side, the
    three layers are one ``Linear(3 x 1024, 512)``, which starts from GeoCLIP's weights
    (:meth:`start_from`), so that before training this head sees exactly the GeoCLIP embedding."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.1, embedding_dim: int = 512):
        super().__init__()
        self.last = nn.Linear(in_dim, embedding_dim)
        self.head = ProjectionHead(embedding_dim, hidden, out_dim, dropout)

    def start_from(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        with torch.no_grad():
            self.last.weight.copy_(weight)
            self.last.bias.copy_(bias)

    def set_standardisation(self, x: np.ndarray, rows: np.ndarray | None = None) -> None:
        """The inner head's standardisation, on this layer's outputs for ``x[rows]``."""
        with torch.no_grad():
            self.head.use_stats(*column_stats(self.last(torch.from_numpy(c).float()).numpy()
                                              for c in _chunks(x, rows)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last(x))


class AlignmentModel(nn.Module):
    """The projection heads (one per modality) and the shared temperature. ``input_dims`` are
    the widths of what each head reads (:meth:`AlignConfig.input_key`)."""

    def __init__(self, input_dims: dict[str, int], config: AlignConfig):
        super().__init__()
        self.config = config
        self.input_dims = dict(input_dims)
        self.heads = nn.ModuleDict({
            m: (LocationLayerHead if config.input_key(m) == "gps_layers" else ProjectionHead)(
                d, config.hidden, config.dim, config.dropout)
            for m, d in input_dims.items()})
        self.temperature = LearnableTemperature(config.temperature_init)
        self.temperature.log_tau.requires_grad_(config.learn_temperature)

    def forward(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Aligned, L2-normalised embedding of ``x`` from ``modality``."""
        return F.normalize(self.heads[modality](x), dim=1)

    @torch.inference_mode()
    def embed(self, modality: str, x: np.ndarray) -> np.ndarray:
        """Project a NumPy array; rows that are NaN (modality missing) stay NaN."""
        self.eval()
        out = np.full((len(x), self.config.dim), np.nan, dtype=np.float32)
        ok = ~np.isnan(x).any(axis=1)
        if ok.any():
            device = next(self.parameters()).device
            out[ok] = self(modality, torch.from_numpy(x[ok]).float().to(device)).cpu().numpy()
        return out

    def embed_sites(self, embeddings: dict[str, np.ndarray], modalities=None, sites=None) -> dict[str, np.ndarray]:
        """Each site's aligned vector per modality (``n_sites x dim``, NaN where a site lacks it;
        only the rows ``sites`` when given), read from what each head reads
        (:meth:`AlignConfig.input_key`): with photo views as items, the normalised mean of the
        site's views' vectors."""
        out = {}
        for m in modalities or tuple(self.heads):
            inputs = head_inputs(self.config, embeddings, m)
            if inputs.site is None:             # one row per site: no copy of the whole array
                out[m] = self.embed(m, inputs.x if sites is None else inputs.x[np.asarray(sites, np.int64)])
                continue
            chosen = np.arange(inputs.n_sites) if sites is None else np.asarray(sites, np.int64)
            rows, owner = inputs.rows(chosen)
            vectors = self.embed(m, inputs.x[rows])
            position = np.full(inputs.n_sites, -1)
            position[chosen] = np.arange(len(chosen))
            ok = ~np.isnan(vectors[:, 0])
            total = np.zeros((len(chosen), self.config.dim))
            np.add.at(total, position[owner[ok]], vectors[ok])
            norm = np.linalg.norm(total, axis=1, keepdims=True)
            out[m] = np.where(norm > 0, total / np.where(norm > 0, norm, 1), np.nan).astype(np.float32)
        return out


@dataclass
class HeadInputs:
    """What one head reads: rows ``x`` and, when a site has several rows (photo views), the
    site of each row (``site``; None: row ``i`` is site ``i``)."""

    x: np.ndarray
    site: np.ndarray | None
    n_sites: int

    def __post_init__(self):
        if self.site is not None:
            self._order = np.argsort(self.site, kind="stable")
            self._starts = np.searchsorted(self.site[self._order], np.arange(self.n_sites + 1))

    def rows(self, sites: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows of ``sites`` and the site of each."""
        if self.site is None:
            return sites, sites
        counts = self._starts[sites + 1] - self._starts[sites]
        first = np.repeat(self._starts[sites], counts)
        offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        rows = self._order[first + offset]
        return rows, self.site[rows]


def head_inputs(config: AlignConfig, embeddings: dict[str, np.ndarray], modality: str) -> HeadInputs:
    """The :class:`HeadInputs` of ``modality`` under ``config``, with a clear error when the
    embeddings lack what the config asks for."""
    n = len(embeddings[modality]) if modality in embeddings else None
    key = config.input_key(modality)
    if key == "photo_per_view" and ("photo_per_view" in embeddings) != ("photo_site" in embeddings):
        raise ValueError("photo views as items need both 'photo_per_view' and 'photo_site' "
                         "(hh.embed.embed_sites gives them)")
    if key == "photo_per_view" and "photo_per_view" not in embeddings:
        key = "photo"                   # no views given: a site's mean photo is its one item
    if key == "photo_per_view":
        site = np.asarray(embeddings["photo_site"], np.int64)
        if n is None or len(site) != len(embeddings["photo_per_view"]) or (len(site) and (
                site.min() < 0 or site.max() >= n)):
            raise ValueError("photo_site must give, for each row of photo_per_view, a site row of the embeddings")
        return HeadInputs(embeddings["photo_per_view"], site, n)
    if key not in embeddings:
        hint = " (hh.embed.location_layer_inputs(lat, lon) gives them)" if key == "gps_layers" else ""
        raise ValueError(f"the {modality} head reads {key!r}, which the embeddings lack{hint}")
    return HeadInputs(embeddings[key], None, len(embeddings[key]))


def site_features(model: AlignmentModel, embeddings: dict[str, np.ndarray],
                  modalities: tuple[str, ...] | None = None, fusion: str = "mean") -> np.ndarray:
    """One aligned vector per site from the modalities it has (among ``modalities``); works
    with any subset of inputs; NaN if a site has none.

    ``fusion="mean"``: the normalised mean of the aligned embeddings (``dim`` columns).
    ``fusion="concat"``: every head's aligned embedding side by side, zeros where a modality
    is missing or not among ``modalities``, plus one 0/1 presence flag per head
    (``n_heads x (dim + 1)`` columns): a classifier can then weigh the modalities."""
    chosen = tuple(modalities or model.heads)
    return fuse(model.embed_sites(embeddings, chosen), tuple(model.heads), fusion)


def fuse(vectors: dict[str, np.ndarray], heads: tuple[str, ...], fusion: str = "mean") -> np.ndarray:
    """:func:`site_features` from aligned vectors already computed (``vectors[m]``: the
    ``n x dim`` output of ``model.embed`` for the modalities to use; NaN rows where a site lacks
    one). ``heads`` are all the model's modalities, in order (the ``concat`` layout)."""
    if fusion not in ("mean", "concat"):
        raise ValueError("fusion must be 'mean' or 'concat'")
    first = next(iter(vectors.values()))
    if fusion == "concat":
        parts, any_present = [], np.zeros(len(first), bool)
        for m in heads:
            x = vectors.get(m)
            x = np.full(first.shape, np.nan, np.float32) if x is None else x
            ok = ~np.isnan(x[:, 0])
            any_present |= ok
            parts += [np.nan_to_num(x), ok[:, None].astype(np.float32)]
        out = np.hstack(parts)
        out[~any_present] = np.nan
        return out
    stacked = np.stack(list(vectors.values()))  # (m, n, dim)
    present = ~np.isnan(stacked[:, :, 0])
    total = np.nansum(stacked, axis=0)
    total[~present.any(axis=0)] = np.nan
    return total / np.linalg.norm(total, axis=1, keepdims=True)


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _items(model: AlignmentModel, inputs: dict[str, HeadInputs], lat, lon, sites: np.ndarray, device) -> dict:
    """Project every present modality of ``sites`` (every view, with photo views as items): the
    items of a batch, with their metadata."""
    z, site, modality, ilat, ilon = [], [], [], [], []
    for code, m in enumerate(model.config.modalities):
        rows, owner = inputs[m].rows(sites)
        x = inputs[m].x[rows]
        ok = ~np.isnan(x).any(axis=1)
        if not ok.any():
            continue
        z.append(model.heads[m](torch.from_numpy(x[ok]).float().to(device)))
        site.append(owner[ok])
        modality.append(np.full(int(ok.sum()), code))
        ilat.append(lat[owner[ok]])
        ilon.append(lon[owner[ok]])
    if not z:
        return {"z": torch.zeros(0, model.config.dim, device=device), "site": torch.zeros(0, dtype=torch.long),
                "modality": torch.zeros(0, dtype=torch.long), "lat": torch.zeros(0, dtype=torch.float64),
                "lon": torch.zeros(0, dtype=torch.float64)}
    return {"z": torch.cat(z), "site": torch.from_numpy(np.concatenate(site)).long(),
            "modality": torch.from_numpy(np.concatenate(modality)).long(),
            "lat": torch.from_numpy(np.concatenate(ilat)).double(),
            "lon": torch.from_numpy(np.concatenate(ilon)).double()}


def _gather_items(items: dict, world_size: int) -> tuple[dict, int]:
    """All processes' items (embeddings gathered with gradients); returns them and the
    position of this process's first item."""
    import torch.distributed as dist
    import torch.distributed.nn.functional as dist_fn

    n = torch.tensor([len(items["site"])])
    sizes = [torch.zeros_like(n) for _ in range(world_size)]
    dist.all_gather(sizes, n)
    sizes = [int(v) for v in sizes]
    longest = max(sizes)

    def pad(t):
        extra = longest - len(t)
        return torch.cat([t, t.new_zeros((extra, *t.shape[1:]))]) if extra else t

    out = {}
    z_all = dist_fn.all_gather(pad(items["z"]))
    out["z"] = torch.cat([z[:k] for z, k in zip(z_all, sizes)])
    for key in ("site", "modality", "lat", "lon"):
        parts = [torch.zeros_like(pad(items[key])) for _ in range(world_size)]
        dist.all_gather(parts, pad(items[key]).contiguous())
        out[key] = torch.cat([p[:k] for p, k in zip(parts, sizes)])
    rank = dist.get_rank()
    return out, sum(sizes[:rank])


def _batch_loss(model: AlignmentModel, inputs: dict[str, HeadInputs], lat, lon, sites: np.ndarray, device,
                rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, int]:
    """This process's share of the batch loss, and the number of anchors with a positive in the
    whole batch. Summed over processes, the shares give the batch's mean loss."""
    cfg = model.config
    local = _items(model, inputs, lat, lon, sites[rank::world_size], device)
    if world_size > 1:
        items, offset = _gather_items(local, world_size)
    else:
        items, offset = local, 0
    pairs = cfg.pair_table(inputs)
    per_anchor = spatial_info_nce(
        items["z"], items["site"].to(device), items["modality"].to(device), items["lat"], items["lon"],
        radius_km=cfg.radius_km, temperature=model.temperature(), soft_scale_km=cfg.soft_scale_km,
        pairs=pairs.to(device), positives=cfg.positives, reduction="none")
    mine = per_anchor[offset:offset + len(local["site"])]
    valid = ~torch.isnan(mine)
    count = torch.tensor([int((~torch.isnan(per_anchor)).sum())])
    share = mine[valid].sum() if valid.any() else local["z"].sum() * 0.0
    return share, int(count)


def at_most(idx: np.ndarray, n: int | None, seed) -> np.ndarray:
    """``idx`` itself when it holds at most ``n`` sites, else a random ``n`` of them, sorted
    (drawn with ``seed``)."""
    idx = np.asarray(idx)
    if n is None or len(idx) <= n:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))


def _epoch_sample(config: AlignConfig, idx: np.ndarray, neighbours, epoch: int) -> np.ndarray:
    """The sites of one epoch of a pool larger than ``config.epoch_sites``: random anchors and, with a
    neighbour graph, their neighbours in the pool (so the batches keep their neighbour groups), about
    ``epoch_sites`` in all."""
    rng = np.random.default_rng([config.seed, epoch, 7])
    if neighbours is None:
        return np.sort(rng.choice(idx, config.epoch_sites, replace=False))
    anchors = rng.choice(idx, max(1, config.epoch_sites // (1 + config.per_anchor)), replace=False)
    near = neighbours[anchors].indices
    return np.intersect1d(np.union1d(anchors, near), idx)


def epoch_batches(config: AlignConfig, idx: np.ndarray, neighbours, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch (seeded by ``config.seed`` and ``epoch``; ``epoch=-1`` gives the
    fixed validation batches): neighbour batches when there is a neighbour graph, else a plain
    shuffle. An epoch draws from at most :attr:`AlignConfig.epoch_sites` of ``idx``."""
    seed = int(np.random.default_rng([config.seed, epoch if epoch >= 0 else 2**20]).integers(2**31))
    if epoch >= 0 and config.epoch_sites is not None and len(idx) > config.epoch_sites:
        idx = _epoch_sample(config, np.asarray(idx), neighbours, epoch)
    if neighbours is None:
        order = np.random.default_rng(seed).permutation(idx)
        return [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]

    return neighbour_batches(neighbours, config.batch_size, indices=idx, per_anchor=config.per_anchor, seed=seed)


def validation_recall(model: AlignmentModel, embeddings: dict, idx: np.ndarray, k: int = 10) -> float:
    """Mean cross-modal recall@k over the modality pairs (both directions) on sites ``idx``, from
    the sites' aligned vectors (:meth:`AlignmentModel.embed_sites`)."""

    idx = np.asarray(idx)
    vectors = model.embed_sites(embeddings, sites=idx)          # rows in the order of idx
    values = []
    for m1, m2 in model.config.modality_pairs():
        both = ~np.isnan(vectors[m1][:, 0]) & ~np.isnan(vectors[m2][:, 0])
        if both.sum() < 2:
            continue
        a, b = vectors[m1][both], vectors[m2][both]
        values += [retrieval_recall_at_k(a, b, (k,))[f"recall@{k}"], retrieval_recall_at_k(b, a, (k,))[f"recall@{k}"]]
    return float(np.mean(values)) if values else float("nan")


def retrieval_table(model: AlignmentModel, embeddings: dict, idx: np.ndarray, pairs=None,
                    ks=(1, 5, 10)) -> dict[str, dict]:
    """Cross-modal retrieval on sites ``idx``, one direction per pair of ``pairs`` (default the
    model's, :meth:`AlignConfig.modality_pairs`): ``{"photo → satellite": {"n": sites with both
    inputs, "recall@1": ..., ...}}``, among the sites of ``idx`` that have both inputs; NaN
    recalls when fewer than two have (:func:`validation_recall` averages both directions)."""
    idx = np.asarray(idx)
    out = {}
    for m1, m2 in pairs or model.config.modality_pairs():
        both = idx[~np.isnan(embeddings[m1][idx, 0]) & ~np.isnan(embeddings[m2][idx, 0])]
        if len(both) < 2:            # e.g. no site has both a photo and a patch
            recall = {f"recall@{k}": np.nan for k in ks}
        else:
            v = model.embed_sites(embeddings, (m1, m2), sites=both)
            recall = retrieval_recall_at_k(v[m1], v[m2], ks)
        out[f"{m1} → {m2}"] = {"n": len(both), **recall}
    return out


def evaluate_loss(model: AlignmentModel, embeddings: dict, idx: np.ndarray, lat=None, lon=None,
                  neighbours=None, device: str = "cpu") -> float:
    """Mean loss over fixed batches of ``idx`` (the same batches every epoch)."""
    inputs = {m: head_inputs(model.config, embeddings, m) for m in model.config.modalities}
    lat, lon = _coordinates(lat, lon, inputs[model.config.modalities[0]].n_sites)
    return _mean_loss(model, inputs, idx, lat, lon, neighbours, device)


def _mean_loss(model: AlignmentModel, inputs: dict[str, HeadInputs], idx, lat, lon, neighbours, device) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for sites in epoch_batches(model.config, idx, neighbours, epoch=-1):
            share, n = _batch_loss(model, inputs, lat, lon, sites, device)
            total += float(share)
            count += n
    return total / count if count else float("nan")


def _coordinates(lat, lon, n: int) -> tuple[np.ndarray, np.ndarray]:
    if lat is None or lon is None:
        return np.zeros(n), np.zeros(n)
    return np.asarray(lat, float), np.asarray(lon, float)


def _neighbour_graph(config: AlignConfig, lat, lon):
    radius = config.radius_km if config.sampler_radius_km is None else config.sampler_radius_km
    if radius <= 0 or config.per_anchor <= 0:
        return None

    return radius_neighbours(lat, lon, radius)


def train_alignment(embeddings: dict[str, np.ndarray], train_idx: np.ndarray, val_idx: np.ndarray,
                    config: AlignConfig, lat=None, lon=None, device: str = "cpu", progress: bool = True,
                    checkpoint: str | Path | None = None) -> tuple[AlignmentModel, pd.DataFrame]:
    """Train the projection heads; return the kept model and the per-epoch history.

    Parameters
    ----------
    embeddings
        per modality, an ``n_sites x d`` array (NaN rows where a site lacks it); with photo
        views as items also ``photo_per_view`` and ``photo_site``, with a trainable GeoCLIP
        layer also ``gps_layers`` (:attr:`AlignConfig.photo_views`, :attr:`AlignConfig.location_layers`).
    train_idx, val_idx
        site rows for training and for early stopping (held-out blocks).
    lat, lon
        site coordinates in degrees; needed when ``config.radius_km > 0``.
    checkpoint
        a file written after every epoch (atomically); if it exists with the same
        config (``epochs`` may differ: train longer), training resumes after its last epoch and
        ends with the same numbers as an uninterrupted run.

    Returns
    -------
    model, history
        The kept model, and the history with ``epoch, train_loss, val_loss, val_recall,
        temperature``; ``history.attrs["best_epoch"]`` is the epoch kept (highest ``val_recall``,
        i.e. validation recall@k; lowest ``val_loss`` when no validation site has two inputs,
        see ``_stopping_score``).
    """
    from tqdm.auto import tqdm

    rank, world_size = _distributed()
    inputs = {m: head_inputs(config, embeddings, m) for m in config.modalities}
    n = inputs[config.modalities[0]].n_sites
    if config.radius_km > 0 or config.soft_scale_km is not None:
        if lat is None or lon is None:
            raise ValueError("radius_km > 0 (spatial positives) needs the sites' lat and lon")
    lat, lon = _coordinates(lat, lon, n)
    train_idx = np.asarray(train_idx)
    val_idx = at_most(val_idx, config.val_sites, [config.seed, 11])     # early stopping's fixed sample
    neighbours = _neighbour_graph(config, lat, lon)

    torch.manual_seed(config.seed)
    model = AlignmentModel({m: inputs[m].x.shape[1] for m in config.modalities}, config)
    for m in config.modalities:
        if isinstance(model.heads[m], LocationLayerHead):
            model.heads[m].start_from(*geoclip_output_layer())
        model.heads[m].set_standardisation(inputs[m].x, inputs[m].rows(train_idx)[0])
    model.to(device)
    optimiser = _optimiser(model, config)
    params = [p for group in optimiser.param_groups for p in group["params"]]

    def record(epoch, train_loss):
        return {"epoch": epoch, "train_loss": train_loss,
                "val_loss": _mean_loss(model, inputs, val_idx, lat, lon, neighbours, device),
                "val_recall": validation_recall(model, embeddings, val_idx, config.retrieval_k),
                "temperature": float(model.temperature().detach())}

    state = _load_checkpoint(checkpoint, config, device) if checkpoint else None
    if state is not None:
        model.load_state_dict(state["state_dict"])
        optimiser.load_state_dict(state["optimiser"])
        history, best = state["history"], (state["best_score"], state["best_state"], state["best_epoch"])
        first = int(state["epoch"]) + 1
    else:
        capped = config.epoch_sites is not None and len(train_idx) > config.epoch_sites
        first_sites = _epoch_sample(config, train_idx, neighbours, 0) if capped else train_idx
        history = [record(0, _mean_loss(model, inputs, first_sites, lat, lon, neighbours, device))]
        best = (_stopping_score(history[0]), copy.deepcopy(model.state_dict()), 0)
        first = 1
    bar = tqdm(range(first, config.epochs + 1), desc="alignment", unit="epoch", disable=not progress or rank > 0)
    for epoch in bar:
        if epoch - best[2] > config.patience:
            break
        model.train()
        torch.manual_seed(config.seed * 100_003 + epoch)           # dropout masks, per epoch
        losses = []
        for sites in epoch_batches(config, train_idx, neighbours, epoch):
            share, count = _batch_loss(model, inputs, lat, lon, sites, device, rank, world_size)
            if count == 0:
                continue
            loss = share / count
            optimiser.zero_grad()
            loss.backward()
            if world_size > 1:
                _sum_gradients(params)
                loss = loss.detach().clone()
                _sum_tensor(loss)
            optimiser.step()
            losses.append(float(loss.detach()))
        history.append(record(epoch, float(np.mean(losses)) if losses else float("nan")))
        bar.set_postfix(train=f"{history[-1]['train_loss']:.3f}", val_recall=f"{history[-1]['val_recall']:.3f}")
        if _stopping_score(history[-1]) > best[0]:
            best = (_stopping_score(history[-1]), copy.deepcopy(model.state_dict()), epoch)
        if checkpoint and rank == 0:
            blob = {**_plain_config(model), "state_dict": model.state_dict(), "optimiser": optimiser.state_dict(),
                    "epoch": epoch, "history": history, "best_score": best[0], "best_state": best[1],
                    "best_epoch": best[2]}
            write_atomic(Path(checkpoint), lambda tmp, blob=blob: torch.save(blob, tmp))
    model.load_state_dict(best[1])
    model.eval()
    table = pd.DataFrame(history)
    table.attrs["best_epoch"] = int(best[2])
    return model, table


#: The learning rate of GeoCLIP's output layer, relative to the heads' (fine-tuning a pre-trained
#: layer, without weight decay, which would pull it towards zero rather than towards GeoCLIP).
PRETRAINED_LR_SCALE = 0.1


def _optimiser(model: AlignmentModel, config: AlignConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; GeoCLIP's output layer, when trained, in a group of its
    own (:data:`PRETRAINED_LR_SCALE`, no weight decay)."""
    pretrained = [p for head in model.heads.values() if isinstance(head, LocationLayerHead)
                  for p in head.last.parameters()]
    seen = {id(p) for p in pretrained}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    groups = [{"params": rest}]
    if pretrained:
        groups.append({"params": pretrained, "lr": config.lr * PRETRAINED_LR_SCALE, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def _stopping_score(row: dict) -> float:
    """What early stopping maximises: the validation recall@k; when no validation site has two
    inputs (recall is NaN), minus the validation loss; when that is NaN too, the epoch (the
    last epoch is kept). On one validation set the same rule applies at every epoch."""
    if np.isfinite(row["val_recall"]):
        return float(row["val_recall"])
    if np.isfinite(row["val_loss"]):
        return -float(row["val_loss"])
    return float(row["epoch"])


def _sum_gradients(params) -> None:
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def _sum_tensor(t: torch.Tensor) -> None:
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.SUM)


def _plain_config(model: AlignmentModel) -> dict:
    return {"config": _plain(model.config), "input_dims": model.input_dims}


def _plain(config: AlignConfig) -> dict:
    """The config with lists for tuples (JSON and ``torch.load(weights_only=True)`` read it back)."""
    cfg = asdict(config)
    cfg["modalities"] = list(cfg["modalities"])
    cfg["pairs"] = [list(p) for p in cfg["pairs"]]
    return cfg


def _config_from_plain(cfg: dict) -> AlignConfig:
    cfg = dict(cfg)
    cfg["modalities"] = tuple(cfg["modalities"])
    cfg["pairs"] = tuple(tuple(p) for p in cfg["pairs"])
    return AlignConfig(**cfg)


def _load_checkpoint(path, config: AlignConfig, device) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    blob = torch.load(path, map_location=device, weights_only=True)
    saved = _config_from_plain(blob["config"])
    if asdict(saved) | {"epochs": 0} != asdict(config) | {"epochs": 0}:   # training longer is fine
        raise ValueError(f"checkpoint {path} was trained with another config: {saved} (delete it to start over)")
    return blob


def save_alignment(model: AlignmentModel, path: str | Path) -> Path:
    """Save the heads with their config and input sizes (plain types: loads with ``weights_only``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**_plain_config(model), "state_dict": model.state_dict()}, path)
    return path


def load_alignment(path: str | Path, device: str = "cpu") -> AlignmentModel:
    """Load what :func:`save_alignment` (or a training checkpoint) wrote, with
    ``torch.load(..., weights_only=True)``; a checkpoint gives its last epoch's heads."""
    blob = torch.load(path, map_location=device, weights_only=True)
    model = AlignmentModel(blob["input_dims"], _config_from_plain(blob["config"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()


# --- the stage: chapter 3's main model for the later chapters ----------------------------------



class AlignmentUnavailable(ValueError):
    """The data cannot train the heads (fewer than two inputs with data, or too few spatial blocks)."""


def available_modalities(embeddings: dict[str, np.ndarray], candidates=MODALITIES) -> tuple[str, ...]:
    """The modalities of ``candidates`` that at least one site has (a LUCAS table without satellite
    patches aligns photos and GPS only)."""
    return tuple(m for m in candidates if m in embeddings and not np.isnan(embeddings[m]).all())


def site_alignment(data, embeddings: dict[str, np.ndarray], profile, seed: int, *, radius_km: float | None = None,

                   device: str = "cpu", recompute: bool = False, progress: bool = True, checkpoint: bool = True,
                   verbose: bool = True):
    """Chapter 3's stage: the heads aligning photo, satellite and GPS embeddings of ``data`` (a
    :class:`habitat_helpers.dataspec.Data`), trained on the profile's spatial split.

    The split is :func:`habitat_helpers.spatial.stage_split`: blocks sized from the labels, the
    profile's test share and 15 % validation blocks (test blocks are never used); the heads
    follow the profile's sizes and align the modalities that some site has
    (:func:`available_modalities`, at least two). The model, its training history and the settings are kept in
    the run folder (:mod:`habitat_helpers.cache`); a later chapter reads them back when the sites,
    the embeddings' settings and the training settings match, and otherwise trains here (with a
    one-line note saying why, printed with ``verbose``, and a progress bar). ``recompute=True`` always trains (from the epoch checkpoint if one with
    the same settings exists, so an interrupted run resumes).

    Returns ``model, history, split`` (``split``: ``"train"``, ``"val"`` or ``"test"`` per site).
    Raises :class:`AlignmentUnavailable` when the data cannot train the heads.
    """

    prof = profiles.get(profile) if isinstance(profile, str) else profile
    sites = data.sites
    lat, lon = sites["lat"].to_numpy(float), sites["lon"].to_numpy(float)
    split, block_size = spatial.stage_split(lat, lon, sites, prof.test_fraction, seed)
    modalities = available_modalities(embeddings)
    config = config_for(prof, seed, radius_km=radius_km, modalities=modalities)
    site_ids = "\n".join(sites["site_id"].astype(str)).encode()
    settings = {"sites": len(sites), "site_ids_sha1": hashlib.sha1(site_ids).hexdigest(),
                "embedding_settings": str(embeddings.get("settings", "")), "config": _plain(config)}
    run = data.run_dir(prof.name, seed)
    model_path, history_path = run / "alignment.pt", run / "alignment_history.csv"
    if not recompute and history_path.exists() and cache.reusable(
            model_path, settings, "alignment", verbose=verbose,
            missing="no trained heads in the run folder yet (chapter 3 trains them)"):
        history = pd.read_csv(history_path)
        history.attrs["best_epoch"] = int(history.loc[history["kept"], "epoch"].iloc[0])
        return load_alignment(model_path, device), history.drop(columns="kept"), split
    for name in ("train", "val"):
        if not (split == name).any():
            raise AlignmentUnavailable(f"no {name} blocks: {len(sites)} sites in blocks of "
                                       f"{block_size:g}° are too few to train the alignment")
    if len(modalities) < 2:
        raise AlignmentUnavailable(f"only {', '.join(modalities) or 'no input'} has data: the alignment needs "
                                   f"two of {', '.join(MODALITIES)}")
    model, history = train_alignment(embeddings, np.where(split == "train")[0], np.where(split == "val")[0],
                                     config, lat, lon, device=device, progress=progress,
                                     checkpoint=run / "alignment_checkpoint.pt" if checkpoint else None)
    save_alignment(model.cpu(), model_path)
    history.assign(kept=history["epoch"] == history.attrs["best_epoch"]).to_csv(history_path, index=False)
    cache.record(model_path, settings)
    return model.to(device), history, split


def config_for(profile, seed: int, *, radius_km: float | None = None, modalities=MODALITIES) -> AlignConfig:
    """The :class:`AlignConfig` of a profile's sizes (heads, epochs, batch, learning rate);
    ``radius_km`` defaults to :class:`AlignConfig`'s."""

    prof = profiles.get(profile) if isinstance(profile, str) else profile
    return AlignConfig(dim=prof.align_dim, hidden=prof.align_hidden, epochs=prof.align_epochs,
                       batch_size=prof.align_batch_size, lr=prof.align_lr, seed=seed,
                       modalities=tuple(modalities),
                       radius_km=AlignConfig.radius_km if radius_km is None else radius_km)


# --- command line (single process or torchrun) -----------------------------------------------

def add_arguments(parser) -> None:
    """The options of ``python -m habitat_helpers align`` (:data:`habitat_helpers.cli.COMMANDS`);
    the defaults are :class:`AlignConfig`'s."""
    defaults = AlignConfig()
    parser.add_argument("--embeddings", required=True,
                        help="site embeddings of hh.embed.save_site_embeddings: a .npz file, or a folder of .npy "
                             "files, read as memory maps (photos' views that do not fit in memory)")
    parser.add_argument("--sites", required=True, help="site table (GeoParquet, hh.datasets schema)")
    parser.add_argument("--out", required=True, help="file for the trained heads")
    parser.add_argument("--checkpoint", default=None, help="checkpoint file (resumed from when present)")
    parser.add_argument("--modalities", default=",".join(defaults.modalities))
    parser.add_argument("--radius-km", type=float, default=defaults.radius_km)
    parser.add_argument("--soft-scale-km", type=float, default=None)
    parser.add_argument("--per-anchor", type=int, default=defaults.per_anchor)
    parser.add_argument("--dim", type=int, default=defaults.dim)
    parser.add_argument("--hidden", type=int, default=defaults.hidden)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument("--fixed-temperature", action="store_true")
    parser.add_argument("--block-size-deg", default="auto",
                        help="side of the spatial blocks in degrees, or auto (from the labels, as in the book)")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    """``python -m habitat_helpers align --embeddings site_embeddings.npz --sites sites.parquet
    --out heads.pt``; under ``torchrun --nproc_per_node=N`` the N processes share every batch
    and gather the negatives. The split is :func:`habitat_helpers.spatial.train_val_test_split`
    (test blocks are never used here). Rank 0 prints one JSON line."""
    import json
    import sys
    import time

    import torch.distributed as dist


    sites = datasets.read_sites(args.sites)
    site_ids, embeddings = load_site_embeddings(args.embeddings)
    if list(site_ids) != list(sites["site_id"]):
        raise UsageError(f"{args.embeddings} does not match the site table {args.sites} (site ids differ)")
    rank, world_size, device = runtime.init_distributed(runtime.resolve_device(args.device))
    config = AlignConfig(dim=args.dim, hidden=args.hidden, epochs=args.epochs, batch_size=args.batch_size,
                         lr=args.lr, dropout=args.dropout, patience=args.patience, seed=args.seed,
                         learn_temperature=not args.fixed_temperature,
                         modalities=tuple(args.modalities.split(",")), radius_km=args.radius_km,
                         soft_scale_km=args.soft_scale_km, per_anchor=args.per_anchor)
    try:
        block = args.block_size_deg if args.block_size_deg == "auto" else float(args.block_size_deg)
        block, _ = spatial.resolve_block_size(sites["lat"], sites["lon"], sites, block, args.seed)
    except ValueError as err:
        raise UsageError(f"--block-size-deg: {err}") from None
    split = spatial.train_val_test_split(sites["lat"], sites["lon"], block, args.test_fraction,
                                         args.val_fraction, args.seed)
    train_idx, val_idx = np.where(split == "train")[0], np.where(split == "val")[0]
    start = time.perf_counter()
    model, history = train_alignment(embeddings, train_idx, val_idx, config, sites["lat"].to_numpy(),
                                     sites["lon"].to_numpy(), device=device, progress=not args.no_progress,
                                     checkpoint=args.checkpoint)
    if rank == 0:
        save_alignment(model.cpu(), args.out)
        report = {"out": args.out, "world_size": world_size, "best_epoch": history.attrs["best_epoch"],
                  "epochs_run": int(history["epoch"].max()), "val_recall": float(history["val_recall"].max()),
                  "wall_s": round(time.perf_counter() - start, 3)}
        sys.stdout.write(json.dumps(report) + "\n")
    if world_size > 1:
        dist.destroy_process_group()
    return 0
