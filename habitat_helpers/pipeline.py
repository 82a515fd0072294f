"""A model that can be kept: the chosen model refitted on every labelled site, saved to a folder
that loads without unpickling anything, and used later on new sites or map cells.

The cross-validation (:func:`habitat_helpers.evaluation.cross_validate`) says how well each model
does on sites it never saw; this module keeps one of them for use. :func:`from_cv` takes the model
chosen on the validation blocks (or the one named) with its most chosen setting, and :func:`fit`
trains it on every site of the study: the contrastive heads, when the model reads them, on all
sites but 15 % validation blocks for early stopping, then the classifier on every labelled site.

A saved folder holds

* ``pipeline.json``: the model's name and setting, the inputs and their encoders, the label scheme,
  the covariates' standardisation, the heads' settings, the classifier's settings, the versions of
  the packages it was made with and what it was trained on;
* ``classifier.npz``: the classifier's arrays (read with ``allow_pickle=False``);
* ``heads.pt``: the contrastive heads, when the model has them (read with ``weights_only=True``);
* ``scheme.csv``: the label hierarchy, when it is not one of the built-in schemes.

:func:`load` checks the format and says which package versions differ from the ones that saved it.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from . import align, classify, embed, encoders, environment, evaluation, metrics, spatial
from . import labels as label_schemes

FORMAT = 1
#: The packages whose versions a saved pipeline records (a different version may predict otherwise).
PACKAGES = ("habitat_helpers", "numpy", "scikit-learn", "torch", "geoclip")
#: The encoder of each input that can be computed anywhere (what a map needs).
LOCATION_ENCODER = "geoclip-location"


def _versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclasses.dataclass
class Pipeline:
    """A fitted model with everything it reads: :meth:`predict` on sites with embeddings,
    :meth:`predict_locations` on any coordinates when it reads only ``gps`` and ``env``."""

    model: str                       # the name of its evaluation.Model, e.g. "aligned"
    params: dict                     # its hyperparameters (and the alignment settings it was chosen with)
    modalities: tuple
    scheme: label_schemes.LabelScheme
    classifier: classify.HierarchicalClassifier
    heads: align.AlignmentModel | None = None
    env: dict | None = None          # {"covariates": [...], "rasters": {...}, "standardiser": {...}}
    encoders: dict = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)

    def _model(self, config: align.AlignConfig | None = None) -> evaluation.Model:
        config = config or (self.heads.config if self.heads is not None else None)
        models = evaluation.default_models(self.modalities, config)
        models += [evaluation.forest_model()] if evaluation.ENV in self.modalities else []
        found = [m for m in models if m.name == self.model]
        if not found:
            raise ValueError(f"no model named {self.model!r} for the inputs {', '.join(self.modalities)}")
        return found[0]

    def features(self, lat, lon, embeddings: dict[str, np.ndarray]) -> np.ndarray:
        """The classifier's input at the sites (an input missing from ``embeddings`` is missing at
        every site: the aligned model reads what is there)."""
        lat, lon = np.asarray(lat, float), np.asarray(lon, float)
        full = {m: embeddings[m] if m in embeddings else np.full((len(lat), self._width(m)), np.nan, np.float32)
                for m in self.modalities}
        full |= {k: v for k, v in embeddings.items() if k not in full}
        inputs = evaluation.FoldInputs(lat, lon, full, self.modalities)
        if self.heads is not None:
            inputs = inputs.with_heads(self.heads)
        model = self._model()
        return model.features(inputs, {k: v for k, v in self.params.items() if k not in _ALIGN_FIELDS})

    def _width(self, modality: str) -> int:
        if self.heads is not None and modality in self.heads.input_dims:
            return int(self.heads.input_dims[modality])
        return int(self.info.get("input_dims", {}).get(modality, 1))

    def predict(self, lat, lon, embeddings: dict[str, np.ndarray]) -> pd.DataFrame:
        """Hierarchy-consistent predictions (``label_l1..3``, ``p_l3``, ``entropy_l3``) per site."""
        return self.classifier.predict(self.features(lat, lon, embeddings))

    def location_inputs(self, lat, lon, device: str = "cpu", encoder=None) -> dict[str, np.ndarray]:
        """The inputs any coordinates have: the GPS embedding and the covariates (standardised as
        at training). Raises ``ValueError`` when the model reads an input that needs a photo or a
        patch."""
        needs = [m for m in self.modalities if m not in ("gps", evaluation.ENV)]
        if needs and self.heads is None:
            raise ValueError(f"{self.model} reads {', '.join(needs)}, which a map cell does not have; keep a model "
                             "of gps and env (or the aligned model, which reads what a site has)")
        lat, lon = np.asarray(lat, float), np.asarray(lon, float)
        out = {}
        if not len(lat):
            return {}
        if "gps" in self.modalities:
            encoder = encoder or encoders.get_encoder(self.encoders.get("gps", LOCATION_ENCODER), device=device)
            out["gps"] = embed.embed_locations(lat, lon, encoder, device=device)
        if evaluation.ENV in self.modalities:
            rasters = {name: environment.user_covariate(r["path"], band=r["band"], name=name)
                       for name, r in (self.env.get("rasters") or {}).items()}
            builtin = [c for c in self.env["covariates"] if c not in rasters]
            table, _ = environment.sample(lat, lon, builtin, rasters or None)
            table = table[self.env["covariates"]]
            out[evaluation.ENV] = environment.Standardiser(**self.env["standardiser"]).transform(table)
        return out

    def predict_locations(self, lat, lon, device: str = "cpu", encoder=None) -> pd.DataFrame:
        """:meth:`predict` from the coordinates alone (map cells)."""
        return self.predict(lat, lon, self.location_inputs(lat, lon, device, encoder))

    def level_proba(self, lat, lon, embeddings) -> dict[int, pd.DataFrame]:
        return self.classifier.level_proba(self.features(lat, lon, embeddings))

    def save(self, folder: str | Path) -> Path:
        """Write the folder (module docstring); returns it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state, arrays = classify.classifier_state(self.classifier)
        np.savez(folder / "classifier.npz", **arrays)
        builtin = self.scheme.name.lower().replace("_", "-") in label_schemes.SCHEMES
        if not builtin:
            self.scheme.table.to_csv(folder / "scheme.csv", index=False)
        if self.heads is not None:
            align.save_alignment(self.heads.cpu(), folder / "heads.pt")
        record = {"format": FORMAT, "model": self.model, "params": _jsonable(self.params),
                  "modalities": list(self.modalities), "scheme": self.scheme.name if builtin else "scheme.csv",
                  "classifier": state, "heads": "heads.pt" if self.heads is not None else None,
                  "env": _jsonable(self.env), "encoders": self.encoders, "info": self.info, "versions": _versions(),
                  "saved": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
        (folder / "pipeline.json").write_text(json.dumps(record, indent=2))
        return folder


_ALIGN_FIELDS = {f.name for f in dataclasses.fields(align.AlignConfig)}


def _jsonable(value):
    """Plain JSON types, NaN kept (a standardiser's mean may be NaN)."""
    return metrics.plain(value, nan=float("nan"))


def version_differences(saved: dict) -> list[str]:
    """``"torch 2.14.1 -> 2.15.0"`` for every recorded package whose version differs now."""
    now = _versions()
    return [f"{name} {saved.get(name)} -> {now.get(name)}" for name in PACKAGES
            if name in saved and saved.get(name) != now.get(name)]


def load(folder: str | Path, device: str = "cpu") -> Pipeline:
    """A pipeline :meth:`Pipeline.save` wrote. Nothing is unpickled: JSON, arrays read with
    ``allow_pickle=False`` and heads with ``torch.load(weights_only=True)``. Warns, naming each, when
    package versions differ from the ones that saved it; raises ``ValueError`` for another format."""
    folder = Path(folder)
    path = folder / "pipeline.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder}: no pipeline.json (save one with evaluate --save-model)")
    record = json.loads(path.read_text())
    if record.get("format") != FORMAT:
        raise ValueError(f"{folder}: pipeline format {record.get('format')!r}, this version reads {FORMAT}")
    differs = version_differences(record.get("versions", {}))
    if differs:
        warnings.warn(f"{folder} was saved with other package versions ({'; '.join(differs)}): predictions "
                      "may differ slightly", stacklevel=2)
    scheme_name = record["scheme"]
    scheme = label_schemes.get(folder / scheme_name if scheme_name == "scheme.csv" else scheme_name)
    with np.load(folder / "classifier.npz", allow_pickle=False) as arrays:
        clf = classify.classifier_from_state(record["classifier"], {k: arrays[k] for k in arrays.files}, scheme)
    heads = align.load_alignment(folder / record["heads"], device) if record.get("heads") else None
    return Pipeline(record["model"], record["params"], tuple(record["modalities"]), scheme, clf, heads,
                    record.get("env"), record.get("encoders", {}), {**record.get("info", {}),
                                                                     "versions": record.get("versions"),
                                                                     "version_differences": differs})


