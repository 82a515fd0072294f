"""Spatial cross-validation harness, probabilistic metrics and the hierarchy-consistent classifier."""

import json

import numpy as np
import pandas as pd
import pytest
from synthetic import sites_with_two_inputs as _synthetic

import habitat_helpers as hh

#: small grids keep the tests fast; the selection itself is tested with the default grids
SMALL_GRIDS = {"aligned": {"C": (0.5,), "fusion": ("concat",), "dropout_copies": (True,)},
               "concatenated": {"C": (0.5,), "dropout_copies": (False,)},
               "mlp": {"alpha": (1e-3,), "dropout_copies": (False,)},
               "single": {"C": (0.05, 0.5)}, "knn": {"k": (5, 15)}}


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
    ok = labels["label_l1"].notna().to_numpy()
    clf = hh.classify.HierarchicalClassifier().fit(emb["satellite"][ok], labels[ok])
    paths = clf.path_proba(emb["satellite"][:20])
    np.testing.assert_allclose(paths.sum(axis=1), 1.0, rtol=1e-9)
    levels = clf.level_proba(emb["satellite"][:20], paths)
    for parent, child in ((1, 2), (2, 3)):
        for code in levels[parent].columns:
            kids = [c for c in levels[child].columns if c.startswith(code)]
            np.testing.assert_allclose(levels[parent][code], levels[child][kids].sum(axis=1), rtol=1e-9)
    pred = clf.predict(emb["satellite"][:20])
    assert (pred["label_l3"].str[:2] == pred["label_l2"]).all() and (pred["label_l2"].str[0] == pred["label_l1"]).all()
    np.testing.assert_allclose(pred["p_l3"], paths.max(axis=1))


def test_coordinate_knn_and_majority_baselines():
    lat, lon, labels, _ = _synthetic()
    ok = labels["label_l1"].notna().to_numpy()
    X = hh.classify.coordinates_radians(lat, lon)
    knn = hh.classify.HierarchicalClassifier(estimator=hh.classify.coordinate_knn(5)).fit(X[ok][:200], labels[ok][:200])
    acc = (knn.predict(X[ok][200:])["label_l1"].to_numpy() == labels[ok]["label_l1"].to_numpy()[200:]).mean()
    assert acc > 0.9                                               # level 1 is a longitude split
    majority = hh.classify.MajorityClassifier().fit(None, labels[ok])
    pred = majority.predict(np.zeros(3))
    assert pred["label_l3"].nunique() == 1
    assert pred["label_l3"].iloc[0] == labels[ok]["label_l3"].value_counts().idxmax()
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
    assert models == {"aligned", "aligned + raw", "raw satellite", "raw gps", "raw concatenated",
                      "MLP on raw concatenated", "k-NN on coordinates", "majority"}
    full = res.scores[(res.scores["fraction"] == 1.0) & (res.scores["subset"] == hh.evaluation.ALL_SITES)]
    assert len(full) == 8 * 3 * 3                                 # models x folds x levels
    n_test = {lv: int(labels[f"label_l{lv}"].notna().sum()) for lv in (1, 2, 3)}
    totals = full[full["model"] == "majority"].groupby("level")["n"].sum()
    assert totals.to_dict() == n_test                             # every labelled site scored once
    f1 = summary["macro_f1"]["mean"]
    assert f1.loc[("k-NN on coordinates", 1)] > f1.loc[("majority", 1)] + 0.3
    assert res.best_mono_scale() in {"raw satellite", "raw gps"}
    plain = hh.evaluation.summary_json(summary)               # what the notebooks write to metrics.json
    assert set(plain) == models and set(plain["aligned"]) == {"level1", "level2", "level3"}
    assert plain["majority"]["level2"]["macro_f1"] == pytest.approx(f1.loc[("majority", 2)])
    assert plain["majority"]["level2"]["macro_f1_std"] == pytest.approx(summary["macro_f1"]["std"].loc[("majority", 2)])
    assert plain["majority"]["level1"]["n"] == pytest.approx(n_test[1] / 3)   # mean test sites per fold
    assert set(plain["aligned"]["level3"]) == {*hh.evaluation.METRICS, *(f"{m}_std" for m in hh.evaluation.METRICS), "n"}
    eff = res.label_efficiency()
    assert set(eff.index.get_level_values("fraction")) == {0.2, 1.0}
    assert set(res.any_modality["inputs"]) >= {"satellite + gps", "satellite only", "gps only"}
    out = hh.metrics.plain(res.to_json())
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


