"""Spatial block cross-validation: the aligned space against baselines, in one harness.

For every seed and every fold of geographic blocks (:func:`block_folds`):

1. the contrastive heads are trained on the sites outside the test fold (no labels; early
   stopping on validation blocks carved out of the training blocks), so the test fold's
   inputs are never seen, not even unlabelled;
2. every model is the same :class:`~habitat_helpers.classify.HierarchicalClassifier` fitted
   on the labelled training sites, only the features differ:

   ====================================  ====================================================
   ``aligned``                           the aligned vectors of the inputs a site has (side by side)
   ``raw <modality>``                    one pre-trained embedding alone (the mono-scale baselines)
   ``raw concatenated``                  all raw embeddings side by side (zeros and a flag if missing)
   ``raw concatenated without env``      the same without the ``env`` covariates, when ``env`` is one
                                         of three or more modalities (inputs with and without env)
   ``k-NN on coordinates``               the labelled sites nearest by great-circle distance
   ``majority``                          training frequencies of the habitats
   ====================================  ====================================================

3. each model is scored per level on the labelled test sites it has inputs for: top-1 and
   top-3 accuracy, macro-F1, balanced accuracy and expected calibration error.

Labels that stop at level 1 or 2 are evaluated at the levels they have: a model is scored down
to the deepest level it could fit (no row below it), a level no site is labelled at is not
evaluated (:meth:`CVResult.levels_not_evaluated`), and every fit that failed, or left a labelled
level out, is kept with its reason (:meth:`CVResult.failures`) rather than dropped.

The label-efficiency runs refit chosen models on a random fraction of the labelled training
sites (the alignment keeps using every site: that is where unlabelled data can help). The
any-modality runs feed the aligned classifier each subset of inputs on the test sites that
have them all.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd

from . import classify, metrics, spatial
from . import labels as label_schemes

MODALITIES = ("photo", "satellite", "gps")
ENV = "env"   # the environmental covariates (hh.environment.features), a modality like the others
LEVELS = (1, 2, 3)
METRICS = ("accuracy", "top3_accuracy", "macro_f1", "balanced_accuracy", "ece")
#: The columns of :attr:`CVResult.scores` (metrics per seed, fold, fraction, model, subset, level).
SCORE_COLUMNS = ("seed", "fold", "fraction", "model", "subset", "level", "n_train") + METRICS + ("n",)
#: The columns of :meth:`CVResult.failures`; ``level`` is empty when the whole fit failed.
FAILURE_COLUMNS = ("model", "seed", "fold", "fraction", "level", "n_train", "reason")
ALL_SITES = "all labelled test sites"
PHOTO_SITES = "test sites with photos"


def block_folds(lat, lon, block_size_deg: float, folds: int, seed: int) -> np.ndarray:
    """Fold number (``0 .. folds-1``) per site: whole ``block_size_deg`` blocks, taken in a
    random order and each given to the fold with the fewest sites so far (so folds are about
    equal in size while no block is split)."""
    blocks = spatial.block_ids(lat, lon, block_size_deg)
    unique, inverse, counts = np.unique(blocks, return_inverse=True, return_counts=True)
    if len(unique) < folds:
        raise ValueError(f"{len(unique)} blocks of {block_size_deg}° cannot make {folds} folds: "
                         "use smaller blocks or fewer folds")
    sizes = np.zeros(folds)
    fold_of_block = np.empty(len(unique), dtype=int)
    for b in np.random.default_rng(seed).permutation(len(unique)):
        f = int(np.argmin(sizes))
        fold_of_block[b] = f
        sizes[f] += counts[b]
    return fold_of_block[inverse]


def modality_subsets(modalities) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities``, largest first."""
    return [s for k in range(len(modalities), 0, -1) for s in itertools.combinations(modalities, k)]


def _present(embeddings, modalities) -> dict[str, np.ndarray]:
    return {m: ~np.isnan(embeddings[m]).any(axis=1) for m in modalities}