def env_settings(covariates, standardiser: environment.Standardiser, rasters: dict | None = None) -> dict:
    """How an ``env`` input was made, for :func:`fit`'s ``env``: the covariates' names (in the order of
    the sampled table), the user rasters (``{name: Covariate}``, their path and band kept) and the
    fitted :class:`habitat_helpers.environment.Standardiser`."""
    return {"covariates": list(covariates),
            "rasters": {name: {"path": str(c.path), "band": int(c.bands[0])} for name, c in (rasters or {}).items()},
            "standardiser": _jsonable(dataclasses.asdict(standardiser))}


def fit(lat, lon, labels: pd.DataFrame, embeddings: dict[str, np.ndarray], *, model: str, params: dict,
        modalities, align_config: align.AlignConfig | None = None, scheme="eunis", block_size_deg=None,
        seed: int = 0, env: dict | None = None, encoder_names: dict | None = None, device: str = "cpu",
        progress: bool = False) -> Pipeline:
    """``model`` (a name of :func:`habitat_helpers.evaluation.default_models`) with ``params``,
    trained on every site: its heads (when it reads them) on all sites but 15 % validation blocks
    (early stopping), its classifier on every labelled site. ``env``: how the ``env`` input was
    made (:func:`env_settings`), kept for new sites."""
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    labels = label_schemes.current_names(labels, "labels").reset_index(drop=True)
    modalities, scheme = tuple(modalities), label_schemes.get(scheme)
    align_params = {k: v for k, v in params.items() if k in _ALIGN_FIELDS}
    config = dataclasses.replace(align_config or align.AlignConfig(), seed=seed, modalities=modalities,
                                 **align_params)
    m = Pipeline(model, dict(params), modalities, scheme, None)._model(config)
    heads = None
    if m.needs_heads:
        block, _ = spatial.resolve_block_size(lat, lon, labels, block_size_deg, seed)
        val = spatial.spatial_block_split(lat, lon, block, 0.15, seed)
        heads, _ = align.train_alignment(embeddings, np.flatnonzero(~val), np.flatnonzero(val), config, lat, lon,
                                         device=device, progress=progress)
        heads = heads.cpu()
    inputs = evaluation.FoldInputs(lat, lon, embeddings, modalities)
    if heads is not None:
        inputs = inputs.with_heads(heads)
    own = {k: v for k, v in params.items() if k not in _ALIGN_FIELDS}
    clf, n_train = evaluation.fit_model(m, inputs, own, labels, labels["label_l1"].notna().to_numpy(), scheme)
    info = {"n_sites": len(lat), "n_trained": n_train, "seed": seed,
            "input_dims": {k: int(np.shape(embeddings[k])[1]) for k in modalities}}
    return Pipeline(model, dict(params), modalities, scheme, clf, heads, env,
                    {"gps": LOCATION_ENCODER, **(encoder_names or {})}, info)