def test_the_aligned_path_gives_the_same_numbers_with_the_same_seed():
    lat, lon, labels, emb = _synthetic(n=200)
    cfg = hh.align.AlignConfig(dim=8, hidden=16, epochs=3, batch_size=64, lr=3e-3)
    kwargs = dict(modalities=("satellite", "gps"), folds=3, block_size_deg=1.0, seeds=(4,), align_config=cfg,
                  grids=SMALL_GRIDS, progress=False)
    a = hh.evaluation.cross_validate(lat, lon, labels, emb, **kwargs)
    b = hh.evaluation.cross_validate(lat, lon, labels, emb, **kwargs)
    assert "aligned" in set(a.scores["model"])
    pd.testing.assert_frame_equal(a.scores, b.scores)
    pd.testing.assert_frame_equal(a.any_modality, b.any_modality)
    c = hh.evaluation.cross_validate(lat, lon, labels, emb, **{**kwargs, "seeds": (5,)})
    assert not np.allclose(a.scores["macro_f1"], c.scores["macro_f1"])    # the seed matters
    parallel = hh.evaluation.cross_validate(lat, lon, labels, emb, **kwargs, n_jobs=2)
    pd.testing.assert_frame_equal(a.scores, parallel.scores)               # folds in two processes
    timing = list(hh.evaluation.TIMING_COLUMNS)             # seconds differ from run to run
    pd.testing.assert_frame_equal(a.choices.drop(columns=timing), parallel.choices.drop(columns=timing))
    assert (a.choices[timing] > 0).all().all()
    assert {"raw gps", "alignment (contrastive heads)"} <= set(a.timings().index)


def test_env_with_other_inputs_adds_the_concatenation_without_env():
    """With env among three or more modalities, the harness also scores the other inputs without env,
    on the same folds; the best mono-scale baseline is never a concatenation."""
    lat, lon, labels, emb = _synthetic(n=240)
    rng = np.random.default_rng(3)
    emb["env"] = np.column_stack([lat / 10, rng.normal(size=len(lat))]).astype(np.float32)  # "climate" + noise
    cfg = hh.align.AlignConfig(dim=8, hidden=16, epochs=2, batch_size=64, lr=3e-3)
    res = hh.evaluation.cross_validate(lat, lon, labels, emb, modalities=("satellite", "gps", "env"), folds=3,
                                       block_size_deg=1.0, seeds=(0,), align_config=cfg, grids=SMALL_GRIDS,
                                       progress=False)
    models = set(res.summary().index.get_level_values(0))
    assert {"raw env", "raw concatenated", "raw concatenated without env", "aligned"} <= models
    without = hh.evaluation.cross_validate(lat, lon, labels, {k: emb[k] for k in ("satellite", "gps")},
                                           modalities=("satellite", "gps"), folds=3, block_size_deg=1.0, seeds=(0,),
                                           align_config=cfg, grids=SMALL_GRIDS, progress=False)
    f1 = res.summary()["macro_f1"]["mean"]
    f1_without = without.summary()["macro_f1"]["mean"]
    for level in (1, 2, 3):   # same folds, same features: the same numbers as the run without env
        assert f1.loc[("raw concatenated without env", level)] == pytest.approx(f1_without.loc[("raw concatenated", level)])
    assert not res.best_mono_scale().startswith("raw concatenated")
    assert {"env only", "satellite + gps + env"} <= set(res.any_modality["inputs"])


