"""Spatial block cross-validation: the aligned space against baselines, in one harness.

For every seed and every fold of geographic blocks (:func:`block_folds`):

1. the contrastive heads are trained on the sites outside the test fold (no labels; early
   stopping on validation blocks carved out of the training blocks), so the test fold's
   inputs are never seen, not even unlabelled, unless ``align_pool="transductive"`` says so
   (:data:`ALIGN_POOLS`: the labelled sites only, every training site, extra unlabelled sites);
2. every model is the same :class:`~habitat_helpers.classify.HierarchicalClassifier` fitted
   on the labelled training sites, only the features differ:

   ====================================  ====================================================
   ``aligned``                           the aligned vectors of the inputs a site has (side by side)
   ``aligned + raw``                     the aligned vectors beside the raw embeddings (the peers' design)
   ``raw <modality>``                    one pre-trained embedding alone (the mono-scale baselines)
   ``raw concatenated``                  all raw embeddings side by side (zeros and a flag if missing)
   ``MLP on raw concatenated``           the same through a network as wide as the heads, trained on
                                         the labels: the capacity control of the contrastive objective
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
import time

import numpy as np
import pandas as pd

from . import align, classify, metrics, spatial
from . import labels as label_schemes
from .datasets import MODALITIES
from .embed import location_layer_inputs
from .labels import LEVELS

ENV = "env"   # the environmental covariates (hh.environment.features), a modality like the others
METRICS = ("accuracy", "top3_accuracy", "macro_f1", "balanced_accuracy", "ece")
#: The columns of :attr:`CVResult.scores` (metrics per seed, fold, fraction, model, subset, level).
SCORE_COLUMNS = ("seed", "fold", "fraction", "model", "subset", "level", "n_train") + METRICS + ("n",)
#: The columns of :attr:`CVResult.choices` that time the work (they differ between runs).
TIMING_COLUMNS = ("fit_seconds", "score_seconds")
#: The columns of :meth:`CVResult.failures`; ``level`` is empty when the whole fit failed.
FAILURE_COLUMNS = ("model", "seed", "fold", "fraction", "level", "n_train", "reason")
ALL_SITES = "all labelled test sites"
PHOTO_SITES = "test sites with photos"
#: The name of the aligned vectors with the raw inputs beside them. It is the peers' design, in
#: which the classifier keeps the pre-trained features and adds the aligned ones.
ALIGNED_AND_RAW = "aligned + raw"
#: The name of :func:`mlp_model`'s model (the capacity control of the aligned heads).
MLP = "MLP on raw concatenated"
#: The models that use the contrastive heads, and the best of the others they are read against
#: (:func:`alignment_pays`).
ALIGNMENT_MODELS = ("aligned", ALIGNED_AND_RAW)
#: The photo-transfer reading (:func:`transfer_models`, on the test sites with photos): the first model
#: against each of the others.
TRANSFER_MODELS = ("transfer: aligned, photo alone", "raw photo", "transfer: raw gps", "transfer: majority")


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
    paths = clf.path_proba(X[rows])
    pred = clf.predict(X[rows], paths=paths)
    proba = clf.level_proba(X[rows], paths=paths)
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
    #: One row per fit that failed (``level`` empty) or left out a level that sites are labelled at.
    failure_log: pd.DataFrame = dataclasses.field(default_factory=_empty_failures)
    #: One row per seed, fold, fraction and model, with the hyperparameters chosen on the
    #: validation blocks (``params``), their validation macro-F1, how many candidates were tried,
    #: and the seconds spent selecting and refitting (``fit_seconds``) and scoring (``score_seconds``).
    choices: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)

    def _scores(self) -> pd.DataFrame:
        """:attr:`scores` with every column of :data:`SCORE_COLUMNS` (NaN where absent)."""
        missing = [c for c in SCORE_COLUMNS if c not in self.scores.columns]
        return self.scores.assign(**{c: np.nan for c in missing}) if missing else self.scores

    def only_seeds(self, seeds) -> CVResult:
        """The same result restricted to ``seeds`` (scores, any-modality runs, failures, choices)."""
        keep = set(seeds)

        def sel(table):
            return table[table["seed"].isin(keep)].reset_index(drop=True) if "seed" in table else table

        return dataclasses.replace(self, scores=sel(self.scores), any_modality=sel(self.any_modality),
                                   failure_log=sel(self.failure_log), choices=sel(self.choices),
                                   settings={**self.settings, "seeds": [s for s in self.settings["seeds"]
                                                                        if s in keep]})

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

    def compare(self, model: str, baseline: str, level: int, metric: str = "macro_f1",
                subset: str = ALL_SITES, fraction: float = 1.0) -> dict:
        """``model`` against ``baseline`` at ``level``, paired over the same folds and seeds
        (:func:`paired_interval`): the mean difference of ``metric``, its 95 % interval, the
        wins and the pairs. Empty pairs give NaN. The correction for overlapping training sets
        uses the folds' design, test / training share = 1 / (folds - 1) (Bouckaert & Frank 2004,
        for repeated k-fold), the same at every labelled fraction: the folds are the same."""
        scores = self._scores()
        sel = scores[(scores["subset"] == subset) & np.isclose(scores["fraction"].astype(float), fraction)
                     & (scores["level"] == level)]
        a = sel[sel["model"] == model].set_index(["seed", "fold"])
        b = sel[sel["model"] == baseline].set_index(["seed", "fold"])
        both = a.index.intersection(b.index)
        folds = int(self.settings.get("folds", 0))
        out = paired_interval(a.loc[both, metric].to_numpy(float), b.loc[both, metric].to_numpy(float),
                              test_train_ratio=1 / (folds - 1) if folds > 1 else None)
        return {"model": model, "baseline": baseline, "level": level, "fraction": fraction, "metric": metric,
                model: float(a.loc[both, metric].mean()) if len(both) else np.nan,
                "baseline_mean": float(b.loc[both, metric].mean()) if len(both) else np.nan, **out}

    def comparisons(self, model: str = "aligned", baselines=None, levels=LEVELS, metric: str = "macro_f1",
                    subset: str = ALL_SITES, fraction: float = 1.0) -> pd.DataFrame:
        """:meth:`compare` of ``model`` against each baseline (default: every other model) at
        each level it was scored at: one row each, ``better`` when the interval's lower bound
        is above 0, ``worse`` when its upper bound is below 0."""
        scores = self._scores()
        scored = scores[scores["model"] == model]
        if scored.empty:
            return pd.DataFrame()
        baselines = baselines or [m for m in dict.fromkeys(scores["model"]) if m != model]
        rows = [self.compare(model, b, lv, metric, subset, fraction) for b in baselines for lv in levels
                if lv in set(scored["level"])]
        table = pd.DataFrame(rows).drop(columns=[model, "metric"])
        table.insert(3, "model_mean", [r[model] for r in rows])
        table["verdict"] = np.select([table["ci_low"] > 0, table["ci_high"] < 0], ["better", "worse"],
                                     "no clear difference")
        return table

    def best_versus(self, models, baselines, levels=LEVELS, metric: str = "macro_f1",
                    subset: str = ALL_SITES) -> pd.DataFrame:
        """Per level, the best of ``models`` against the best of ``baselines`` (each the highest
        mean ``metric`` at that level, with all labels), paired over folds and seeds
        (:meth:`compare`): one row per level with both names and means, the difference, its 95 %
        interval, the wins and the verdict. For example the project's models against the classical
        baselines. The two "best" are picked on the test folds' means, so the row answers "how
        far apart are the best of each group", not "which model would you pick" (that choice
        belongs to validation blocks)."""
        means = self.summary(subset)[metric]["mean"]
        rows = []
        for level in levels:
            at = {m: means.get((m, level), np.nan) for m in (*models, *baselines)}
            best_m = max((m for m in models if not np.isnan(at[m])), key=at.get, default=None)
            best_b = max((m for m in baselines if not np.isnan(at[m])), key=at.get, default=None)
            if best_m is None or best_b is None:
                continue
            c = self.compare(best_m, best_b, level, metric, subset)
            rows.append({"level": level, "model": best_m, "model_mean": c[best_m], "baseline": best_b,
                         "baseline_mean": c["baseline_mean"], "difference": c["difference"],
                         "ci_low": c["ci_low"], "ci_high": c["ci_high"], "wins": c["wins"], "pairs": c["pairs"],
                         "interval": c["interval"]})
        table = pd.DataFrame(rows, columns=["level", "model", "model_mean", "baseline", "baseline_mean",
                                            "difference", "ci_low", "ci_high", "wins", "pairs", "interval"])
        table["verdict"] = np.select([table["ci_low"] > 0, table["ci_high"] < 0], ["better", "worse"],
                                     "no clear difference")
        return table

    def claim(self, model: str = "aligned", baseline: str | None = None, levels=(2, 3),
              fractions=(1.0,)) -> pd.DataFrame:
        """The central claim's rows: ``model`` against ``baseline`` (default
        :meth:`best_mono_scale`) at each of ``levels`` and labelled ``fractions``, paired over
        folds and seeds (:meth:`compare`). Columns ``labelled fraction, level``, the two means
        (named by the models), ``difference, ci_low, ci_high, interval``, ``<model> wins``
        (``"7/9"``) and ``better (interval above 0)``."""
        baseline = baseline or self.best_mono_scale()
        rows = []
        for fraction in sorted(fractions):
            for level in levels:
                c = self.compare(model, baseline, level, fraction=fraction)
                rows.append({"labelled fraction": fraction, "level": level, model: c[model],
                             baseline: c["baseline_mean"], "difference": c["difference"],
                             "ci_low": c["ci_low"], "ci_high": c["ci_high"], "interval": c["interval"],
                             f"{model} wins": f"{c['wins']}/{c['pairs']}",
                             "better (interval above 0)": bool(c["ci_low"] > 0)})
        return pd.DataFrame(rows)

    def pairs(self, pairs, levels=None, metric: str = "macro_f1") -> pd.DataFrame:
        """:meth:`compare` of each ``(model, minus)`` of ``pairs`` at each level (default: every
        level scored), one row each: ``level, model, minus``, both means, ``difference``, its
        interval and the wins (``"7/9"``). For example the capacity control against both sides."""
        levels = sorted(self.summary().index.unique("level")) if levels is None else levels
        rows = []
        for level in levels:
            for a, b in pairs:
                c = self.compare(a, b, level, metric)
                rows.append({"level": level, "model": a, "minus": b, "model mean": c[a],
                             "minus mean": c["baseline_mean"], "difference": c["difference"],
                             "ci_low": c["ci_low"], "ci_high": c["ci_high"], "wins": f"{c['wins']}/{c['pairs']}"})
        return pd.DataFrame(rows)

    def capacity(self, control: str = MLP) -> pd.DataFrame:
        """The capacity control's comparisons (:meth:`pairs`): each model with the contrastive
        heads minus ``control``, a network as wide as the heads trained on the labels, and that
        network minus raw concatenated."""
        return self.pairs([(m, control) for m in ALIGNMENT_MODELS] + [(control, "raw concatenated")])

    def timings(self) -> pd.DataFrame:
        """Where the folds' time went: seconds per model (selection and refit, scoring), summed
        over folds, seeds and fractions, plus the alignment's (``settings["align_seconds_per_fold"]``
        times the folds run), largest first. With folds in parallel the sums exceed the wall time."""
        if self.choices.empty or "fit_seconds" not in self.choices:
            return pd.DataFrame(columns=["fit_seconds", "score_seconds", "total"])
        table = self.choices.groupby("model", sort=False)[["fit_seconds", "score_seconds"]].sum()
        runs = len(self.settings.get("seeds", ())) * int(self.settings.get("folds", 0))
        align_s = sum(self.settings.get("align_seconds_per_fold", {}).values()) * runs
        if align_s:
            table.loc["alignment (contrastive heads)"] = [align_s, 0.0]
        table["total"] = table.sum(axis=1)
        return table.sort_values("total", ascending=False)

    def any_modality_table(self, metric: str = "macro_f1") -> pd.DataFrame:
        """The any-modality runs' mean ``metric`` over folds and seeds: one row per set of inputs
        and model, one column per level (``macro-F1 level 1`` ...)."""
        name = {"macro_f1": "macro-F1"}.get(metric, metric)
        return (self.any_modality.groupby(["inputs", "model", "level"], sort=False)[metric].mean()
                .unstack("level").rename(columns=lambda k: f"{name} level {k}"))

    def choice_counts(self, fraction: float = 1.0) -> pd.Series:
        """How often each setting was chosen on the validation blocks, per model, over folds and
        seeds at labelled ``fraction``: a count indexed by ``model`` and ``setting``
        (``"C=0.05, fusion=concat"``; ``-`` for a model with nothing to choose)."""
        if self.choices.empty:
            return pd.Series(dtype=int, name="folds × seeds",
                             index=pd.MultiIndex.from_tuples([], names=["model", "setting"]))
        chosen = self.choices[np.isclose(self.choices["fraction"].astype(float), fraction)]
        setting = chosen["params"].map(lambda p: ", ".join(f"{k}={v}" for k, v in p.items()) or "-")
        return chosen.assign(setting=setting).groupby(["model", "setting"], sort=False).size().rename(
            "folds × seeds")

    def most_chosen(self, model: str, fraction: float = 1.0) -> dict:
        """The setting of ``model`` chosen most often on the validation blocks (ties: the first
        in the order of the folds), as a dict of hyperparameters."""
        chosen = self.choices[(self.choices["model"] == model)
                              & np.isclose(self.choices["fraction"].astype(float), fraction)]["params"]
        if chosen.empty:
            raise ValueError(f"no setting of {model!r} was chosen at fraction {fraction:g}")
        return dict(chosen.map(lambda p: tuple(sorted(p.items()))).value_counts().index[0])

    def ece(self, model: str, level: int, n_bins: int = 10) -> float:
        """Expected calibration error of ``model``'s pooled test predictions at ``level``
        (:func:`habitat_helpers.metrics.expected_calibration_error`)."""
        p = self.predictions[model][level].dropna(subset=["true"])
        return metrics.expected_calibration_error(p["confidence"], p["true"] == p["pred"], n_bins)

    def mapped_macro_f1(self, model: str, level: int, mapping: dict) -> float:
        """Macro-F1 of ``model``'s pooled test predictions at ``level`` after mapping true and
        predicted codes through ``mapping`` (a crosswalk to another scheme), on the sites whose
        true code maps to something."""
        pooled = self.predictions[model][level]
        truth, pred = pooled["true"].map(mapping), pooled["pred"].map(mapping)
        ok = truth.notna().to_numpy()
        return metrics.macro_f1(truth[ok].to_numpy(object), pred[ok].to_numpy(object))

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
            "comparisons": _records(self.comparisons()) if "aligned" in set(scores["model"]) else [],
            "choices": [{**r, "params": r["params"]} for r in _records(self.choices)],
            "folds": scores.to_dict(orient="records"),
        }


def grid_table(models, protocol: Protocol) -> pd.DataFrame:
    """What each model chooses on the validation blocks under ``protocol``: its grid
    (``C ∈ {0.05, 1.0}, ...``) and the number of candidates, one row per model."""
    def grid(model):
        return ", ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in model.grid_for(protocol).items())

    return pd.DataFrame([{"model": m.name, "grid": grid(m) or "(nothing to choose)",
                          "candidates": len(m.candidates(protocol))} for m in models]).set_index("model")


def gather(rows: dict, subset: str = ALL_SITES) -> pd.DataFrame:
    """Rows of several results side by side: ``{label: (result, model)}`` gives a table shaped like
    :meth:`CVResult.summary`, indexed by ``label`` (in the order given) and level. For example the
    same model on other inputs, each from its own run."""
    return pd.concat({label: result.summary(subset).loc[model] for label, (result, model) in rows.items()},
                     names=["model"])


def summary_json(table: pd.DataFrame) -> dict:
    """A table of :meth:`CVResult.summary` as plain nested dictionaries for a notebook's
    ``metrics.json``: ``{model: {"level1": {metric: mean, "<metric>_std": std, ..., "n": mean
    test sites}}}``, with the levels each model was scored at."""
    metric_names = [m for m in table.columns.get_level_values(0).unique() if m != "n"]
    out = {}
    for model, level in table.index:
        row = table.loc[(model, level)]
        scores = {m: float(row[(m, "mean")]) for m in metric_names}
        scores |= {f"{m}_std": float(row[(m, "std")]) for m in metric_names}
        out.setdefault(model, {})[f"level{level}"] = scores | {"n": float(row[("n", "mean")])}
    return out


def paired_interval(a, b, test_train_ratio: float | None = None, confidence: float = 0.95) -> dict:
    """Mean of the paired differences ``a - b`` (one pair per fold and seed) with a
    ``confidence`` interval from Student's t over the pairs, its variance corrected for the
    overlap of the training sets between folds (the corrected resampled t-test of Nadeau &
    Bengio 2003, recommended by Bouckaert & Frank 2004): ``var * (1/J + n_test/n_train)``
    instead of ``var / J`` for ``J`` pairs. Without ``test_train_ratio`` the plain t interval.
    Returns ``difference``, ``ci_low``, ``ci_high``, ``wins`` (pairs where ``a > b``),
    ``pairs`` and ``interval`` (the method, in words)."""
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[~np.isnan(d)]
    n = len(d)
    out = {"difference": float(d.mean()) if n else np.nan, "ci_low": np.nan, "ci_high": np.nan,
           "wins": int((d > 0).sum()), "pairs": n}
    corrected = test_train_ratio is not None and np.isfinite(test_train_ratio)
    out["interval"] = (f"{confidence:.0%} corrected resampled t over {n} folds x seeds" if corrected
                       else f"{confidence:.0%} t over {n} folds x seeds")
    if n < 2:
        return out
    factor = 1 / n + (test_train_ratio if corrected else 0.0)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * np.sqrt(d.var(ddof=1) * factor)
    out["ci_low"], out["ci_high"] = float(d.mean() - half), float(d.mean() + half)
    return out


#: The registered reading rule of the alignment experiment, in book/alignment_pays.md. Alignment
#: pays in a cell when the paired 95 % interval of ``aligned + raw`` minus the best model without
#: alignment lies above 0.
PAYS_RULE = ("alignment pays in a cell when the paired 95 % interval (corrected resampled t over folds x seeds) "
             "of 'aligned + raw' minus the best model without alignment (highest mean in that cell among the "
             "models that score at least 90 % of its sites) lies above 0")


def alignment_pays(scores: pd.DataFrame, folds: int, model: str = ALIGNED_AND_RAW, baselines=None,
                   metric: str = "macro_f1", levels=LEVELS) -> pd.DataFrame:
    """The registered reading rule (:data:`PAYS_RULE`) in every cell of ``scores`` (the
    :attr:`CVResult.scores` of one or several runs on the same folds, e.g. one per alignment
    pool with a ``pool`` column; without it, one pool): one row per pool, label fraction, subset
    and level with ``model``'s mean, the best baseline and its mean, the paired difference, its
    interval, the wins and ``pays`` (the interval's lower bound above 0).

    ``baselines``: the models without alignment that may be "the best" (default: every model
    whose name is not in :data:`ALIGNMENT_MODELS` and does not start with ``transfer``; for the
    transfer row, ``model="transfer: aligned, photo alone"`` and the transfer baselines). The
    best is the highest mean on the test folds, which can only favour the baseline: the rule is
    conservative."""
    scores = scores.copy()
    if "pool" not in scores:
        scores["pool"] = "training"
    scores["fraction"] = scores["fraction"].astype(float)
    if baselines is None:
        others = scores[~scores["model"].isin(ALIGNMENT_MODELS) & ~scores["model"].str.startswith("transfer")]
    else:
        others = scores[scores["model"].isin(baselines) & (scores["model"] != model)]
    # a baseline does not depend on the pool: one copy of each (the pool runs share folds and labels)
    others = others.drop(columns="pool").drop_duplicates(["model", "seed", "fold", "fraction", "subset", "level"])
    ratio = 1 / (folds - 1) if folds > 1 else None
    rows = []
    ours = scores[scores["model"] == model]
    for (pool, fraction, subset, level), mine in ours.groupby(["pool", "fraction", "subset", "level"], sort=False):
        if level not in levels:
            continue
        cell = others[np.isclose(others["fraction"], fraction) & (others["subset"] == subset)
                      & (others["level"] == level)]
        if cell.empty:
            continue
        n = cell.groupby("model")["n"].mean()
        means = cell.groupby("model")[metric].mean()[n >= 0.9 * n.max()].dropna()
        if means.empty:
            continue
        best = means.idxmax()
        a = mine.set_index(["seed", "fold"])[metric]
        b = cell[cell["model"] == best].set_index(["seed", "fold"])[metric]
        both = a.index.intersection(b.index)
        out = paired_interval(a.loc[both].to_numpy(float), b.loc[both].to_numpy(float), test_train_ratio=ratio)
        rows.append({"pool": pool, "fraction": fraction, "subset": subset, "level": int(level), "model": model,
                     "model_mean": float(a.loc[both].mean()), "best_without_alignment": best,
                     "baseline_mean": float(b.loc[both].mean()), **out,
                     "pays": bool(np.isfinite(out["ci_low"]) and out["ci_low"] > 0)})
    return pd.DataFrame(rows)


def most_chosen(choices: pd.DataFrame, grid: dict, current) -> tuple[dict, pd.DataFrame]:
    """The rule that sets the alignment defaults from a selection run (book/alignment_pays.md): for
    each setting of ``grid`` (name to values), the value that the validation blocks chose in most
    folds (``choices``: :attr:`CVResult.choices` rows, their ``params`` holding the chosen values);
    a tie keeps ``current``'s value (an :class:`habitat_helpers.align.AlignConfig`), or the first
    tied value in the grid's order when that is not among them. Returns the values and the counts
    (``setting, value, folds``)."""
    chosen, rows = {}, []
    for name, values in grid.items():
        counts = {v: int(sum(p[name] == v for p in choices["params"])) for v in values}
        rows += [{"setting": name, "value": v, "folds": n} for v, n in counts.items()]
        top = max(counts.values())
        tied = [v for v in values if counts[v] == top]
        chosen[name] = getattr(current, name) if getattr(current, name) in tied else tied[0]
    return chosen, pd.DataFrame(rows)


def _any_modality_json(any_modality: pd.DataFrame) -> dict:
    """``{"<inputs> | <model>": {"level<k>": {"mean", "std"}}}`` of the any-modality macro-F1
    (empty when no any-modality run was scored)."""
    if any_modality.empty or not {"inputs", "model", "level", "macro_f1"} <= set(any_modality.columns):
        return {}
    anym = any_modality.groupby(["inputs", "model", "level"], sort=False)["macro_f1"].agg(["mean", "std"])
    return {f"{i} | {m}": {f"level{lv}": {"mean": r["mean"], "std": r["std"]} for (_, _, lv), r in grp.iterrows()}
            for (i, m), grp in anym.groupby(level=[0, 1], sort=False)}


# --- the protocol: one place for every setting ------------------------------------------------

#: The hyperparameter grids searched on the validation blocks, per model family. Every model but
#: the majority gets the same number of fits per input kind: four for a model of one input
#: (``single``, ``knn``), eight for a model of several inputs (four settings, each with and
#: without ``dropout_copies``), each decoded two ways. ``dropout_copies`` trains on copies of
#: each site with every subset of its inputs (modality dropout); it is offered to every
#: multi-input model, on and off alike, so that no model has it forced (issue 26: it used to be
#: forced on for the aligned model and off for the others). The values of ``C`` and ``k`` span
#: the choices made over 9 folds x seeds of the book's demo with grids of six (C 0.02-5,
#: k 3-60). ``alpha`` is the L2 penalty of the capacity-matched network (:func:`mlp_model`), ``C``
#: that of the logistic regression on its output, as for the aligned model.
#: ``decoding`` is top-down (paths may stop above level 3) or the product of the levels
#: (:class:`habitat_helpers.classify.HierarchicalClassifier`); it needs no refit, so trying both
#: costs predictions only. ``multi_code="soft"`` (soft targets over the codes of a multi-code
#: ESy cell) may be added to a grid; by default the common ancestor is used.
GRIDS: dict[str, dict[str, tuple]] = {
    "aligned": {"C": (0.05, 1.0), "fusion": ("concat", "mean"), "dropout_copies": (False, True),
                "decoding": classify.DECODINGS, "multi_code": ("ancestor",)},
    "concatenated": {"C": (0.02, 0.1, 0.5, 2.5), "dropout_copies": (False, True),
                     "decoding": classify.DECODINGS, "multi_code": ("ancestor",)},
    "mlp": {"alpha": (1e-4, 1e-2), "C": (0.05, 1.0), "dropout_copies": (False, True),
            "decoding": classify.DECODINGS, "multi_code": ("ancestor",)},
    "single": {"C": (0.02, 0.1, 0.5, 2.5), "decoding": classify.DECODINGS, "multi_code": ("ancestor",)},
    "knn": {"k": (3, 8, 15, 30), "decoding": classify.DECODINGS},
    "majority": {},
}

#: Which sites train the contrastive heads in each fold (:attr:`Protocol.align_pool`); each pool
#: holds the one before it. Never a test label; the test blocks' *inputs* only in the last.
ALIGN_POOLS = {
    "labelled": "the labelled fitting sites only (at a label fraction, the sampled ones)",
    "training": "every fitting site, labelled or not",
    "extra": "every fitting site and the extra unlabelled sites outside the test and validation blocks",
    "transductive": "as 'extra', plus the test blocks' inputs without their labels (transductive: "
                    "reported apart, never the default)",
}


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How :func:`cross_validate` splits, selects and repeats: each setting's default is defined
    here once (the notebooks' parameters, the profiles and the command line start from it).

    ``block_size_deg="auto"`` sizes the spatial blocks from the data: the distance up to which
    the labels agree more than chance (:func:`habitat_helpers.spatial.autocorrelation_range_km`,
    on the level-1 labels, whose range is the longest) turned into degrees
    (:func:`habitat_helpers.spatial.block_size_for_range`). ``buffer_km`` removes, in each fold,
    the training sites within that distance of a test site (from the alignment and the
    classifiers alike). ``val_fraction`` of the training blocks are validation blocks: early
    stopping of the alignment and the choice of every model's hyperparameters from ``grids``.
    ``align_pool`` says which sites train the contrastive heads (:data:`ALIGN_POOLS`)."""

    folds: int = 5
    block_size_deg: float | str = "auto"
    buffer_km: float = 0.0
    seeds: tuple[int, ...] = (0, 1, 2)
    val_fraction: float = 0.15
    label_fractions: tuple[float, ...] = (1.0,)
    fraction_models: tuple[str, ...] | None = None   # default: aligned, raw single inputs, raw concatenated
    grids: dict = dataclasses.field(default_factory=lambda: {k: dict(v) for k, v in GRIDS.items()})
    #: Alignment settings tried in every fold, as ``AlignConfig`` fields and values, for example
    #: ``{"radius_km": (0.0, 5.0)}``. Empty means the ``align_config`` as given. Epochs are always
    #: chosen by early stopping.
    align_grid: dict = dataclasses.field(default_factory=dict)
    #: The sites that train the contrastive heads in each fold (:data:`ALIGN_POOLS`).
    align_pool: str = "training"
    #: Most labelled sites that fit each candidate of a grid, and most that score it, in each fold,
    #: a random sample of the fitting and of the validation sites when there are more (``None``: all).
    #: The chosen candidate is then refitted on every labelled training site. It keeps the search's
    #: cost flat as studies grow (a grid of eight fits on 400,000 sites is most of a fold's time),
    #: at the price of choosing the regularisation on fewer sites than the final fit sees; the
    #: book's studies (a few thousand sites) never reach it.
    selection_sites: int | None = 10_000
    #: Most labelled training sites the chosen candidate is refitted on in each fold (a random
    #: sample when there are more; ``None``: all). Each fold also computes features only for the
    #: sites it fits and scores, so its memory follows these bounds and the test fold, not the
    #: study's size. A linear or small network classifier on a few hundred features gains little
    #: from more than tens of thousands of sites, while its fit grows with them (a refit on
    #: 200,000 sites and their dropout copies is most of a fold's time and memory at 500,000
    #: sites); the book's studies never reach it.
    fit_sites: int | None = 50_000

    def __post_init__(self):
        if not isinstance(self.folds, (int, np.integer)) or self.folds < 2:
            raise ValueError(f"folds must be an integer of at least 2, not {self.folds!r}")
        if isinstance(self.block_size_deg, str):
            if self.block_size_deg != "auto":
                raise ValueError(f"block_size_deg must be a number of degrees or 'auto', not {self.block_size_deg!r}")
        elif not self.block_size_deg > 0:
            raise ValueError(f"block_size_deg must be positive, not {self.block_size_deg!r}")
        if not self.buffer_km >= 0:
            raise ValueError(f"buffer_km must be 0 or more, not {self.buffer_km!r}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        for name in ("selection_sites", "fit_sites"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
                                      or value < 10):
                raise ValueError(f"{name} must be an integer of at least 10 or None, not {value!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie strictly between 0 and 1, not {self.val_fraction!r}")
        if any(not 0 < f <= 1 for f in self.label_fractions):
            raise ValueError(f"label fractions must lie in (0, 1], not {list(self.label_fractions)}")
        unknown = set(self.grids) - set(GRIDS)
        if unknown:
            raise ValueError(f"unknown model families in grids: {sorted(unknown)}; known: {sorted(GRIDS)}")
        for family, grid in self.grids.items():
            allowed = set(GRIDS[family])
            if set(grid) - allowed or any(len(v) == 0 for v in grid.values()):
                raise ValueError(f"grid of {family!r}: parameters {sorted(grid)} (each with at least one value) "
                                 f"expected among {sorted(allowed)}")
            for fusion in grid.get("fusion", ()):
                if fusion not in ("concat", "mean"):
                    raise ValueError(f"fusion must be 'concat' or 'mean', not {fusion!r}")
        if self.align_pool not in ALIGN_POOLS:
            raise ValueError(f"align_pool must be one of {', '.join(map(repr, ALIGN_POOLS))}, not {self.align_pool!r}")

        fields = {f.name for f in dataclasses.fields(align.AlignConfig)} - {"seed", "modalities"}
        if set(self.align_grid) - fields or any(len(v) == 0 for v in self.align_grid.values()):
            raise ValueError(f"align_grid: {sorted(self.align_grid)} (each with at least one value) must be "
                             f"hh.align.AlignConfig fields: {sorted(fields)}")
        for name in ("positives", "photo_views", "location_layers"):
            for value in self.align_grid.get(name, ()):
                try:
                    align.AlignConfig(**{name: value})          # its own check, before any work
                except ValueError as err:
                    raise ValueError(f"align_grid: {err}") from None
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "label_fractions", tuple(float(f) for f in self.label_fractions))

    def grid(self, family: str) -> dict[str, tuple]:
        return {**GRIDS[family], **self.grids.get(family, {})}


