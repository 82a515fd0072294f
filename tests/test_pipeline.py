"""A model that can be kept: refitted from a cross-validation's choices, saved without pickle, loaded
to the same predictions, and used on coordinates alone."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from synthetic import sites_with_two_inputs

import habitat_helpers as hh

SMALL = {"aligned": {"C": (0.5,), "fusion": ("concat",), "dropout_copies": (False,)},
         "concatenated": {"C": (0.5,), "dropout_copies": (False,)},
         "mlp": {"alpha": (1e-3,), "C": (0.5,), "dropout_copies": (False,)},
         "single": {"C": (0.05, 0.5)}, "knn": {"k": (5, 15)}}
CONFIG = hh.align.AlignConfig(dim=8, hidden=16, epochs=3, batch_size=64, lr=3e-3, radius_km=0.0)


@pytest.fixture(scope="module")
def study():
    """Synthetic sites in clusters: habitats by longitude and latitude bands, two noisy inputs."""
    lat, lon, labels, emb = sites_with_two_inputs(n=300)
    cv = hh.evaluation.cross_validate(lat, lon, labels, emb, modalities=("satellite", "gps"), folds=3,
                                      block_size_deg=2.0, seeds=(0,), align_config=CONFIG, grids=SMALL,
                                      progress=False)
    return lat, lon, labels, emb, cv


@pytest.mark.parametrize("name", ["aligned", "raw gps", "k-NN on coordinates", "majority",
                                  "MLP on raw concatenated", "aligned + raw"])
def test_a_kept_model_predicts_the_same_after_loading(study, tmp_path, name):
    lat, lon, labels, emb, cv = study
    kept = hh.pipeline.from_cv(cv, lat, lon, labels, emb, model=name, align_config=CONFIG)
    assert kept.params == cv.most_chosen(name) and kept.info["cv"]["of_folds"] == 3
    assert (kept.heads is not None) == name.startswith("aligned")
    folder = kept.save(tmp_path / "model")
    saved = json.loads((folder / "pipeline.json").read_text())
    assert saved["model"] == name and saved["versions"]["numpy"] == np.__version__
    assert (folder / "heads.pt").exists() == name.startswith("aligned")
    loaded = hh.pipeline.load(folder)
    before = kept.level_proba(lat, lon, emb)
    after = loaded.level_proba(lat, lon, emb)
    for level in before:
        np.testing.assert_allclose(after[level].to_numpy(), before[level].to_numpy(), atol=1e-6)
    pd.testing.assert_frame_equal(loaded.predict(lat, lon, emb), kept.predict(lat, lon, emb))
    assert hh.classify.is_consistent(loaded.predict(lat, lon, emb))
    if name == "aligned":                      # the aligned model reads whatever a site has: GPS alone here
        alone = loaded.predict(lat, lon, {"gps": emb["gps"]})
        assert alone["label_l1"].notna().all()


def test_the_model_kept_by_default_is_chosen_on_validation_blocks(study):
    *_, cv = study
    best = hh.pipeline.chosen_model(cv)
    val = cv.choices[cv.choices["fraction"] == 1.0].groupby("model")["val_macro_f1"].mean()
    assert best == val.idxmax()
    assert hh.pipeline.chosen_model(cv, among=["raw gps", "majority"]) == "raw gps"


def test_loading_checks_the_format_and_names_other_versions(study, tmp_path):
    lat, lon, labels, emb, cv = study
    folder = hh.pipeline.from_cv(cv, lat, lon, labels, emb, model="raw gps").save(tmp_path / "m")
    record = json.loads((folder / "pipeline.json").read_text())
    record["versions"]["scikit-learn"] = "0.0.1"
    (folder / "pipeline.json").write_text(json.dumps(record))
    with pytest.warns(UserWarning, match=r"scikit-learn 0\.0\.1 -> "):
        loaded = hh.pipeline.load(folder)
    assert loaded.info["version_differences"][0].startswith("scikit-learn 0.0.1 -> ")
    record["format"] = 99
    (folder / "pipeline.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="format 99"):
        hh.pipeline.load(folder)
    with pytest.raises(FileNotFoundError, match="no pipeline.json"):
        hh.pipeline.load(tmp_path / "nothing")
    with np.load(folder / "classifier.npz", allow_pickle=False) as arrays:     # nothing needs pickle
        assert all(arrays[k].dtype != object for k in arrays.files)


def test_a_forest_cannot_be_saved_without_pickle():
    clf = hh.classify.HierarchicalClassifier(estimator=lambda: __import__("sklearn.ensemble").ensemble
                                             .RandomForestClassifier(5, random_state=0))
    X = np.random.default_rng(0).normal(size=(40, 3))
    labels = pd.DataFrame({"label_l1": ["R", "T"] * 20, "label_l2": [None] * 40, "label_l3": [None] * 40})
    clf.fit(X, labels)
    with pytest.raises(ValueError, match="cannot be saved without pickle"):
        hh.classify.classifier_state(clf)


def test_a_location_model_predicts_map_cells_from_coordinates(tmp_path):
    """gps + env: the covariates are standardised at new cells as at training."""
    rng = np.random.default_rng(1)
    lat, lon = rng.uniform(44, 52, 160), rng.uniform(0, 12, 160)
    encoder = hh.encoders.get_encoder("geoclip-location")
    gps = hh.embed.embed_locations(lat, lon, encoder)
    table, _ = hh.environment.sample(lat, lon, ["t_mean_annual", "p_annual"])
    env, standardiser = hh.environment.standardise(table, missing="indicator")
    labels = pd.DataFrame({"label_l1": np.where(lat > 48, "T", "R"), "label_l2": None, "label_l3": None})
    kept = hh.pipeline.fit(lat, lon, labels, {"gps": gps, "env": env}, model="raw concatenated",
                           params={"C": 0.5, "dropout_copies": False}, modalities=("gps", "env"),
                           env=hh.pipeline.env_settings(table.columns, standardiser))
    loaded = hh.pipeline.load(kept.save(tmp_path / "m"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                    # same versions: no warning
        hh.pipeline.load(tmp_path / "m")
    cells = loaded.predict_locations(lat[:20], lon[:20], encoder=encoder)
    pd.testing.assert_frame_equal(cells, kept.predict(lat[:20], lon[:20], {"gps": gps[:20], "env": env[:20]}))
    sat = hh.pipeline.Pipeline("raw satellite", {}, ("satellite",), loaded.scheme, loaded.classifier)
    with pytest.raises(ValueError, match="a map cell does not have"):
        sat.location_inputs(lat[:2], lon[:2])
