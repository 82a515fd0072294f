"""Contrastive alignment: one projection head per modality into a shared space.

Each modality's frozen pre-trained embedding (ground photo, satellite patch, GPS) goes
through its own small MLP head into a ``dim``-dimensional space. The heads are trained
with the symmetric InfoNCE loss (:func:`habitat_helpers.losses.info_nce`) on cross-modal
pairs from the same site: photo-satellite, photo-GPS and satellite-GPS. A site that lacks
a modality simply leaves the pairs that need it. Labels are never used, so every site,
labelled or not, teaches the heads.

Training keeps the epoch with the lowest loss on held-out validation sites (early stopping).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .losses import LearnableTemperature, info_nce


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

    def modality_pairs(self) -> list[tuple[str, str]]:
        return list(self.pairs) if self.pairs else list(itertools.combinations(self.modalities, 2))


class ProjectionHead(nn.Module):
    """Standardise a frozen embedding, then Linear -> GELU -> Dropout -> Linear."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.1):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, out_dim))

    def set_standardisation(self, x: np.ndarray) -> None:
        x = x[~np.isnan(x).any(axis=1)]
        self.mean.copy_(torch.from_numpy(x.mean(axis=0)))
        self.std.copy_(torch.from_numpy(x.std(axis=0) + 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


class AlignmentModel(nn.Module):
    """The projection heads (one per modality) and the shared temperature."""

    def __init__(self, input_dims: dict[str, int], config: AlignConfig):
        super().__init__()
        self.config = config
        self.input_dims = dict(input_dims)
        self.heads = nn.ModuleDict({m: ProjectionHead(d, config.hidden, config.dim, config.dropout)
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


def site_features(model: AlignmentModel, embeddings: dict[str, np.ndarray],
                  modalities: tuple[str, ...] | None = None) -> np.ndarray:
    """One aligned vector per site: the normalised mean of the aligned embeddings of the
    modalities it has (among ``modalities``). Works with any subset of inputs; NaN if none."""
    modalities = modalities or tuple(model.heads)
    stacked = np.stack([model.embed(m, embeddings[m]) for m in modalities])  # (m, n, dim)
    present = ~np.isnan(stacked[:, :, 0])
    total = np.nansum(stacked, axis=0)
    total[~present.any(axis=0)] = np.nan
    return total / np.linalg.norm(total, axis=1, keepdims=True)


def _batch_loss(model: AlignmentModel, batch: dict[str, torch.Tensor], pairs) -> torch.Tensor | None:
    tau = model.temperature()
    projected = {}
    losses = []
    for m1, m2 in pairs:
        both = batch[f"{m1}_ok"] & batch[f"{m2}_ok"]
        if int(both.sum()) < 2:
            continue
        for m in (m1, m2):
            if m not in projected:
                projected[m] = model.heads[m](torch.nan_to_num(batch[m]))
        losses.append(info_nce(projected[m1][both], projected[m2][both], tau))
    return torch.stack(losses).mean() if losses else None


def _to_batch(embeddings: dict[str, np.ndarray], idx: np.ndarray, modalities, device) -> dict:
    batch = {}
    for m in modalities:
        x = torch.from_numpy(embeddings[m][idx]).float().to(device)
        batch[m] = x
        batch[f"{m}_ok"] = ~torch.isnan(x).any(dim=1)
    return batch


def evaluate_loss(model: AlignmentModel, embeddings: dict[str, np.ndarray], idx: np.ndarray,
                  device: str = "cpu") -> float:
    """Mean InfoNCE over fixed batches of ``idx`` (the same batches every epoch)."""
    model.eval()
    cfg = model.config
    values = []
    with torch.inference_mode():
        for start in range(0, len(idx), cfg.batch_size):
            batch = _to_batch(embeddings, idx[start:start + cfg.batch_size], cfg.modalities, device)
            loss = _batch_loss(model, batch, cfg.modality_pairs())
            if loss is not None:
                values.append(float(loss))
    return float(np.mean(values)) if values else float("nan")


def train_alignment(embeddings: dict[str, np.ndarray], train_idx: np.ndarray, val_idx: np.ndarray,
                    config: AlignConfig, device: str = "cpu", progress: bool = True
                    ) -> tuple[AlignmentModel, pd.DataFrame]:
    """Train the projection heads; return the best model (lowest validation loss) and the
    per-epoch history (``epoch, train_loss, val_loss, temperature``)."""
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    generator = np.random.default_rng(config.seed)
    model = AlignmentModel({m: embeddings[m].shape[1] for m in config.modalities}, config)
    for m in config.modalities:
        model.heads[m].set_standardisation(embeddings[m][train_idx])
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    pairs = config.modality_pairs()

    history = [{"epoch": 0, "train_loss": evaluate_loss(model, embeddings, train_idx, device),
                "val_loss": evaluate_loss(model, embeddings, val_idx, device),
                "temperature": float(model.temperature().detach())}]
    best = (history[0]["val_loss"], copy.deepcopy(model.state_dict()), 0)
    bar = tqdm(range(1, config.epochs + 1), desc="alignment", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        order = generator.permutation(train_idx)
        losses = []
        for start in range(0, len(order), config.batch_size):
            chunk = order[start:start + config.batch_size]
            if len(chunk) < 2:
                continue
            loss = _batch_loss(model, _to_batch(embeddings, chunk, config.modalities, device), pairs)
            if loss is None:
                continue
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        val = evaluate_loss(model, embeddings, val_idx, device)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val,
                        "temperature": float(model.temperature().detach())})
        bar.set_postfix(train=f"{history[-1]['train_loss']:.3f}", val=f"{val:.3f}")
        if val < best[0]:
            best = (val, copy.deepcopy(model.state_dict()), epoch)
        elif epoch - best[2] >= config.patience:
            break
    model.load_state_dict(best[1])
    model.eval()
    return model, pd.DataFrame(history)


def save_alignment(model: AlignmentModel, path: str | Path) -> Path:
    """Save the heads with their config and input sizes (plain types: loads with ``weights_only``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = asdict(model.config)
    cfg["modalities"] = list(cfg["modalities"])
    cfg["pairs"] = [list(p) for p in cfg["pairs"]]
    torch.save({"config": cfg, "input_dims": model.input_dims, "state_dict": model.state_dict()}, path)
    return path


def load_alignment(path: str | Path, device: str = "cpu") -> AlignmentModel:
    """Load what :func:`save_alignment` wrote (``torch.load(..., weights_only=True)``)."""
    blob = torch.load(path, map_location=device, weights_only=True)
    cfg = dict(blob["config"])
    cfg["modalities"] = tuple(cfg["modalities"])
    cfg["pairs"] = tuple(tuple(p) for p in cfg["pairs"])
    model = AlignmentModel(blob["input_dims"], AlignConfig(**cfg))
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()
