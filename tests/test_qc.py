"""Location quality control (:mod:`habitat_helpers.qc`) on small synthetic sites.

The fixture is generated here (:func:`synthetic_sites`, seeded): land points of western and central
Europe; a synthetic "GPS embedding" of a place (:class:`PlaceFeatures`: random Fourier features of the
coordinates at 25, 60, 200 and 800 km, standing in for GeoCLIP, which would be slower); photo and
satellite vectors that are noisy linear maps of the place's features (so the relation between place
and appearance is the same everywhere and the heads can learn it from other blocks; 30 % of the sites
have no photo, 10 % no patch); habitats (8 EUNIS codes under R and T) drawn from a softmax of another
linear map of the same features, labelled at levels 1-3 or not at all.
"""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pandas as pd
import pytest

from habitat_helpers import cli, demo, landmask, qc, spatial

HABITATS = ("R11", "R12", "R21", "R22", "T11", "T12", "T31", "T32")
SCALES_KM = (25.0, 60.0, 200.0, 800.0)
BBOX = (-2.0, 43.0, 24.0, 54.0)


class PlaceFeatures:
    """A synthetic location encoder: ``f(lat, lon) -> n x 64`` random Fourier features."""

    def __init__(self, per_scale: int = 16, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.w = np.concatenate([rng.normal(0, 1 / s, (per_scale, 2)) for s in SCALES_KM])
        self.b = rng.uniform(0, 2 * np.pi, len(self.w))

    def __call__(self, lat, lon) -> np.ndarray:
        lat, lon = np.asarray(lat, float), np.asarray(lon, float)
        xy = np.column_stack([lon * 111.32 * np.cos(np.deg2rad(50.0)), lat * 110.57])
        return (np.sqrt(2 / len(self.w)) * np.cos(xy @ self.w.T + self.b)).astype(np.float32)


def synthetic_sites(n: int = 900, seed: int = 0):
    """``embeddings, lat, lon, labels, gps_encoder`` (module docstring)."""
    rng = np.random.default_rng(seed)
    lat, lon = demo.sample_land_points(n, rng, bbox=BBOX)
    place = PlaceFeatures(seed=seed)
    f = place(lat, lon)
    photo = f @ rng.normal(0, 1, (f.shape[1], 32)) + rng.normal(0, 0.3, (n, 32))
    satellite = f @ rng.normal(0, 1, (f.shape[1], 24)) + rng.normal(0, 0.3, (n, 24))
    photo[rng.random(n) < 0.3] = np.nan
    satellite[rng.random(n) < 0.1] = np.nan
    logits = f @ rng.normal(0, 6, (f.shape[1], len(HABITATS)))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    codes = [HABITATS[rng.choice(len(HABITATS), p=q)] for q in p]
    depth = rng.choice([0, 1, 2, 3], size=n, p=[0.15, 0.05, 0.3, 0.5])
    labels = pd.DataFrame({f"label_l{k}": [c[:k] if d >= k else None for c, d in zip(codes, depth)]
                           for k in (1, 2, 3)})
    embeddings = {"photo": photo.astype(np.float32), "satellite": satellite.astype(np.float32)}
    return embeddings, lat, lon, labels, place


@pytest.fixture(scope="module")
def sites():
    return synthetic_sites()


@pytest.fixture(scope="module")
def fitted(sites):
    embeddings, lat, lon, labels, place = sites
    oof = qc.fit_out_of_fold(embeddings, lat, lon, labels, env=False, gps_encoder=place, progress=False)
    return oof, oof.score(embeddings, lat, lon, labels)


@pytest.fixture(scope="module")
def experiment(sites):
    embeddings, lat, lon, labels, place = sites
    return qc.displacement_experiment(embeddings, lat, lon, labels, env=False, gps_encoder=place, progress=False)


# --- displace ------------------------------------------------------------------------------------

def test_displace_moves_the_share_by_the_distance_onto_land():
    rng = np.random.default_rng(3)
    lat, lon = demo.sample_land_points(400, rng, bbox=BBOX)
    for km in (1.0, 25.0, 100.0):
        moved = qc.displace(lat, lon, km, 0.1, seed=5)
        assert len(moved.moved) == 40 and len(moved.failed) == 0
        d = spatial.haversine_km(lat[moved.moved], lon[moved.moved], moved.lat[moved.moved], moved.lon[moved.moved])
        np.testing.assert_allclose(d, km, rtol=1e-6)
        assert landmask.is_land(moved.lat[moved.moved], moved.lon[moved.moved]).all()
        still = np.setdiff1d(np.arange(400), moved.moved)
        assert (moved.lat[still] == lat[still]).all() and (moved.lon[still] == lon[still]).all()
    assert (qc.displace(lat, lon, 5.0, 0.1, seed=5).moved == moved.moved).all()      # same sites at every distance


def test_displace_reports_sites_it_cannot_move_onto_land():
    lat, lon = np.array([48.0, 30.0, 50.0]), np.array([8.0, -40.0, 10.0])      # the second is mid-Atlantic
    with pytest.warns(UserWarning, match="1 of 3 sites could not be moved"):
        moved = qc.displace(lat, lon, 25.0, 1.0, seed=0, tries=10)
    assert moved.failed.tolist() == [1] and sorted(moved.moved.tolist()) == [0, 2]
    assert (moved.lat[1], moved.lon[1]) == (30.0, -40.0)
    with pytest.raises(ValueError, match="share"):
        qc.displace(lat, lon, 25.0, 0.0, seed=0)


# --- out-of-fold scores --------------------------------------------------------------------------

def test_no_site_is_scored_by_a_model_that_saw_it(sites, fitted):
    """Structural: each fold model's training and calibration sites lie in the other folds, and each
    site's row in the table comes from the model of its own fold."""
    embeddings, lat, lon, labels, _ = sites
    oof, table = fitted
    assert table.index.tolist() == list(range(len(lat))) and list(table.columns) == [*qc.SCORE_COLUMNS, "fold"]
    assert (table["fold"].to_numpy() == oof.fold_of).all()
    for f, model in enumerate(oof.models):
        scored = np.flatnonzero(table["fold"].to_numpy() == f)
        assert len(scored) and not np.intersect1d(scored, model.train_idx).size
        assert not np.intersect1d(scored, model.val_idx).size
        assert not np.intersect1d(model.train_idx, model.val_idx).size
    with pytest.raises(ValueError, match="trained this model"):
        oof.models[0].score(embeddings, lat, lon, labels, oof.models[0].train_idx[:5])


def test_scoring_training_sites_shows_the_leak(sites, fitted):
    """Sites a model trained on look more consistent than held-out ones (measured, fold 0: mean
    p-value of its training sites 0.94 photo, 0.90 satellite, 0.67 label against 0.51, 0.48, 0.49 for
    the held-out sites of the fold): the calibration on held-out sites does not hold for them."""
    embeddings, lat, lon, labels, _ = sites
    oof, table = fitted
    model = oof.models[0]
    seen = model.score(embeddings, lat, lon, labels, model.train_idx, allow_training_sites=True)
    held_out = table[table["fold"] == 0]
    for name in qc.SCORES:
        assert seen[f"{name}_p"].mean() > held_out[f"{name}_p"].mean() + 0.05, name


def test_p_values_are_uniform_on_correctly_placed_held_out_sites(fitted):
    """Undisplaced held-out sites: each score's p-values are close to uniform. Measured (all folds
    pooled): Kolmogorov-Smirnov distance 0.093 photo, 0.062 satellite, 0.050 label; share below 0.1:
    0.166, 0.094, 0.092. The bounds below are those numbers with a margin, set after measuring: the
    photo p-values are somewhat anti-conservative (in one fold 0.25 of them fall below 0.1) because a
    fold's calibration comes from a few validation blocks whose photos need not resemble the scored
    fold's. The combined p-value (Bonferroni) flags fewer than the nominal share (measured 0.032 below
    0.05)."""
    from scipy import stats

    _, table = fitted
    for name in qc.SCORES:
        p = table[f"{name}_p"].dropna().to_numpy()
        assert len(p) > 300
        assert stats.kstest(p, "uniform").statistic < 0.12, name
        assert 0.05 < (p < 0.1).mean() < 0.2, name
    combined = table["p_combined"].dropna()
    assert (combined < 0.05).mean() < 0.06
    assert table["p_combined"].isna().sum() == (table["n_scores"] == 0).sum()
    missing = table.loc[table["cross_modal_photo"].isna(), "not_scored"]
    assert missing.str.contains("cross_modal_photo: no photo").all()


def test_planted_displacements_are_found_at_25_km_and_beyond(experiment):
    """ROC-AUC of 10 % planted displacements, measured on this fixture (seed 0; seeds 1-2 within
    0.05 of these):

    =====================  =====  =====  =====  ======
    score                  1 km   5 km   25 km  100 km
    =====================  =====  =====  =====  ======
    cross_modal_photo      0.52   0.54   0.70   0.99
    cross_modal_satellite  0.49   0.51   0.75   0.98
    label_surprise         0.53   0.54   0.56   0.69
    p_combined             0.51   0.52   0.71   0.97
    nearest_same_label_km  0.52   0.52   0.52   0.50
    random                 0.48   0.52   0.52   0.54
    =====================  =====  =====  =====  ======

    At 1-5 km the place barely changes at the scales the inputs vary on (the finest is 25 km), so
    nothing can find those. The label classifier is weak here (8 habitats drawn at random from a
    place's distribution), and the nearest-same-label baseline is useless on these evenly spread
    sites."""
    table = experiment
    assert set(table["score"]) == set(qc.EXPERIMENT_SCORES)
    assert set(table["distance_km"]) == set(qc.DISTANCES_KM)
    assert (table["not_moved"] == 0).all() and (table["prevalence"].between(0.05, 0.15)).all()
    auc = table.set_index(["score", "distance_km"])["roc_auc"]
    for name in ("cross_modal_photo", "cross_modal_satellite", "p_combined"):
        assert auc[name, 25.0] > 0.65, name
        assert auc[name, 100.0] > 0.9, name
    assert auc["label_surprise", 100.0] > 0.6
    for km in qc.DISTANCES_KM:
        assert 0.4 < auc["random", km] < 0.6


# --- the command line ----------------------------------------------------------------------------

def _write_table(path, n: int = 240, seed: int = 0) -> None:
    """Sites over land with habitats that follow the place (west/east, north/south), plus one site
    without a label."""
    rng = np.random.default_rng(seed)
    lat, lon = demo.sample_land_points(n, rng, bbox=BBOX)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["plot", "latitude", "longitude", "eunis_code"])
        for i in range(n):
            code = ("R" if lon[i] < 11 else "T") + ("1" if lat[i] < 48.5 else "2") + ("1" if i % 3 else "2")
            writer.writerow([f"P{i}", round(lat[i], 5), round(lon[i], 5), "" if i == 0 else code])


