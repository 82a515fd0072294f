"""Hierarchical classification (levels 1-3 of EUNIS or any label scheme) on any feature matrix.

:class:`HierarchicalClassifier` fits one multinomial logistic regression per level on the
sites labelled at that level (a site labelled only ``R2`` trains levels 1 and 2). Its
predictions respect the hierarchy. The paths are read top-down from the habitats seen in
training: every level-1 habitat, continued by its children among the level-2 habitats, and
those by their children among the level-3 habitats. A habitat with no child among the
habitats of the next fitted level is a leaf, so a path may stop early: a formation whose
training sites are all labelled at level 2 (LUCAS, EMBAL) is still predicted at levels 1 and
2. A path's probability is coherent top-down,

    P(a1 -> a2 -> a3) = p1(a1) * p2(a2 | a1) * p3(a3 | a2),

where ``p_k(a | parent)`` is the level-k classifier's probability of ``a`` renormalised over
the level-k habitats under ``parent`` (the children it knows), and a path that stops takes no
factor below its leaf. The path probabilities sum to 1; summed under each code they give
hierarchy-consistent probabilities at every level (:meth:`HierarchicalClassifier.level_proba`),
with level 1 equal to the level-1 classifier's. The most probable path gives the predictions at
every level (so the level-2 prediction always lies under the level-1 one); where it stopped
above a level, that level's prediction is the stopped, coarser code.

``decoding="product"`` keeps the earlier decoding: the paths are only the habitats of the
deepest fitted level, each scored by the product of every fitted level's probability of its
code there, renormalised over the paths. When every habitat has labels at the deepest level it
is better (on well-separated synthetic clusters, 1.5-3 points of macro-F1 at every level, less
on noisier ones: the finer classifiers also vote on the coarser choices), but a habitat without
training sites labelled at the deepest level is never predicted, at any level.

Labels that stop at level 1 or 2 (EVA exports, LUCAS and EMBAL labels, crosswalks) are
fine: a level without labels, or with a single habitat, is skipped (``skipped_`` says why,
``levels_`` lists the levels fitted). A skipped level takes no factor (the chain goes from the
fitted level above it to the one below, and its prediction is the ancestor of the deeper
code, as a single-habitat classifier would give), and the levels below the deepest fitted one
are not predicted (``None``).

EVA "Expert System" cells may list several codes (``R22, R23``). By default a site keeps their
common ancestor (``multi_code="ancestor"``); ``multi_code="soft"`` trains each level on the
distinct ancestors of the candidates there (the ``label_candidates`` column), each with weight
1 / their number.

The hierarchy is a :class:`habitat_helpers.labels.LabelScheme` (``scheme=``, EUNIS 2021 by
default): a code's ancestors come from the scheme's parent table, never from how the code is
spelt, so LUCAS land cover, CORINE or a hierarchy of your own decode the same way.

The same class serves the aligned model and the baselines, so they are compared in one
harness: only the features differ.
"""

from __future__ import annotations

import hashlib
import warnings
from functools import lru_cache

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import has_fit_parameter
from threadpoolctl import ThreadpoolController

from . import labels as label_schemes
from . import metrics

LEVEL_COLUMNS = label_schemes.LEVEL_COLUMNS

#: Column of a site table listing the candidate codes of a multi-code cell (``"R22;R23"``).
CANDIDATES_COLUMN = label_schemes.CANDIDATES_COLUMN

#: Values of ``HierarchicalClassifier(multi_code=...)``.
MULTI_CODE = ("ancestor", "soft")

#: Values of ``HierarchicalClassifier(decoding=...)``.
DECODINGS = ("top-down", "product")


@lru_cache(maxsize=1)
def _threadpools() -> ThreadpoolController:
    """The BLAS and OpenMP libraries of this process, found once (a search costs about 3 ms,
    as much as a small fit)."""
    return ThreadpoolController()


