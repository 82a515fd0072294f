"""Hierarchical EUNIS classification (levels 1-3) on any feature matrix.

:class:`HierarchicalClassifier` fits one multinomial logistic regression per level on the
sites labelled at that level (a site labelled only ``R2`` trains levels 1 and 2). Its
predictions respect the hierarchy: every level-3 habitat seen in training is a path
``L1 -> L2 -> L3`` scored by the sum of the three levels' log-probabilities, and the best
path gives the predictions at all three levels (so the level-2 prediction always lies under
the level-1 one).

The same class serves the aligned model and the baselines, so they are compared in one
harness: only the features differ.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from . import metrics

LEVEL_COLUMNS = {1: "eunis_l1", 2: "eunis_l2", 3: "eunis_l3"}


class HierarchicalClassifier:
    """Per-level logistic regressions with hierarchy-consistent decoding."""

    def __init__(self, C: float = 0.5, max_iter: int = 2000):
        self.C = C
        self.max_iter = max_iter
        self.models: dict[int, object] = {}
        self.classes: dict[int, np.ndarray] = {}

    def fit(self, X: np.ndarray, labels: pd.DataFrame) -> HierarchicalClassifier:
        """``labels`` has ``eunis_l1, eunis_l2, eunis_l3`` columns (``None`` where unknown)."""
        for level, col in LEVEL_COLUMNS.items():
            y = labels[col].to_numpy(dtype=object)
            keep = np.array([isinstance(v, str) for v in y]) & ~np.isnan(X).any(axis=1)
            if len(set(y[keep])) < 2:
                raise ValueError(f"level {level} needs at least two habitats among the training labels")
            model = make_pipeline(StandardScaler(),
                                  LogisticRegression(C=self.C, max_iter=self.max_iter))
            model.fit(X[keep], y[keep].astype(str))
            self.models[level] = model
            self.classes[level] = model.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> dict[int, pd.DataFrame]:
        """Per level, a ``(n, n_classes)`` table of probabilities (NaN rows where X is NaN)."""
        ok = ~np.isnan(X).any(axis=1)
        out = {}
        for level, model in self.models.items():
            probs = np.full((len(X), len(self.classes[level])), np.nan)
            if ok.any():
                probs[ok] = model.predict_proba(X[ok])
            out[level] = pd.DataFrame(probs, columns=self.classes[level])
        return out

    def predict(self, X: np.ndarray) -> pd.DataFrame:
        """Hierarchy-consistent predictions ``eunis_l1, eunis_l2, eunis_l3`` plus ``p_l3``
        (probability of the most likely habitat under the level-3 model) and ``entropy_l3`` (in nats)."""
        probs = self.predict_proba(X)
        eps = 1e-9
        leaves = list(self.classes[3])
        score = np.log(probs[3].to_numpy() + eps)
        for level in (1, 2):
            p = probs[level]
            cols = [leaf[:level] for leaf in leaves]
            score = score + np.log(np.column_stack(
                [p[c].to_numpy() if c in p.columns else np.full(len(X), eps) for c in cols]) + eps)
        ok = ~np.isnan(score).any(axis=1)
        best = np.full(len(X), None, dtype=object)
        best[ok] = np.array(leaves, dtype=object)[np.nanargmax(score[ok], axis=1)]
        p3 = np.nan_to_num(probs[3].to_numpy(), nan=1.0)  # rows without features are masked below
        out = pd.DataFrame({
            "eunis_l1": [b[:1] if b else None for b in best],
            "eunis_l2": [b[:2] if b else None for b in best],
            "eunis_l3": best,
        })
        out["p_l3"] = np.where(ok, p3.max(axis=1), np.nan)
        out["entropy_l3"] = np.where(ok, -(p3 * np.log(p3 + eps)).sum(axis=1), np.nan)
        return out


class MajorityClassifier:
    """Predicts the most frequent training habitat at every level (the floor any model must beat)."""

    def fit(self, X, labels: pd.DataFrame) -> MajorityClassifier:
        l3 = labels[LEVEL_COLUMNS[3]].dropna()
        self.leaf = l3.value_counts().idxmax()
        return self

    def predict(self, X) -> pd.DataFrame:
        n = len(X)
        return pd.DataFrame({"eunis_l1": [self.leaf[:1]] * n, "eunis_l2": [self.leaf[:2]] * n,
                             "eunis_l3": [self.leaf] * n})


def evaluate(predictions: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Per-level accuracy and macro-F1 of ``predictions`` against ``truth`` (same rows)."""
    return {f"level{level}": metrics.level_metrics(truth[col].to_numpy(object), predictions[col].to_numpy(object))
            for level, col in LEVEL_COLUMNS.items()}


def knn_probe(X: np.ndarray, labels: pd.DataFrame, train: np.ndarray, test: np.ndarray, k: int = 10) -> dict:
    """Accuracy per level of a k-nearest-neighbour vote (cosine) from training to test sites.

    A quick probe of how well an embedding groups habitats, with no model to fit: rows with
    NaN features or no label at a level are left out of that level (``n`` counts the scored).
    """
    from sklearn.neighbors import KNeighborsClassifier

    ok = ~np.isnan(X).any(axis=1)
    out = {}
    for level, col in LEVEL_COLUMNS.items():
        y = labels[col].to_numpy(dtype=object)
        has = np.array([isinstance(v, str) for v in y]) & ok
        tr, te = train & has, test & has
        if tr.sum() <= k or te.sum() == 0:
            out[f"level{level}"] = {"accuracy": float("nan"), "n": int(te.sum())}
            continue
        knn = KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(X[tr], y[tr].astype(str))
        out[f"level{level}"] = {"accuracy": float((knn.predict(X[te]) == y[te].astype(str)).mean()),
                                "n": int(te.sum())}
    return out


def linear_probe(X: np.ndarray, labels: pd.DataFrame, train: np.ndarray, test: np.ndarray,
                 C: float = 0.5, levels=(1, 2, 3)) -> dict:
    """Macro-F1 and accuracy per level of a logistic regression fitted on ``train`` rows and
    scored on ``test`` rows (boolean masks): how linearly an embedding separates habitats.

    Each level is fitted on its own (no hierarchy), on the rows labelled at that level and with
    features; ``n`` counts the scored test rows. A test class never seen in training counts
    as an error."""
    ok = ~np.isnan(X).any(axis=1)
    out = {}
    for level in levels:
        y = labels[LEVEL_COLUMNS[level]].to_numpy(dtype=object)
        has = np.array([isinstance(v, str) for v in y]) & ok
        tr, te = train & has, test & has
        if len(set(y[tr])) < 2 or te.sum() == 0:
            out[f"level{level}"] = {"accuracy": float("nan"), "macro_f1": float("nan"), "n": int(te.sum())}
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        model.fit(X[tr], y[tr].astype(str))
        out[f"level{level}"] = metrics.level_metrics(y[te].astype(str), model.predict(X[te]))
    return out
