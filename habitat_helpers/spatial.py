"""Spatial blocks: split sites by geography so that test sites are far from training sites.

Neighbouring sites share habitats (spatial autocorrelation), so a random split lets a
model "remember" the neighbourhood and overstates its accuracy (Roberts et al. 2017,
*Ecography* 40: 913-929). Here the map is cut into square blocks of ``block_size_deg``
degrees and whole blocks go to the test set.
"""

from __future__ import annotations

import numpy as np


def block_ids(lat, lon, block_size_deg: float) -> np.ndarray:
    """An integer id per site for the ``block_size_deg`` x ``block_size_deg`` cell it falls in."""
    if block_size_deg <= 0:
        raise ValueError("block_size_deg must be positive")
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    row = np.floor((lat + 90.0) / block_size_deg).astype(np.int64)
    col = np.floor((lon + 180.0) / block_size_deg).astype(np.int64)
    return row * 100_000 + col


def spatial_block_split(lat, lon, block_size_deg: float, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of test sites: random whole blocks until ``test_fraction`` of sites is reached."""
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must lie strictly between 0 and 1")
    blocks = block_ids(lat, lon, block_size_deg)
    unique, counts = np.unique(blocks, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(unique))
    target = test_fraction * len(blocks)
    chosen, total = [], 0
    for k in order:
        if total >= target:
            break
        chosen.append(unique[k])
        total += counts[k]
    return np.isin(blocks, chosen)


def train_val_test_split(lat, lon, block_size_deg: float, test_fraction: float, val_fraction: float,
                         seed: int) -> np.ndarray:
    """Label each site ``"train"``, ``"val"`` or ``"test"`` by whole spatial blocks.

    Test blocks are drawn first; validation blocks (for early stopping) are then drawn from
    the remaining blocks. Every notebook that splits calls this with the same arguments, so
    the alignment (notebook 03) never sees the test blocks that the classifier (notebook 04)
    is scored on.
    """
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    split = np.full(len(lat), "train", dtype=object)
    test = spatial_block_split(lat, lon, block_size_deg, test_fraction, seed)
    split[test] = "test"
    rest = np.where(~test)[0]
    val_rest = spatial_block_split(lat[rest], lon[rest], block_size_deg, val_fraction, seed + 1)
    split[rest[val_rest]] = "val"
    return split
