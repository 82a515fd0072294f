"""Location quality control: which sites' coordinates are probably wrong.

Coordinates in survey data are often off: LUCAS photos taken far from the point, EVA plots with
km-scale location uncertainty, old relevés placed by hand. A site whose photo, satellite patch or
recorded habitat does not fit the place it claims to be is suspicious. Every site gets up to three
*location-consistency scores*, each computed **out of sample** (by a model that never trained on
the site):

==========================  =========================================================================
``cross_modal_photo``       cosine similarity, in the aligned space (:mod:`habitat_helpers.align`),
                            between the site's ground-photo vector and the aligned GPS vector of its
                            *stated* coordinates (low: the photo does not look like that place)
``cross_modal_satellite``   the same with the satellite patch
``label_surprise``          ``-log p(recorded label | place)``: how improbable the recorded habitat
                            (at the deepest level it is labelled at, ``label_level``) is at the stated
                            coordinates for a :class:`~habitat_helpers.classify.HierarchicalClassifier`
                            on the GPS embedding and the environmental covariates there
                            (:mod:`habitat_helpers.environment`), trained on other sites (high:
                            the habitat is out of place)
==========================  =========================================================================

The GPS vectors are always computed from the coordinates passed in (``gps_encoder``, GeoCLIP by
default), so a displaced site is scored at the place it claims; an ``embeddings["gps"]`` entry is
never read.

**Calibration.** A raw score means little on its own (a cosine of 0.4 may be high for one model and
low for another), so each is turned into a p-value against the same score on *correctly placed sites
the model did not train on*: the validation blocks inside the training side (whole spatial blocks
left out of the heads' and the classifier's training; the heads use them for early stopping only).
With ``n`` such calibration scores, a site's p-value is ``(1 + #{calibration sites at least as
inconsistent}) / (n + 1)`` (a conformal p-value), so under exchangeability with the calibration
sites ``P(p <= a) <= a``: ``p < 0.05`` reads "less consistent than 95 % of held-out sites". The label
surprise is calibrated against calibration sites labelled at the same level (a level-3 code is less
probable than its level-1 formation), or against all of them when fewer than
:data:`MIN_CALIBRATION` are labelled at that level. A score with fewer than :data:`MIN_CALIBRATION`
calibration values gets no p-value (the ``not_scored`` column says why).

**Combined.** ``p_combined`` is the Bonferroni combination ``min(1, k * min_i p_i)`` over the ``k``
p-values a site has. Fisher's method would be more powerful for independent scores, but these are
not independent: both cross-modal scores use the same GPS vector, and all three react to the same
displacement, and Fisher's combination is anti-conservative under positive dependence. Bonferroni is
valid under any dependence, so ``p_combined < a`` keeps the false-alarm rate on correctly placed sites
at most ``a`` (conservatively; it flags a site with one clearly inconsistent input).

The public API (stable):

* :func:`fit_location_qc` -> :class:`LocationQC`, with :meth:`LocationQC.score`: one model on given
  training and validation sites (or on trained heads, e.g. chapter 3's
  :func:`habitat_helpers.align.site_alignment`), scoring other sites cheaply;
* :func:`fit_out_of_fold` -> :class:`OutOfFoldQC` and :func:`score_out_of_fold`: spatial folds, every
  site scored by the fold model that did not see it (``fold`` column);
* :func:`displace` and :func:`displacement_experiment`: planted displacements onto land and the
  ROC-AUC / PR-AUC of every score, against two baselines (``nearest_same_label_km``: the distance to
  the nearest site of the other folds with the same label, and ``random``);
* ``python -m habitat_helpers qc`` (:func:`habitat_helpers.cli.qc.run`): flags for the sites of your own table.

The score tables have one row per scored site (index ``site``: row positions in the arrays) and the
columns of :data:`SCORE_COLUMNS`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import align, classify, datasets, embed, encoders, environment, evaluation, landmask, spatial
from . import labels as labels_module
from .align import AlignConfig, AlignmentModel
from .classify import HierarchicalClassifier
from .environment import Standardiser
from .spatial import EARTH_RADIUS_KM

#: The three location-consistency scores, in the order of the score tables.
SCORES = ("cross_modal_photo", "cross_modal_satellite", "label_surprise")
#: The columns of :meth:`LocationQC.score` (raw scores, the label level used, p-values, the
#: combined p-value, how many p-values it combines and why a score is missing).
SCORE_COLUMNS = (*SCORES, "label_level", *(f"{s}_p" for s in SCORES), "p_combined", "n_scores", "not_scored")
#: Fewer calibration sites than this give no p-value for a score.
MIN_CALIBRATION = 20
#: Spatial folds of :func:`score_out_of_fold` and of the command line.
FOLDS = 3
#: Share of the training side's sites, in whole blocks, kept for calibration (and early stopping).
VAL_FRACTION = 0.2
#: Displacement distances of :func:`displacement_experiment`, in km.
DISTANCES_KM = (1.0, 5.0, 25.0, 100.0)
#: Share of the scored sites that :func:`displacement_experiment` moves.
SHARE = 0.1
#: Settings of the heads that the QC trains when no model is given (smaller than the book's
#: chapter 3 heads so that the folds train in seconds; any other :class:`~habitat_helpers.align.AlignConfig`
#: field keeps its default).
ALIGN_SETTINGS = {"dim": 64, "hidden": 256, "epochs": 25, "patience": 6, "batch_size": 256,
                  "photo_views": "mean"}   # the QC scores one photo vector per site
#: Scores and baselines reported by :func:`displacement_experiment`.
EXPERIMENT_SCORES = (*SCORES, "p_combined", "nearest_same_label_km", "random")

_LABEL_COLUMNS = ("label_l1", "label_l2", "label_l3")
_IMAGE_MODALITIES = ("photo", "satellite")
_INPUT_NAMES = {"photo": "no photo", "satellite": "no satellite patch"}


class GeoClipLocations:
    """The default ``gps_encoder``: GeoCLIP location embeddings (``geoclip-location`` of
    :mod:`habitat_helpers.encoders`) of coordinates in degrees, the encoder loaded on first use."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self._encoder = None

    def __call__(self, lat, lon) -> np.ndarray:
        if self._encoder is None:
            self._encoder = encoders.get_encoder("geoclip-location", device=self.device)
        return embed.embed_locations(np.asarray(lat, float), np.asarray(lon, float), self._encoder,
                                     device=self.device)