# --- models as data --------------------------------------------------------------------------

@dataclasses.dataclass
class FoldInputs:
    """What a model's features may read in one fold: the sites' embeddings, coordinates and,
    when the inputs can be aligned, the contrastive heads trained without the fold's test sites."""

    lat: np.ndarray
    lon: np.ndarray
    embeddings: dict
    modalities: tuple
    heads: object = None
    #: The heads' aligned vectors of every modality (``heads.embed``), computed once per fold.
    vectors: dict | None = None

    def with_heads(self, heads) -> FoldInputs:
        return dataclasses.replace(self, heads=heads, vectors=heads.embed_sites(self.embeddings))

    def aligned(self, fusion: str) -> np.ndarray:
        """The aligned site features (:func:`habitat_helpers.align.site_features`) of these inputs."""

        return align.fuse(self.vectors, tuple(self.heads.heads), fusion)

    def take(self, rows: np.ndarray) -> FoldInputs:
        """The same inputs for the sites ``rows`` only (row indices), in that order."""
        rows = np.asarray(rows, np.int64)
        return dataclasses.replace(self, lat=self.lat[rows], lon=self.lon[rows],
                                   embeddings=_take_sites(self.embeddings, rows, len(self.lat)),
                                   vectors=None if self.vectors is None else {m: v[rows] for m, v in
                                                                              self.vectors.items()})

    def only(self, subset) -> FoldInputs:
        """The same inputs with every modality outside ``subset`` missing (NaN). What the heads
        read besides the modalities (photo views, GeoCLIP layers) stays: the aligned vectors
        are already computed."""
        def keep(table):
            return {m: x if m in subset or m not in self.modalities else np.full_like(x, np.nan)
                    for m, x in table.items()}

        return dataclasses.replace(self, embeddings=keep(self.embeddings),
                                   vectors=None if self.vectors is None else keep(self.vectors))


