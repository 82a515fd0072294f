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


EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in km between points given in degrees (broadcasts)."""
    lat1, lon1, lat2, lon2 = (np.deg2rad(np.asarray(v, float)) for v in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def label_agreement_by_distance(lat, lon, labels, bins_km=(0, 25, 50, 100, 200, 400, 800, 1600, 3200),
                                max_sites: int = 2000, seed: int = 0):
    """How often two labelled sites share a label, by the distance between them.

    All pairs of (at most ``max_sites``, subsampled) labelled sites are binned by distance;
    ``agreement`` is the share of pairs in a bin with the same label, and ``chance`` the share
    over all pairs. Agreement far above chance at short distances is spatial autocorrelation:
    the reason a random train/test split flatters a model and blocks are needed.
    """
    import pandas as pd

    labels = np.asarray(labels, dtype=object)
    keep = np.array([isinstance(v, str) for v in labels])
    idx = np.where(keep)[0]
    if len(idx) > max_sites:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_sites, replace=False))
    lat, lon, labels = np.asarray(lat, float)[idx], np.asarray(lon, float)[idx], labels[idx]
    i, j = np.triu_indices(len(idx), k=1)
    dist = haversine_km(lat[i], lon[i], lat[j], lon[j])
    same = labels[i] == labels[j]
    which = np.digitize(dist, bins_km) - 1
    rows = []
    for b in range(len(bins_km) - 1):
        sel = which == b
        rows.append({"distance_km": f"{bins_km[b]}-{bins_km[b + 1]}", "km_mid": (bins_km[b] + bins_km[b + 1]) / 2,
                     "pairs": int(sel.sum()), "agreement": float(same[sel].mean()) if sel.any() else np.nan})
    table = pd.DataFrame(rows)
    table["chance"] = float(same.mean()) if len(same) else np.nan
    return table