def _covariates(env) -> tuple[str, ...]:
    if env is True:
        return tuple(environment.DEFAULT_COVARIATES)
    if not env:
        return ()
    return tuple(env)


def _env_table(lat, lon, covariates) -> pd.DataFrame | None:
    """The covariates sampled at the coordinates (raw values; each model standardises them on its
    own training sites)."""
    if not covariates:
        return None

    table, _ = environment.sample(np.asarray(lat, float), np.asarray(lon, float), list(covariates))
    return table


def _deepest_label(labels: pd.DataFrame, depth: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Per site, the deepest level (at most ``depth``) it is labelled at (0: unlabelled) and the code there."""
    level = np.zeros(len(labels), dtype=int)
    code = np.full(len(labels), None, dtype=object)
    for k in range(1, depth + 1):
        values = labels[_LABEL_COLUMNS[k - 1]].to_numpy(object)
        has = np.array([isinstance(v, str) and v != "" for v in values], dtype=bool)
        level[has] = k
        code[has] = values[has]
    return level, code


def _check_labels(labels: pd.DataFrame, n: int) -> pd.DataFrame:
    missing = [c for c in _LABEL_COLUMNS if c not in labels]
    if missing:
        raise ValueError(f"labels needs the columns {', '.join(_LABEL_COLUMNS)} (missing {', '.join(missing)})")
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} rows for {n} sites")
    return labels.reset_index(drop=True)


def _conformal_p(values: np.ndarray, calibration: np.ndarray, higher_is_worse: bool) -> np.ndarray:
    """``(1 + #{calibration at least as inconsistent}) / (n + 1)`` per value (NaN stays NaN)."""
    cal = np.sort(calibration[~np.isnan(calibration)])
    out = np.full(len(values), np.nan)
    ok = ~np.isnan(values)
    if higher_is_worse:
        worse = len(cal) - np.searchsorted(cal, values[ok], side="left")      # calibration >= value
    else:
        worse = np.searchsorted(cal, values[ok], side="right")                # calibration <= value
    out[ok] = (1 + worse) / (len(cal) + 1)
    return out


@dataclass
class LocationQC:
    """One fitted location-quality model (:func:`fit_location_qc`): the heads (``model``, or
    ``None`` when fewer than two inputs have data), the label classifier (``classifier``, or
    ``None`` without labelled training sites), the environment's standardiser, and the raw scores
    of the calibration sites (``calibration``, one row per validation site).

    ``train_idx`` are the sites the heads and the classifier trained on, ``val_idx`` the
    calibration sites; :meth:`score` refuses to score a training site unless told to (the leak
    check of the tests)."""

    model: AlignmentModel | None
    classifier: HierarchicalClassifier | None
    standardiser: Standardiser | None
    covariates: tuple[str, ...]
    gps_encoder: Callable
    train_idx: np.ndarray
    val_idx: np.ndarray
    n_sites: int
    unavailable: dict[str, str] = field(default_factory=dict)   # score -> why no model gives it
    calibration: pd.DataFrame | None = None
    min_calibration: int = MIN_CALIBRATION

    def score(self, embeddings: dict[str, np.ndarray], lat, lon, labels: pd.DataFrame, idx, *,
              allow_training_sites: bool = False) -> pd.DataFrame:
        """Scores and p-values of the sites ``idx`` (row positions of the same site table the QC
        was fitted on; ``lat``, ``lon`` their *stated* coordinates, which may differ from those it
        was fitted with). Returns the :data:`SCORE_COLUMNS` table, index ``site``.

        ``allow_training_sites=True`` scores sites the model trained on (their scores are
        optimistic and their p-values meaningless: only to show the leak)."""
        lat, lon = np.asarray(lat, float), np.asarray(lon, float)
        if len(lat) != self.n_sites or len(lon) != self.n_sites:
            raise ValueError(f"the QC was fitted on a table of {self.n_sites} sites; got {len(lat)} coordinates")
        labels = _check_labels(labels, self.n_sites)
        idx = np.asarray(idx, dtype=int)
        seen = np.intersect1d(idx, self.train_idx)
        if len(seen) and not allow_training_sites:
            raise ValueError(f"{len(seen)} of the sites to score trained this model (e.g. row {seen[0]}): "
                             "their scores would be optimistic")
        gps = self.gps_encoder(lat[idx], lon[idx])
        env = _env_table(lat[idx], lon[idx], self.covariates)
        return self._score(embeddings, gps, env, labels, idx)

    # --- internals: inputs already computed for the rows --------------------------------------

    def _score(self, embeddings, gps, env, labels, rows) -> pd.DataFrame:
        raw = self._raw(embeddings, gps, env, labels, rows)
        return self._with_p_values(raw)

    def _features(self, gps: np.ndarray, env: pd.DataFrame | None) -> np.ndarray:
        if self.standardiser is None:
            return np.asarray(gps, np.float32)
        return np.hstack([gps, self.standardiser.transform(env)]).astype(np.float32)

    def _raw(self, embeddings, gps, env, labels, rows) -> pd.DataFrame:
        """Raw scores of ``rows`` (``gps`` and ``env``: the rows' GPS embeddings and covariates)."""
        n = len(rows)
        out = pd.DataFrame(index=pd.Index(rows, name="site"))
        reasons = [[] for _ in range(n)]

        def note(mask, why):
            for i in np.flatnonzero(mask):
                reasons[i].append(why)

        aligned_gps = self.model.embed("gps", np.asarray(gps, np.float32)) if self.model is not None else None
        for m in _IMAGE_MODALITIES:
            name = f"cross_modal_{m}"
            values = np.full(n, np.nan)
            if name in self.unavailable:
                note(np.ones(n, bool), f"{name}: {self.unavailable[name]}")
            elif m not in embeddings or embeddings[m] is None:
                note(np.ones(n, bool), f"{name}: {_INPUT_NAMES[m]}")
            else:
                vectors = self.model.embed(m, np.asarray(embeddings[m][rows], np.float32))
                values = np.sum(vectors * aligned_gps, axis=1).astype(float)
                note(np.isnan(values), f"{name}: {_INPUT_NAMES[m]}")
            out[name] = values

        surprise, level_used = np.full(n, np.nan), np.zeros(n, dtype=int)
        if "label_surprise" in self.unavailable:
            note(np.ones(n, bool), f"label_surprise: {self.unavailable['label_surprise']}")
        else:
            level, code = _deepest_label(labels.iloc[rows], self.classifier.depth_)
            has = level > 0
            note(~has, "label_surprise: unlabelled")
            if has.any():
                X = self._features(np.asarray(gps)[has], None if env is None else env.iloc[np.flatnonzero(has)])
                proba = self.classifier.level_proba(X)
                p = np.zeros(int(has.sum()))
                levels, codes = level[has], code[has]
                for k, table in proba.items():
                    columns = {c: j for j, c in enumerate(table.columns)}
                    values = table.to_numpy()
                    for i in np.flatnonzero(levels == k):
                        j = columns.get(codes[i])
                        p[i] = values[i, j] if j is not None else 0.0     # a habitat unseen in training
                surprise[has] = -np.log(np.clip(p, 1e-12, 1.0))
                level_used[has] = level[has]
        out["label_surprise"] = surprise
        out["label_level"] = level_used
        out["not_scored"] = ["; ".join(r) for r in reasons]
        return out

    def _with_p_values(self, raw: pd.DataFrame) -> pd.DataFrame:
        cal = self.calibration
        out = raw.copy()
        extra = [[] for _ in range(len(out))]
        for name in SCORES:
            values = out[name].to_numpy(float)
            p = np.full(len(values), np.nan)
            higher_is_worse = name == "label_surprise"
            if name == "label_surprise":
                pooled = cal[name].to_numpy(float)
                for k in np.unique(out["label_level"]):
                    if k == 0:
                        continue
                    here = out["label_level"].to_numpy() == k
                    same = cal.loc[cal["label_level"] == k, name].to_numpy(float)
                    reference = same if np.isfinite(same).sum() >= self.min_calibration else pooled
                    p[here] = _conformal_p(values[here], reference, higher_is_worse)
                n_cal = np.isfinite(pooled).sum()
            else:
                n_cal = np.isfinite(cal[name].to_numpy(float)).sum()
                p = _conformal_p(values, cal[name].to_numpy(float), higher_is_worse)
            if n_cal < self.min_calibration:
                lost = ~np.isnan(values)
                for i in np.flatnonzero(lost):
                    extra[i].append(f"{name}: only {n_cal} calibration sites (fewer than {self.min_calibration})")
                p[:] = np.nan
            out[f"{name}_p"] = p
        ps = out[[f"{s}_p" for s in SCORES]].to_numpy(float)
        k = np.isfinite(ps).sum(axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)        # all-NaN rows
            smallest = np.nanmin(np.where(np.isfinite(ps), ps, np.nan), axis=1)
        out["p_combined"] = np.where(k > 0, np.minimum(1.0, k * smallest), np.nan)
        out["n_scores"] = k
        out["not_scored"] = ["; ".join([r] + e if r else e) for r, e in zip(out["not_scored"], extra)]
        return out[list(SCORE_COLUMNS)]


def _align_config(config, modalities, seed):
    if config is None:
        config = align.AlignConfig(**ALIGN_SETTINGS, seed=seed)
    import dataclasses

    return dataclasses.replace(config, modalities=tuple(modalities), pairs=())


def _train_heads(arrays, train_idx, val_idx, config, lat, lon, device, progress):
    """:func:`habitat_helpers.align.train_alignment` on one CPU thread, as the folds of
    :func:`habitat_helpers.evaluation.cross_validate` run: these small heads train faster so
    (measured: 2-5 s instead of 25-45 s per fold on 2 busy cores) and the numbers do not depend on
    the cores."""
    import torch


    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, _ = align.train_alignment(arrays, train_idx, val_idx, config, lat, lon, device=device,
                                         progress=progress)
    finally:
        torch.set_num_threads(threads)
    return model.cpu()


def fit_location_qc(embeddings: dict[str, np.ndarray], lat, lon, labels: pd.DataFrame, train_idx, val_idx, *,
                    model: AlignmentModel | None = None, align_config: AlignConfig | None = None,
                    env=True, scheme="eunis", gps_encoder: Callable | None = None, seed: int = 0,
                    device: str = "cpu", progress: bool = True) -> LocationQC:
    """Fit the location QC on the sites ``train_idx`` and calibrate it on ``val_idx``
    (validation blocks: correctly placed sites it does not train on).

    Parameters
    ----------
    embeddings
        ``"photo"`` and/or ``"satellite"``: ``n_sites x d`` arrays (NaN rows where a site lacks the
        input); other entries (``"gps"``, ``"settings"`` ...) are not read.
    lat, lon
        the stated coordinates of all ``n_sites`` sites, in degrees.
    labels
        ``label_l1, label_l2, label_l3`` per site (``None`` where unknown; any label scheme).
    train_idx, val_idx
        row positions of the training and the calibration sites (disjoint).
    model
        trained heads to reuse (e.g. :func:`habitat_helpers.align.site_alignment`'s); they must have
        a ``gps`` head and must not have trained on ``val_idx`` or on the sites you will score. Without
        it, heads are trained here on ``train_idx`` (early stopping on ``val_idx``) with
        ``align_config`` (default: :class:`~habitat_helpers.align.AlignConfig` with
        :data:`ALIGN_SETTINGS`), when at least one image input has data.
    env
        environmental covariates in the label classifier: ``True`` (all of
        :data:`habitat_helpers.environment.DEFAULT_COVARIATES`), ``False``, or a list of names.
    scheme
        the labels' hierarchy (:func:`habitat_helpers.labels.get`).
    gps_encoder
        ``f(lat, lon) -> n x d`` location embeddings (default :class:`GeoClipLocations`, GeoCLIP;
        must be what ``model``'s ``gps`` head was trained on).
    """
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    gps_encoder = gps_encoder or GeoClipLocations(device)
    covariates = _covariates(env)
    gps = gps_encoder(lat, lon)
    env_table = _env_table(lat, lon, covariates)
    return _fit(embeddings, gps, env_table, covariates, lat, lon, labels, train_idx, val_idx, model=model,
                align_config=align_config, scheme=scheme, gps_encoder=gps_encoder, seed=seed, device=device,
                progress=progress)


def _fit(embeddings, gps, env_table, covariates, lat, lon, labels, train_idx, val_idx, *, model, align_config,
         scheme, gps_encoder, seed, device, progress) -> LocationQC:

    n = len(lat)
    labels = _check_labels(labels, n)
    train_idx, val_idx = np.unique(np.asarray(train_idx, int)), np.unique(np.asarray(val_idx, int))
    if len(np.intersect1d(train_idx, val_idx)):
        raise ValueError("train_idx and val_idx overlap: the calibration sites must be held out")
    if not len(train_idx) or not len(val_idx):
        raise ValueError(f"the QC needs training and calibration sites (got {len(train_idx)} and {len(val_idx)})")
    unavailable = {}
    present = [m for m in _IMAGE_MODALITIES
               if m in embeddings and embeddings[m] is not None and not np.isnan(embeddings[m]).all()]
    if model is None and present:
        config = _align_config(align_config, (*present, "gps"), seed)
        arrays = {m: np.asarray(embeddings[m], np.float32) for m in present}
        arrays["gps"] = np.asarray(gps, np.float32)
        model = _train_heads(arrays, train_idx, val_idx, config, lat, lon, device, progress)
    if model is not None and "gps" not in model.heads:
        raise ValueError("the heads have no gps input: the cross-modal scores compare an input with the place")
    for m in _IMAGE_MODALITIES:
        if model is None:
            unavailable[f"cross_modal_{m}"] = "no photo or satellite input has data (nothing to align)"
        elif m not in model.heads:
            unavailable[f"cross_modal_{m}"] = f"the heads have no {m} input"

    standardiser = None
    if env_table is not None:
        _, standardiser = environment.standardise(env_table, train=train_idx, missing="indicator")
    classifier = None
    level, _ = _deepest_label(labels)
    labelled = train_idx[level[train_idx] > 0]
    if not len(labelled):
        unavailable["label_surprise"] = "no labelled training site"
    else:
        X = np.asarray(gps, np.float32)
        if standardiser is not None:
            X = np.hstack([X, standardiser.transform(env_table)])
        try:
            classifier = classify.HierarchicalClassifier(scheme=scheme).fit(X[labelled], labels.iloc[labelled])
        except ValueError as err:
            unavailable["label_surprise"] = f"the label classifier cannot be fitted ({err})"
    qc = LocationQC(model, classifier, standardiser, covariates, gps_encoder, train_idx, val_idx, n, unavailable)
    qc.calibration = qc._raw(embeddings, np.asarray(gps)[val_idx],
                             None if env_table is None else env_table.iloc[val_idx], labels, val_idx)
    return qc


# --- spatial folds ------------------------------------------------------------------------------

@dataclass
class OutOfFoldQC:
    """Location QC models over spatial folds (:func:`fit_out_of_fold`): ``fold_of`` gives each
    site's fold, ``models[f]`` the :class:`LocationQC` fitted on the other folds (its
    ``train_idx`` and ``val_idx`` never include a site of fold ``f``)."""

    fold_of: np.ndarray
    models: list[LocationQC]
    block_size_deg: float
    block_rule: dict

    def score(self, embeddings: dict[str, np.ndarray], lat, lon, labels: pd.DataFrame) -> pd.DataFrame:
        """Every site scored by the model of its fold, at the stated ``lat``, ``lon``: the
        :data:`SCORE_COLUMNS` table plus ``fold``, one row per site in site order."""
        lat, lon = np.asarray(lat, float), np.asarray(lon, float)
        first = self.models[0]
        labels = _check_labels(labels, len(lat))
        gps = first.gps_encoder(lat, lon)
        env = _env_table(lat, lon, first.covariates)
        return self._score(embeddings, gps, env, labels)

    def _score(self, embeddings, gps, env, labels) -> pd.DataFrame:
        parts = []
        for f, qc in enumerate(self.models):
            rows = np.flatnonzero(self.fold_of == f)
            part = qc._score(embeddings, np.asarray(gps)[rows], None if env is None else env.iloc[rows],
                             labels, rows)
            parts.append(part.assign(fold=f))
        return pd.concat(parts).sort_index()


def fit_out_of_fold(embeddings: dict[str, np.ndarray], lat, lon, labels: pd.DataFrame, *, folds: int = FOLDS,
                    block_size_deg="auto", val_fraction: float = VAL_FRACTION, align_config: AlignConfig | None = None,
                    env=True, scheme="eunis", gps_encoder: Callable | None = None, seed: int = 0,
                    device: str = "cpu", progress: bool = True, _inputs=None) -> OutOfFoldQC:
    """One :class:`LocationQC` per spatial fold, each fitted on the other folds: the folds are
    :func:`habitat_helpers.evaluation.block_folds` of blocks sized by
    :func:`habitat_helpers.spatial.resolve_block_size` (``"auto"``: from the labels'
    autocorrelation range); inside each fold's training side, ``val_fraction`` of the sites in
    whole blocks calibrate (and early-stop the heads). The other arguments are
    :func:`fit_location_qc`'s."""
    from tqdm.auto import tqdm


    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    labels = _check_labels(labels, len(lat))
    if folds < 2:
        raise ValueError("folds must be at least 2")
    if not 0 < val_fraction < 1:
        raise ValueError("val_fraction must lie strictly between 0 and 1")
    block, rule = spatial.resolve_block_size(lat, lon, labels, block_size_deg, seed)
    fold_of = evaluation.block_folds(lat, lon, block, folds, seed)
    gps_encoder = gps_encoder or GeoClipLocations(device)
    covariates = _covariates(env)
    gps, env_table = _inputs if _inputs is not None else (gps_encoder(lat, lon), _env_table(lat, lon, covariates))
    models = []
    for f in tqdm(range(folds), desc="location QC folds", unit="fold", disable=not progress):
        side = np.flatnonzero(fold_of != f)
        val = spatial.spatial_block_split(lat[side], lon[side], block, val_fraction, seed * 1000 + f)
        if val.all() or not val.any():
            raise ValueError(f"fold {f}: the other folds' {len(side)} sites in blocks of {block:g}° cannot be split "
                             "into training and calibration blocks: use smaller blocks or more sites")
        models.append(_fit(embeddings, gps, env_table, covariates, lat, lon, labels, side[~val], side[val],
                           model=None, align_config=align_config, scheme=scheme, gps_encoder=gps_encoder,
                           seed=seed, device=device, progress=False))
    return OutOfFoldQC(fold_of, models, block, rule)


def score_out_of_fold(embeddings: dict[str, np.ndarray], lat, lon, labels: pd.DataFrame, *, folds: int = FOLDS,
                      block_size_deg="auto", val_fraction: float = VAL_FRACTION,
                      align_config: AlignConfig | None = None, env=True, scheme="eunis",
                      gps_encoder: Callable | None = None, seed: int = 0, device: str = "cpu",
                      progress: bool = True) -> pd.DataFrame:
    """:func:`fit_out_of_fold`, then every site scored by the fold model that did not see it
    (:meth:`OutOfFoldQC.score`): the :data:`SCORE_COLUMNS` table plus ``fold``, one row per site;
    ``attrs["block_size_deg"]`` is the block side used."""
    labels = labels_module.current_names(labels, "labels")
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    gps_encoder = gps_encoder or GeoClipLocations(device)
    covariates = _covariates(env)
    inputs = (gps_encoder(lat, lon), _env_table(lat, lon, covariates))
    oof = fit_out_of_fold(embeddings, lat, lon, labels, folds=folds, block_size_deg=block_size_deg,
                          val_fraction=val_fraction, align_config=align_config, env=env, scheme=scheme,
                          gps_encoder=gps_encoder, seed=seed, device=device, progress=progress, _inputs=inputs)
    table = oof._score(embeddings, *inputs, _check_labels(labels, len(lat)))
    table.attrs["block_size_deg"] = oof.block_size_deg
    return table


# --- planted displacements ------------------------------------------------------------------------

@dataclass
class Displacement:
    """What :func:`displace` did: the new coordinates of every site (``lat``, ``lon``; unmoved
    sites keep theirs), the rows moved (``moved``) with their bearings in degrees, and the rows chosen
    but left in place because no direction put them on land (``failed``)."""

    lat: np.ndarray
    lon: np.ndarray
    moved: np.ndarray
    bearing: np.ndarray
    failed: np.ndarray
    km: float


def destination(lat, lon, km, bearing_deg):
    """The point ``km`` away from ``(lat, lon)`` along the initial bearing ``bearing_deg`` (degrees
    clockwise from north), on the sphere of ``habitat_helpers.spatial.EARTH_RADIUS_KM`` (the mean radius, 6,371 km)."""

    phi, lam = np.deg2rad(np.asarray(lat, float)), np.deg2rad(np.asarray(lon, float))
    theta, delta = np.deg2rad(np.asarray(bearing_deg, float)), np.asarray(km, float) / EARTH_RADIUS_KM
    phi2 = np.arcsin(np.clip(np.sin(phi) * np.cos(delta) + np.cos(phi) * np.sin(delta) * np.cos(theta), -1, 1))
    lam2 = lam + np.arctan2(np.sin(theta) * np.sin(delta) * np.cos(phi), np.cos(delta) - np.sin(phi) * np.sin(phi2))
    lon2 = (np.rad2deg(lam2) + 180.0) % 360.0 - 180.0
    return np.rad2deg(phi2), lon2


def displace(lat, lon, km: float, share: float, seed: int, *, idx=None, tries: int = 50) -> Displacement:
    """Move ``round(share * len(idx))`` sites drawn at random from ``idx`` (default: all) by ``km``
    in a random direction onto land (:func:`habitat_helpers.landmask.is_land`): a site whose
    destination is at sea draws a new direction, up to ``tries`` times; a site still at sea after
    that stays where it is and is listed in ``failed`` (with a warning), never replaced or dropped
    silently. The same ``seed`` chooses the same sites for every ``km``."""

    lat, lon = np.asarray(lat, float).copy(), np.asarray(lon, float).copy()
    if km <= 0:
        raise ValueError("km must be positive")
    if not 0 < share <= 1:
        raise ValueError("share must lie in (0, 1]")
    pool = np.arange(len(lat)) if idx is None else np.asarray(idx, int)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(pool, size=int(round(share * len(pool))), replace=False))
    direction_rng = np.random.default_rng([seed, int(round(km * 1000))])
    bearing = np.full(len(chosen), np.nan)
    new_lat, new_lon = lat[chosen].copy(), lon[chosen].copy()
    waiting = np.arange(len(chosen))
    for _ in range(tries):
        if not len(waiting):
            break
        b = direction_rng.uniform(0, 360, len(waiting))
        dlat, dlon = destination(lat[chosen[waiting]], lon[chosen[waiting]], km, b)
        ok = landmask.is_land(dlat, dlon)
        done = waiting[ok]
        bearing[done], new_lat[done], new_lon[done] = b[ok], dlat[ok], dlon[ok]
        waiting = waiting[~ok]
    moved_mask = ~np.isnan(bearing)
    lat[chosen[moved_mask]], lon[chosen[moved_mask]] = new_lat[moved_mask], new_lon[moved_mask]
    failed = chosen[~moved_mask]
    if len(failed):
        warnings.warn(f"{len(failed)} of {len(chosen)} sites could not be moved {km:g} km onto land in {tries} "
                      f"directions (e.g. row {failed[0]}): left in place and listed in Displacement.failed",
                      stacklevel=2)
    return Displacement(lat, lon, chosen[moved_mask], bearing[moved_mask], failed, float(km))


def _nearest_same_label_km(lat, lon, labels: pd.DataFrame, reference: np.ndarray, rows: np.ndarray,
                           ref_lat=None, ref_lon=None) -> np.ndarray:
    """Per row, the distance in km from its stated coordinates to the nearest ``reference`` site
    with the same label at the row's deepest labelled level (NaN for an unlabelled row; infinity
    when no reference site has that label). ``ref_lat``, ``ref_lon``: the reference sites'
    coordinates (default ``lat``, ``lon``)."""
    from sklearn.neighbors import BallTree


    ref_lat = lat if ref_lat is None else ref_lat
    ref_lon = lon if ref_lon is None else ref_lon
    level, code = _deepest_label(labels)
    out = np.full(len(rows), np.nan)
    for k in (1, 2, 3):
        column = labels[_LABEL_COLUMNS[k - 1]].to_numpy(object)
        here = np.flatnonzero(level[rows] == k)
        for value in set(code[rows[here]]):
            targets = here[code[rows[here]] == value]
            refs = reference[column[reference] == value]
            if not len(refs):
                out[targets] = np.inf
                continue
            tree = BallTree(np.deg2rad(np.column_stack([ref_lat[refs], ref_lon[refs]])), metric="haversine")
            dist, _ = tree.query(np.deg2rad(np.column_stack([lat[rows[targets]], lon[rows[targets]]])), k=1)
            out[targets] = dist[:, 0] * EARTH_RADIUS_KM
    return out


def _aucs(truth: np.ndarray, suspicion: np.ndarray) -> tuple[float, float, int]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    ok = ~np.isnan(suspicion)
    y, s = truth[ok], suspicion[ok]
    if len(np.unique(y)) < 2:
        return float("nan"), float("nan"), int(ok.sum())
    s = np.where(np.isinf(s), np.finfo(float).max, s)      # no training site with the label: most suspicious
    return float(roc_auc_score(y, s)), float(average_precision_score(y, s)), int(ok.sum())


def displacement_experiment(embeddings: dict[str, np.ndarray], lat, lon, labels: pd.DataFrame, *,
                            distances_km=DISTANCES_KM, share: float = SHARE, seeds=(0,), folds: int = FOLDS,
                            block_size_deg="auto", val_fraction: float = VAL_FRACTION,
                            align_config: AlignConfig | None = None, env=True, scheme="eunis",
                            gps_encoder: Callable | None = None, device: str = "cpu",
                            progress: bool = True) -> pd.DataFrame:
    """How well each score finds planted coordinate errors.

    For every seed: the fold models are fitted on the coordinates as given
    (:func:`fit_out_of_fold`); then for every distance, ``share`` of the sites (the same sites for
    every distance) get stated coordinates moved by that distance onto land (:func:`displace`;
    their photos, patches and labels stay), every site is scored out of fold at its stated
    coordinates, and each score ranks the sites: displaced sites are the positives. The planted
    errors are only in the scored (held-out) sites; the models train on the coordinates as given
    (which in real data hold their own errors).

    Scores (:data:`EXPERIMENT_SCORES`): the three raw scores ranked by their p-values (comparable
    across the fold models), ``p_combined``, and two baselines: ``nearest_same_label_km``, the
    distance from the stated coordinates to the nearest site of the other folds with the same label
    at the site's deepest labelled level (larger: more suspicious), and ``random``. Each is scored
    on the sites that have it, the sites that could not be moved left out.

    Returns a tidy table: ``seed, distance_km, score, roc_auc, pr_auc, n_sites`` (scored sites),
    ``n_displaced`` (positives among them), ``prevalence`` (PR-AUC of a random ranking),
    ``not_moved`` (sites that stayed, :attr:`Displacement.failed`).
    """
    from tqdm.auto import tqdm

    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    labels = _check_labels(labels, len(lat))
    gps_encoder = gps_encoder or GeoClipLocations(device)
    covariates = _covariates(env)
    rows = []
    steps = tqdm(total=len(seeds) * (folds + len(distances_km)), desc="displacement experiment", unit="step",
                 disable=not progress)
    inputs = (gps_encoder(lat, lon), _env_table(lat, lon, covariates))
    for seed in seeds:
        oof = fit_out_of_fold(embeddings, lat, lon, labels, folds=folds, block_size_deg=block_size_deg,
                              val_fraction=val_fraction, align_config=align_config, env=env, scheme=scheme,
                              gps_encoder=gps_encoder, seed=seed, device=device, progress=False, _inputs=inputs)
        steps.update(folds)
        for km in distances_km:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)        # failures are counted in the table
                moved = displace(lat, lon, km, share, seed)
            table = oof.score(embeddings, moved.lat, moved.lon, labels)
            truth = np.zeros(len(lat), dtype=int)
            truth[moved.moved] = 1
            keep = np.ones(len(lat), bool)
            keep[moved.failed] = False
            nearest = np.full(len(lat), np.nan)
            for f, qc in enumerate(oof.models):
                fold_rows = np.flatnonzero(oof.fold_of == f)
                reference = np.concatenate([qc.train_idx, qc.val_idx])
                nearest[fold_rows] = _nearest_same_label_km(moved.lat, moved.lon, labels, reference, fold_rows,
                                                            ref_lat=lat, ref_lon=lon)
            suspicion = {name: 1.0 - table[f"{name}_p"].to_numpy(float) for name in SCORES}
            suspicion["p_combined"] = 1.0 - table["p_combined"].to_numpy(float)
            suspicion["nearest_same_label_km"] = nearest
            suspicion["random"] = np.random.default_rng([seed, 7, int(km * 1000)]).random(len(lat))
            for name in EXPERIMENT_SCORES:
                s = np.where(keep, suspicion[name], np.nan)
                roc, pr, n = _aucs(truth, s)
                positives = int(truth[~np.isnan(s)].sum())
                rows.append({"seed": seed, "distance_km": float(km), "score": name, "roc_auc": roc, "pr_auc": pr,
                             "n_sites": n, "n_displaced": positives, "prevalence": positives / n if n else np.nan,
                             "not_moved": len(moved.failed)})
            steps.update(1)
    steps.close()
    return pd.DataFrame(rows)