def test_the_alignment_and_the_selection_never_see_a_test_fold_site(monkeypatch):
    """Every site the heads train or stop on is outside the test fold and its buffer, and every
    choice of hyperparameters is unchanged when the test fold's labels are scrambled."""
    lat, lon, labels, emb = _synthetic(n=240)
    seen = []
    real_train = hh.align.train_alignment

    def spy(embeddings, train_idx, val_idx, config, *args, **kwargs):
        seen.append((config.seed, np.asarray(train_idx), np.asarray(val_idx)))
        return real_train(embeddings, train_idx, val_idx, config, *args, **kwargs)

    monkeypatch.setattr(hh.align, "train_alignment", spy)
    cfg = hh.align.AlignConfig(dim=8, hidden=16, epochs=2, batch_size=64, lr=3e-3)
    kwargs = dict(modalities=("satellite", "gps"), folds=3, block_size_deg=1.0, buffer_km=30.0, seeds=(0,),
                  align_config=cfg, grids={**SMALL_GRIDS, "single": {"C": (0.01, 1.0, 100.0)}}, progress=False)
    res = hh.evaluation.cross_validate(lat, lon, labels, emb, **kwargs)
    folds = hh.evaluation.block_folds(lat, lon, 1.0, 3, 0)
    assert len(seen) == 3
    for fold, (_, train_idx, val_idx) in enumerate(seen):
        test = np.where(folds == fold)[0]
        used = np.concatenate([train_idx, val_idx])
        assert not set(used) & set(test)
        far = hh.spatial.haversine_km(lat[used][:, None], lon[used][:, None], lat[test][None], lon[test][None])
        assert far.min() > 30.0                                     # the buffer holds
    assert res.settings["buffer_km"] == 30.0 and res.settings["buffer_removed_sites_per_fold"] > 0
    assert set(res.choices["model"]) >= {"aligned", "raw satellite", "k-NN on coordinates"}
    assert res.settings["grids"]["raw gps"]["C"] == [0.01, 1.0, 100.0]
    # scramble the labels of fold 0's test sites: fold 0's choices cannot move
    scrambled = labels.copy()
    rows = np.where((folds == 0) & labels["label_l1"].notna().to_numpy())[0]
    scrambled.iloc[rows] = scrambled.iloc[np.random.default_rng(1).permutation(rows)].to_numpy()
    assert not scrambled.equals(labels)
    again = hh.evaluation.cross_validate(lat, lon, scrambled, emb, **kwargs)
    timing = list(hh.evaluation.TIMING_COLUMNS)
    first = res.choices[res.choices["fold"] == 0].drop(columns=timing).reset_index(drop=True)
    second = again.choices[again.choices["fold"] == 0].drop(columns=timing).reset_index(drop=True)
    pd.testing.assert_frame_equal(first, second)


def test_paired_interval_against_hand_computation():
    a = np.array([0.80, 0.75, 0.90, 0.85, 0.70, 0.82])
    b = np.array([0.78, 0.70, 0.86, 0.86, 0.65, 0.80])
    d = a - b                                        # 0.02 0.05 0.04 -0.01 0.05 0.02
    out = hh.evaluation.paired_interval(a, b)
    half = 2.570582 * d.std(ddof=1) / np.sqrt(6)     # t(0.975, 5)
    assert out["difference"] == pytest.approx(d.mean())
    assert out["ci_low"] == pytest.approx(d.mean() - half, rel=1e-5)
    assert out["wins"] == 5 and out["pairs"] == 6
    corrected = hh.evaluation.paired_interval(a, b, test_train_ratio=0.25)
    assert corrected["ci_high"] - corrected["difference"] == pytest.approx(
        2.570582 * np.sqrt(d.var(ddof=1) * (1 / 6 + 0.25)), rel=1e-5)     # Nadeau & Bengio's correction
    assert np.isnan(hh.evaluation.paired_interval(a[:1], b[:1])["ci_low"])


def test_settings_are_checked_before_any_work():
    lat, lon, labels, emb = _synthetic(n=60)
    with pytest.raises(ValueError, match="fusion must be"):
        hh.evaluation.cross_validate(lat, lon, labels, emb, grids={"aligned": {"fusion": ("sum",)}})
    with pytest.raises(TypeError):
        hh.evaluation.cross_validate(lat, lon, labels, emb, fold=3)          # misspelt setting
    with pytest.raises(ValueError, match="block_size_deg"):
        hh.evaluation.Protocol(block_size_deg="large")
    with pytest.raises(ValueError, match="AlignConfig fields"):
        hh.evaluation.Protocol(align_grid={"radius": (1.0,)})
    assert hh.align.config_for("tiny", 0).radius_km == hh.align.AlignConfig().radius_km


def test_transfer_models_learn_from_sites_without_photos_and_predict_from_the_photo():
    lat, lon, labels, emb = _synthetic(n=240)
    rng = np.random.default_rng(2)
    photo = emb["satellite"] @ rng.normal(size=(12, 10)) + 0.3 * rng.normal(size=(len(lat), 10))
    photo[rng.random(len(lat)) < 0.6] = np.nan                      # most sites have no photo
    emb["photo"] = photo.astype(np.float32)
    modalities = ("photo", "satellite", "gps")
    cfg = hh.align.AlignConfig(dim=8, hidden=16, epochs=2, batch_size=64, lr=3e-3)
    models = [m for m in hh.evaluation.default_models(modalities) if m.name in ("raw photo", "majority")]
    models += hh.evaluation.transfer_models(modalities)
    res = hh.evaluation.cross_validate(lat, lon, labels, emb, modalities=modalities, models=models, folds=3,
                                       block_size_deg=1.0, seeds=(0,), align_config=cfg, grids=SMALL_GRIDS,
                                       progress=False)
    photo_sites = res.summary(hh.evaluation.PHOTO_SITES)["n"]["mean"]
    full = res.scores[(res.scores["subset"] == hh.evaluation.ALL_SITES) & (res.scores["level"] == 1)]
    has_photo = ~np.isnan(emb["photo"]).any(axis=1)
    folds = hh.evaluation.block_folds(lat, lon, 1.0, 3, 0)
    labelled = labels["label_l1"].notna().to_numpy()
    for fold in range(3):
        rows = full[full["fold"] == fold].set_index("model")
        # the transfer models learn from the labelled training sites without photos only
        assert rows.loc["transfer: raw gps", "n_train"] == (labelled & ~has_photo & (folds != fold)).sum()
        assert rows.loc["raw photo", "n_train"] == (labelled & has_photo & (folds != fold)).sum()
        # ... and the aligned one predicts from the photo alone: only photo sites are scored
        assert rows.loc["transfer: aligned, photo alone", "n"] == (labelled & has_photo & (folds == fold)).sum()
    assert photo_sites.loc[("transfer: aligned, photo alone", 1)] == pytest.approx(photo_sites.loc[("raw photo", 1)])
    assert hh.evaluation.transfer_models(("satellite", "gps")) == []