def raw_concatenated(embeddings, modalities) -> np.ndarray:
    """The raw embeddings side by side; a missing modality is zeros plus a 0/1 presence flag."""
    parts = []
    for m in modalities:
        x = embeddings[m]
        present = ~np.isnan(x).any(axis=1)
        parts += [np.nan_to_num(x), present[:, None].astype(np.float32)]
    return np.hstack(parts)


def _score(clf, X, labels: pd.DataFrame, rows: np.ndarray) -> tuple[dict, dict]:
    """Per-level metrics of ``clf`` on ``rows`` (those with features), and the raw predictions,
    for the levels ``clf`` predicts (down to its deepest fitted level; none below)."""
    rows = rows & ~np.isnan(X).any(axis=1)
    pred = clf.predict(X[rows])
    proba = clf.level_proba(X[rows])
    truth = labels[rows].reset_index(drop=True)
    out, raw = {}, {}
    for level in LEVELS:
        if level not in proba:
            continue
        col = classify.LEVEL_COLUMNS[level]
        out[level] = metrics.probabilistic_metrics(truth[col].to_numpy(object), pred[col].to_numpy(object),
                                                   proba[level])
        codes = pred[col].to_numpy(object)
        p = proba[level].to_numpy()
        index = {c: i for i, c in enumerate(proba[level].columns)}
        confidence = np.array([p[i, index[c]] if c in index else np.nan for i, c in enumerate(codes)])
        raw[level] = pd.DataFrame({"site": np.where(rows)[0], "true": truth[col].to_numpy(object),
                                   "pred": codes, "confidence": confidence})
    return out, raw


def _empty_failures() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="Int64" if c == "level" else object) for c in FAILURE_COLUMNS})