@dataclasses.dataclass(frozen=True)
class Model:
    """One model of the comparison, as data: a ``name``, the ``features`` it reads
    (``features(inputs: FoldInputs, params) -> n_sites x d``, NaN rows where a site lacks them),
    a ``classifier`` factory (``classifier(params, scheme) -> HierarchicalClassifier``), the
    ``family`` whose grid (:data:`GRIDS`, :attr:`Protocol.grids`) it searches, and the inputs it
    reads (``inputs``; with ``dropout_copies`` in its grid, its training rows are copied once per
    subset of a site's inputs). ``needs_heads``: the features use the aligned heads."""

    name: str
    features: object
    classifier: object
    family: str
    inputs: tuple = ()
    needs_heads: bool = False
    #: A function of the fold's inputs giving the sites whose labels the model may learn from
    #: (a boolean mask); None for all.
    train_on: object = None
    #: The inputs the model is given at validation and test; None for all it reads.
    predict_from: tuple | None = None
    #: The model's own grid (parameter to values) instead of its family's, for a new kind of model.
    grid: dict | None = None

    def grid_for(self, protocol: Protocol) -> dict[str, tuple]:
        return dict(self.grid) if self.grid is not None else protocol.grid(self.family)

    def test_features(self, inputs: FoldInputs, params: dict) -> np.ndarray:
        """The features the model predicts from: those of :attr:`predict_from` only, when set."""
        return self.features(inputs.only(self.predict_from) if self.predict_from else inputs, params)

    def candidates(self, protocol: Protocol) -> list[dict]:
        """Every combination of the grid (one empty dict when there is no grid)."""
        grid = self.grid_for(protocol)
        return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def _logistic(params, scheme):
    return classify.HierarchicalClassifier(C=params["C"], scheme=scheme,
                                           decoding=params.get("decoding", classify.DECODINGS[0]),

                                           multi_code=params.get("multi_code", "ancestor"))


