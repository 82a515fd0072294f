import numpy as np
import pandas as pd
import pytest

import habitat_helpers as hh


def test_block_ids_and_split_keep_blocks_whole():
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(40, 60, 2000), rng.uniform(-5, 25, 2000)
    blocks = hh.spatial.block_ids(lat, lon, 2.0)
    assert blocks[0] == hh.spatial.block_ids([lat[0] + 1e-9], [lon[0]], 2.0)[0]
    test = hh.spatial.spatial_block_split(lat, lon, 2.0, 0.3, seed=0)
    assert 0.3 <= test.mean() < 0.4
    for b in np.unique(blocks):
        assert len(set(test[blocks == b])) == 1  # no block on both sides
    np.testing.assert_array_equal(test, hh.spatial.spatial_block_split(lat, lon, 2.0, 0.3, seed=0))
    split = hh.spatial.train_val_test_split(lat, lon, 2.0, 0.3, 0.15, seed=0)
    assert set(split) == {"train", "val", "test"}
    np.testing.assert_array_equal(split == "test", test)
    with pytest.raises(ValueError):
        hh.spatial.spatial_block_split(lat, lon, 2.0, 1.5, seed=0)


def _clustered(n_per_leaf=40, seed=0, noise=0.6):
    """Gaussian clusters, one per leaf; leaves of one parent share part of their mean."""
    rng = np.random.default_rng(seed)
    leaves = ["R21", "R22", "R11", "T11", "T12", "T31"]
    X, codes = [], []
    for leaf in leaves:
        centre = np.zeros(12)
        centre["RT".index(leaf[0])] = 3.0
        centre[2 + int(leaf[1])] = 2.0
        centre[6 + leaves.index(leaf)] = 2.0
        X.append(centre + rng.normal(0, noise, (n_per_leaf, 12)))
        codes += [leaf] * n_per_leaf
    labels = pd.DataFrame({"label_l3": codes})
    labels["label_l2"] = labels["label_l3"].str[:2]
    labels["label_l1"] = labels["label_l3"].str[:1]
    return np.vstack(X), labels[["label_l1", "label_l2", "label_l3"]]


def test_hierarchical_classifier_is_consistent_and_accurate():
    X, labels = _clustered()
    Xt, truth = _clustered(seed=1)
    # some training sites only labelled at level 1 or 2: they still train those levels
    labels = labels.astype(object)
    labels.loc[::5, "label_l3"] = None
    labels.loc[::10, "label_l2"] = None
    clf = hh.classify.HierarchicalClassifier().fit(X, labels)
    assert clf.levels_ == [1, 2, 3] and clf.skipped_ == {} and clf.depth_ == 3
    pred = clf.predict(Xt)
    assert (pred["label_l2"].str[0] == pred["label_l1"]).all()
    assert (pred["label_l3"].str[:2] == pred["label_l2"]).all()
    scores = hh.classify.evaluate(pred, truth)
    majority = hh.classify.evaluate(hh.classify.MajorityClassifier().fit(None, labels).predict(Xt), truth)
    assert scores["level3"]["accuracy"] > 0.9 > majority["level3"]["accuracy"] + 0.5
    assert scores["level1"]["n"] == len(truth)
    assert pred["p_l3"].between(0, 1).all() and (pred["entropy_l3"] >= 0).all()


def test_classifier_passes_nan_rows_through():
    X, labels = _clustered()
    clf = hh.classify.HierarchicalClassifier().fit(X, labels)
    Xt = X[:3].copy()
    Xt[1] = np.nan
    pred = clf.predict(Xt)
    assert pd.isna(pred.loc[1, "label_l3"]) and np.isnan(pred.loc[1, "p_l3"])
    assert isinstance(pred.loc[0, "label_l3"], str)


def test_level_metrics_by_hand():
    m = hh.metrics.level_metrics(["A", "A", "B", None], ["A", "B", "B", "A"])
    assert m["n"] == 3
    assert m["accuracy"] == pytest.approx(2 / 3)
    # F1(A) = 2*1*0.5/(1.5) = 2/3 ; F1(B) = 2*0.5*1/1.5 = 2/3
    assert m["macro_f1"] == pytest.approx(2 / 3)


def test_retrieval_recall():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 8))
    assert hh.metrics.retrieval_recall_at_k(q, q)["recall@1"] == 1.0
    shuffled = hh.metrics.retrieval_recall_at_k(q, q[::-1].copy(), ks=(1, 50))
    assert shuffled["recall@1"] <= 0.1 and shuffled["recall@50"] == 1.0


def test_label_only_recall_counts_the_items_sharing_a_label():
    # labels A (1 item), B (4 items), C (20 items): at k = 5, A and B always find themselves, C in 5/20
    codes = ["A"] + ["B"] * 4 + ["C"] * 20
    r = hh.metrics.label_only_recall_at_k(codes, ks=(1, 5))
    assert r["recall@5"] == pytest.approx((1 + 4 + 20 * 5 / 20) / 25)
    assert r["recall@1"] == pytest.approx((1 + 4 * 0.25 + 20 * 0.05) / 25)
    # and it is what retrieval reaches when both modalities carry the label and random noise only
    rng = np.random.default_rng(0)
    codes = rng.choice(list("ABCDEF"), size=300, p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.05])
    onehot = (codes[:, None] == np.array(list("ABCDEF"))).astype(float)
    measured = [hh.metrics.retrieval_recall_at_k(onehot + 1e-3 * rng.normal(size=onehot.shape),
                                                 onehot + 1e-3 * rng.normal(size=onehot.shape), ks=(10,))
                ["recall@10"] for _ in range(20)]
    assert np.mean(measured) == pytest.approx(hh.metrics.label_only_recall_at_k(codes, ks=(10,))["recall@10"],
                                              abs=0.01)
    with pytest.raises(ValueError, match="no items"):
        hh.metrics.label_only_recall_at_k([])


def test_write_metrics_makes_plain_json(tmp_path):
    path = hh.metrics.write_metrics(tmp_path / "x", {"a": np.float32(0.5), "b": float("nan"), "c": (1, 2)})
    assert hh.metrics.read_metrics(path.parent) == {"a": 0.5, "b": None, "c": [1, 2]}


def test_knn_probe_separates_clusters_and_skips_missing():
    X, labels = _clustered()
    Xt, truth = _clustered(seed=1)
    both = np.vstack([X, Xt])
    lab = pd.concat([labels, truth], ignore_index=True)
    train = np.r_[np.ones(len(X), bool), np.zeros(len(Xt), bool)]
    scores = hh.classify.knn_probe(both, lab, train, ~train, k=5)
    assert scores["level3"]["accuracy"] > 0.9 and scores["level1"]["n"] == len(Xt)
    both[-1] = np.nan
    assert hh.classify.knn_probe(both, lab, train, ~train, k=5)["level1"]["n"] == len(Xt) - 1


def test_fast_macro_f1_equals_level_metrics():
    rng = np.random.default_rng(0)
    codes = np.array(["R1", "R2", "T1", "T2", "S3"], dtype=object)
    truth = rng.choice(codes, 300).astype(object)
    truth[rng.random(300) < 0.2] = None                      # unlabelled sites are skipped
    pred = np.where(rng.random(300) < 0.6, truth, rng.choice(codes, 300)).astype(object)
    pred[truth == None] = "R1"                               # noqa: E711
    pred[:5] = "V9"                                          # a code absent from the truth
    assert hh.metrics.macro_f1(truth, pred) == pytest.approx(hh.metrics.level_metrics(truth, pred)["macro_f1"])
    assert np.isnan(hh.metrics.macro_f1([None, None], ["R1", "R2"]))
