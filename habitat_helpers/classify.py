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

import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from . import metrics

LEVEL_COLUMNS = {1: "eunis_l1", 2: "eunis_l2", 3: "eunis_l3"}


class HierarchicalClassifier:
    """Per-level classifiers with hierarchy-consistent decoding.

    By default each level is a standardised multinomial logistic regression (``C``; ``tol``
    1e-3 converges to the same macro-F1 as 1e-4 within about 0.01 on the demo, 3-4 times
    faster). ``estimator`` replaces it with any scikit-learn classifier factory, e.g.
    :func:`coordinate_knn` for the k-NN on coordinates baseline."""

    def __init__(self, C: float = 0.5, max_iter: int = 500, tol: float = 1e-3, estimator=None):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.estimator = estimator
        self.models: dict[int, object] = {}
        self.classes: dict[int, np.ndarray] = {}

    def _new_model(self):
        if self.estimator is not None:
            return self.estimator()
        return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter, tol=self.tol))

    def fit(self, X: np.ndarray, labels: pd.DataFrame) -> HierarchicalClassifier:
        """``labels`` has ``eunis_l1, eunis_l2, eunis_l3`` columns (``None`` where unknown)."""
        for level, col in LEVEL_COLUMNS.items():
            y = labels[col].to_numpy(dtype=object)
            keep = np.array([isinstance(v, str) for v in y]) & ~np.isnan(X).any(axis=1)
            if len(set(y[keep])) < 2:
                raise ValueError(f"level {level} needs at least two habitats among the training labels")
            model = self._new_model()
            with warnings.catch_warnings():          # a few iterations short of tol is fine for a probe
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
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

    def path_proba(self, X: np.ndarray) -> pd.DataFrame:
        """Probability of each EUNIS path (level-3 habitat seen in training) per row: the three
        levels' probabilities multiplied along the path, renormalised over the paths. NaN rows
        where ``X`` is NaN."""
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
        out = np.full(score.shape, np.nan)
        if ok.any():
            z = score[ok] - score[ok].max(axis=1, keepdims=True)
            out[ok] = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        return pd.DataFrame(out, columns=leaves)

    def level_proba(self, X: np.ndarray, paths: pd.DataFrame | None = None) -> dict[int, pd.DataFrame]:
        """Per level, probabilities consistent with the hierarchy: the path probabilities summed
        over the paths under each code (so a level-2 code's probability is the sum of its
        level-3 children's)."""
        paths = self.path_proba(X) if paths is None else paths
        out = {}
        for level in (1, 2, 3):
            prefix = pd.Index([c[:level] for c in paths.columns])
            out[level] = paths.T.groupby(prefix.to_numpy()).sum(min_count=1).T
        return out

    def predict(self, X: np.ndarray) -> pd.DataFrame:
        """Hierarchy-consistent predictions ``eunis_l1, eunis_l2, eunis_l3`` (the most probable
        path), plus ``p_l3`` (its probability) and ``entropy_l3`` (entropy of the path
        probabilities, in nats)."""
        paths = self.path_proba(X)
        values = paths.to_numpy()
        ok = ~np.isnan(values).any(axis=1)
        best = np.full(len(X), None, dtype=object)
        best[ok] = np.array(paths.columns, dtype=object)[np.nanargmax(values[ok], axis=1)]
        safe = np.nan_to_num(values, nan=1.0)
        out = pd.DataFrame({
            "eunis_l1": [b[:1] if b else None for b in best],
            "eunis_l2": [b[:2] if b else None for b in best],
            "eunis_l3": best,
        })
        out["p_l3"] = np.where(ok, safe.max(axis=1), np.nan)
        out["entropy_l3"] = np.where(ok, -(safe * np.log(safe + 1e-12)).sum(axis=1), np.nan)
        return out


class MajorityClassifier(HierarchicalClassifier):
    """Predicts the training frequencies of the level-3 habitats for every site (the floor any
    model must beat): its top-1 prediction is the most frequent habitat at every level."""

    def fit(self, X, labels: pd.DataFrame) -> MajorityClassifier:
        counts = labels[LEVEL_COLUMNS[3]].dropna().value_counts()
        if counts.empty:
            raise ValueError("the majority baseline needs level-3 labels")
        self.frequencies = counts.sort_index() / counts.sum()
        self.classes = {3: self.frequencies.index.to_numpy()}
        return self

    def path_proba(self, X) -> pd.DataFrame:
        n = len(X)
        return pd.DataFrame(np.tile(self.frequencies.to_numpy(), (n, 1)), columns=list(self.frequencies.index))


def coordinate_knn(k: int = 15):
    """A factory for :class:`HierarchicalClassifier` (``estimator=``): k nearest labelled sites by
    great-circle distance, votes weighted by inverse distance. Features: ``[lat, lon]`` in
    radians (:func:`coordinates_radians`)."""
    from sklearn.neighbors import KNeighborsClassifier

    class CappedKNN(KNeighborsClassifier):       # fewer labelled sites than k: use them all
        def fit(self, X, y):
            self.n_neighbors = min(self.n_neighbors, len(X))
            return super().fit(X, y)

    def make():
        return CappedKNN(n_neighbors=k, metric="haversine", weights="distance", algorithm="ball_tree")

    return make


def coordinates_radians(lat, lon) -> np.ndarray:
    """``[lat, lon]`` in radians, the features of the :func:`coordinate_knn` baseline."""
    return np.deg2rad(np.column_stack([np.asarray(lat, float), np.asarray(lon, float)]))


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