def _knn(params, scheme):
    return classify.HierarchicalClassifier(estimator=classify.coordinate_knn(params["k"]), scheme=scheme,
                                           decoding=params.get("decoding", classify.DECODINGS[0]))


def _majority(params, scheme):
    return classify.MajorityClassifier(scheme=scheme)


def default_models(modalities, align_config=None) -> list[Model]:
    """The models of the comparison (module docstring) for ``modalities``: with two or more
    inputs the aligned model, the aligned model with the raw inputs beside it and the
    capacity-matched MLP (:func:`mlp_model`, as wide as the heads of ``align_config``); each raw
    input alone, the raw inputs concatenated (and without ``env``, when it is one of three or
    more), k-NN on coordinates and the majority. A new baseline is one more :class:`Model` in
    this list."""

    modalities = tuple(modalities)
    several = len(modalities) >= 2
    models = []
    if several:
        models.append(Model("aligned", lambda inp, p: inp.aligned(p["fusion"]), _logistic, "aligned", modalities,
                            needs_heads=True))
        models.append(Model(ALIGNED_AND_RAW, lambda inp, p: np.hstack(
            [inp.aligned(p["fusion"]), raw_concatenated(inp.embeddings, inp.modalities)]),
            _logistic, "aligned", modalities, needs_heads=True))
    for m in modalities:
        models.append(Model(f"raw {m}", lambda inp, p, m=m: inp.embeddings[m], _logistic, "single", (m,)))
    if several:
        models.append(Model("raw concatenated", lambda inp, p: raw_concatenated(inp.embeddings, inp.modalities),
                            _logistic, "concatenated", modalities))
        models.append(mlp_model(modalities, align_config))
    if ENV in modalities and len(modalities) >= 3:      # the other inputs with and without env
        others = tuple(m for m in modalities if m != ENV)
        models.append(Model("raw concatenated without env",
                            lambda inp, p: raw_concatenated(inp.embeddings, others), _logistic, "concatenated",
                            others))
    models.append(Model("k-NN on coordinates", lambda inp, p: classify.coordinates_radians(inp.lat, inp.lon),
                        _knn, "knn"))
    models.append(Model("majority", lambda inp, p: np.zeros((len(inp.lat), 1)), _majority, "majority"))
    return models


