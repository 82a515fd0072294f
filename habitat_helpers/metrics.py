"""Metrics and the ``metrics.json`` each notebook writes."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score


def level_metrics(y_true, y_pred) -> dict:
    """Accuracy and macro-F1 over the sites that have a true label (``None`` / NaN skipped).

    Macro-F1 averages the per-class F1 over the classes present in the truth, so rare
    habitats weigh as much as common ones. ``n`` is the number of sites scored.
    """
    y_true = np.asarray(y_true, dtype=object)
    y_pred = np.asarray(y_pred, dtype=object)
    keep = np.array([isinstance(t, str) for t in y_true], dtype=bool)
    if not keep.any():
        return {"accuracy": math.nan, "macro_f1": math.nan, "n": 0}
    t, p = y_true[keep].astype(str), np.array([str(x) for x in y_pred[keep]])
    labels = sorted(set(t))
    return {"accuracy": float(accuracy_score(t, p)),
            "macro_f1": float(f1_score(t, p, labels=labels, average="macro", zero_division=0)),
            "n": int(keep.sum())}


def macro_f1(y_true, y_pred) -> float:
    """:func:`level_metrics`'s macro-F1 (classes of the truth, sites without a true label
    skipped, 0 for a class never predicted right), without scikit-learn's checks: the
    harness computes it for every candidate setting on the validation sites."""
    y_true = np.asarray(y_true, dtype=object)
    keep = np.array([isinstance(t, str) for t in y_true], dtype=bool)
    if not keep.any():
        return math.nan
    t = y_true[keep]
    p = np.asarray(y_pred, dtype=object)[keep]
    scores = []
    for c in set(t):
        tp = np.sum((t == c) & (p == c))
        predicted, actual = np.sum(p == c), np.sum(t == c)
        scores.append(0.0 if tp == 0 else 2 * tp / (predicted + actual))
    return float(np.mean(scores))


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


def label_only_recall_at_k(codes, ks=(1, 5, 10)) -> dict:
    """The recall@k a retriever would reach if it knew each item's label (``codes``, one per query, the
    same items in the gallery) and nothing else: it ranks the items sharing the query's label first, in
    random order, so a query whose label ``n`` items share finds its own item in the top ``k`` with
    probability ``min(1, k / n)``. Returns the expected recall@k, averaged over the queries.

    A reference for :func:`retrieval_recall_at_k` where two modalities share nothing but the label (as
    the demo's photos and patches share nothing but the habitat): above it, they share more."""
    codes = np.asarray(codes, dtype=object)
    if len(codes) == 0:
        raise ValueError("no items to retrieve")
    _, inverse, counts = np.unique(codes.astype(str), return_inverse=True, return_counts=True)
    same = counts[inverse]
    return {f"recall@{k}": float(np.mean(np.minimum(1.0, k / same))) for k in ks}


def plain(value, nan=None):
    """``value`` as plain JSON types: dict keys as strings, tuples, arrays and indexes as lists,
    NumPy numbers as Python ones, dates and paths as strings, and missing values (NaN, ``pd.NA``,
    ``pd.NaT``) as ``nan``. ``nan=None`` (the default) writes them as JSON null, infinities
    too, so that ``json.dumps(..., allow_nan=False)`` succeeds (NaN is not JSON, and many tools refuse a
    file that holds it); ``nan=float("nan")`` keeps them for Python readers."""
    if isinstance(value, dict):
        return {str(k): plain(v, nan) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray, pd.Index)):
        return [plain(v, nan) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value) and (nan is None or math.isnan(value)):
        return nan
    if value is pd.NaT or value is pd.NA:
        return nan
    if isinstance(value, (pd.Timestamp, Path)):
        return str(value)
    return value


