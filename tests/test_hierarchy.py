"""Hierarchy-consistent prediction when finer labels are missing, soft multi-code targets, and
calibration per level (:mod:`habitat_helpers.classify`).

The fixture is a small EUNIS tree (3 formations, 2-3 level-2 habitats each, 2-3 level-3 habitats
each) with Gaussian clusters: a site's mean adds one unit on the axis of each of its three codes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import habitat_helpers as hh
from habitat_helpers.classify import HierarchicalClassifier, MajorityClassifier, is_consistent

LEVEL_COLUMNS = ["label_l1", "label_l2", "label_l3"]
TREE = {"R": {"R1": ["R11", "R12"], "R2": ["R21", "R22", "R23"], "R3": ["R31", "R32"]},
        "S": {"S2": ["S21", "S22"], "S3": ["S31", "S32", "S33"]},
        "T": {"T1": ["T11", "T12", "T13"], "T2": ["T21", "T22"], "T3": ["T31", "T32"]}}
LEAVES = [leaf for formation in TREE.values() for kids in formation.values() for leaf in kids]
NODES = list(TREE) + [code for formation in TREE.values() for code in formation] + LEAVES


def _sites(n: int = 600, seed: int = 0, noise: float = 0.4):
    """``n`` sites of uniformly drawn level-3 habitats: features (one axis per code of the tree,
    +1 on the site's three codes, Gaussian noise) and labels at levels 1-3."""
    rng = np.random.default_rng(seed)
    leaf = rng.choice(LEAVES, size=n)
    X = rng.normal(0, noise, (n, len(NODES)))
    for i, code in enumerate(leaf):
        for node in (code[:1], code[:2], code):
            X[i, NODES.index(node)] += 1.0
    labels = pd.DataFrame({"label_l1": [c[:1] for c in leaf], "label_l2": [c[:2] for c in leaf],
                           "label_l3": list(leaf)}, dtype=object)
    return X, labels


def _without_level3(labels: pd.DataFrame, formation: str = "S") -> pd.DataFrame:
    """The labels with level 3 unknown for every site of ``formation`` (as LUCAS and EMBAL)."""
    out = labels.copy()
    out.loc[out["label_l1"] == formation, "label_l3"] = None
    return out


def _accuracy(pred: pd.DataFrame, truth: pd.DataFrame) -> list[float]:
    return [float((pred[c].to_numpy(object) == truth[c].to_numpy(object)).mean()) for c in LEVEL_COLUMNS]


@pytest.fixture(scope="module")
def train():
    return _sites(600, seed=0)


@pytest.fixture(scope="module")
def test_sites():
    return _sites(1500, seed=100)


@pytest.fixture(scope="module")
def partial(train):
    """The classifier fitted with formation S labelled at levels 1-2 only."""
    X, labels = train
    return HierarchicalClassifier().fit(X, _without_level3(labels))


# --- paths that stop early ----------------------------------------------------------------------

def test_a_formation_without_level3_labels_is_still_predicted(partial, test_sites):
    Xt, truth = test_sites
    assert partial.levels_ == [1, 2, 3] and partial.depth_ == 3
    assert partial.paths_ == sorted([c for c in LEAVES if c[0] != "S"] + ["S2", "S3"])
    pred = partial.predict(Xt)
    s = (truth["label_l1"] == "S").to_numpy()
    assert (pred.loc[s, "label_l1"] == "S").mean() > 0.93                      # measured 0.969
    assert (pred.loc[s, "label_l2"] == truth.loc[s, "label_l2"]).mean() > 0.9  # measured 0.950
    stopped = pred["label_l1"] == "S"
    assert (pred.loc[stopped, "label_l3"] == pred.loc[stopped, "label_l2"]).all()   # the stopped code
    assert pred.loc[~stopped, "label_l3"].isin(LEAVES).all()
    assert is_consistent(pred)
    acc = _accuracy(pred, truth)
    assert acc[0] > 0.94 and acc[1] > 0.91                                      # measured 0.963, 0.937
    assert (pred.loc[~s, "label_l3"] == truth.loc[~s, "label_l3"]).mean() > 0.82   # measured 0.855


def test_path_and_level_probabilities_are_coherent(partial, test_sites):
    Xt = test_sites[0][:200].copy()
    Xt[5] = np.nan
    paths = partial.path_proba(Xt)
    assert list(paths.columns) == partial.paths_
    assert paths.iloc[5].isna().all()
    ok = np.arange(len(Xt)) != 5
    np.testing.assert_allclose(paths[ok].sum(axis=1), 1.0, atol=1e-9)
    levels = partial.level_proba(Xt)
    assert set(levels) == {1, 2, 3}
    assert list(levels[3].columns) == partial.paths_ and list(levels[2].columns) == \
        ["R1", "R2", "R3", "S2", "S3", "T1", "T2", "T3"]
    assert partial.level_codes() == {k: list(levels[k].columns) for k in (1, 2, 3)}
    for level in (1, 2, 3):
        assert levels[level].iloc[5].isna().all()
        np.testing.assert_allclose(levels[level][ok].sum(axis=1), 1.0, atol=1e-9)
    for finer in (2, 3):                        # a code's probability is the sum of its children's
        for code in levels[finer - 1].columns:   # (a stopped code is its own child)
            kids = [c for c in levels[finer].columns if c == code or partial.scheme.parent(c) == code]
            np.testing.assert_allclose(levels[finer - 1][code][ok], levels[finer][kids][ok].sum(axis=1), atol=1e-9)
    np.testing.assert_allclose(levels[1][ok], partial.predict_proba(Xt)[1][ok][levels[1].columns], atol=1e-9)
    pred = partial.predict(Xt)
    np.testing.assert_allclose(pred["p_l3"][ok], paths[ok].max(axis=1))
    assert pred.iloc[5][LEVEL_COLUMNS].isna().all()


def test_path_probability_is_top_down_by_hand(partial, test_sites):
    Xt = test_sites[0][:50]
    p = partial.predict_proba(Xt)
    paths = partial.path_proba(Xt)
    r2 = p[2][["R1", "R2", "R3"]].sum(axis=1)
    expected = p[1]["R"] * p[2]["R2"] / r2 * p[3]["R22"] / p[3][["R21", "R22", "R23"]].sum(axis=1)
    np.testing.assert_allclose(paths["R22"], expected, rtol=1e-9)
    stopped = p[1]["S"] * p[2]["S3"] / p[2][["S2", "S3"]].sum(axis=1)          # no level-3 factor
    np.testing.assert_allclose(paths["S3"], stopped, rtol=1e-9)


def test_a_skipped_middle_level_takes_no_factor():
    """Level 2 has a single habitat (R2): the chain goes from level 1 to level 3 under R, and T,
    without finer labels, stops at level 1."""
    X, labels = _sites(600, seed=1)
    keep = (labels["label_l2"] == "R2") | (labels["label_l1"] == "T")
    X, labels = X[keep.to_numpy()], labels[keep].copy()
    labels.loc[labels["label_l1"] == "T", ["label_l2", "label_l3"]] = None
    clf = HierarchicalClassifier().fit(X, labels)
    assert clf.levels_ == [1, 3] and "single habitat" in clf.skipped_[2]
    assert clf.paths_ == ["R21", "R22", "R23", "T"]
    Xt, truth = _sites(400, seed=2)
    pred = clf.predict(Xt)
    assert set(pred["label_l2"]) == {"R2", "T"} and is_consistent(pred)
    assert (pred.loc[pred["label_l1"] == "T", "label_l3"] == "T").all()
    paths = clf.path_proba(Xt)
    p = clf.predict_proba(Xt)
    np.testing.assert_allclose(paths["T"], p[1]["T"], rtol=1e-9)
    np.testing.assert_allclose(paths["R21"], p[1]["R"] * p[3]["R21"], rtol=1e-9)
    assert list(clf.level_proba(Xt)[2].columns) == ["R2", "T"]


# --- the earlier (product) decoding -------------------------------------------------------------

def test_fully_labelled_accuracy_of_both_decodings(train, test_sites):
    X, labels = train
    Xt, truth = test_sites
    top_down = _accuracy(HierarchicalClassifier().fit(X, labels).predict(Xt), truth)
    product = _accuracy(HierarchicalClassifier(decoding="product").fit(X, labels).predict(Xt), truth)
    assert top_down[0] > 0.94 and top_down[1] > 0.91 and top_down[2] > 0.83    # measured .964 .940 .859
    assert product[0] > 0.96 and product[1] > 0.94 and product[2] > 0.85       # measured .985 .963 .879
    assert all(p > t for p, t in zip(product, top_down))     # the finer classifiers vote on coarser codes


def test_the_product_decoding_never_predicts_a_formation_without_level3_labels(train, test_sites):
    X, labels = train
    clf = HierarchicalClassifier(decoding="product").fit(X, _without_level3(labels))
    assert clf.paths_ == [c for c in LEAVES if c[0] != "S"]
    pred = clf.predict(test_sites[0])
    assert "S" not in set(pred["label_l1"]) and is_consistent(pred)
    np.testing.assert_allclose(clf.path_proba(test_sites[0][:20]).sum(axis=1), 1.0, atol=1e-9)


def test_bad_options_fail_at_once_with_the_allowed_values():
    with pytest.raises(ValueError, match=r"multi_code='sfot': expected one of 'ancestor', 'soft'"):
        HierarchicalClassifier(multi_code="sfot")
    with pytest.raises(ValueError, match=r"decoding='top_down': expected one of 'top-down', 'product'"):
        HierarchicalClassifier(decoding="top_down")


# --- consistency and the majority baseline ------------------------------------------------------

def test_is_consistent_accepts_stopped_paths_only():
    def rows(*triples):
        return pd.DataFrame(list(triples), columns=LEVEL_COLUMNS, dtype=object)

    assert is_consistent(rows(("S", "S2", "S2"), ("S", "S", "S"), ("R", "R2", "R21"), ("T", None, None)))
    assert not is_consistent(rows(("R", "T1", "T11")))           # level 2 not under level 1
    assert not is_consistent(rows(("R", "R", "T")))              # a stopped code that changes
    assert not is_consistent(rows(("R", "R2", "R11")))           # level 3 not under level 2
    assert not is_consistent(rows(("R", "R2", "R")))             # a coarser code that is not the stopped one


def test_majority_baseline_level_probabilities_and_predictions(train):
    X, labels = train
    majority = MajorityClassifier().fit(None, _without_level3(labels))
    assert majority.levels_ == [3] and majority.paths_ == sorted(c for c in LEAVES if c[0] != "S")
    pred = majority.predict(np.zeros(4))
    top = _without_level3(labels)["label_l3"].value_counts().idxmax()
    assert pred["label_l3"].tolist() == [top] * 4 and pred["label_l1"].tolist() == [top[0]] * 4
    levels = majority.level_proba(np.zeros(4))
    assert set(levels) == {1, 2, 3} and list(levels[1].columns) == ["R", "T"]
    for level in (1, 2, 3):
        np.testing.assert_allclose(levels[level].sum(axis=1), 1.0, atol=1e-9)
    assert majority.level_codes()[2] == ["R1", "R2", "R3", "T1", "T2", "T3"]


# --- soft targets for multi-code cells -----------------------------------------------------------

def _with_candidates(labels: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Level 3 known only through candidates: each site lists its habitat and a random sibling
    (``"R21;R23"``), so its labels keep the common ancestor (level 2) and level 3 is None."""
    rng = np.random.default_rng(seed)
    out = labels.copy()
    siblings = [rng.choice([c for c in TREE[leaf[0]][leaf[:2]] if c != leaf]) for leaf in labels["label_l3"]]
    out["label_candidates"] = [";".join(sorted(pair)) for pair in zip(labels["label_l3"], siblings)]
    out["label_l3"] = None
    return out


def test_soft_targets_train_level3_from_candidates(train, test_sites):
    X, labels = train
    Xt, truth = test_sites
    listed = _with_candidates(labels)
    ancestor = HierarchicalClassifier().fit(X, listed)
    assert ancestor.levels_ == [1, 2] and ancestor.predict(Xt)["label_l3"].isna().all()
    soft = HierarchicalClassifier(multi_code="soft").fit(X, listed)
    assert soft.levels_ == [1, 2, 3] and sorted(soft.classes[3]) == sorted(LEAVES)
    pred = soft.predict(Xt)
    assert pred["label_l3"].isin(LEAVES).all() and is_consistent(pred)
    # a site of a three-habitat parent has 1/2 on its habitat and 1/4 on each sibling: learnable
    three = truth["label_l2"].isin(["R2", "S3", "T1"]).to_numpy()
    assert (pred.loc[three, "label_l3"] == truth.loc[three, "label_l3"]).mean() > 0.55   # measured 0.61
    # without the column, "soft" is "ancestor"
    plain = HierarchicalClassifier(multi_code="soft").fit(X, listed.drop(columns="label_candidates"))
    assert plain.predict(Xt).equals(ancestor.predict(Xt))


class _Recording(hh.classify.LogisticRegression):
    """A logistic regression that keeps what each fit was given."""

    seen: list = []

    def fit(self, X, y, sample_weight=None):
        _Recording.seen.append((list(y), None if sample_weight is None else list(sample_weight)))
        return super().fit(X, y, sample_weight=sample_weight)


def test_soft_target_rows_and_weights():
    X = np.random.default_rng(0).normal(size=(5, 3))
    labels = pd.DataFrame({"label_l1": ["R", "R", "T", None, "R"], "label_l2": ["R2", "R2", "T1", None, "R1"],
                           "label_l3": [None, "R21", "T11", None, "R11"],
                           "label_candidates": ["R22;R23", "", "T11", "R22; T12", None]}, dtype=object)
    _Recording.seen = []
    HierarchicalClassifier(estimator=_Recording, multi_code="soft").fit(X, labels)
    level1, level2, level3 = (sorted(zip(y, w)) for y, w in _Recording.seen)
    assert level1 == [("R", 0.5), ("R", 1.0), ("R", 1.0), ("R", 1.0), ("T", 0.5), ("T", 1.0)]
    assert level2 == [("R1", 1.0), ("R2", 0.5), ("R2", 1.0), ("R2", 1.0), ("T1", 0.5), ("T1", 1.0)]
    assert level3 == [("R11", 1.0), ("R21", 1.0), ("R22", 0.5), ("R22", 0.5), ("R23", 0.5), ("T11", 1.0),
                      ("T12", 0.5)]
    _Recording.seen = []
    HierarchicalClassifier(estimator=_Recording).fit(X, labels)                   # "ancestor": no weights
    assert [w for _, w in _Recording.seen] == [None, None, None]


def test_soft_targets_need_an_estimator_with_sample_weight(train):
    X, labels = train
    knn = HierarchicalClassifier(estimator=hh.classify.coordinate_knn(5), multi_code="soft")
    with pytest.raises(ValueError, match="soft targets.*sample_weight.*CappedKNN"):
        knn.fit(X, _with_candidates(labels))


# --- calibration per level ----------------------------------------------------------------------

def test_calibration_with_stopped_codes_and_codes_absent_from_the_truth(partial, test_sites):
    proba = pd.DataFrame([[0.65, 0.25, 0.1], [0.15, 0.75, 0.1], [0.3, 0.25, 0.45]], columns=["R1", "R2", "S"])
    truth = ["R1", "R1", "S2"]                 # "S" is a stopped (level-1) code, never a true level-2 code
    pred = ["R1", "R2", "S"]
    m = hh.metrics.probabilistic_metrics(truth, pred, proba, n_bins=10)
    assert m["n"] == 3 and m["accuracy"] == pytest.approx(1 / 3)
    assert m["top3_accuracy"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(0.25)                    # recalls R1 1/2, S2 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)                   # F1 over the true classes
    # confidences 0.65 (correct), 0.75 (wrong), 0.45 (wrong, the stopped code's): one bin each
    assert m["ece"] == pytest.approx((abs(1 - 0.65) + 0.75 + 0.45) / 3)

    Xt, truth = test_sites
    pred, levels = partial.predict(Xt), partial.level_proba(Xt)

    def scored(level, rows):
        col = LEVEL_COLUMNS[level - 1]
        m = hh.metrics.probabilistic_metrics(truth.loc[rows, col].to_numpy(object),
                                             pred.loc[rows, col].to_numpy(object), levels[level][rows])
        assert m["n"] == rows.sum()
        assert m["accuracy"] == pytest.approx(float((pred.loc[rows, col] == truth.loc[rows, col]).mean()))
        return m

    every = np.ones(len(Xt), dtype=bool)
    assert scored(1, every)["ece"] < 0.03 and scored(2, every)["ece"] < 0.07    # measured 0.014, 0.043
    assert scored(3, (truth["label_l1"] != "S").to_numpy())["ece"] < 0.09      # measured 0.063
    # level 3 over all sites: the S sites' true codes are never predicted and their confident
    # stopped codes (S2, S3) are never true, so they are errors made with confidence
    level3 = scored(3, every)
    assert level3["ece"] > 0.15 and level3["accuracy"] < 0.65                   # measured 0.220, 0.615