def mlp_model(modalities, align_config=None, name: str = MLP) -> Model:
    """The capacity-matched baseline: the raw inputs concatenated (as ``raw concatenated``) into a
    network as wide as the contrastive heads (``hidden`` then ``dim`` of ``align_config``, by
    default :class:`habitat_helpers.align.AlignConfig`'s), trained on the labels with the heads'
    budget (Adam, their learning rate, batch size, most epochs and patience, and on many sites as
    many rows seen as their capped epochs see, ``epoch_sites``), then the same
    per-level logistic regression as the aligned model on its ``dim``-wide output
    (:class:`habitat_helpers.classify.SupervisedHeadClassifier`). If the aligned model beats
    ``raw concatenated`` only as far as this one does, the gain is the non-linear map, not the
    contrastive objective. It chooses its L2 penalty ``alpha``, ``C`` and the dropout copies on the
    validation blocks (:data:`GRIDS`)."""

    cfg = align_config or align.AlignConfig()
    modalities = tuple(modalities)
    networks: dict = {}          # candidates that differ only in C share one trained network

    def classifier(params, scheme):
        return classify.SupervisedHeadClassifier(
            cfg.hidden, cfg.dim, params["alpha"], batch_size=cfg.batch_size, lr=cfg.lr, epochs=cfg.epochs,
            patience=cfg.patience, seed=cfg.seed, networks=networks, epoch_sites=cfg.epoch_sites, C=params["C"],
            scheme=scheme,
            decoding=params.get("decoding", classify.DECODINGS[0]))

    return Model(name, lambda inp, p: raw_concatenated(inp.embeddings, modalities), classifier, "mlp", modalities)


#: The grid of :func:`forest_model`: four fits (leaf sizes), each decoded two ways, as for the others.
FOREST_GRID = {"min_samples_leaf": (1, 3, 10, 30), "decoding": classify.DECODINGS}


def forest_model(inputs=(ENV,), name: str | None = None, n_estimators: int = 100) -> Model:
    """The classical habitat-model baseline: a random forest per level on the coordinates (latitude
    and longitude in degrees) plus the raw ``inputs`` (by default the environmental covariates), as
    habitat and species distribution models use (e.g. Random Forest and XGBoost in hdm-framework).
    It chooses its leaf size from :data:`FOREST_GRID` on the validation blocks like every other
    model. Sites without one of the ``inputs`` are left out of its training and test (NaN
    features)."""
    from sklearn.ensemble import RandomForestClassifier

    inputs = tuple(inputs)
    name = name or "random forest on coordinates + " + " + ".join(inputs)

    def features(inp, p):
        return np.column_stack([inp.lat, inp.lon, *(inp.embeddings[m] for m in inputs)])

    def classifier(p, scheme):
        return classify.HierarchicalClassifier(
            estimator=lambda: RandomForestClassifier(n_estimators, min_samples_leaf=p["min_samples_leaf"],
                                                     n_jobs=1, random_state=0),
            scheme=scheme, decoding=p["decoding"])

    return Model(name, features, classifier, "forest", inputs, grid=dict(FOREST_GRID))


def transfer_models(modalities) -> list[Model]:
    """Cross-source transfer (the method's promise: infer habitats from whichever input a site
    has): models that learn only from the labels of sites **without** photos (EVA-like plots:
    satellite patch and GPS) and predict at photo sites. Score them on
    ``PHOTO_SITES``, beside ``raw photo`` (the photos' own, fewer labels) and ``majority``:

    ``transfer: aligned, photo alone``
        the aligned classifier trained on the aligned vectors of the sites without photos,
        given only the ground photo at the test site: it works only if the shared space puts a
        photo where the satellite patch and GPS of its place are.
    ``transfer: raw gps``
        the GPS classifier trained on the same labels, predicting from the photo sites' GPS.
    ``transfer: majority``
        the training frequencies of those labels.

    Empty unless ``modalities`` holds photos and at least one other input."""

    modalities = tuple(modalities)
    if "photo" not in modalities or len(modalities) < 2:
        return []

    def without_photos(inputs):
        return np.isnan(inputs.embeddings["photo"]).any(axis=1)

    out = [Model("transfer: aligned, photo alone", lambda inp, p: inp.aligned(p["fusion"]), _logistic, "aligned",
                 modalities, needs_heads=True, train_on=without_photos, predict_from=("photo",))]
    if "gps" in modalities:
        out.append(Model("transfer: raw gps", lambda inp, p: inp.embeddings["gps"], _logistic, "single", ("gps",),
                         train_on=without_photos))
    out.append(Model("transfer: majority", lambda inp, p: np.zeros((len(inp.lat), 1)), _majority, "majority",
                     train_on=without_photos))
    return out