# --- real suspected errors: LUCAS GPS fixes against the grid point --------------------------------

def lucas_gps_offsets(table, *, verbose: bool = False) -> pd.DataFrame:
    """How far each LUCAS point's GPS fix lies from its theoretical grid point, beside the GPS's
    stated precision, from a harmonised LUCAS table (``table``: a path, as
    :func:`habitat_helpers.datasets.read_lucas` reads it).

    One row per point that has both positions: ``site_id``, ``offset_m`` (great-circle distance),
    ``gps_precision_m`` (``gps_prec``), ``observer_distance_m`` (``obs_dist``: how far from the
    point the surveyor stood) and ``beyond_precision`` (the offset exceeds the stated precision).
    These are *suspected* errors to look at, not ground truth: a surveyor may stand back from a
    point they cannot reach (``obs_dist``), and the precision is the receiver's own estimate.
    Points whose GPS fix is missing (read from the grid point) are counted in ``attrs["no_gps"]``."""

    gps = datasets.read_lucas(table, coordinates="gps", verbose=verbose)
    grid = datasets.read_lucas(table, coordinates="theoretical", verbose=False).set_index("site_id")
    has_fix = (gps["coord_source"] == "gps").to_numpy()
    gps_fixed = gps[has_fix]
    grid = grid.loc[gps_fixed["site_id"]]
    offset_km = spatial.haversine_km(gps_fixed["lat"].to_numpy(float), gps_fixed["lon"].to_numpy(float),
                                     grid["lat"].to_numpy(float), grid["lon"].to_numpy(float))
    out = pd.DataFrame({"site_id": gps_fixed["site_id"].to_numpy(),
                        "offset_m": offset_km * 1000.0,
                        "gps_precision_m": gps_fixed["coord_uncertainty_m"].to_numpy(float),
                        "observer_distance_m": grid["coord_uncertainty_m"].to_numpy(float)})
    out["beyond_precision"] = out["offset_m"] > out["gps_precision_m"]
    out.attrs["no_gps"] = int((~has_fix).sum())
    return out


