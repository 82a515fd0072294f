"""Hierarchical classification (levels 1-3 of EUNIS or any label scheme) on any feature matrix.

:class:`HierarchicalClassifier` fits one multinomial logistic regression per level on the
sites labelled at that level (a site labelled only ``R2`` trains levels 1 and 2). Its
predictions respect the hierarchy: every habitat of the deepest fitted level seen in training
is a path (``L1 -> L2 -> L3`` when all three levels are fitted) scored by the sum of the
fitted levels' log-probabilities along it, and the best path gives the predictions at every
level down to that one (so the level-2 prediction always lies under the level-1 one).

Labels that stop at level 1 or 2 (EVA exports, LUCAS and EMBAL labels, crosswalks) are
fine: a level without labels, or with a single habitat, is skipped (``skipped_`` says why,
``levels_`` lists the levels fitted), and the levels below the deepest fitted one are not
predicted (``None``).

The hierarchy is a :class:`habitat_helpers.labels.LabelScheme` (``scheme=``, EUNIS 2021 by
default): a code's ancestors come from the scheme's parent table, never from how the code is
spelt, so LUCAS land cover, CORINE or a hierarchy of your own decode the same way.

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

from . import labels as label_schemes
from . import metrics

LEVEL_COLUMNS = label_schemes.LEVEL_COLUMNS


def _ancestors(scheme, codes, level: int) -> list:
    """The ancestor at ``level`` of each code (the code itself at its own level, ``None`` for a
    missing code): the one place that knows how codes nest, through ``scheme``'s parents."""
    lookup = {c: scheme.ancestor(c, level) for c in set(codes) if isinstance(c, str)}
    return [lookup.get(c) if isinstance(c, str) else None for c in codes]


def _not_fitted(level: int, habitats: set) -> str:
    """Why a level cannot be fitted (the same words in every fold, so they can be counted)."""
    if not habitats:
        return f"level {level}: no training site is labelled at this level"
    return f"level {level}: a single habitat among the training labels (a classifier needs two)"


class HierarchicalClassifier:
    """Per-level classifiers with hierarchy-consistent decoding.

    By default each level is a standardised multinomial logistic regression (``C``; ``tol``
    1e-3 converges to the same macro-F1 as 1e-4 within about 0.01 on the demo, 3-4 times
    faster). ``estimator`` replaces it with any scikit-learn classifier factory, e.g.
    :func:`coordinate_knn` for the k-NN on coordinates baseline.

    After :meth:`fit`: ``levels_`` lists the levels fitted, ``skipped_`` maps each other
    level to the reason, and ``depth_`` is the deepest fitted level (the level of the paths)."""

    def __init__(self, C: float = 0.5, max_iter: int = 500, tol: float = 1e-3, estimator=None, scheme="eunis"):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.estimator = estimator
        self.scheme = label_schemes.get(scheme)
        self.models: dict[int, object] = {}
        self.classes: dict[int, np.ndarray] = {}
        self.levels_: list[int] = []
        self.skipped_: dict[int, str] = {}

    @property
    def depth_(self) -> int:
        """The deepest fitted level, where predictions stop."""
        if not self.levels_:
            raise ValueError("the classifier is not fitted")
        return max(self.levels_)

    def _new_model(self):
        if self.estimator is not None:
            return self.estimator()
        return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter, tol=self.tol))

    def fit(self, X: np.ndarray, labels: pd.DataFrame) -> HierarchicalClassifier:
        """``labels`` has ``eunis_l1, eunis_l2, eunis_l3`` columns (``None`` where unknown).

        Every level with at least two habitats among the training sites labelled at it (and
        with features) is fitted; the others are skipped. Raises ``ValueError``, saying why
        for each level, only when no level can be fitted."""
        self.models, self.classes, self.skipped_ = {}, {}, {}
        for level, col in LEVEL_COLUMNS.items():
            y = labels[col].to_numpy(dtype=object)
            keep = np.array([isinstance(v, str) for v in y], dtype=bool) & ~np.isnan(X).any(axis=1)
            habitats = set(y[keep])
            if len(habitats) < 2:
                self.skipped_[level] = _not_fitted(level, habitats)
                continue
            model = self._new_model()
            with warnings.catch_warnings():          # a few iterations short of tol is fine for a probe
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
                model.fit(X[keep], y[keep].astype(str))
            self.models[level] = model
            self.classes[level] = model.classes_
        self.levels_ = sorted(self.models)
        if not self.levels_:
            raise ValueError("no level can be fitted: " + "; ".join(self.skipped_.values()))
        return self

    def predict_proba(self, X: np.ndarray) -> dict[int, pd.DataFrame]:
        """Per fitted level, a ``(n, n_classes)`` table of probabilities (NaN rows where X is
        NaN), each level on its own (not hierarchy-consistent: see :meth:`level_proba`)."""
        ok = ~np.isnan(X).any(axis=1)
        out = {}
        for level, model in self.models.items():
            probs = np.full((len(X), len(self.classes[level])), np.nan)
            if ok.any():
                probs[ok] = model.predict_proba(X[ok])
            out[level] = pd.DataFrame(probs, columns=self.classes[level])
        return out

    def path_proba(self, X: np.ndarray) -> pd.DataFrame:
        """Probability of each path per row. The paths are the habitats of the deepest fitted
        level seen in training (level 3 when all levels are labelled); each is scored by the
        fitted levels' probabilities multiplied along it, renormalised over the paths. NaN rows
        where ``X`` is NaN."""
        probs = self.predict_proba(X)
        eps = 1e-9
        depth = self.depth_
        leaves = list(self.classes[depth])
        score = np.log(probs[depth].to_numpy() + eps)
        for level in self.levels_:
            if level == depth:
                continue
            p = probs[level]
            cols = _ancestors(self.scheme, leaves, level)
            score = score + np.log(np.column_stack(
                [p[c].to_numpy() if c in p.columns else np.full(len(X), eps) for c in cols]) + eps)
        ok = ~np.isnan(score).any(axis=1)
        out = np.full(score.shape, np.nan)
        if ok.any():
            z = score[ok] - score[ok].max(axis=1, keepdims=True)
            out[ok] = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        return pd.DataFrame(out, columns=leaves)

    def level_proba(self, X: np.ndarray, paths: pd.DataFrame | None = None) -> dict[int, pd.DataFrame]:
        """Per level down to the deepest fitted one, probabilities consistent with the
        hierarchy: the path probabilities summed over the paths under each code (so a level-2
        code's probability is the sum of its level-3 children's). Deeper levels have no table."""
        paths = self.path_proba(X) if paths is None else paths
        out = {}
        for level in range(1, self.depth_ + 1):
            ancestors = pd.Index(_ancestors(self.scheme, list(paths.columns), level))
            out[level] = paths.T.groupby(ancestors.to_numpy()).sum(min_count=1).T
        return out

    def predict(self, X: np.ndarray) -> pd.DataFrame:
        """Hierarchy-consistent predictions ``eunis_l1, eunis_l2, eunis_l3`` (the most probable
        path; ``None`` below the deepest fitted level), plus ``p_l3`` (the path's probability)
        and ``entropy_l3`` (entropy of the path probabilities, in nats). The paths are level-3
        habitats when level 3 is fitted, else those of the deepest fitted level."""
        paths = self.path_proba(X)
        values = paths.to_numpy()
        ok = ~np.isnan(values).any(axis=1)
        best = np.full(len(X), None, dtype=object)
        best[ok] = np.array(paths.columns, dtype=object)[np.nanargmax(values[ok], axis=1)]
        safe = np.nan_to_num(values, nan=1.0)
        depth = self.depth_
        out = pd.DataFrame({col: _ancestors(self.scheme, best, level) if level <= depth else [None] * len(best)
                            for level, col in LEVEL_COLUMNS.items()})
        out["p_l3"] = np.where(ok, safe.max(axis=1), np.nan)
        out["entropy_l3"] = np.where(ok, -(safe * np.log(safe + 1e-12)).sum(axis=1), np.nan)
        return out