def fit_model(model: Model, inputs: FoldInputs, params: dict, labels: pd.DataFrame, rows: np.ndarray,
              scheme="eunis", X: np.ndarray | None = None):
    """Fit ``model`` with ``params`` on the labelled ``rows`` (boolean mask) that have its
    features; with ``params["dropout_copies"]``, also on copies of each site with every
    non-empty subset of the inputs it has. ``X``: the model's features for ``params`` when
    already computed. Returns the fitted classifier and the number of training sites."""
    X = model.features(inputs, params) if X is None else X
    usable = rows & ~np.isnan(X).any(axis=1)
    if model.train_on is not None:
        usable &= model.train_on(inputs)
    clf = model.classifier(params, scheme)
    if not params.get("dropout_copies") or len(model.inputs) < 2:
        return clf.fit(X[usable], labels[usable]), int(usable.sum())
    present = _present(inputs.embeddings, model.inputs)
    sites = np.flatnonzero(usable)
    training = inputs.take(sites)                   # the copies' features for the training sites only
    pieces = [(subset, keep) for subset in modality_subsets(model.inputs)
              if (keep := usable & np.logical_and.reduce([present[m] for m in subset])).any()]
    # the copies are written into one matrix made first (stacking them held every block and the stack)
    X_train, at = None, 0
    for subset, keep in pieces:
        block = model.features(training.only(subset), params)[keep[sites]]
        if X_train is None:
            X_train = np.empty((sum(int(k.sum()) for _, k in pieces), block.shape[1]), block.dtype)
        X_train[at:at + len(block)] = block
        at += len(block)
        del block
    ys = pd.concat([labels[keep] for _, keep in pieces], ignore_index=True)
    return clf.fit(X_train, ys), int(usable.sum())


def _validation_score(clf, X, labels, rows) -> float:
    """Mean macro-F1 over the levels predicted for the validation ``rows`` that have features
    (NaN when no level can be scored): the criterion of :func:`select`."""
    rows = rows & ~np.isnan(X).any(axis=1)
    if not rows.any():
        return float("nan")
    pred = clf.predict(X[rows])
    truth = labels[rows].reset_index(drop=True)
    values = []
    for level, col in classify.LEVEL_COLUMNS.items():
        if level <= clf.depth_:
            f1 = metrics.macro_f1(truth[col].to_numpy(object), pred[col].to_numpy(object))
            if not np.isnan(f1):
                values.append(f1)
    return float(np.mean(values)) if values else float("nan")


def select(model: Model, inputs: FoldInputs, labels: pd.DataFrame, fit_rows: np.ndarray, val_rows: np.ndarray,
           protocol: Protocol, scheme="eunis") -> tuple[dict, float, list[dict]]:
    """Choose ``model``'s hyperparameters: fit every candidate of its grid on ``fit_rows`` and
    score it on ``val_rows`` (validation blocks inside the training folds) by the mean macro-F1
    over levels. Ties and unscorable validation sets keep the earliest candidate (the grid's
    order). Returns the chosen parameters, their validation score and every candidate's score.
    Raises ``ValueError`` when no candidate can be fitted."""
    candidates = model.candidates(protocol)
    if len(candidates) == 1:
        return candidates[0], float("nan"), [{"params": candidates[0], "val_macro_f1": float("nan")}]
    tried, errors, fitted = [], [], {}
    for params in candidates:
        # candidates that differ only in the decoding share one fit and one set of features
        key = tuple(sorted((k, str(v)) for k, v in params.items() if k != "decoding"))
        if key not in fitted:
            X = model.features(inputs, params)
            X_val = model.test_features(inputs, params) if model.predict_from else X
            try:           # kept with the validation sites' features only: a grid's fits stay small
                fitted[key] = fit_model(model, inputs, params, labels, fit_rows, scheme, X=X)[0], X_val[val_rows]
            except ValueError as err:
                fitted[key] = None, None
                errors.append(str(err))
            del X, X_val
        clf, X_val = fitted[key]
        if clf is None:
            continue
        if "decoding" in params:
            clf = clf.with_decoding(params["decoding"])
        tried.append({"params": params, "val_macro_f1": _validation_score(clf, X_val, labels[val_rows],
                                                                          np.ones(len(X_val), bool))})
    if not tried:
        raise ValueError(errors[0])
    scored = [t for t in tried if not np.isnan(t["val_macro_f1"])]
    best = max(scored, key=lambda t: t["val_macro_f1"]) if scored else tried[0]
    return best["params"], best["val_macro_f1"], tried


def cross_validate(lat, lon, labels: pd.DataFrame, embeddings: dict[str, np.ndarray], *,
                   modalities=MODALITIES, models: list[Model] | None = None, protocol: Protocol | None = None,
                   align_config=None, scheme="eunis", device: str = "cpu", n_jobs: int = 1,
                   progress: bool = True, extra=None, **settings) -> CVResult:
    """Spatial block cross-validation of the aligned model and the baselines (module docstring),
    with every model's hyperparameters chosen inside the training folds.

    Parameters
    ----------
    lat, lon
        site coordinates in degrees.
    labels
        ``label_l1, label_l2, label_l3`` per site (``None`` where unknown; a site labelled
        at level 2 trains and is scored at levels 1 and 2).
    embeddings
        per modality, ``n_sites x d`` (NaN rows where a site lacks it).
    modalities
        the inputs to use; with two or more, the aligned model is trained.
    models
        the :class:`Model` list (default :func:`default_models` of ``modalities`` and
        ``align_config``: the capacity-matched MLP is as wide as its heads).
    protocol
        a :class:`Protocol`; or give its fields as keywords (``folds=3, seeds=(0,)``), checked
        before any work.
    align_config
        :class:`habitat_helpers.align.AlignConfig` (its ``seed`` is replaced by each seed,
        its ``modalities`` by ``modalities``).
    scheme
        the label hierarchy (:func:`habitat_helpers.labels.get`; EUNIS 2021 by default).
    n_jobs
        folds run at once, each in its own process (:func:`habitat_helpers.runtime.fold_jobs`
        gives the cores of a CPU); every fold runs on one thread, so the numbers do not depend
        on ``n_jobs``. ``1``: in this process.
    extra
        a boolean mask of sites that only train the contrastive heads (unlabelled sites beyond the
        study's table: more LUCAS points, a denser grid, more sites of the demo's generator), used with ``align_pool="extra"`` or
        ``"transductive"`` and ignored by every other pool. The folds, validation blocks and label
        samples are drawn from the other sites alone, so results with and without them are paired
        fold by fold; an extra site joins a fold's pool only outside its test and validation blocks
        (and buffer).

    In each fold the training blocks (less the buffer) are split again by blocks into fitting
    and validation sites; the alignment trains on the fitting sites and stops early on the
    validation ones; each model fits every candidate of its grid on the labelled fitting sites,
    keeps the best on the labelled validation sites, and is refitted with it on all the labelled
    training sites before it sees the test fold (:attr:`CVResult.choices` records each choice).
    """

    protocol = dataclasses.replace(protocol, **settings) if protocol is not None else Protocol(**settings)
    if not isinstance(n_jobs, (int, np.integer)) or n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive integer, not {n_jobs!r}")
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    labels = label_schemes.current_names(labels, "labels").reset_index(drop=True)
    keep_cols = list(classify.LEVEL_COLUMNS.values()) + [c for c in ("label_candidates",) if c in labels]
    labels = labels[keep_cols]
    modalities = tuple(modalities)
    missing = [m for m in modalities if m not in embeddings]
    if missing:
        raise ValueError(f"no embeddings for {', '.join(missing)}")
    models = list(models) if models is not None else default_models(modalities, align_config)
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique: {names}")
    labelled = labels["label_l1"].notna().to_numpy()
    extra = np.zeros(len(lat), bool) if extra is None else np.asarray(extra, bool)
    if extra.shape != lat.shape:
        raise ValueError(f"extra must be one boolean per site ({len(lat)}), not {extra.shape}")
    if (extra & labelled).any():
        raise ValueError(f"{int((extra & labelled).sum())} extra sites carry labels: extra sites only train the "
                         "alignment; put labelled sites in the table itself")
    if protocol.align_pool == "extra" and not extra.any():
        raise ValueError("align_pool='extra' needs extra sites (the extra= mask); none were given")
    n_per_level = {level: int(labels[classify.LEVEL_COLUMNS[level]].notna().sum()) for level in LEVELS}
    aligned_on = any(m.needs_heads for m in models)
    if aligned_on:
        base = dataclasses.replace(align_config or align.AlignConfig(), modalities=modalities, pairs=())
        align_candidates = [dict(zip(protocol.align_grid, v)) for v in itertools.product(*protocol.align_grid.values())]
        for change in align_candidates:          # every candidate's inputs are there, before any work
            cfg = dataclasses.replace(base, **change)
            if cfg.input_key("gps") == "gps_layers" and "gps_layers" not in embeddings:
                embeddings = {**embeddings, "gps_layers": location_layer_inputs(lat, lon)}
            for m in modalities:
                align.head_inputs(cfg, embeddings, m)
    main = {*ALIGNMENT_MODELS, "raw concatenated", MLP, *(f"raw {m}" for m in modalities)}
    fraction_models = protocol.fraction_models or tuple(m.name for m in models if m.name in main)
    block_size, block_info = spatial.resolve_block_size(lat, lon, labels, protocol.block_size_deg, protocol.seeds[0])

    tasks = [(seed, fold, _block_folds_with_extra(lat, lon, block_size, protocol.folds, seed, extra))
             for seed in protocol.seeds for fold in range(protocol.folds)]
    context = _FoldContext(lat, lon, labels, embeddings, modalities, models, protocol, block_size,
                           base if aligned_on else None, align_candidates if aligned_on else [{}], fraction_models,
                           scheme, device, keep_predictions=protocol.seeds[0], extra=extra)
    runs = _map_folds(context, tasks, n_jobs, progress)
    score_rows, any_rows, failure_rows, choice_rows, buffer_rows, pool_rows = [], [], [], [], [], []
    pooled: dict = {}
    for run in runs:                 # in the order of the tasks, whatever order they finished in
        score_rows += run["scores"]
        any_rows += run["any_modality"]
        failure_rows += run["failures"]
        choice_rows += run["choices"]
        buffer_rows.append(run["buffer"])
        pool_rows += run["pool"]
        for name, by_level in run["predictions"].items():
            for level, part in by_level.items():
                pooled.setdefault(name, {}).setdefault(level, []).append(part)
    predictions = {name: {level: pd.concat(parts, ignore_index=True) for level, parts in by_level.items()}
                   for name, by_level in pooled.items()}
    scores = pd.DataFrame(score_rows)
    for column in SCORE_COLUMNS:
        if column not in scores:
            scores[column] = np.nan
    failures = pd.DataFrame(failure_rows, columns=list(FAILURE_COLUMNS)).astype({"level": "Int64"}) \
        if failure_rows else _empty_failures()
    buffer = pd.DataFrame(buffer_rows)
    settings = {"modalities": list(modalities), "label_scheme": label_schemes.get(scheme).name,
                "models": names, "folds": protocol.folds, **block_info,
                "buffer_km": protocol.buffer_km,
                "buffer_removed_sites_per_fold": float(buffer["removed"].mean()),
                "buffer_removed_labelled_per_fold": float(buffer["removed_labelled"].mean()),
                "seeds": list(protocol.seeds), "val_fraction": protocol.val_fraction,
                "label_fractions": list(protocol.label_fractions), "fraction_models": list(fraction_models),
                "grids": {m.name: {k: list(v) for k, v in m.grid_for(protocol).items()} for m in models},
                "align_grid": {k: list(v) for k, v in protocol.align_grid.items()},
                "selection_sites": protocol.selection_sites, "fit_sites": protocol.fit_sites,
                "align_pool": protocol.align_pool, "align_pool_rule": ALIGN_POOLS[protocol.align_pool],
                "n_extra_sites": int(extra.sum()),
                "align_pool_sites_per_fold": _pool_sizes(pool_rows),
                "align_seconds_per_fold": _pool_sizes(pool_rows, "seconds"),
                "n_sites": int(len(lat) - extra.sum()), "n_labelled": int(labelled.sum()),
                "n_labelled_per_level": {f"level{level}": n for level, n in n_per_level.items()},
                "align_config": dataclasses.asdict(base) if aligned_on else None}
    choices = pd.DataFrame(choice_rows, columns=["model", "seed", "fold", "fraction", "params", "val_macro_f1",
                                                 "candidates", *TIMING_COLUMNS])
    return CVResult(scores, pd.DataFrame(any_rows), predictions, settings, failures, choices)


