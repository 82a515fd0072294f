"""Spatial cross-validation harness, probabilistic metrics and the hierarchy-consistent classifier."""

import numpy as np
import pandas as pd
import pytest

import habitat_helpers as hh


def _synthetic(n=360, seed=0):
    """Sites in clusters over Europe; level-1 habitat from longitude, level 2 from latitude,
    level 3 from a finer latitude band. Two 'modalities' carry noisy copies of the codes."""
    rng = np.random.default_rng(seed)
    centres = np.column_stack([rng.uniform(41, 56, 45), rng.uniform(-5, 22, 45)])
    which = rng.integers(0, len(centres), n)
    lat = centres[which, 0] + rng.normal(0, 0.05, n)
    lon = centres[which, 1] + rng.normal(0, 0.05, n)
    l1 = np.where(lon < 8, "R", "T")
    l2 = np.array([f"{a}{1 + int(b > 48)}" for a, b in zip(l1, lat)])
    l3 = np.array([f"{c}{1 + int((b * 2) % 2 > 1)}" for c, b in zip(l2, lat)])
    onehot = pd.get_dummies(l3).to_numpy(float)
    emb = {"satellite": (onehot @ rng.normal(size=(onehot.shape[1], 12)) + 0.8 * rng.normal(size=(n, 12))),
           "gps": np.column_stack([lat, lon, np.sin(lat), np.cos(lon)]) + 0.1 * rng.normal(size=(n, 4))}
    emb = {k: v.astype(np.float32) for k, v in emb.items()}
    labels = pd.DataFrame({"eunis_l1": l1, "eunis_l2": l2, "eunis_l3": l3}, dtype=object)
    labels.loc[rng.random(n) < 0.3, :] = None                  # unlabelled sites
    coarse = rng.random(n) < 0.15
    labels.loc[coarse, "eunis_l3"] = None                      # labelled at level 2 only
    return lat, lon, labels, emb


def test_block_folds_keep_blocks_whole_and_balance_sizes():
    lat, lon, _, _ = _synthetic()
    folds = hh.evaluation.block_folds(lat, lon, 0.5, 5, seed=0)
    blocks = hh.spatial.block_ids(lat, lon, 0.5)
    for b in np.unique(blocks):
        assert len(set(folds[blocks == b])) == 1
    sizes = np.bincount(folds, minlength=5)
    assert sizes.min() > 0.5 * sizes.max()
    assert not np.array_equal(folds, hh.evaluation.block_folds(lat, lon, 0.5, 5, seed=1))
    with pytest.raises(ValueError, match="cannot make"):
        hh.evaluation.block_folds(lat, lon, 50.0, 5, seed=0)


def test_probabilistic_metrics_against_hand_computation():
    proba = pd.DataFrame([[0.7, 0.2, 0.1, 0.0], [0.1, 0.6, 0.3, 0.0], [0.25, 0.25, 0.2, 0.3], [0.9, 0.05, 0.05, 0.0]],
                         columns=["A", "B", "C", "D"])
    pred = ["A", "B", "D", "A"]
    truth = ["A", "C", "B", None]              # the last site has no label: skipped
    m = hh.metrics.probabilistic_metrics(truth, pred, proba, n_bins=10)
    assert m["n"] == 3 and m["accuracy"] == pytest.approx(1 / 3)
    assert m["top3_accuracy"] == pytest.approx(1.0)                 # C in row 2's top 3, B in row 3's
    assert m["balanced_accuracy"] == pytest.approx(1 / 3)           # recalls A 1, B 0, C 0
    # bins: 0.7 (correct) -> [0.7, 0.8); 0.6 (wrong) -> [0.6, 0.7); 0.3 (wrong) -> [0.3, 0.4)
    assert m["ece"] == pytest.approx((abs(1 - 0.7) + abs(0 - 0.6) + abs(0 - 0.3)) / 3)


def test_path_probabilities_respect_the_hierarchy():
    lat, lon, labels, emb = _synthetic()
    ok = labels["eunis_l1"].notna().to_numpy()
    clf = hh.classify.HierarchicalClassifier().fit(emb["satellite"][ok], labels[ok])
    paths = clf.path_proba(emb["satellite"][:20])
    np.testing.assert_allclose(paths.sum(axis=1), 1.0, rtol=1e-9)
    levels = clf.level_proba(emb["satellite"][:20], paths)
    for parent, child in ((1, 2), (2, 3)):
        for code in levels[parent].columns:
            kids = [c for c in levels[child].columns if c.startswith(code)]
            np.testing.assert_allclose(levels[parent][code], levels[child][kids].sum(axis=1), rtol=1e-9)
    pred = clf.predict(emb["satellite"][:20])
    assert (pred["eunis_l3"].str[:2] == pred["eunis_l2"]).all() and (pred["eunis_l2"].str[0] == pred["eunis_l1"]).all()
    np.testing.assert_allclose(pred["p_l3"], paths.max(axis=1))


