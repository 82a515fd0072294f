"""Metrics and the ``metrics.json`` each notebook writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def level_metrics(y_true, y_pred) -> dict:
    """Accuracy and macro-F1 over the sites that have a true label (``None`` / NaN skipped).

    Macro-F1 averages the per-class F1 over the classes present in the truth, so rare
    habitats weigh as much as common ones. ``n`` is the number of sites scored.
    """
    y_true = np.asarray(y_true, dtype=object)
    y_pred = np.asarray(y_pred, dtype=object)
    keep = np.array([isinstance(t, str) for t in y_true])
    if not keep.any():
        return {"accuracy": math.nan, "macro_f1": math.nan, "n": 0}
    t, p = y_true[keep].astype(str), np.array([str(x) for x in y_pred[keep]])
    labels = sorted(set(t))
    return {"accuracy": float(accuracy_score(t, p)),
            "macro_f1": float(f1_score(t, p, labels=labels, average="macro", zero_division=0)),
            "n": int(keep.sum())}


def retrieval_recall_at_k(queries: np.ndarray, gallery: np.ndarray, ks=(1, 5, 10)) -> dict:
    """Cross-modal retrieval: row ``i`` of ``queries`` should find row ``i`` of ``gallery``.

    Ranks the gallery by cosine similarity for each query; recall@k is the share of
    queries whose match is among the top ``k``. Chance level is ``k / n``.
    """
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    sims = q @ g.T
    rank = (sims > np.diag(sims)[:, None]).sum(axis=1)  # 0 = the true match is ranked first
    return {f"recall@{k}": float((rank < k).mean()) for k in ks}


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_metrics(output_dir: str | Path, metrics: dict) -> Path:
    """Write ``metrics`` as ``output_dir/metrics.json`` (NumPy numbers made plain, NaN -> null)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "metrics.json"
    path.write_text(json.dumps(_plain(metrics), indent=2, sort_keys=True))
    return path


def read_metrics(output_dir: str | Path) -> dict:
    return json.loads((Path(output_dir) / "metrics.json").read_text())
