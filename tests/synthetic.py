"""Synthetic studies shared by several test modules (the tests make their own data)."""

import numpy as np
import pandas as pd


def sites_with_two_inputs(n=360, seed=0):
    """Sites in clusters over Europe; level-1 habitat from longitude, level 2 from latitude,
    level 3 from a finer latitude band. Two 'modalities' carry noisy copies of the codes."""
    rng = np.random.default_rng(seed)
    centres = np.column_stack([rng.uniform(41, 56, 45), rng.uniform(-5, 22, 45)])
    which = rng.integers(0, len(centres), n)
    lat = centres[which, 0] + rng.normal(0, 0.05, n)
    lon = centres[which, 1] + rng.normal(0, 0.05, n)
    l1 = np.where(lon < 8, "R", "T")
    l2 = np.array([f"{a}{1 + int(b > 48)}" for a, b in zip(l1, lat)])
    l3 = np.array([f"{c}{1 + int((b * 2) % 2 > 1)}" for c, b in zip(l2, lat)])
    onehot = pd.get_dummies(l3).to_numpy(float)
    emb = {"satellite": (onehot @ rng.normal(size=(onehot.shape[1], 12)) + 0.8 * rng.normal(size=(n, 12))),
           "gps": np.column_stack([lat, lon, np.sin(lat), np.cos(lon)]) + 0.1 * rng.normal(size=(n, 4))}
    emb = {k: v.astype(np.float32) for k, v in emb.items()}
    labels = pd.DataFrame({"label_l1": l1, "label_l2": l2, "label_l3": l3}, dtype=object)
    labels.loc[rng.random(n) < 0.3, :] = None                  # unlabelled sites
    coarse = rng.random(n) < 0.15
    labels.loc[coarse, "label_l3"] = None                      # labelled at level 2 only
    return lat, lon, labels, emb