def test_a_new_baseline_is_one_entry_in_the_models_list():
    """A model of one's own (here k-NN on the raw satellite embedding, with its own grid) gets the
    same folds and validation blocks as the built-in ones, and its choices are recorded."""
    from sklearn.neighbors import KNeighborsClassifier

    lat, lon, labels, emb = _synthetic(n=200)
    mine = hh.evaluation.Model(
        "k-NN on satellite", features=lambda inputs, p: inputs.embeddings["satellite"],
        classifier=lambda p, scheme: hh.classify.HierarchicalClassifier(
            estimator=lambda: KNeighborsClassifier(p["k"]), scheme=scheme),
        family="single", grid={"k": (1, 25)})
    models = [m for m in hh.evaluation.default_models(("satellite",)) if m.name == "majority"] + [mine]
    res = hh.evaluation.cross_validate(lat, lon, labels, emb, modalities=("satellite",), models=models, folds=3,
                                       block_size_deg=1.0, seeds=(0,), progress=False)
    f1 = res.summary()["macro_f1"]["mean"]
    assert f1.loc[("k-NN on satellite", 1)] > f1.loc[("majority", 1)] + 0.3
    chosen = res.choices[res.choices["model"] == "k-NN on satellite"]
    assert len(chosen) == 3 and set(chosen["candidates"]) == {2}
    assert res.settings["grids"]["k-NN on satellite"] == {"k": [1, 25]}


def test_forest_baseline_reads_coordinates_and_covariates_and_chooses_its_leaf():
    """The classical habitat-model baseline: a random forest on coordinates + env. On a table whose
    level-1 habitat is the sign of one covariate, it beats the majority and the k-NN on coordinates
    cannot see that covariate; it picks a leaf size from its grid in every fold."""
    lat, lon, labels, emb = _synthetic(n=300)
    rng = np.random.default_rng(3)
    env = rng.normal(size=(len(lat), 3)).astype(np.float32)
    l1 = np.where(env[:, 0] > 0, "R", "T")
    labels = pd.DataFrame({"label_l1": l1, "label_l2": [f"{c}1" for c in l1], "label_l3": None}, dtype=object)
    forest = hh.evaluation.forest_model(n_estimators=30)
    assert forest.name == "random forest on coordinates + env"
    models = [m for m in hh.evaluation.default_models(("env",)) if m.name in ("majority", "k-NN on coordinates")]
    res = hh.evaluation.cross_validate(lat, lon, labels, {"env": env}, modalities=("env",),
                                       models=models + [forest], folds=3, block_size_deg=1.0, seeds=(0,),
                                       progress=False)
    f1 = res.summary()["macro_f1"]["mean"]
    assert f1.loc[(forest.name, 1)] > 0.85 > f1.loc[("k-NN on coordinates", 1)] + 0.2
    chosen = res.choices[res.choices["model"] == forest.name]
    assert len(chosen) == 3 and set(chosen["candidates"]) == {8}
    assert all(p["min_samples_leaf"] in hh.evaluation.FOREST_GRID["min_samples_leaf"] for p in chosen["params"])
    X = forest.features(hh.evaluation.FoldInputs(lat, lon, {"env": env}, ("env",)), {})
    np.testing.assert_allclose(X, np.column_stack([lat, lon, env]), rtol=1e-6)