@dataclasses.dataclass
class _FoldContext:
    """Everything one fold's work reads (sent once to each worker process)."""

    lat: np.ndarray
    lon: np.ndarray
    labels: pd.DataFrame
    embeddings: dict
    modalities: tuple
    models: list
    protocol: Protocol
    block_size: float
    align_config: object
    align_candidates: list
    fraction_models: tuple
    scheme: object
    device: str
    keep_predictions: int          # the seed whose pooled test predictions are kept
    extra: np.ndarray              # sites that only train the alignment (cross_validate's extra=)


def _block_folds_with_extra(lat, lon, block_size: float, folds: int, seed: int, extra: np.ndarray) -> np.ndarray:
    """:func:`block_folds` of the sites that are not ``extra``; an extra site takes the fold of its
    block, or -1 (no test fold) when its block has none of the other sites."""
    if not extra.any():
        return block_folds(lat, lon, block_size, folds, seed)
    core = ~extra
    fold_of = np.full(len(lat), -1)
    fold_of[core] = block_folds(lat[core], lon[core], block_size, folds, seed)
    blocks = spatial.block_ids(lat, lon, block_size)
    fold_of_block = dict(zip(blocks[core].tolist(), fold_of[core].tolist()))
    fold_of[extra] = [fold_of_block.get(b, -1) for b in blocks[extra].tolist()]
    return fold_of


def _pool_sizes(rows: list[dict], column: str = "sites") -> dict:
    """Mean number of sites that trained the heads per fold (or of another ``column``, e.g. the
    seconds it took), per label fraction (``"all"`` when the same heads serve every fraction)."""
    if not rows:
        return {}
    table = pd.DataFrame(rows)
    return {str(fraction): float(n) for fraction, n in table.groupby("fraction", sort=False)[column].mean().items()}


