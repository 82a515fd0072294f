"""Tables whose labels stop at level 1 or 2 (EVA exports, LUCAS and EMBAL labels, crosswalks).

They are classified and evaluated at the levels they have: the classifier fits the levels with
at least two habitats and predicts down to the deepest one, the cross-validation scores those
levels only, says which levels no site is labelled at, and keeps every fit that failed with
its reason; ``python -m habitat_helpers evaluate`` writes its files and reports all of it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import habitat_helpers as hh
from habitat_helpers import cli

LEVEL_COLUMNS = ["label_l1", "label_l2", "label_l3"]

# Three regions (centre lat, centre lon, level-1 habitat), as in a LUCAS or EVA sample labelled
# at level 1 only.
REGIONS = [(41.5, -2.5, "R"), (48.5, 7.0, "T"), (53.0, 17.0, "V")]


def _clusters(per_leaf: int = 40, seed: int = 0):
    """Features in Gaussian clusters, one per level-3 habitat; leaves of one parent share part
    of their mean. Returns features and the full labels (levels 1-3)."""
    rng = np.random.default_rng(seed)
    leaves = ["R21", "R22", "R11", "T11", "T12", "T31"]
    X, codes = [], []
    for k, leaf in enumerate(leaves):
        centre = np.zeros(12)
        centre["RT".index(leaf[0])] = 3.0
        centre[2 + int(leaf[1])] = 2.0
        centre[6 + k] = 2.0
        X.append(centre + rng.normal(0, 0.6, (per_leaf, 12)))
        codes += [leaf] * per_leaf
    labels = pd.DataFrame({"label_l1": [c[:1] for c in codes], "label_l2": [c[:2] for c in codes],
                           "label_l3": codes}, dtype=object)
    return np.vstack(X), labels


def _coarse(labels: pd.DataFrame, deepest: int) -> pd.DataFrame:
    """The labels cut at level ``deepest`` (None below)."""
    out = labels.copy()
    for level in range(deepest + 1, 4):
        out[f"label_l{level}"] = None
    return out


# --- the classifier -----------------------------------------------------------------------------

def test_classifier_on_level1_labels_predicts_level1_and_none_below():
    X, full = _clusters()
    Xt, truth = _clusters(seed=1)
    clf = hh.classify.HierarchicalClassifier().fit(X, _coarse(full, 1))
    assert clf.levels_ == [1] and clf.depth_ == 1
    assert set(clf.skipped_) == {2, 3} and "no training site is labelled" in clf.skipped_[2]
    pred = clf.predict(Xt)
    assert pred["label_l2"].isna().all() and pred["label_l3"].isna().all()
    assert (pred["label_l1"] == truth["label_l1"]).mean() > 0.95
    paths = clf.path_proba(Xt)
    assert list(paths.columns) == ["R", "T"]
    np.testing.assert_allclose(paths.sum(axis=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(pred["p_l3"], paths.max(axis=1))            # the best path's probability
    assert set(clf.level_proba(Xt)) == {1}                                   # no table below level 1
    assert set(hh.classify.evaluate(pred, truth)) == {"level1"}

    majority = hh.classify.MajorityClassifier().fit(None, _coarse(full, 1))
    assert majority.levels_ == [1]
    pred = majority.predict(np.zeros(4))
    assert pred["label_l1"].tolist() == ["R"] * 4 and pred["label_l2"].isna().all()


def test_classifier_on_labels_mixed_at_levels_1_and_2():
    X, full = _clusters()
    labels = _coarse(full, 2)
    labels.loc[::3, "label_l2"] = None                       # a third labelled at level 1 only
    clf = hh.classify.HierarchicalClassifier().fit(X, labels)
    assert clf.levels_ == [1, 2] and set(clf.skipped_) == {3}
    Xt, truth = _clusters(seed=1)
    pred = clf.predict(Xt)
    assert (pred["label_l2"].str[0] == pred["label_l1"]).all() and pred["label_l3"].isna().all()
    assert (pred["label_l2"] == truth["label_l2"]).mean() > 0.9
    levels = clf.level_proba(Xt)
    assert set(levels) == {1, 2}
    for code in levels[1].columns:                         # a level-1 code sums its level-2 children
        kids = [c for c in levels[2].columns if c.startswith(code)]
        np.testing.assert_allclose(levels[1][code], levels[2][kids].sum(axis=1), rtol=1e-9)


def test_a_level_with_one_habitat_is_skipped_and_none_fitted_raises():
    X, full = _clusters()
    r = (full["label_l1"] == "R").to_numpy()
    clf = hh.classify.HierarchicalClassifier().fit(X[r], _coarse(full[r], 2))   # one habitat at level 1
    assert clf.levels_ == [2] and "a single habitat" in clf.skipped_[1]
    pred = clf.predict(X[:5])
    assert set(pred["label_l1"]) == {"R"} and pred["label_l2"].str.startswith("R").all()
    with pytest.raises(ValueError, match="no level can be fitted: level 1: a single habitat"):
        hh.classify.HierarchicalClassifier().fit(X[r], _coarse(full[r], 1))
    with pytest.raises(ValueError, match="majority baseline needs labelled"):
        hh.classify.MajorityClassifier().fit(None, _coarse(full, 1).assign(label_l1=None))


# --- cross-validation ---------------------------------------------------------------------------

def _sites(n_clusters: int = 10, per_cluster: int = 10, seed: int = 0) -> pd.DataFrame:
    """Sites in survey clusters over the three regions, labelled at level 1 by region, at
    level 2 west / east of the region's centre and at level 3 south / north of it."""
    rng = np.random.default_rng(seed)
    rows = []
    for lat0, lon0, code in REGIONS:
        for _ in range(n_clusters):
            clat, clon = lat0 + rng.uniform(-1.5, 1.5), lon0 + rng.uniform(-2.0, 2.0)
            for _ in range(per_cluster):
                lat, lon = clat + rng.normal(0, 0.03), clon + rng.normal(0, 0.03)
                l2 = code + ("1" if lon < lon0 else "2")
                rows.append({"site_id": f"S{len(rows):04d}", "lat": round(lat, 5), "lon": round(lon, 5),
                             "label_l1": code, "label_l2": l2, "label_l3": l2 + ("1" if lat < lat0 else "2")})
    return pd.DataFrame(rows)