def _records(table: pd.DataFrame) -> list[dict]:
    """Rows as dicts of plain values (missing values None), for ``results.json``."""
    return [{k: None if _missing(v) else (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in table.to_dict(orient="records")]


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


@dataclasses.dataclass
class CVResult:
    """What :func:`cross_validate` returns; ``to_json()`` gives the ``results.json`` content."""

    scores: pd.DataFrame          # one row per seed, fold, fraction, model, subset, level scored
    any_modality: pd.DataFrame    # one row per seed, fold, inputs, model, level
    predictions: dict             # model -> level -> pooled test predictions (first seed, all labels)
    settings: dict
    #: one row per fit that failed (``level`` empty) or left out a level that sites are labelled at
    failure_log: pd.DataFrame = dataclasses.field(default_factory=_empty_failures)

    def _scores(self) -> pd.DataFrame:
        """:attr:`scores` with every column of :data:`SCORE_COLUMNS` (NaN where absent)."""
        missing = [c for c in SCORE_COLUMNS if c not in self.scores.columns]
        return self.scores.assign(**{c: np.nan for c in missing}) if missing else self.scores

    def summary(self, subset: str = ALL_SITES, fraction: float = 1.0,
                metric_names=METRICS) -> pd.DataFrame:
        """Mean and standard deviation over folds (and seeds) per model and level (the levels
        each model was scored at)."""
        scores = self._scores()
        sel = scores[(scores["subset"] == subset) & np.isclose(scores["fraction"].astype(float), fraction)]
        table = sel.groupby(["model", "level"], sort=False)[list(metric_names) + ["n"]].agg(["mean", "std"])
        return table

    def label_efficiency(self, subset: str = ALL_SITES, metric: str = "macro_f1") -> pd.DataFrame:
        """Mean and std of ``metric`` per model, level and labelled fraction."""
        scores = self._scores()
        sel = scores[scores["subset"] == subset]
        return sel.groupby(["model", "level", "fraction"])[[metric, "n_train"]].agg(["mean", "std"])

    def failures(self) -> pd.DataFrame:
        """Every fit that failed or left a labelled level out, with its reason: columns
        ``model, seed, fold, fraction, level`` (empty when the whole fit failed; else the level
        not fitted), ``n_train`` and ``reason``. Empty when every model fitted every level
        that sites are labelled at."""
        return self.failure_log.reindex(columns=list(FAILURE_COLUMNS)).reset_index(drop=True)

    def failure_summary(self) -> pd.DataFrame:
        """:meth:`failures` counted over folds and seeds: one row per model, fraction, level and
        reason, with ``folds`` (the fits that failed) out of ``of`` (the fits made)."""
        failures = self.failures()
        of = len(self.settings.get("seeds", ())) * int(self.settings.get("folds", 0))
        if failures.empty:
            return pd.DataFrame(columns=["model", "fraction", "level", "reason", "folds", "of"])
        table = (failures.groupby(["model", "fraction", "level", "reason"], sort=False, dropna=False)
                 .size().rename("folds").reset_index())
        table["of"] = of
        return table

    def levels_not_evaluated(self) -> dict[int, str]:
        """``{level: reason}`` for the levels that no site is labelled at."""
        counts = self.settings.get("n_labelled_per_level", {})
        return {level: f"no site is labelled at level {level}: not evaluated"
                for level in LEVELS if counts.get(f"level{level}", 1) == 0}

    def best_mono_scale(self, levels=(2, 3), subset: str = ALL_SITES) -> str:
        """The raw single-modality model with the highest mean macro-F1 over ``levels``, among
        those that score (almost) every site of ``subset``: a photo model scored only on the
        sites with photos is not compared on a different, easier set of sites. Levels that no
        model was scored at (labels that stop above them) are left out of ``levels``."""
        table = self.summary(subset)
        f1, n = table["macro_f1"]["mean"], table["n"]["mean"]
        full = n.groupby(level="level").max()
        levels = [lv for lv in levels if lv in full.index] or list(full.index)
        means = {}
        for model in f1.index.get_level_values(0).unique():
            if not model.startswith("raw ") or model.startswith("raw concatenated"):
                continue
            if any((model, lv) not in n.index for lv in levels):
                continue
            coverage = min(n.loc[(model, lv)] / full.loc[lv] for lv in levels)
            value = f1.loc[model].loc[list(levels)].mean()
            if coverage >= 0.9 and not np.isnan(value):
                means[model] = value
        if not means:
            raise ValueError(f"no single-modality model scores the {subset}")
        return max(means, key=means.get)

    def per_class_f1(self, model: str, level: int) -> pd.Series:
        """F1 of every true class of ``level``, pooled over the folds (empty when no pooled test
        site is labelled at that level)."""
        p = self.predictions[model][level]
        if not p["true"].notna().any():
            return pd.Series(dtype=float, name=model)
        return pd.Series(metrics.per_class_f1(p["true"].to_numpy(object), p["pred"].to_numpy(object)),
                         name=model).sort_index()

    def confusion(self, model: str, level: int = 1) -> pd.DataFrame:
        """Counts of true (rows) against predicted (columns) codes, pooled over the folds."""
        p = self.predictions[model][level].dropna(subset=["true"])
        return pd.crosstab(p["true"], p["pred"]).rename_axis(index="true", columns="predicted")

    def reliability(self, model: str, level: int, n_bins: int = 10) -> pd.DataFrame:
        p = self.predictions[model][level].dropna(subset=["true"])
        return metrics.reliability(p["confidence"], p["true"] == p["pred"], n_bins)

    def to_json(self) -> dict:
        """Per-level metrics (mean, std over folds) of every model, plus the details: the
        levels not evaluated, the failures (:meth:`failures`) and the fold-level scores.
        Works on any result, also one where no model could be fitted."""
        def nested(table):
            out = {}
            for (model, level), row in table.iterrows():
                out.setdefault(model, {})[f"level{level}"] = {
                    name: {"mean": row[(name, "mean")], "std": row[(name, "std")]}
                    for name in table.columns.get_level_values(0).unique()}
            return out

        scores = self._scores()
        subsets = scores["subset"].dropna().unique()
        eff = self.label_efficiency()
        efficiency = {}
        for (model, level, fraction), row in eff.iterrows():
            efficiency.setdefault(model, {}).setdefault(f"level{level}", {})[f"{fraction:g}"] = {
                "macro_f1_mean": row[("macro_f1", "mean")], "macro_f1_std": row[("macro_f1", "std")],
                "n_train_mean": row[("n_train", "mean")]}
        return {
            "settings": self.settings,
            "levels_not_evaluated": {f"level{lv}": why for lv, why in self.levels_not_evaluated().items()},
            "results": {subset: nested(self.summary(subset)) for subset in subsets},
            "label_efficiency_macro_f1": efficiency,
            "any_modality_macro_f1": _any_modality_json(self.any_modality),
            "per_class_f1": {model: {f"level{lv}": self.per_class_f1(model, lv).to_dict() for lv in by_level}
                             for model, by_level in self.predictions.items()},
            "failures": _records(self.failures()),
            "folds": scores.to_dict(orient="records"),
        }


def _any_modality_json(any_modality: pd.DataFrame) -> dict:
    """``{"<inputs> | <model>": {"level<k>": {"mean", "std"}}}`` of the any-modality macro-F1
    (empty when no any-modality run was scored)."""
    if any_modality.empty or not {"inputs", "model", "level", "macro_f1"} <= set(any_modality.columns):
        return {}
    anym = any_modality.groupby(["inputs", "model", "level"], sort=False)["macro_f1"].agg(["mean", "std"])
    return {f"{i} | {m}": {f"level{lv}": {"mean": r["mean"], "std": r["std"]} for (_, _, lv), r in grp.iterrows()}
            for (i, m), grp in anym.groupby(level=[0, 1], sort=False)}


def cross_validate(lat, lon, labels: pd.DataFrame, embeddings: dict[str, np.ndarray], *,
                   modalities=MODALITIES, folds: int = 5, block_size_deg: float = 0.5, seeds=(0,),
                   align_config=None, label_fractions=(1.0,), fraction_models=None,
                   modality_dropout: bool = True, fusion: str = "concat", knn_k: int = 15, val_fraction: float = 0.15,
                   scheme="eunis", device: str = "cpu", progress: bool = True) -> CVResult:
    """Spatial block cross-validation of the aligned model and the baselines (module docstring).

    Parameters
    ----------
    lat, lon
        site coordinates in degrees.
    labels
        ``eunis_l1, eunis_l2, eunis_l3`` per site (``None`` where unknown; a site labelled
        at level 2 trains and is scored at levels 1 and 2).
    embeddings
        per modality, ``n_sites x d`` (NaN rows where a site lacks it).
    modalities
        the inputs to use; with two or more, the aligned model is trained.
    align_config
        :class:`habitat_helpers.align.AlignConfig` (its ``seed`` is replaced by each
        seed; its ``modalities`` by ``modalities``).
    label_fractions
        fractions of the labelled training sites for the label-efficiency curve.
    fraction_models
        models refitted at fractions below 1 (default: aligned, the raw
        embeddings, raw concatenated).
    modality_dropout
        train the aligned classifier on the vectors of every subset of a site's
        inputs too, so that it has seen what a site with fewer inputs looks like.
    fusion
        how the aligned model combines a site's inputs (:func:`habitat_helpers.align.site_features`):
        ``"mean"`` of the aligned vectors, or ``"concat"`` (side by side, zeros where missing).
    scheme
        the label hierarchy (:func:`habitat_helpers.labels.get`; EUNIS 2021 by default): every
        classifier decodes along its parents.
    """
    from tqdm.auto import tqdm

    from . import align

    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    labels = labels[list(classify.LEVEL_COLUMNS.values())].reset_index(drop=True)
    modalities = tuple(modalities)
    present = _present(embeddings, modalities)
    labelled = labels["eunis_l1"].notna().to_numpy()
    n_per_level = {level: int(labels[classify.LEVEL_COLUMNS[level]].notna().sum()) for level in LEVELS}
    aligned_on = len(modalities) >= 2
    if aligned_on:
        base = align_config or align.AlignConfig()
        base = dataclasses.replace(base, modalities=modalities, pairs=())
    fraction_models = fraction_models or (["aligned"] if aligned_on else []) + \
        [f"raw {m}" for m in modalities] + (["raw concatenated"] if aligned_on else [])

    score_rows, any_rows, failure_rows = [], [], []
    pooled: dict = {}
    heads = None
    bar = tqdm(total=len(seeds) * folds, desc="spatial CV", unit="fold", disable=not progress)
    for seed in seeds:
        fold_of = block_folds(lat, lon, block_size_deg, folds, seed)
        for fold in range(folds):
            test = fold_of == fold
            rest = np.where(~test)[0]
            val_mask = spatial.spatial_block_split(lat[rest], lon[rest], block_size_deg, val_fraction,
                                                   seed * 1000 + fold + 1)
            features = {}
            if aligned_on:
                cfg = dataclasses.replace(base, seed=seed)
                heads, _ = align.train_alignment(embeddings, rest[~val_mask], rest[val_mask], cfg, lat, lon,
                                                 device=device, progress=False)
                features["aligned"] = align.site_features(heads, embeddings, modalities, fusion)
            for m in modalities:
                features[f"raw {m}"] = embeddings[m]
            if aligned_on:
                features["raw concatenated"] = raw_concatenated(embeddings, modalities)
            if ENV in modalities and len(modalities) >= 3:     # the other inputs with and without env
                features["raw concatenated without env"] = raw_concatenated(
                    embeddings, tuple(m for m in modalities if m != ENV))
            features["k-NN on coordinates"] = classify.coordinates_radians(lat, lon)
            features["majority"] = np.zeros((len(lat), 1))

            train_all = labelled & ~test
            subsets = {ALL_SITES: labelled & test}
            if "photo" in modalities:
                subsets[PHOTO_SITES] = labelled & test & present["photo"]
            for fraction in label_fractions:
                train = train_all.copy()
                if fraction < 1:
                    idx = np.where(train_all)[0]
                    rng = np.random.default_rng([seed, fold, int(round(fraction * 10_000))])
                    keep = rng.choice(idx, max(2, int(round(fraction * len(idx)))), replace=False)
                    train = np.isin(np.arange(len(lat)), keep)
                names = list(features) if fraction >= 1 else [n for n in fraction_models if n in features]
                for name in names:
                    X = features[name]
                    usable = train & ~np.isnan(X).any(axis=1)
                    fit = {"model": name, "seed": seed, "fold": fold, "fraction": fraction,
                           "n_train": int(usable.sum())}
                    try:
                        clf = _fit(name, X, labels, usable, embeddings, heads if name == "aligned" else None,
                                   modalities, modality_dropout, knn_k, fusion, scheme)
                    except ValueError as err:       # e.g. a 1 % sample with a single habitat
                        failure_rows.append({**fit, "level": None, "reason": str(err)})
                        continue
                    # levels below the deepest fitted one are not scored; say so where sites have labels
                    failure_rows += [{**fit, "level": level, "reason": reason}
                                     for level, reason in sorted(clf.skipped_.items())
                                     if level > clf.depth_ and n_per_level[level] > 0]
                    for subset, rows in subsets.items():
                        scores, raw = _score(clf, X, labels, rows)
                        for level in scores:
                            score_rows.append({"seed": seed, "fold": fold, "fraction": fraction, "model": name,
                                               "subset": subset, "level": level, "n_train": int(usable.sum()),
                                               **scores[level]})
                        if subset == ALL_SITES and fraction >= 1 and seed == seeds[0]:
                            for level in raw:
                                pooled.setdefault(name, {}).setdefault(level, []).append(raw[level])
                    if name == "aligned" and fraction >= 1:
                        any_rows += _any_modality(clf, heads, embeddings, labels, labelled & test, present,
                                                  modalities, seed, fold, fusion)
                    if name.startswith("raw ") and not name.startswith("raw concatenated") and fraction >= 1:
                        m = name[4:]
                        complete = labelled & test & np.logical_and.reduce([present[k] for k in modalities])
                        scores, _ = _score(clf, X, labels, complete)
                        any_rows += [{"seed": seed, "fold": fold, "inputs": f"{m} only", "model": name,
                                      "level": level, **scores[level]} for level in scores]
            bar.update(1)
    bar.close()
    predictions = {name: {level: pd.concat(parts, ignore_index=True) for level, parts in by_level.items()}
                   for name, by_level in pooled.items()}
    scores = pd.DataFrame(score_rows)
    for column in SCORE_COLUMNS:
        if column not in scores:
            scores[column] = np.nan
    failures = pd.DataFrame(failure_rows, columns=list(FAILURE_COLUMNS)).astype({"level": "Int64"}) \
        if failure_rows else _empty_failures()
    settings = {"modalities": list(modalities), "label_scheme": label_schemes.get(scheme).name,
                "folds": folds, "block_size_deg": block_size_deg,
                "seeds": list(seeds), "label_fractions": list(label_fractions), "modality_dropout": modality_dropout, "fusion": fusion,
                "knn_k": knn_k, "n_sites": len(lat), "n_labelled": int(labelled.sum()),
                "n_labelled_per_level": {f"level{level}": n for level, n in n_per_level.items()},
                "align_config": dataclasses.asdict(base) if aligned_on else None}
    return CVResult(scores, pd.DataFrame(any_rows), predictions, settings, failures)


def _fit(name, X, labels, usable, embeddings, heads, modalities, modality_dropout, knn_k, fusion="mean",
         scheme="eunis"):
    from . import align

    if name == "majority":
        return classify.MajorityClassifier(scheme=scheme).fit(None, labels[usable])
    if name == "k-NN on coordinates":
        return classify.HierarchicalClassifier(estimator=classify.coordinate_knn(knn_k), scheme=scheme).fit(
            X[usable], labels[usable])
    if name == "aligned" and modality_dropout:
        present = _present(embeddings, modalities)
        blocks, ys = [], []
        for subset in modality_subsets(modalities):
            rows = usable & np.logical_and.reduce([present[m] for m in subset])
            if rows.any():
                blocks.append(align.site_features(heads, {m: embeddings[m][rows] for m in modalities}, subset,
                                                  fusion))
                ys.append(labels[rows])
        return classify.HierarchicalClassifier(scheme=scheme).fit(np.vstack(blocks), pd.concat(ys, ignore_index=True))
    return classify.HierarchicalClassifier(scheme=scheme).fit(X[usable], labels[usable])


def _any_modality(clf, heads, embeddings, labels, rows, present, modalities, seed, fold,
                  fusion="mean") -> list[dict]:
    """The aligned classifier fed each subset of inputs, on the test sites that have them all."""
    from . import align

    complete = rows & np.logical_and.reduce([present[m] for m in modalities])
    out = []
    for subset in modality_subsets(modalities):
        X = align.site_features(heads, embeddings, subset, fusion)
        scores, _ = _score(clf, X, labels, complete)
        name = " + ".join(subset) if len(subset) > 1 else f"{subset[0]} only"
        out += [{"seed": seed, "fold": fold, "inputs": name, "model": "aligned", "level": level, **scores[level]}
                for level in scores]
    return out