def _map_folds(context: _FoldContext, tasks: list, n_jobs: int, progress: bool) -> list[dict]:
    """:func:`_run_fold` for every ``(seed, fold, fold_of)`` task, on ``n_jobs`` processes (1: in
    this process), with a progress bar; results in the order of ``tasks``."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc="spatial CV", unit="fold", disable=not progress)
    if n_jobs == 1 or len(tasks) == 1:
        out = []
        for task in tasks:
            out.append(_run_fold(context, *task))
            bar.update(1)
    else:
        from joblib import Parallel, delayed

        out = []
        for result in Parallel(n_jobs=n_jobs, return_as="generator")(
                delayed(_run_fold_in_worker)(context, *task) for task in tasks):
            out.append(result)
            bar.update(1)
    bar.close()
    return out


def _run_fold_in_worker(context: _FoldContext, seed: int, fold: int, fold_of: np.ndarray) -> dict:
    """:func:`_run_fold` in a worker process."""
    return _run_fold(context, seed, fold, fold_of)


def _run_fold(c: _FoldContext, seed: int, fold: int, fold_of: np.ndarray) -> dict:
    """One fold of one seed, on one CPU thread (so that parallel folds share the cores instead of
    contending, and the numbers do not depend on ``n_jobs``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fold_rows(c, seed, fold, fold_of)
    finally:
        torch.set_num_threads(threads)


def _fold_rows(c: _FoldContext, seed: int, fold: int, fold_of: np.ndarray) -> dict:
    """The buffer, the validation blocks, the alignment, then every model selected, refitted and
    scored at every labelled fraction. Returns its rows."""

    out = {"scores": [], "any_modality": [], "failures": [], "choices": [], "predictions": {}, "pool": []}
    lat, lon, labels, protocol = c.lat, c.lon, c.labels, c.protocol
    labelled = labels["label_l1"].notna().to_numpy()
    n_per_level = {level: int(labels[classify.LEVEL_COLUMNS[level]].notna().sum()) for level in LEVELS}
    test = fold_of == fold
    near = spatial.buffer_mask(lat, lon, test, protocol.buffer_km) if protocol.buffer_km > 0 else \
        np.zeros(len(lat), bool)
    out["buffer"] = {"seed": seed, "fold": fold, "removed": int(near.sum()),
                     "removed_labelled": int((near & labelled).sum())}
    rest = np.where(~test & ~near & ~c.extra)[0]
    val_mask = spatial.spatial_block_split(lat[rest], lon[rest], c.block_size, protocol.val_fraction,
                                           seed * 1000 + fold + 1)
    fit_sites = np.isin(np.arange(len(lat)), rest[~val_mask])
    val_sites = np.isin(np.arange(len(lat)), rest[val_mask])
    pool = _align_pool(c, protocol.align_pool, fit_sites, val_sites, test, near)
    trained: dict = {}

    def heads_for(fraction, train):
        """The inputs seen through the heads of each alignment candidate, trained on the fold's
        pool (for the 'labelled' pool: on the sampled labels of this fraction)."""
        key = fraction if protocol.align_pool == "labelled" else None
        if c.align_config is None:
            return {}
        if key not in trained:
            fit_pool, val_pool = (pool & train, val_sites & train) if key is not None else (pool, val_sites)
            out["pool"].append({"seed": seed, "fold": fold, "fraction": "all" if key is None else f"{fraction:g}",
                                "sites": int(fit_pool.sum())})
            trained[key] = {}
            start = time.perf_counter()
            for k, change in enumerate(c.align_candidates):
                cfg = dataclasses.replace(c.align_config, seed=seed, **change)
                model, _ = align.train_alignment(c.embeddings, np.flatnonzero(fit_pool), np.flatnonzero(val_pool),
                                                 cfg, lat, lon, device=c.device, progress=False)
                trained[key][k] = inputs.with_heads(model)
            out["pool"][-1]["seconds"] = time.perf_counter() - start
        return trained[key]

    train_all = labelled & ~test & ~near
    plans = []
    for fraction in protocol.label_fractions:
        train = _label_sample(train_all, fraction, seed, fold)
        plans.append((fraction, train, _at_most(train, protocol.fit_sites, [seed, fold, 3]),
                      _at_most(train & fit_sites, protocol.selection_sites, [seed, fold, 1]),
                      _at_most(train & val_sites, protocol.selection_sites, [seed, fold, 2])))
    # The classifiers read only the sites they fit or score: features, heads' vectors and copies
    # are computed for these rows alone (``kept``), whatever the study's size.
    kept = np.flatnonzero(np.logical_or.reduce([labelled & test] + [m for plan in plans for m in plan[2:]]))
    inputs = FoldInputs(lat[kept], lon[kept], _take_sites(c.embeddings, kept, len(lat)), c.modalities)
    fold_labels = labels.iloc[kept].reset_index(drop=True)
    fold_present = _present(inputs.embeddings, c.modalities)
    subsets = {ALL_SITES: (labelled & test)[kept]}
    if "photo" in c.modalities:
        subsets[PHOTO_SITES] = subsets[ALL_SITES] & fold_present["photo"]
    for fraction, train, refit, select_fit, select_val in plans:
        heads = heads_for(fraction, train)
        refit, select_fit, select_val = refit[kept], select_fit[kept], select_val[kept]
        for model in c.models:
            if fraction < 1 and model.name not in c.fraction_models:
                continue
            fit = {"model": model.name, "seed": seed, "fold": fold, "fraction": fraction}
            start = time.perf_counter()
            try:
                params, val_score, model_inputs, clf, n_train, X = _select_and_fit(
                    model, inputs, heads, c.align_candidates if model.needs_heads else [{}], fold_labels,
                    select_fit, select_val, refit, protocol, c.scheme)
            except ValueError as err:       # e.g. a 1 % sample with a single habitat
                out["failures"].append({**fit, "n_train": int(train.sum()), "level": None, "reason": str(err)})
                continue
            choice = {**fit, "params": params, "val_macro_f1": val_score,
                      "candidates": len(model.candidates(protocol)) * (max(1, len(heads)) if model.needs_heads else 1),
                      "fit_seconds": time.perf_counter() - start}
            out["choices"].append(choice)
            fit["n_train"] = n_train
            start = time.perf_counter()
            # levels below the deepest fitted one are not scored; say so where sites have labels
            out["failures"] += [{**fit, "level": level, "reason": reason}
                                for level, reason in sorted(clf.skipped_.items())
                                if level > clf.depth_ and n_per_level[level] > 0]
            for subset, rows in subsets.items():
                scores, raw = _score(clf, X, fold_labels, rows)
                out["scores"] += [{**fit, "subset": subset, "level": level, **scores[level]} for level in scores]
                if subset == ALL_SITES and fraction >= 1 and seed == c.keep_predictions:
                    for level in raw:
                        raw[level]["site"] = kept[raw[level]["site"].to_numpy()]
                        out["predictions"].setdefault(model.name, {})[level] = raw[level]
            if fraction >= 1:
                out["any_modality"] += _any_modality(model, clf, params, model_inputs, fold_labels,
                                                     subsets[ALL_SITES], fold_present, c.modalities, seed, fold)
            choice["score_seconds"] = time.perf_counter() - start
    return out


def _take_sites(embeddings: dict, sites: np.ndarray, n_sites: int) -> dict:
    """The embeddings of ``sites`` only (row indices), renumbered ``0 .. len(sites) - 1``: one row
    per site, or for photo views as items (``photo_per_view``, ``photo_view`` with ``photo_site``)
    the views of those sites."""
    per_view = ("photo_per_view", "photo_view", "photo_site")
    out = {k: x[sites] for k, x in embeddings.items() if k not in per_view}
    if "photo_per_view" in embeddings and "photo_site" in embeddings:
        views = align.HeadInputs(embeddings["photo_per_view"], np.asarray(embeddings["photo_site"], np.int64), n_sites)
        rows, owner = views.rows(sites)
        position = np.full(n_sites, -1)
        position[sites] = np.arange(len(sites))
        out["photo_site"] = position[owner]
        out |= {k: embeddings[k][rows] for k in per_view[:2] if k in embeddings}
    return out


def _align_pool(c: _FoldContext, pool: str, fit_sites, val_sites, test, near) -> np.ndarray:
    """The sites that train the heads in one fold (:data:`ALIGN_POOLS`); for ``"labelled"`` the
    caller keeps only the sampled labelled ones."""
    labelled = c.labels["label_l1"].notna().to_numpy()
    if pool == "labelled":
        return fit_sites & labelled
    if pool == "training":
        return fit_sites.copy()
    blocks = spatial.block_ids(c.lat, c.lon, c.block_size)
    extra = c.extra & ~test & ~near & ~np.isin(blocks, blocks[val_sites])
    if pool == "extra":
        return fit_sites | extra
    return fit_sites | extra | test                  # transductive: the test blocks' inputs, no labels


def _at_most(rows: np.ndarray, n: int | None, seed) -> np.ndarray:
    """``rows`` (a boolean mask) itself when it holds at most ``n`` sites, else a random ``n`` of
    them (drawn with ``seed``): the sites of :attr:`Protocol.selection_sites`."""
    if n is None or rows.sum() <= n:
        return rows
    keep = np.zeros_like(rows)
    keep[np.random.default_rng(seed).choice(np.flatnonzero(rows), n, replace=False)] = True
    return keep


def _label_sample(train_all: np.ndarray, fraction: float, seed: int, fold: int) -> np.ndarray:
    """A random ``fraction`` of the labelled training sites (at least two), the same for every model."""
    if fraction >= 1:
        return train_all
    idx = np.where(train_all)[0]
    rng = np.random.default_rng([seed, fold, int(round(fraction * 10_000))])
    keep = rng.choice(idx, max(2, int(round(fraction * len(idx)))), replace=False)
    return np.isin(np.arange(len(train_all)), keep)


def _select_and_fit(model, inputs, heads, align_candidates, labels, fit_rows, val_rows, train, protocol, scheme):
    """Select ``model``'s parameters (and, for the aligned model, the heads among the alignment
    candidates) on the validation sites, then refit on all of ``train``. Returns the choice, its
    validation score, the inputs it reads, the classifier, its training sites and its test features."""
    best = None
    for k, change in enumerate(align_candidates):
        model_inputs = heads[k] if model.needs_heads else inputs
        params, score, _ = select(model, model_inputs, labels, fit_rows, val_rows, protocol, scheme)
        if best is None or (not np.isnan(score) and (np.isnan(best[1]) or score > best[1])):
            best = ({**change, **params}, score, model_inputs, params)
    chosen, score, model_inputs, params = best
    X = model.features(model_inputs, params)
    clf, n_train = fit_model(model, model_inputs, params, labels, train, scheme, X=X)
    X_test = model.test_features(model_inputs, params) if model.predict_from else X
    return chosen, score, model_inputs, clf, n_train, X_test


def _any_modality(model, clf, params, inputs, labels, rows, present, modalities, seed, fold) -> list[dict]:
    """The aligned classifier fed each subset of inputs, and each raw single-input model, on
    the test sites that have every input."""
    if len(modalities) < 2 or model.predict_from or not (model.needs_heads or model.family == "single"):
        return []
    complete = rows & np.logical_and.reduce([present[m] for m in modalities])
    subsets = modality_subsets(modalities) if model.needs_heads else [model.inputs]
    out = []
    for subset in subsets:
        scores, _ = _score(clf, model.features(inputs.only(subset), params), labels, complete)
        name = " + ".join(subset) if len(subset) > 1 else f"{subset[0]} only"
        out += [{"seed": seed, "fold": fold, "inputs": name, "model": model.name, "level": level,
                 **scores[level]} for level in scores]
    return out