def test_best_versus_pairs_the_best_of_each_group_per_level():
    """Hand-made fold scores: per level the best of each group by mean, their paired difference."""
    rows = []
    for seed in (0, 1):
        for fold in range(3):
            for level, (a, b, c) in {1: (0.8, 0.6, 0.7), 2: (0.4, 0.5, 0.3)}.items():
                for model, value in (("mine", a), ("other of mine", 0.1), ("forest", b), ("knn", c)):
                    rows.append({"model": model, "seed": seed, "fold": fold, "fraction": 1.0,
                                 "subset": hh.evaluation.ALL_SITES, "level": level,
                                 "macro_f1": value + 0.01 * fold, "n": 50, "n_train": 100})
    scores = pd.DataFrame(rows)
    for column in hh.evaluation.SCORE_COLUMNS:
        if column not in scores:
            scores[column] = np.nan
    res = hh.evaluation.CVResult(scores, pd.DataFrame(), {}, {"folds": 3}, hh.evaluation._empty_failures(),
                                 pd.DataFrame())
    table = res.best_versus(["mine", "other of mine"], ["forest", "knn"]).set_index("level")
    assert table.loc[1, "model"] == "mine" and table.loc[1, "baseline"] == "knn"
    assert table.loc[2, "baseline"] == "forest"
    assert table.loc[1, "difference"] == pytest.approx(0.1) and table.loc[1, "verdict"] == "better"
    assert table.loc[2, "difference"] == pytest.approx(-0.1) and table.loc[2, "verdict"] == "worse"
    assert table.loc[1, "wins"] == 6 and table.loc[1, "pairs"] == 6


def test_models_as_peers_build_them_have_grids_of_equal_size():
    """aligned + raw and the capacity-matched MLP are entries like the others; every multi-input
    model chooses dropout copies on or off and has as many candidates as the others."""
    cfg = hh.align.AlignConfig(dim=8, hidden=16)
    models = {m.name: m for m in hh.evaluation.default_models(("satellite", "gps"), cfg)}
    assert {"aligned", "aligned + raw", "raw concatenated", "MLP on raw concatenated"} <= set(models)
    protocol = hh.evaluation.Protocol()
    several = [models[n] for n in ("aligned", "aligned + raw", "raw concatenated", "MLP on raw concatenated")]
    assert {len(m.candidates(protocol)) for m in several} == {16}
    assert {len(models[n].candidates(protocol)) for n in ("raw gps", "k-NN on coordinates")} == {8}
    for m in several:
        assert m.grid_for(protocol)["dropout_copies"] == (False, True)
    # the capacity control: the heads' widths and budget, then the aligned model's classifier on its output
    mlp = models["MLP on raw concatenated"]
    lat, lon, labels, emb = _synthetic(n=120)
    X = hh.evaluation.raw_concatenated(emb, ("satellite", "gps"))
    rows = labels["label_l1"].notna().to_numpy()
    first = mlp.classifier({"alpha": 1e-3, "C": 1.0}, "eunis").fit(X[rows], labels[rows])
    network = first.network_[-1]
    assert network.hidden_layer_sizes == (16, 8) and network.max_iter == cfg.epochs
    assert network.learning_rate_init == cfg.lr and network.n_iter_no_change == cfg.patience
    assert first.transform(X).shape == (120, 8) and first.predict(X)["label_l1"].notna().all()
    second = mlp.classifier({"alpha": 1e-3, "C": 0.05}, "eunis").fit(X[rows], labels[rows])
    assert second.network_ is first.network_                      # another C: the same trained network
    assert mlp.classifier({"alpha": 1e-2, "C": 1.0}, "eunis").fit(X[rows], labels[rows]).network_ is not first.network_
    # aligned + raw reads the aligned vectors and the raw concatenation side by side
    heads, _ = hh.align.train_alignment(emb, np.arange(90), np.arange(90, 120), hh.align.AlignConfig(
        dim=8, hidden=16, epochs=1, modalities=("satellite", "gps"), radius_km=0.0))
    inputs = hh.evaluation.FoldInputs(lat, lon, emb, ("satellite", "gps")).with_heads(heads)
    both = models["aligned + raw"].features(inputs, {"fusion": "mean"})
    np.testing.assert_allclose(both[:, :8], inputs.aligned("mean"))
    np.testing.assert_allclose(both[:, 8:], hh.evaluation.raw_concatenated(emb, ("satellite", "gps")))


def _with_extra(n=240, n_extra=240, seed=0):
    """The synthetic sites plus ``n_extra`` unlabelled extra sites drawn the same way."""
    lat, lon, labels, emb = _synthetic(n=n, seed=seed)
    lat2, lon2, _, emb2 = _synthetic(n=n_extra, seed=seed + 50)
    labels2 = pd.DataFrame({c: [None] * n_extra for c in labels}, dtype=object)
    extra = np.r_[np.zeros(n, bool), np.ones(n_extra, bool)]
    return (np.r_[lat, lat2], np.r_[lon, lon2], pd.concat([labels, labels2], ignore_index=True),
            {k: np.vstack([emb[k], emb2[k]]) for k in emb}, extra)