def _one_blas_thread():
    """A context in which BLAS runs on one thread: logistic fits of these sizes are about twice as
    fast on one thread as on two, and parallel folds then share the cores instead of contending."""
    return _threadpools().limit(limits=1, user_api="blas")


def _ancestors(scheme, codes, level: int, keep_coarser: bool = False) -> list:
    """The ancestor at ``level`` of each code (the code itself at its own level, ``None`` for a
    missing code): the one place that knows how codes nest, through ``scheme``'s parents. With
    ``keep_coarser``, a code coarser than ``level`` (a path that stopped above it) stays itself
    instead of having no ancestor there."""
    lookup = {c: c if keep_coarser and scheme.level_of(c) < level else scheme.ancestor(c, level)
              for c in set(codes) if isinstance(c, str)}
    return [lookup.get(c) if isinstance(c, str) else None for c in codes]


def _within_parents(p: np.ndarray, parents: list) -> np.ndarray:
    """``p`` (rows x classes) divided, row by row, by the sum over the classes with the same
    parent: each class's probability given its parent (uniform among siblings that all have 0;
    NaN rows stay NaN)."""
    parents = np.asarray(parents, dtype=object)
    out = np.empty_like(p)
    for parent in set(parents):
        cols = parents == parent
        total = p[:, cols].sum(axis=1, keepdims=True)
        out[:, cols] = np.divide(p[:, cols], total, out=np.full((len(p), cols.sum()), 1 / cols.sum()),
                                 where=total != 0)
    return out


def _candidates(value) -> list[str]:
    """The codes of an ``label_candidates`` cell (``"R22;R23"``); none for an empty or missing one."""
    if not isinstance(value, str):
        return []
    return [c.strip() for c in value.split(";") if c.strip()]