def _cross_validate(sites: pd.DataFrame, labels: pd.DataFrame, **kwargs):
    """GPS-free: the "gps" modality is a noisy copy of the coordinates (no GeoCLIP)."""
    rng = np.random.default_rng(1)
    lat, lon = sites["lat"].to_numpy(float), sites["lon"].to_numpy(float)
    gps = (np.column_stack([lat, lon, np.sin(lat), np.cos(lon)]) + 0.1 * rng.normal(size=(len(lat), 4)))
    return hh.evaluation.cross_validate(lat, lon, labels, {"gps": gps.astype(np.float32)}, modalities=("gps",),
                                        folds=3, block_size_deg=1.0, progress=False, **kwargs)


def test_cross_validation_of_level1_labels_scores_level1_only():
    sites = _sites()
    result = _cross_validate(sites, _coarse(sites[LEVEL_COLUMNS], 1))
    summary = result.summary()
    assert set(summary.index) == {(m, 1) for m in ("raw gps", "k-NN on coordinates", "majority")}
    f1 = summary["macro_f1"]["mean"]
    assert f1.loc[("k-NN on coordinates", 1)] > f1.loc[("majority", 1)] + 0.5
    assert result.failures().empty
    assert result.levels_not_evaluated() == {2: "no site is labelled at level 2: not evaluated",
                                             3: "no site is labelled at level 3: not evaluated"}
    out = hh.metrics.plain(result.to_json())
    for model in ("raw gps", "k-NN on coordinates", "majority"):
        assert set(out["results"][hh.evaluation.ALL_SITES][model]) == {"level1"}
        assert set(out["per_class_f1"][model]) == {"level1"}
    assert out["failures"] == [] and set(out["levels_not_evaluated"]) == {"level2", "level3"}
    assert {r["level"] for r in out["folds"]} == {1}
    assert set(result.predictions["raw gps"]) == {1}
    assert result.best_mono_scale() == "raw gps"                    # over the levels that were scored


def test_fits_that_fail_or_leave_a_level_out_are_kept_with_their_reason():
    sites = _sites()
    labels = sites[LEVEL_COLUMNS].copy()
    labels.loc[10:, "label_l3"] = None                      # level 3 known in one survey cluster only
    result = _cross_validate(sites, labels, seeds=(0, 1, 2), label_fractions=(0.01, 1.0))
    failures = result.failures()
    assert list(failures.columns) == list(hh.evaluation.FAILURE_COLUMNS)
    # a 1 % sample (2 sites) of one habitat: nothing to fit
    whole = failures[failures["level"].isna()]
    assert len(whole) and (whole["fraction"] == 0.01).all() and set(whole["model"]) == {"raw gps"}
    assert whole["reason"].str.startswith("no level can be fitted: level 1: a single habitat").all()
    # level 3 cannot be fitted from one cluster: levels 1-2 are fitted and scored, level 3 is not
    left_out = failures[failures["level"] == 3]
    assert set(left_out["model"]) == {"raw gps", "k-NN on coordinates", "majority"}
    assert set(left_out["reason"]) == {"level 3: no training site is labelled at this level",
                                       "level 3: a single habitat among the training labels (a classifier needs two)"}
    assert set(left_out.loc[left_out["model"] == "majority", "reason"]) == \
        {"level 3: no training site is labelled at this level"}           # one habitat is a majority
    key = ["seed", "fold", "fraction", "model"]
    without_3 = set(map(tuple, left_out[key].to_numpy()))
    scored = result.scores[result.scores["subset"] == hh.evaluation.ALL_SITES]
    for fit, rows in scored.groupby(key):
        assert set(rows["level"]) == ({1, 2} if fit in without_3 else {1, 2, 3}), fit
    counted = result.failure_summary()
    assert counted["folds"].sum() == len(failures) and (counted["of"] == 9).all()
    records = hh.metrics.plain(result.to_json())["failures"]
    assert len(records) == len(failures) and {r["level"] for r in records} == {None, 3}
    assert result.levels_not_evaluated() == {}