def test_alignment_pools_train_on_what_they_say_and_keep_the_folds_paired(monkeypatch):
    lat, lon, labels, emb, extra = _with_extra()
    seen = []
    real_train = hh.align.train_alignment

    def spy(embeddings, train_idx, val_idx, config, *args, **kwargs):
        seen.append((np.asarray(train_idx), np.asarray(val_idx)))
        return real_train(embeddings, train_idx, val_idx, config, *args, **kwargs)

    monkeypatch.setattr(hh.align, "train_alignment", spy)
    cfg = hh.align.AlignConfig(dim=8, hidden=16, epochs=2, batch_size=64, lr=3e-3)
    models = [m for m in hh.evaluation.default_models(("satellite", "gps"), cfg)
              if m.name in ("aligned + raw", "raw gps", "majority")]
    kwargs = dict(modalities=("satellite", "gps"), models=models, folds=3, block_size_deg=1.0, seeds=(0,),
                  align_config=cfg, grids=SMALL_GRIDS, label_fractions=(1.0, 0.5), progress=False)
    labelled = labels["label_l1"].notna().to_numpy()
    folds = hh.evaluation._block_folds_with_extra(lat, lon, 1.0, 3, 0, extra)
    np.testing.assert_array_equal(folds[~extra], hh.evaluation.block_folds(lat[~extra], lon[~extra], 1.0, 3, 0))
    runs, used = {}, {}
    for pool in hh.evaluation.ALIGN_POOLS:
        seen.clear()
        runs[pool] = hh.evaluation.cross_validate(lat, lon, labels, emb, extra=extra, align_pool=pool, **kwargs)
        used[pool] = list(seen)
        assert runs[pool].settings["align_pool"] == pool
    assert len(used["labelled"]) == 6 and len(used["training"]) == 3      # per fraction only for 'labelled'
    for fold in range(3):
        test = folds == fold
        lab, train, ext, trans = (used[p][fold if p != "labelled" else 2 * fold][0] for p in hh.evaluation.ALIGN_POOLS)
        assert labelled[lab].all() and not extra[train].any() and not test[train].any()
        assert extra[ext].any() and not test[ext].any() and set(train) < set(ext)
        assert test[trans].any() and set(ext) < set(trans)
        val = used["extra"][fold][1]
        assert not extra[val].any()                               # early stopping on the study's sites only
        blocks = hh.spatial.block_ids(lat, lon, 1.0)
        assert not set(blocks[ext[extra[ext]]]) & set(blocks[val])   # no extra site from a validation block
    per_fold = {p: runs[p].settings["align_pool_sites_per_fold"] for p in hh.evaluation.ALIGN_POOLS}
    assert set(per_fold["labelled"]) == {"1", "0.5"} and set(per_fold["extra"]) == {"all"}
    assert per_fold["labelled"]["0.5"] < per_fold["labelled"]["1"]
    sizes = {p: v.get("1", v.get("all")) for p, v in per_fold.items()}
    assert sizes["labelled"] < sizes["training"] < sizes["extra"] < sizes["transductive"]
    # the baselines do not depend on the pool, nor on the extra sites: the runs are paired fold by fold
    alone = hh.evaluation.cross_validate(lat[~extra], lon[~extra], labels[~extra], {k: v[~extra] for k, v in emb.items()},
                                         **kwargs)
    base = alone.scores[alone.scores["model"] == "raw gps"].reset_index(drop=True)
    for run in runs.values():
        pd.testing.assert_frame_equal(run.scores[run.scores["model"] == "raw gps"].reset_index(drop=True), base)
    full = runs["extra"].scores
    totals = full[(full["model"] == "majority") & (full["fraction"] == 1.0)].groupby("level")["n"].sum()
    assert totals[1] == labelled.sum()                           # the extra sites are never scored
    # aligned + raw moves with the pool
    f1 = {p: r.scores.loc[r.scores["model"] == "aligned + raw", "macro_f1"].to_numpy() for p, r in runs.items()}
    assert not np.allclose(f1["training"], f1["extra"])