def _sample_weight(model, weights: np.ndarray) -> dict:
    """The ``fit`` keyword that gives ``weights`` to ``model`` (to its last step for a pipeline, e.g.
    ``logisticregression__sample_weight``). Raises ``ValueError`` when it takes no weights."""
    prefix, final = (f"{model.steps[-1][0]}__", model.steps[-1][1]) if isinstance(model, Pipeline) else ("", model)
    if not has_fit_parameter(final, "sample_weight"):
        raise ValueError(f'multi_code="soft" (soft targets) needs an estimator whose fit takes sample_weight; '
                         f'{type(final).__name__} does not: use multi_code="ancestor" with it')
    return {f"{prefix}sample_weight": weights}


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

    ``decoding`` is ``"top-down"`` (default: paths may stop early, see the module docstring) or
    ``"product"`` (paths only at the deepest fitted level, scored by the product of the levels'
    probabilities; better when every habitat has labels at the deepest level).

    ``multi_code`` says how a training site with several candidate codes (a non-empty
    ``label_candidates`` value, e.g. ``"R22;R23"``) trains: ``"ancestor"`` (default) uses its
    ``label_l1..3`` labels (the candidates' common ancestor) and ignores the column;
    ``"soft"`` gives it, at each level, one training row per distinct ancestor of its
    candidates there, weighted 1 / their number (a single row of weight 1 where they share
    it; its own label at a level some candidate is coarser than). Soft targets need an
    estimator whose ``fit`` takes ``sample_weight``; without the column they change nothing.

    After :meth:`fit`: ``levels_`` lists the levels fitted, ``skipped_`` maps each other
    level to the reason, ``depth_`` is the deepest fitted level (predictions stop there) and
    ``paths_`` names the paths by their leaves (codes of ``depth_`` or, for paths that stop
    early, of a coarser level)."""

    def __init__(self, C: float = 0.5, max_iter: int = 500, tol: float = 1e-3, estimator=None, scheme="eunis",
                 multi_code: str = "ancestor", decoding: str = "top-down"):
        for name, value, allowed in (("multi_code", multi_code, MULTI_CODE), ("decoding", decoding, DECODINGS)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}: expected one of {', '.join(map(repr, allowed))}")
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.estimator = estimator
        self.scheme = label_schemes.get(scheme)
        self.multi_code = multi_code
        self.decoding = decoding
        self.models: dict[int, object] = {}
        self.classes: dict[int, np.ndarray] = {}
        self.levels_: list[int] = []
        self.skipped_: dict[int, str] = {}
        self.paths_: list[str] = []

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

    def _targets(self, labels: pd.DataFrame, level: int, usable: np.ndarray):
        """The rows of ``X``, codes and sample weights that train ``level`` (weights ``None``
        unless soft targets are on): every usable row labelled at the level once, except that
        with soft targets a row with candidates contributes one row per distinct ancestor of
        its candidates at the level, each weighted 1 / their number."""
        own = labels[LEVEL_COLUMNS[level]].to_numpy(dtype=object)
        labelled = usable & np.array([isinstance(v, str) for v in own], dtype=bool)
        if self.multi_code != "soft" or CANDIDATES_COLUMN not in labels:
            return np.flatnonzero(labelled), own[labelled], None
        candidates = [_candidates(v) for v in labels[CANDIDATES_COLUMN].to_numpy(dtype=object)]
        listed = np.array([bool(c) for c in candidates], dtype=bool)
        rows, codes = list(np.flatnonzero(labelled & ~listed)), list(own[labelled & ~listed])
        weights = [1.0] * len(rows)
        for i in np.flatnonzero(usable & listed):
            spread = sorted(set(_ancestors(self.scheme, candidates[i], level)), key=str)
            if None not in spread:
                rows += [i] * len(spread)
                codes += spread
                weights += [1 / len(spread)] * len(spread)
            elif labelled[i]:                    # a candidate coarser than the level: the row's own label
                rows.append(i)
                codes.append(own[i])
                weights.append(1.0)
        return np.array(rows, dtype=int), np.array(codes, dtype=object), np.array(weights)

    def fit(self, X: np.ndarray, labels: pd.DataFrame) -> HierarchicalClassifier:
        """``labels`` has ``label_l1, label_l2, label_l3`` columns (``None`` where unknown), and
        optionally ``label_candidates`` (read with ``multi_code="soft"``).

        Every level with at least two habitats among the training sites labelled at it (and
        with features) is fitted; the others are skipped. Raises ``ValueError``, saying why
        for each level, only when no level can be fitted (or when soft targets meet an
        estimator without ``sample_weight``)."""
        labels = label_schemes.current_names(labels, "labels")
        self.models, self.classes, self.skipped_ = {}, {}, {}
        usable = ~np.isnan(X).any(axis=1)
        for level in LEVEL_COLUMNS:
            rows, y, weights = self._targets(labels, level, usable)
            habitats = set(y)
            if len(habitats) < 2:
                self.skipped_[level] = _not_fitted(level, habitats)
                continue
            model = self._new_model()
            extra = {} if weights is None else _sample_weight(model, weights)
            # one BLAS thread: on these sizes (a few thousand sites, up to a few thousand features)
            # more threads only contend, and fits ran 2-7 times slower on 2 cores (measured)
            with warnings.catch_warnings(), _one_blas_thread():
                warnings.simplefilter("ignore", ConvergenceWarning)   # a few iterations short of tol is fine
                warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
                # every row (one label per row, all labelled): X itself, not a copy of it
                whole = np.array_equal(rows, np.arange(len(X)))
                model.fit(X if whole else X[rows], y.astype(str), **extra)
            self.models[level] = model
            self.classes[level] = model.classes_
        self.levels_ = sorted(self.models)
        if not self.levels_:
            raise ValueError("no level can be fitted: " + "; ".join(self.skipped_.values()))
        self.paths_ = self._leaves()
        return self

    def with_decoding(self, decoding: str) -> HierarchicalClassifier:
        """A copy of this fitted classifier that decodes with ``decoding`` (the per-level models
        are shared, nothing is refitted): how the harness compares the decodings on validation
        sites at no cost."""
        import copy

        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {', '.join(map(repr, DECODINGS))}, not {decoding!r}")
        other = copy.copy(self)
        other.decoding = decoding
        if self.levels_:
            other.paths_ = other._leaves()
        return other

    def _leaves(self) -> list[str]:
        """The paths, named by their leaves (sorted). Top-down: the habitats of the first fitted
        level, each replaced by its children among the habitats of the next fitted level, if it
        has any, and so on down to the deepest (a habitat whose parent is not among the habitats
        of the fitted level above is on no path). Product: the habitats of the deepest level."""
        if self.decoding == "product":
            return sorted(str(c) for c in self.classes[self.depth_])
        leaves = list(self.classes[self.levels_[0]])
        for above, level in zip(self.levels_, self.levels_[1:]):
            children: dict[str, list[str]] = {}
            for code, parent in zip(self.classes[level], _ancestors(self.scheme, self.classes[level], above)):
                children.setdefault(parent, []).append(code)
            leaves = [child for code in leaves for child in children.get(code, [code])]
        return sorted(str(c) for c in leaves)

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
        """Probability of each path per row, one column per path named by its leaf (``paths_``):
        the product down the path of each fitted level's probability given the path's code at
        the fitted level above (the level's probabilities renormalised over the habitats under
        that code), no factor below a leaf; with ``decoding="product"``, see
        ``_product_proba``. Rows sum to 1; NaN rows where ``X`` is NaN."""
        probs = self.predict_proba(X)
        if self.decoding == "product":
            return self._product_proba(probs)
        leaves = self.paths_
        leaf_level = np.array([self.scheme.level_of(c) for c in leaves])
        out = np.ones((len(X), len(leaves)))
        above = None
        for level in self.levels_:
            p = probs[level].to_numpy()
            if above is not None:
                p = _within_parents(p, _ancestors(self.scheme, self.classes[level], above))
            on = np.flatnonzero(leaf_level >= level)           # the paths that reach this level
            column = {c: j for j, c in enumerate(self.classes[level])}
            out[:, on] *= p[:, [column[c] for c in _ancestors(self.scheme, [leaves[j] for j in on], level)]]
            above = level
        return pd.DataFrame(out / out.sum(axis=1, keepdims=True), columns=leaves)

    def _product_proba(self, probs: dict[int, pd.DataFrame]) -> pd.DataFrame:
        """The ``"product"`` decoding: each habitat of the deepest fitted level scored by the
        fitted levels' probabilities of its codes multiplied along it (a code unknown to a
        level's classifier gets 1e-9), renormalised over these paths."""
        eps = 1e-9
        leaves = self.paths_
        score = np.log(probs[self.depth_][leaves].to_numpy() + eps)
        for level in self.levels_[:-1]:
            p = probs[level]
            score = score + np.log(np.column_stack(
                [p[c].to_numpy() if c in p.columns else np.full(len(p), eps)
                 for c in _ancestors(self.scheme, leaves, level)]) + eps)
        ok = ~np.isnan(score).any(axis=1)
        out = np.full(score.shape, np.nan)
        if ok.any():
            z = score[ok] - score[ok].max(axis=1, keepdims=True)
            out[ok] = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        return pd.DataFrame(out, columns=leaves)

    def level_proba(self, X: np.ndarray, paths: pd.DataFrame | None = None) -> dict[int, pd.DataFrame]:
        """Per level down to the deepest fitted one, probabilities consistent with the
        hierarchy: the path probabilities summed over the paths through each code. The
        columns are the level's codes plus, for paths that stop above the level, their own
        (coarser) codes; so summing a level's columns into their parents (a stopped code into
        itself) gives the level above, and rows sum to 1. Deeper levels have no table."""
        paths = self.path_proba(X) if paths is None else paths
        out = {}
        for level in range(1, self.depth_ + 1):
            codes = pd.Index(_ancestors(self.scheme, list(paths.columns), level, keep_coarser=True))
            out[level] = paths.T.groupby(codes.to_numpy()).sum(min_count=1).T
        return out

    def level_codes(self) -> dict[int, list[str]]:
        """The codes :meth:`predict` can give at each level down to the deepest fitted one
        (sorted; the columns of :meth:`level_proba`, stopped coarser codes included), e.g. the
        ``classes`` of :func:`habitat_helpers.maps.predict_rasters`."""
        return {level: sorted(set(_ancestors(self.scheme, self.paths_, level, keep_coarser=True))) for level in range(1, self.depth_ + 1)}

    def predict(self, X: np.ndarray, paths: pd.DataFrame | None = None) -> pd.DataFrame:
        """Hierarchy-consistent predictions ``label_l1, label_l2, label_l3``: the most probable
        path's code at each level, its leaf at the levels below the one where it stopped,
        ``None`` below the deepest fitted level. Plus ``p_l3`` (the path's probability) and
        ``entropy_l3`` (entropy of the path probabilities, in nats). ``paths``: the
        :meth:`path_proba` of ``X`` when already computed."""
        paths = self.path_proba(X) if paths is None else paths
        values = paths.to_numpy()
        ok = ~np.isnan(values).any(axis=1)
        best = np.full(len(X), None, dtype=object)
        best[ok] = np.array(paths.columns, dtype=object)[np.nanargmax(values[ok], axis=1)]
        safe = np.nan_to_num(values, nan=1.0)
        depth = self.depth_
        out = pd.DataFrame({col: _ancestors(self.scheme, best, level, keep_coarser=True) if level <= depth else [None] * len(best)
                            for level, col in LEVEL_COLUMNS.items()})
        out["p_l3"] = np.where(ok, safe.max(axis=1), np.nan)
        out["entropy_l3"] = np.where(ok, -(safe * np.log(safe + 1e-12)).sum(axis=1), np.nan)
        return out


class MajorityClassifier(HierarchicalClassifier):
    """Predicts the training frequencies of the habitats of the deepest labelled level (level 3
    when there are level-3 labels) for every site (the floor any model must beat): its top-1
    prediction is the most frequent habitat at every level down to that one. Its paths are
    those habitats (none stops early); ``multi_code`` and ``decoding`` are ignored."""

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
        self.paths_ = list(self.frequencies.index)
        return self

    def path_proba(self, X) -> pd.DataFrame:
        n = len(X)
        return pd.DataFrame(np.tile(self.frequencies.to_numpy(), (n, 1)), columns=self.paths_)


def is_consistent(predictions: pd.DataFrame, scheme="eunis") -> bool:
    """True when every prediction lies under the one of the level above it in ``scheme``, or
    repeats it (a path that stopped above that level); ``predictions`` has ``label_l1 ..
    label_l3``, and rows without a finer prediction pass."""
    scheme = label_schemes.get(scheme)
    for level in (2, 3):
        finer = predictions[LEVEL_COLUMNS[level]].to_numpy(object)
        coarser = predictions[LEVEL_COLUMNS[level - 1]].to_numpy(object)
        above = _ancestors(scheme, finer, level - 1)
        if any(isinstance(f, str) and f != c and a != c for f, a, c in zip(finer, above, coarser)):
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

    make.kind, make.k = "coordinate-knn", k        # what classifier_state saves of it
    return make


#: Fewest training rows for which :class:`SupervisedHeadClassifier` holds a tenth out to stop early
#: (fewer: a validation set of a handful of rows cannot stop anything; it trains for its most epochs).
MLP_EARLY_STOPPING_ROWS = 100


class SupervisedHeadClassifier(HierarchicalClassifier):
    """The capacity control of the contrastive heads: the same architecture and the same classifier
    on top, with a supervised objective instead of the contrastive one.

    A network ``input -> hidden -> dim`` (scikit-learn's MLP, ReLU, Adam) is trained on the
    labels, with one softmax over the deepest code each training site has (``label_l3``, else
    ``label_l2``, else ``label_l1``), L2 penalty ``alpha``, at most ``epochs`` epochs, stopping
    after ``patience`` epochs without gain on a tenth of the rows (from
    :data:`MLP_EARLY_STOPPING_ROWS` rows on). Its ``dim``-wide last hidden layer then replaces the
    inputs of the per-level logistic regression (``C``) of :class:`HierarchicalClassifier`: the
    aligned model reads the heads' ``dim``-wide output the same way."""

    def __init__(self, hidden: int, dim: int, alpha: float, *, batch_size: int, lr: float, epochs: int,
                 patience: int, seed: int = 0, networks: dict | None = None, epoch_sites: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.dim, self.alpha = hidden, dim, alpha
        self.batch_size, self.lr, self.epochs, self.patience, self.seed = batch_size, lr, epochs, patience, seed
        #: with more training rows than this, fewer epochs, as many rows seen in all as ``epochs``
        #: epochs of ``epoch_sites`` rows (the heads' budget, :attr:`habitat_helpers.align.AlignConfig.epoch_sites`)
        self.epoch_sites = epoch_sites
        #: trained networks by their settings and training data, shared by the candidates that
        #: differ only in ``C`` (a few kept, the oldest dropped)
        self.networks = networks
        self.network_ = None

    def fit(self, X: np.ndarray, labels: pd.DataFrame) -> SupervisedHeadClassifier:
        deepest = labels[LEVEL_COLUMNS[3]].where(labels[LEVEL_COLUMNS[3]].notna(), labels[LEVEL_COLUMNS[2]])
        deepest = deepest.where(deepest.notna(), labels[LEVEL_COLUMNS[1]]).to_numpy(dtype=object)
        rows = ~np.isnan(X).any(axis=1) & np.array([isinstance(v, str) for v in deepest], dtype=bool)
        if len(set(deepest[rows])) < 2:
            raise ValueError("no level can be fitted: fewer than two habitats among the training labels")
        key = (self.hidden, self.dim, self.alpha, self.batch_size, self.lr, self.epochs, self.patience, self.seed,
               self.epoch_sites,
               hashlib.sha1(np.ascontiguousarray(X[rows])).hexdigest(),
               hashlib.sha1("\n".join(deepest[rows].astype(str)).encode()).hexdigest())
        self.network_ = self.networks.get(key) if self.networks is not None else None
        if self.network_ is None:
            self.network_ = self._train_network(X[rows], deepest[rows].astype(str))
            if self.networks is not None:
                self.networks[key] = self.network_
                while len(self.networks) > 4:
                    self.networks.pop(next(iter(self.networks)))
        return super().fit(self.transform(X), labels)

    def _train_network(self, X: np.ndarray, y: np.ndarray):
        from sklearn.neural_network import MLPClassifier

        network = make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(self.hidden, self.dim), alpha=self.alpha, batch_size=self.batch_size,
            learning_rate_init=self.lr, max_iter=self.epochs_for(len(X)), n_iter_no_change=self.patience,
            early_stopping=len(X) >= MLP_EARLY_STOPPING_ROWS, random_state=self.seed))
        with warnings.catch_warnings(), _one_blas_thread():
            warnings.simplefilter("ignore", ConvergenceWarning)
            # a batch larger than the training rows is one full batch (scikit-learn clips it)
            warnings.filterwarnings("ignore", message="Got `batch_size` less than 1 or larger than sample size")
            return network.fit(X, y)

    def epochs_for(self, rows: int) -> int:
        """The most epochs on ``rows`` training rows: ``epochs``, or fewer beyond ``epoch_sites`` rows
        (at least one)."""
        if self.epoch_sites is None or rows <= self.epoch_sites:
            return self.epochs
        return max(1, round(self.epochs * self.epoch_sites / rows))

    def transform(self, X: np.ndarray) -> np.ndarray:
        """The network's last hidden layer (``dim`` columns) of ``X``; NaN rows stay NaN."""
        scaler, mlp = self.network_[0], self.network_[-1]
        out = np.full((len(X), self.dim), np.nan)
        ok = ~np.isnan(X).any(axis=1)
        if ok.any():
            h = scaler.transform(X[ok])
            for w, b in zip(mlp.coefs_[:-1], mlp.intercepts_[:-1]):
                h = np.maximum(h @ w + b, 0.0)
            out[ok] = h
        return out

    def predict_proba(self, X: np.ndarray) -> dict[int, pd.DataFrame]:
        return super().predict_proba(self.transform(X))


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
        with _one_blas_thread():      # faster on these sizes (see HierarchicalClassifier.fit)
            model.fit(X[tr], y[tr].astype(str))
        out[f"level{level}"] = metrics.level_metrics(y[te].astype(str), model.predict(X[te]))
    return out