def summary_text(flags: pd.DataFrame, false_alarm: float, embeddings, labels: pd.DataFrame, env: bool,
                 block_size_deg: float) -> str:
    """The command's printed summary: the inputs used, how many sites are flagged, and the sites
    without a combined p-value and the scores missing, counted by reason."""
    n = len(flags)
    inputs = [f"{m}: {int((~np.isnan(embeddings[m]).any(axis=1)).sum())} sites" for m in _IMAGE_MODALITIES
              if m in embeddings]
    inputs.append(f"labels: {int(labels['label_l1'].notna().sum())} sites")
    inputs.append("environmental covariates: yes" if env else "environmental covariates: no (--env adds them)")
    scored = flags["p_combined"].notna()
    lines = [f"location check of {n} sites ({', '.join(inputs)}), out of fold in blocks of {block_size_deg:g}°",
             f"flagged (combined p < {false_alarm:g}): {int(flags['flag'].sum())} of {int(scored.sum())} scored sites"]
    for name in SCORES:
        lines.append(f"  {name}: {int(flags[name].notna().sum())} sites scored")
    if (~scored).any():
        lines.append(f"not scored at all: {int((~scored).sum())} sites (flag False)")
    reasons = pd.Series([r for text in flags["not_scored"] for r in text.split("; ") if r])
    if len(reasons):
        lines.append("scores missing, by reason (sites):")
        lines += [f"  {why}: {count}" for why, count in reasons.value_counts().items()]
    return "\n".join(lines)