def test_alignment_pool_settings_are_checked():
    lat, lon, labels, emb, extra = _with_extra(n=120, n_extra=30)
    kwargs = dict(modalities=("satellite", "gps"), folds=3, block_size_deg=1.0, seeds=(0,), progress=False)
    with pytest.raises(ValueError, match="align_pool must be one of"):
        hh.evaluation.Protocol(align_pool="everything")
    with pytest.raises(ValueError, match="needs extra sites"):
        hh.evaluation.cross_validate(lat[~extra], lon[~extra], labels[~extra],
                                     {k: v[~extra] for k, v in emb.items()}, align_pool="extra", **kwargs)
    planted = labels.copy()
    planted.loc[len(planted) - 1, ["label_l1"]] = "R"
    with pytest.raises(ValueError, match="extra sites carry labels"):
        hh.evaluation.cross_validate(lat, lon, planted, emb, extra=extra, **kwargs)


def test_alignment_pays_reads_the_registered_rule():
    """One cell where aligned + raw beats the best baseline on every pair, one where it does not;
    a baseline scored on too few of the cell's sites is never 'the best'."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(3):
        for fold in range(3):
            for level, gain in ((2, 0.08), (3, 0.0)):
                noise = rng.normal(0, 0.01)
                for model, value, n in (("aligned + raw", 0.5 + gain + noise, 100), ("raw gps", 0.5, 100),
                                        ("raw concatenated", 0.45, 100), ("raw photo", 0.95, 40)):
                    rows.append({"seed": seed, "fold": fold, "fraction": 1.0, "model": model,
                                 "subset": hh.evaluation.ALL_SITES, "level": level, "macro_f1": value, "n": n})
    table = hh.evaluation.alignment_pays(pd.DataFrame(rows), folds=3).set_index("level")
    assert (table["best_without_alignment"] == "raw gps").all()          # raw photo covers 40 % of the sites
    assert table.loc[2, "pays"] and table.loc[2, "ci_low"] > 0 and table.loc[2, "wins"] == 9
    assert not table.loc[3, "pays"]
    assert table.loc[2, "difference"] == pytest.approx(0.08, abs=0.01)


def test_selection_fits_the_candidates_on_at_most_selection_sites(monkeypatch):
    """Protocol.selection_sites bounds the candidates' fits and scores; the chosen model is refitted
    on every labelled training site; a cap the study does not reach changes nothing."""
    lat, lon, labels, emb = _synthetic(n=300)
    kwargs = dict(modalities=("gps",), folds=3, block_size_deg=1.0, seeds=(0,), progress=False,
                  models=[m for m in hh.evaluation.default_models(("gps",)) if m.name == "raw gps"])
    sizes = []
    real = hh.evaluation.select

    def spy(model, inputs, labels, fit_rows, val_rows, *args, **kw):
        sizes.append((int(fit_rows.sum()), int(val_rows.sum())))
        return real(model, inputs, labels, fit_rows, val_rows, *args, **kw)

    monkeypatch.setattr(hh.evaluation, "select", spy)
    capped = hh.evaluation.cross_validate(lat, lon, labels, emb, selection_sites=40, **kwargs)
    assert len(sizes) == 3 and all(f == 40 and v <= 40 for f, v in sizes)
    n_train = capped.scores[capped.scores["model"] == "raw gps"].groupby("fold")["n_train"].first()
    assert (n_train > 100).all()                                # the refit sees every training site
    assert capped.settings["selection_sites"] == 40
    sizes.clear()
    full = hh.evaluation.cross_validate(lat, lon, labels, emb, selection_sites=None, **kwargs)
    wide = hh.evaluation.cross_validate(lat, lon, labels, emb, selection_sites=10_000, **kwargs)
    assert all(f > 40 for f, _ in sizes)
    pd.testing.assert_frame_equal(full.scores, wide.scores)
    with pytest.raises(ValueError, match="selection_sites"):
        hh.evaluation.Protocol(selection_sites=3)


def test_the_refit_sees_at_most_fit_sites_and_a_fold_reads_only_the_sites_it_uses(monkeypatch):
    """Protocol.fit_sites bounds the chosen model's refit; the fold's features are computed for
    the sites it fits and scores only (not the unlabelled ones); a cap not reached changes nothing."""
    lat, lon, labels, emb = _synthetic(n=300)
    labels.loc[::3, ["label_l1", "label_l2", "label_l3"]] = None         # a third unlabelled
    kwargs = dict(modalities=("gps",), folds=3, block_size_deg=1.0, seeds=(0,), progress=False,
                  models=[m for m in hh.evaluation.default_models(("gps",)) if m.name == "raw gps"])
    seen = []
    real = hh.evaluation.select

    def spy(model, inputs, *args, **kw):
        seen.append(len(inputs.lat))
        return real(model, inputs, *args, **kw)

    monkeypatch.setattr(hh.evaluation, "select", spy)
    capped = hh.evaluation.cross_validate(lat, lon, labels, emb, fit_sites=50, **kwargs)
    scores = capped.scores[capped.scores["model"] == "raw gps"]
    assert (scores.groupby("fold")["n_train"].first() == 50).all()
    assert capped.settings["fit_sites"] == 50
    assert len(seen) == 3 and max(seen) <= int(labels["label_l1"].notna().sum()) < len(lat)
    sites = capped.predictions["raw gps"][1]["site"]                  # numbered as the study's rows
    assert sites.is_unique and labels.loc[sites, "label_l1"].notna().all()
    assert len(sites) == int(labels["label_l1"].notna().sum())
    full = hh.evaluation.cross_validate(lat, lon, labels, emb, fit_sites=None, **kwargs)
    wide = hh.evaluation.cross_validate(lat, lon, labels, emb, fit_sites=10_000, **kwargs)
    assert (full.scores.groupby("fold")["n_train"].first() > 50).all()
    pd.testing.assert_frame_equal(full.scores, wide.scores)
    with pytest.raises(ValueError, match="fit_sites"):
        hh.evaluation.Protocol(fit_sites=True)


def test_a_fold_takes_the_photo_views_of_its_sites():
    """The fold's sites keep their own photo views, renumbered: the heads give them the same
    vectors as when reading every site."""
    rng = np.random.default_rng(1)
    n = 40
    site = np.repeat(np.arange(n), rng.integers(1, 4, n))
    emb = {"photo": rng.normal(size=(n, 6)).astype(np.float32),
           "photo_per_view": rng.normal(size=(len(site), 6)).astype(np.float32), "photo_site": site,
           "gps": rng.normal(size=(n, 5)).astype(np.float32), "photo_view": np.array(["N", "E", "S"])[site % 3]}
    kept = np.array([3, 7, 8, 20, 39])
    taken = hh.evaluation._take_sites(emb, kept, n)
    assert np.array_equal(taken["gps"], emb["gps"][kept])
    assert len(taken["photo_view"]) == len(taken["photo_per_view"]) == len(taken["photo_site"])
    assert sorted(np.unique(taken["photo_site"])) == list(range(len(kept)))
    for i, s in enumerate(kept):
        np.testing.assert_array_equal(taken["photo_per_view"][taken["photo_site"] == i],
                                      emb["photo_per_view"][site == s])
    config = hh.align.AlignConfig(modalities=("photo", "gps"), photo_views="items", dim=4, hidden=8)
    model = hh.align.AlignmentModel({"photo": 6, "gps": 5}, config).eval()
    whole = model.embed_sites(emb, sites=kept)
    part = model.embed_sites(taken)
    for m in ("photo", "gps"):
        np.testing.assert_allclose(part[m], whole[m], rtol=1e-6, atol=1e-6)


def test_the_capacity_control_sees_as_many_rows_as_the_heads_on_large_tables():
    """On more rows than AlignConfig.epoch_sites, the MLP trains fewer epochs: the same rows seen."""
    clf = hh.classify.SupervisedHeadClassifier(16, 8, 1e-3, batch_size=32, lr=1e-3, epochs=50, patience=5,
                                               epoch_sites=1000)
    assert clf.epochs_for(800) == 50 and clf.epochs_for(10_000) == 5 and clf.epochs_for(10**7) == 1
    cfg = hh.align.AlignConfig(epoch_sites=1000)
    [mlp] = [m for m in hh.evaluation.default_models(("gps", "env"), cfg) if m.name == hh.evaluation.MLP]
    built = mlp.classifier({"alpha": 1e-3, "C": 1.0}, "eunis")
    assert built.epoch_sites == 1000 and built.epochs == cfg.epochs


def test_plain_writes_standard_json_or_keeps_nan_for_python_readers(tmp_path):
    value = {1: np.float32(0.5), "a": (np.int64(3), float("nan")), "arr": np.array([1.0, np.inf]),
             "idx": pd.Index(["x"]), "when": pd.Timestamp("2026-12-07"), "path": tmp_path / "f", "na": pd.NA,
             "nat": pd.NaT, "ninf": -np.inf}
    out = hh.metrics.plain(value)
    assert out == {"1": 0.5, "a": [3, None], "arr": [1.0, None], "idx": ["x"], "when": "2026-12-07 00:00:00",
                   "path": str(tmp_path / "f"), "na": None, "nat": None, "ninf": None}
    json.dumps(out, allow_nan=False)                       # standard JSON: no NaN, no Infinity
    kept = hh.metrics.plain(value, nan=float("nan"))
    assert np.isnan(kept["a"][1]) and np.isnan(kept["na"]) and kept["arr"][1] == np.inf and kept["ninf"] == -np.inf