def test_to_json_of_a_result_without_any_modality_runs_or_scores():
    sites = _sites(n_clusters=4, per_cluster=5)
    result = _cross_validate(sites, _coarse(sites[LEVEL_COLUMNS], 1))
    emptied = hh.evaluation.CVResult(result.scores, pd.DataFrame(), result.predictions, result.settings)
    assert emptied.to_json()["any_modality_macro_f1"] == {}
    nothing = hh.evaluation.CVResult(pd.DataFrame(), pd.DataFrame(), {}, {})
    out = nothing.to_json()
    assert out["results"] == {} and out["folds"] == [] and out["failures"] == []
    assert nothing.summary().empty and nothing.failure_summary().empty


# --- the command line ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("coarse")


@pytest.fixture(scope="module")
def level1_csv(folder) -> Path:
    """A CSV of sites labelled at level 1 only (R, T, V), as many real exports are."""
    path = folder / "level1.csv"
    sites = _sites()
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["site_id", "lat", "lon", "eunis_code"])
        writer.writerows(sites[["site_id", "lat", "lon", "label_l1"]].itertuples(index=False))
    return path


def _evaluate(table: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["evaluate", "--sites", str(table), "--modalities", "gps", "--folds", "3", "--out", str(out),
            "--cache", str(cache), "--no-progress", *extra]


def test_evaluate_level1_table(level1_csv, folder, capsys):
    out = folder / "run" / "results.json"
    assert cli.main(_evaluate(level1_csv, out, folder / "cache", "--seed", "0")) == 0
    results = json.loads(out.read_text())
    scores = results["results"]["all labelled test sites"]
    for model in ("raw gps", "k-NN on coordinates", "majority"):
        assert set(scores[model]) == {"level1"}
        assert isinstance(scores[model]["level1"]["macro_f1"]["mean"], float)
    assert scores["k-NN on coordinates"]["level1"]["macro_f1"]["mean"] > \
        scores["majority"]["level1"]["macro_f1"]["mean"] + 0.5
    assert set(results["levels_not_evaluated"]) == {"level2", "level3"} and results["failures"] == []
    assert {r["level"] for r in results["folds"]} == {1}
    folds = pd.read_csv(folder / "run" / "results_folds.csv")
    assert set(folds["level"]) == {1} and len(folds) == 3 * 3           # models x folds
    assert not (folder / "run" / "results_failures.csv").exists()
    captured = capsys.readouterr()
    assert "no site is labelled at level 3: not evaluated" in captured.out
    assert "level 2" not in captured.out.split("macro-F1")[-1].split("\n\n")[0]   # no empty column


def test_evaluate_lists_the_models_that_could_not_be_fitted(level1_csv, folder, capsys):
    out = folder / "fractions" / "results.json"
    assert cli.main(_evaluate(level1_csv, out, folder / "cache", "--seeds", "0,1,2",
                              "--label-fractions", "0.01,1")) == 0
    results = json.loads(out.read_text())
    failed = results["failures"]
    assert failed and {(r["model"], r["fraction"], r["level"]) for r in failed} == {("raw gps", 0.01, None)}
    assert all(r["reason"].startswith("no level can be fitted") for r in failed)
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if line.strip().startswith("raw gps (fraction 0.01"))
    assert f"{len(failed)} of 9 folds: no level can be fitted: level 1: a single habitat" in line
    assert len(pd.read_csv(folder / "fractions" / "results_failures.csv")) == len(failed)


def test_evaluate_saves_the_fold_scores_before_the_report(level1_csv, folder, monkeypatch, capsys):
    def broken(self):
        raise RuntimeError("the report could not be built")

    monkeypatch.setattr(hh.evaluation.CVResult, "to_json", broken)
    out = folder / "broken" / "results.json"
    with pytest.raises(RuntimeError, match="could not be built"):
        cli.main(_evaluate(level1_csv, out, folder / "cache", "--seed", "0"))
    assert not out.exists()
    assert len(pd.read_csv(folder / "broken" / "results_folds.csv")) == 9
    assert "the fold-level scores are saved in" in capsys.readouterr().err


def test_evaluate_levels_without_labels_only_exit_with_code_2(level1_csv, folder, capsys):
    out = folder / "never" / "results.json"
    assert cli.main(_evaluate(level1_csv, out, folder / "cache", "--levels", "2,3")) == 2
    assert "the labels stop at level 1; ask for --levels 1" in capsys.readouterr().err
    assert not out.exists()