def test_qc_command_writes_flags(tmp_path, capsys):
    table, out = tmp_path / "plots.csv", tmp_path / "out" / "flags.csv"
    _write_table(table)
    args = ["qc", "--sites", str(table), "--id-col", "plot", "--folds", "3", "--block-size-deg", "2",
            "--false-alarm", "0.1", "--out", str(out), "--cache", str(tmp_path / "cache"), "--no-progress"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert cli.main(args) == 0
    flags = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert list(flags.columns) == ["site_id", "lat", "lon", *qc.SCORE_COLUMNS[:-1], "fold", "flag", "not_scored"]
    assert len(flags) == 240 and flags["flag"].dtype == bool
    assert (flags["flag"] == (flags["p_combined"] < 0.1)).all()
    assert flags.loc[0, "not_scored"].startswith("cross_modal_photo: no photo")
    assert "label_surprise: unlabelled" in flags.loc[0, "not_scored"]
    assert flags["label_surprise_p"].notna().sum() == 239
    printed = capsys.readouterr().out
    assert "location check of 240 sites" in printed and "flagged (combined p < 0.1)" in printed
    assert "not scored at all: 1 sites" in printed and "label_surprise: unlabelled: 1" in printed


@pytest.mark.parametrize("extra, message", [
    (["--false-alarm", "5"], "--false-alarm must lie strictly between 0 and 1"),
    (["--folds", "1"], "--folds must be at least 2"),
    (["--lat-col", "Breite"], "no latitude column"),
    (["--block-size-deg", "40"], "cannot make 3 folds"),
    (["--photo-cols", "plot"], "no site has a usable photo file"),
])
def test_qc_usage_problems_exit_with_code_2(tmp_path, capsys, extra, message):
    table, out = tmp_path / "plots.csv", tmp_path / "flags.csv"
    _write_table(table, n=60)
    args = ["qc", "--sites", str(table), "--out", str(out), "--cache", str(tmp_path / "cache"), "--no-progress",
            *extra]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert cli.main(args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_lucas_gps_offsets_against_the_stated_precision():
    # three points: GPS on the grid point; 0.001 degree of latitude north (111 m) with a 5 m
    # precision; no GPS fix at all (88.888888, LUCAS's no-data code)
    table = pd.DataFrame({"point_id": ["44402990", "44402992", "44402994"], "year": "2018", "nuts0": "DE",
                          "th_lat": "48.2012", "th_long": "11.4601", "gps_proj": "WGS84",
                          "gps_lat": ["48.2012", "48.2022", "88.888888"], "gps_ew": "East",
                          "gps_long": ["11.4601", "11.4601", "88.888888"], "gps_prec": "5",
                          "obs_dist": ["0", "111", "0"]})
    offsets = qc.lucas_gps_offsets(table)
    assert offsets["site_id"].tolist() == ["lucas:44402990:2018", "lucas:44402992:2018"]
    assert offsets["offset_m"].tolist() == pytest.approx([0.0, 111.2], abs=0.2)
    assert offsets["gps_precision_m"].tolist() == [5.0, 5.0]
    assert offsets["observer_distance_m"].tolist() == [0.0, 111.0]
    assert offsets["beyond_precision"].tolist() == [False, True]
    assert offsets.attrs["no_gps"] == 1