class MajorityClassifier(HierarchicalClassifier):
    """Predicts the training frequencies of the habitats of the deepest labelled level (level 3
    when there are level-3 labels) for every site (the floor any model must beat): its top-1
    prediction is the most frequent habitat at every level down to that one."""

    def fit(self, X, labels: pd.DataFrame) -> MajorityClassifier:
        self.skipped_ = {}
        for level in sorted(LEVEL_COLUMNS, reverse=True):
            counts = labels[LEVEL_COLUMNS[level]].dropna().value_counts()
            if not counts.empty:
                break
            self.skipped_[level] = _not_fitted(level, set())
        else:
            raise ValueError("the majority baseline needs labelled training sites")
        self.frequencies = counts.sort_index() / counts.sum()
        self.classes = {level: self.frequencies.index.to_numpy()}
        self.levels_ = [level]
        return self

    def path_proba(self, X) -> pd.DataFrame:
        n = len(X)
        return pd.DataFrame(np.tile(self.frequencies.to_numpy(), (n, 1)), columns=list(self.frequencies.index))


def is_consistent(predictions: pd.DataFrame, scheme="eunis") -> bool:
    """True when every prediction lies under the one of the level above it in ``scheme``
    (``predictions`` has ``eunis_l1 .. eunis_l3``; rows without a finer prediction pass)."""
    scheme = label_schemes.get(scheme)
    for level in (2, 3):
        finer = predictions[LEVEL_COLUMNS[level]].to_numpy(object)
        coarser = predictions[LEVEL_COLUMNS[level - 1]].to_numpy(object)
        above = _ancestors(scheme, finer, level - 1)
        if any(isinstance(f, str) and a != c for f, a, c in zip(finer, above, coarser)):
            return False
    return True


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
    """Per-level accuracy and macro-F1 of ``predictions`` against ``truth`` (same rows), for
    the levels that were predicted (a classifier fitted on coarser labels predicts none below)."""
    return {f"level{level}": metrics.level_metrics(truth[col].to_numpy(object), predictions[col].to_numpy(object))
            for level, col in LEVEL_COLUMNS.items() if predictions[col].notna().any()}


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
        has = np.array([isinstance(v, str) for v in y], dtype=bool) & ok
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
        has = np.array([isinstance(v, str) for v in y], dtype=bool) & ok
        tr, te = train & has, test & has
        if len(set(y[tr])) < 2 or te.sum() == 0:
            out[f"level{level}"] = {"accuracy": float("nan"), "macro_f1": float("nan"), "n": int(te.sum())}
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        model.fit(X[tr], y[tr].astype(str))
        out[f"level{level}"] = metrics.level_metrics(y[te].astype(str), model.predict(X[te]))
    return out