def write_metrics(output_dir: str | Path, metrics: dict) -> Path:
    """Write ``metrics`` as ``output_dir/metrics.json`` (NumPy numbers made plain, NaN -> null)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "metrics.json"
    path.write_text(json.dumps(plain(metrics), indent=2, sort_keys=True))
    return path


def read_metrics(output_dir: str | Path) -> dict:
    return json.loads((Path(output_dir) / "metrics.json").read_text())


def probabilistic_metrics(y_true, y_pred, proba, n_bins: int = 10) -> dict:
    """Metrics of one level from predictions and their class probabilities.

    ``y_true``, ``y_pred``: codes (``None`` where the truth is unknown: skipped); ``proba``: a
    DataFrame of probabilities with one column per code (same rows). Returns ``accuracy``
    (top-1), ``top3_accuracy`` (the truth among the three most probable codes),
    ``macro_f1``, ``balanced_accuracy`` (mean recall over the true classes), ``ece``
    (expected calibration error: the gap between confidence, i.e. the probability given to the
    predicted code, and accuracy, averaged over ``n_bins`` equal-width confidence bins weighted
    by their size) and ``n``."""
    from sklearn.metrics import balanced_accuracy_score

    y_true = np.asarray(y_true, dtype=object)
    keep = (np.array([isinstance(t, str) for t in y_true], dtype=bool)
            & np.array([isinstance(p, str) for p in y_pred], dtype=bool))
    keep &= ~proba.isna().any(axis=1).to_numpy()
    if not keep.any():
        return {"accuracy": math.nan, "top3_accuracy": math.nan, "macro_f1": math.nan,
                "balanced_accuracy": math.nan, "ece": math.nan, "n": 0}
    t = y_true[keep].astype(str)
    p = np.asarray(y_pred, dtype=object)[keep].astype(str)
    probs = proba.to_numpy()[keep]
    columns = np.asarray(proba.columns, dtype=str)
    top3 = columns[np.argsort(-probs, axis=1)[:, :3]]
    col_index = {c: i for i, c in enumerate(columns)}
    confidence = np.array([probs[i, col_index[c]] if c in col_index else 0.0 for i, c in enumerate(p)])
    correct = t == p
    out = level_metrics(t, p)
    with warnings.catch_warnings():             # predicted codes absent from the truth are simply errors
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")    # a tiny validation set
        balanced = float(balanced_accuracy_score(t, p))
    out.update(top3_accuracy=float((top3 == t[:, None]).any(axis=1).mean()),
               balanced_accuracy=balanced,
               ece=expected_calibration_error(confidence, correct, n_bins))
    return out


def expected_calibration_error(confidence, correct, n_bins: int = 10) -> float:
    """ECE = sum over confidence bins of (share of predictions) x ``|accuracy - mean confidence|``."""
    table = reliability(confidence, correct, n_bins)
    return float((table["share"] * table["gap"].abs()).sum())


def reliability(confidence, correct, n_bins: int = 10):
    """Reliability table: per confidence bin, the share of predictions, their mean confidence,
    their accuracy and the gap (accuracy - confidence). Empty bins are left out."""
    import pandas as pd

    confidence, correct = np.asarray(confidence, float), np.asarray(correct, bool)
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = which == b
        if sel.any():
            rows.append({"bin_low": edges[b], "bin_high": edges[b + 1], "share": sel.mean(),
                         "confidence": confidence[sel].mean(), "accuracy": correct[sel].mean()})
    table = pd.DataFrame(rows, columns=["bin_low", "bin_high", "share", "confidence", "accuracy"])
    table["gap"] = table["accuracy"] - table["confidence"]
    return table


def per_class_f1(y_true, y_pred) -> dict:
    """F1 of every true class (``{code: f1}``), for the per-class table."""
    from sklearn.metrics import f1_score

    y_true = np.asarray(y_true, dtype=object)
    keep = np.array([isinstance(t, str) for t in y_true], dtype=bool)
    t = y_true[keep].astype(str)
    p = np.array([str(x) for x in np.asarray(y_pred, dtype=object)[keep]])
    labels = sorted(set(t))
    return dict(zip(labels, (float(v) for v in f1_score(t, p, labels=labels, average=None, zero_division=0))))