def uncertainty(probs: pd.DataFrame, codes) -> tuple[np.ndarray, np.ndarray]:
    """Per row of one level's probabilities ``probs`` (one column per code,
    :meth:`HierarchicalClassifier.level_proba`): the probability of the predicted code in
    ``codes`` and the entropy of the row in nats (0 = certain), the two uncertainty bands of the
    maps' GeoTIFFs."""
    p = probs.to_numpy(float)
    p_top = p[np.arange(len(p)), probs.columns.get_indexer(np.asarray(codes, dtype=object))]
    return p_top, -(p * np.log(p + 1e-12)).sum(axis=1)


# --- a fitted classifier as plain settings and arrays (saved without pickle) --------------------

def _logistic_state(model, prefix: str, arrays: dict) -> None:
    scaler, lr = model[0], model[-1]
    for name in ("mean_", "scale_", "var_"):
        arrays[f"{prefix}scaler.{name}"] = np.asarray(getattr(scaler, name))
    arrays[f"{prefix}coef"], arrays[f"{prefix}intercept"] = lr.coef_, lr.intercept_


def _logistic_from_state(arrays, prefix: str, classes: np.ndarray, C: float):
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C))
    scaler, lr = model[0], model[-1]
    for name in ("mean_", "scale_", "var_"):
        setattr(scaler, name, arrays[f"{prefix}scaler.{name}"])
    scaler.n_features_in_ = lr.n_features_in_ = len(scaler.mean_)
    scaler.n_samples_seen_ = 1
    lr.coef_, lr.intercept_, lr.classes_ = arrays[f"{prefix}coef"], arrays[f"{prefix}intercept"], classes
    return model