def test_coordinate_knn_and_majority_baselines():
    lat, lon, labels, _ = _synthetic()
    ok = labels["eunis_l1"].notna().to_numpy()
    X = hh.classify.coordinates_radians(lat, lon)
    knn = hh.classify.HierarchicalClassifier(estimator=hh.classify.coordinate_knn(5)).fit(X[ok][:200], labels[ok][:200])
    acc = (knn.predict(X[ok][200:])["eunis_l1"].to_numpy() == labels[ok]["eunis_l1"].to_numpy()[200:]).mean()
    assert acc > 0.9                                               # level 1 is a longitude split
    majority = hh.classify.MajorityClassifier().fit(None, labels[ok])
    pred = majority.predict(np.zeros(3))
    assert pred["eunis_l3"].nunique() == 1
    assert pred["eunis_l3"].iloc[0] == labels[ok]["eunis_l3"].value_counts().idxmax()
    few = hh.classify.HierarchicalClassifier(estimator=hh.classify.coordinate_knn(50)).fit(X[ok][:8], labels[ok][:8])
    assert len(few.predict(X[:3])) == 3                            # k capped at the sites available


def test_cross_validation_end_to_end():
    lat, lon, labels, emb = _synthetic()
    cfg = hh.align.AlignConfig(dim=8, hidden=16, epochs=3, batch_size=64, lr=3e-3, radius_km=10.0)
    res = hh.evaluation.cross_validate(lat, lon, labels, emb, modalities=("satellite", "gps"), folds=3,
                                       block_size_deg=1.0, seeds=(0,), align_config=cfg,
                                       label_fractions=(1.0, 0.2), progress=False)
    summary = res.summary()
    models = set(summary.index.get_level_values(0))
    assert models == {"aligned", "raw satellite", "raw gps", "raw concatenated", "k-NN on coordinates", "majority"}
    full = res.scores[(res.scores["fraction"] == 1.0) & (res.scores["subset"] == hh.evaluation.ALL_SITES)]
    assert len(full) == 6 * 3 * 3                                 # models x folds x levels
    n_test = {lv: int(labels[f"eunis_l{lv}"].notna().sum()) for lv in (1, 2, 3)}
    totals = full[full["model"] == "majority"].groupby("level")["n"].sum()
    assert totals.to_dict() == n_test                             # every labelled site scored once
    f1 = summary["macro_f1"]["mean"]
    assert f1.loc[("k-NN on coordinates", 1)] > f1.loc[("majority", 1)] + 0.3
    assert res.best_mono_scale() in {"raw satellite", "raw gps"}
    eff = res.label_efficiency()
    assert set(eff.index.get_level_values("fraction")) == {0.2, 1.0}
    assert set(res.any_modality["inputs"]) >= {"satellite + gps", "satellite only", "gps only"}
    out = hh.metrics._plain(res.to_json())
    assert out["results"][hh.evaluation.ALL_SITES]["aligned"]["level2"]["macro_f1"]["mean"] == pytest.approx(
        f1.loc[("aligned", 2)])
    assert out["levels_not_evaluated"] == {} and len(out["failures"]) == len(res.failures())
    assert out["settings"]["n_labelled_per_level"] == {f"level{lv}": n for lv, n in n_test.items()}
    assert set(res.confusion("aligned", 1).index) <= {"R", "T"}
    assert res.reliability("aligned", 1)["share"].sum() == pytest.approx(1.0)


def test_cross_validation_same_seed_same_numbers():
    lat, lon, labels, emb = _synthetic(n=200)
    kwargs = dict(modalities=("gps",), folds=3, block_size_deg=1.0, seeds=(0,), progress=False)
    a = hh.evaluation.cross_validate(lat, lon, labels, emb, **kwargs).scores
    b = hh.evaluation.cross_validate(lat, lon, labels, emb, **kwargs).scores
    pd.testing.assert_frame_equal(a, b)
    assert "aligned" not in set(a["model"])                        # one modality: nothing to align


def test_env_with_other_inputs_adds_the_concatenation_without_env():
    """With env among three or more modalities, the harness also scores the other inputs without env,
    on the same folds; the best mono-scale baseline is never a concatenation."""
    lat, lon, labels, emb = _synthetic(n=240)
    rng = np.random.default_rng(3)
    emb["env"] = np.column_stack([lat / 10, rng.normal(size=len(lat))]).astype(np.float32)  # "climate" + noise
    cfg = hh.align.AlignConfig(dim=8, hidden=16, epochs=2, batch_size=64, lr=3e-3)
    res = hh.evaluation.cross_validate(lat, lon, labels, emb, modalities=("satellite", "gps", "env"), folds=3,
                                       block_size_deg=1.0, seeds=(0,), align_config=cfg, modality_dropout=False,
                                       progress=False)
    models = set(res.summary().index.get_level_values(0))
    assert {"raw env", "raw concatenated", "raw concatenated without env", "aligned"} <= models
    without = hh.evaluation.cross_validate(lat, lon, labels, {k: emb[k] for k in ("satellite", "gps")},
                                           modalities=("satellite", "gps"), folds=3, block_size_deg=1.0, seeds=(0,),
                                           align_config=cfg, modality_dropout=False, progress=False)
    f1 = res.summary()["macro_f1"]["mean"]
    f1_without = without.summary()["macro_f1"]["mean"]
    for level in (1, 2, 3):   # same folds, same features: the same numbers as the run without env
        assert f1.loc[("raw concatenated without env", level)] == pytest.approx(f1_without.loc[("raw concatenated", level)])
    assert not res.best_mono_scale().startswith("raw concatenated")
    assert {"env only", "satellite + gps + env"} <= set(res.any_modality["inputs"])