def chosen_model(cv: evaluation.CVResult, among=None) -> str:
    """The model with the highest mean validation macro-F1 over folds and seeds, with all labels
    (:attr:`habitat_helpers.evaluation.CVResult.choices`): picked on validation blocks, never on
    the test folds. ``among``: the names to pick from (default every model that chose on validation)."""
    choices = cv.choices[np.isclose(cv.choices["fraction"].astype(float), 1.0)]
    if among is not None:
        choices = choices[choices["model"].isin(list(among))]
    means = choices.groupby("model")["val_macro_f1"].mean().dropna()
    if means.empty:
        raise ValueError("no model was scored on validation blocks: name the model to keep")
    return str(means.idxmax())


def from_cv(cv: evaluation.CVResult, lat, lon, labels, embeddings, *, model: str | None = None,
            align_config=None, scheme="eunis", seed: int = 0, **kwargs) -> Pipeline:
    """:func:`fit` of ``model`` (default :func:`chosen_model`) with its setting chosen most often on
    the validation blocks of ``cv`` (:meth:`habitat_helpers.evaluation.CVResult.most_chosen`), on the
    same blocks' size as ``cv``; ``info["cv"]`` records the choice."""
    model = model or chosen_model(cv)
    params = cv.most_chosen(model)
    pipeline = fit(lat, lon, labels, embeddings, model=model, params=params, modalities=cv.settings["modalities"],
                   align_config=align_config, scheme=scheme, block_size_deg=cv.settings.get("block_size_deg"),
                   seed=seed, **kwargs)
    chosen = cv.choices[(cv.choices["model"] == model) & np.isclose(cv.choices["fraction"].astype(float), 1.0)]
    pipeline.info["cv"] = {"model": model, "setting_chosen_in": int((chosen["params"].map(
        lambda p: dict(p) == params)).sum()), "of_folds": len(chosen),
        "val_macro_f1_mean": float(chosen["val_macro_f1"].mean())}
    return pipeline


class CellPredictor:
    """``predictor(cells)``: a kept model's predictions for map cells (a DataFrame with ``lat, lon``),
    from their coordinates alone (:meth:`Pipeline.predict_locations`). It travels to dask workers;
    each process loads the location encoder once, at its first tile."""

    def __init__(self, pipeline: Pipeline, device: str = "cpu"):
        pipeline.location_inputs(np.zeros(0), np.zeros(0), device, encoder=_NoEncoder())   # fails early if it cannot
        self.pipeline, self.device, self._encoder = pipeline, device, None

    def __call__(self, cells: pd.DataFrame) -> pd.DataFrame:
        if self._encoder is None and "gps" in self.pipeline.modalities:
            self._encoder = encoders.get_encoder(self.pipeline.encoders.get("gps", LOCATION_ENCODER), device=self.device)
        return self.pipeline.predict_locations(cells["lat"].to_numpy(float), cells["lon"].to_numpy(float),
                                               self.device, self._encoder)

    def __getstate__(self):
        return {**self.__dict__, "_encoder": None}


class _NoEncoder:
    """Stands in for the encoder when :class:`CellPredictor` checks, on no cells, that a map can be made."""