def classifier_state(clf: HierarchicalClassifier) -> tuple[dict, dict[str, np.ndarray]]:
    """Everything a fitted classifier predicts from, as JSON-ready settings and named arrays:
    :func:`classifier_from_state` rebuilds it, predicting the same probabilities, without unpickling
    anything. The per-level logistic regressions, the coordinate k-NN (its training sites), the
    capacity-matched network and the majority baseline are supported; another estimator raises
    ``ValueError``."""
    state = {"C": clf.C, "max_iter": clf.max_iter, "tol": clf.tol, "multi_code": clf.multi_code,
             "decoding": clf.decoding, "levels": list(clf.levels_), "paths": list(clf.paths_),
             "skipped": {str(k): v for k, v in clf.skipped_.items()},
             "classes": {str(level): [str(c) for c in codes] for level, codes in clf.classes.items()}}
    arrays: dict[str, np.ndarray] = {}
    if isinstance(clf, MajorityClassifier):
        state["kind"] = "majority"
        arrays["frequencies"] = clf.frequencies.to_numpy(float)
        return state, arrays
    if isinstance(clf, SupervisedHeadClassifier):
        state |= {"kind": "network", "hidden": clf.hidden, "dim": clf.dim, "alpha": clf.alpha}
        scaler, mlp = clf.network_[0], clf.network_[-1]
        arrays["network.mean"], arrays["network.scale"] = scaler.mean_, scaler.scale_
        for i, (w, b) in enumerate(zip(mlp.coefs_[:-1], mlp.intercepts_[:-1])):
            arrays[f"network.w{i}"], arrays[f"network.b{i}"] = w, b
        state["network_layers"] = len(mlp.coefs_) - 1
    elif clf.estimator is None:
        state["kind"] = "logistic"
    elif getattr(clf.estimator, "kind", None) == "coordinate-knn":
        state |= {"kind": "coordinate-knn", "k": clf.estimator.k}
        for level, model in clf.models.items():
            arrays[f"level{level}.X"] = model._fit_X
            arrays[f"level{level}.y"] = np.asarray(model.classes_[model._y]).astype(str)
        return state, arrays
    else:
        raise ValueError(f"{type(clf).__name__} with estimator {clf.estimator!r} cannot be saved without pickle: "
                         "keep a model of logistic regressions, k-NN on coordinates, the MLP or the majority")
    for level, model in clf.models.items():
        _logistic_state(model, f"level{level}.", arrays)
    return state, arrays


def classifier_from_state(state: dict, arrays, scheme="eunis") -> HierarchicalClassifier:
    """The classifier :func:`classifier_state` described (``arrays``: a mapping of its arrays)."""
    kind = state["kind"]
    common = {"scheme": scheme, "multi_code": state["multi_code"], "decoding": state["decoding"]}
    if kind == "majority":
        clf = MajorityClassifier(**common)
    elif kind == "network":
        clf = SupervisedHeadClassifier(state["hidden"], state["dim"], state["alpha"], batch_size=1, lr=0.0,
                                       epochs=0, patience=0, C=state["C"], **common)
        clf.network_ = _NetworkState([(arrays[f"network.w{i}"], arrays[f"network.b{i}"])
                                      for i in range(state["network_layers"])],
                                     arrays["network.mean"], arrays["network.scale"])
    elif kind == "coordinate-knn":
        clf = HierarchicalClassifier(estimator=coordinate_knn(state["k"]), **common)
    elif kind == "logistic":
        clf = HierarchicalClassifier(C=state["C"], max_iter=state["max_iter"], tol=state["tol"], **common)
    else:
        raise ValueError(f"unknown classifier kind {kind!r}")
    clf.classes = {int(level): np.array(codes, dtype=object) for level, codes in state["classes"].items()}
    clf.levels_ = [int(level) for level in state["levels"]]
    clf.skipped_ = {int(level): why for level, why in state["skipped"].items()}
    clf.paths_ = list(state["paths"])
    if kind == "majority":
        clf.frequencies = pd.Series(arrays["frequencies"], index=clf.paths_)
        return clf
    for level in clf.levels_:
        if kind == "coordinate-knn":
            clf.models[level] = clf.estimator().fit(arrays[f"level{level}.X"], arrays[f"level{level}.y"])
        else:
            clf.models[level] = _logistic_from_state(arrays, f"level{level}.", clf.classes[level], state["C"])
    return clf


class _NetworkState:
    """The hidden layers of a saved :class:`SupervisedHeadClassifier` network, indexed like the
    fitted pipeline (``[0]`` the scaler, ``[-1]`` the network) for :meth:`SupervisedHeadClassifier.transform`."""

    def __init__(self, layers, mean, scale):
        scaler = StandardScaler()
        scaler.mean_, scaler.scale_, scaler.n_features_in_ = mean, scale, len(mean)
        scaler.var_, scaler.n_samples_seen_ = scale ** 2, 1

        class Network:
            coefs_ = [w for w, _ in layers] + [None]
            intercepts_ = [b for _, b in layers] + [None]

        self.parts = [scaler, Network()]

    def __getitem__(self, i):
        return self.parts[i]
