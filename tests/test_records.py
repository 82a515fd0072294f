"""The readings the notebooks share (CVResult's claim, pairs, choices, calibration; the tables and
plots of report and viz) and each chapter's metrics.json written by hh.records, read back by
hh.report."""

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

import habitat_helpers as hh

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ALL = hh.evaluation.ALL_SITES
PHOTO = hh.evaluation.PHOTO_SITES
#: mean macro-F1 per model and level; fold f of seed s adds 0.01 * f (and 0.002 * s to "aligned")
MEANS = {"aligned": (0.70, 0.50, 0.40), "aligned + raw": (0.72, 0.52, 0.41), "raw gps": (0.60, 0.45, 0.42),
         "raw satellite": (0.65, 0.40, 0.35), "raw concatenated": (0.66, 0.47, 0.38),
         "MLP on raw concatenated": (0.64, 0.46, 0.37), "majority": (0.20, 0.10, 0.05),
         "transfer: aligned, photo alone": (0.5, 0.3, 0.2), "raw photo": (0.45, 0.25, 0.22)}


def _result():
    """A CVResult made by hand: 2 seeds x 3 folds, fractions 1.0 and 0.2, known means."""
    rows = []
    for seed in (0, 1):
        for fold in range(3):
            for fraction in (1.0, 0.2):
                for model, by_level in MEANS.items():
                    for level, value in enumerate(by_level, start=1):
                        f1 = value + 0.01 * fold + (0.002 * seed if model == "aligned" else 0.0)
                        f1 -= 0.1 if fraction < 1 else 0.0
                        subsets = [PHOTO] if model.startswith("transfer") or model == "raw photo" else [ALL, PHOTO]
                        for subset in subsets:
                            rows.append({"seed": seed, "fold": fold, "fraction": fraction, "model": model,
                                         "subset": subset, "level": level, "n_train": 100, "macro_f1": f1,
                                         "accuracy": f1 + 0.1, "n": 40})
    scores = pd.DataFrame(rows)
    for column in hh.evaluation.SCORE_COLUMNS:
        if column not in scores:
            scores[column] = np.nan
    truth = np.array(["A", "A", "B", "B", "C", "C", "A", "B"], dtype=object)
    pred = np.array(["A", "B", "B", "B", "C", "A", "A", "C"], dtype=object)
    confidence = np.array([0.9, 0.6, 0.8, 0.7, 0.95, 0.55, 0.85, 0.65])
    pooled = pd.DataFrame({"site": np.arange(8), "true": truth, "pred": pred, "confidence": confidence})
    predictions = {m: {lv: pooled for lv in (1, 2, 3)} for m in MEANS}
    choices = pd.DataFrame([
        {"seed": s, "fold": f, "fraction": fr, "model": "aligned",
         "params": {"C": 0.05 if (s, f) != (1, 2) else 1.0, "fusion": "concat"}}
        for s in (0, 1) for f in range(3) for fr in (1.0, 0.2)]
        + [{"seed": s, "fold": f, "fraction": 1.0, "model": "majority", "params": {}}
           for s in (0, 1) for f in range(3)])
    any_modality = pd.DataFrame([{"seed": 0, "fold": f, "inputs": inputs, "model": "aligned", "level": lv,
                                  "macro_f1": 0.5 + 0.1 * lv + 0.01 * f}
                                 for f in range(3) for inputs in ("gps only", "satellite + gps") for lv in (1, 2)])
    settings = {"folds": 3, "seeds": [0, 1], "grids": {"single": {"C": [0.05, 1.0]}}}
    return hh.evaluation.CVResult(scores, any_modality, predictions, settings, hh.evaluation._empty_failures(),
                                  choices)


def test_the_claim_pairs_the_model_with_the_baseline_at_each_level_and_fraction():
    cv = _result()
    claim = cv.claim("aligned", "raw gps", levels=(2, 3), fractions=(1.0, 0.2))
    assert list(zip(claim["labelled fraction"], claim["level"])) == [(0.2, 2), (0.2, 3), (1.0, 2), (1.0, 3)]
    full = claim[claim["labelled fraction"] == 1.0].set_index("level")
    assert full.loc[2, "difference"] == pytest.approx(0.05 + 0.001)     # aligned also gets 0.002 * seed
    assert full.loc[3, "difference"] == pytest.approx(-0.02 + 0.001)
    assert full.loc[2, "aligned wins"] == "6/6" and full.loc[3, "aligned wins"] == "0/6"
    assert bool(full.loc[2, "better (interval above 0)"]) and not full.loc[3, "better (interval above 0)"]
    assert full.loc[2, "aligned"] == pytest.approx(0.511) and full.loc[2, "raw gps"] == pytest.approx(0.46)
    # the default baseline is the best raw single input over levels 2 and 3
    assert cv.best_mono_scale() == "raw gps" and "raw gps" in cv.claim("aligned").columns


def test_the_capacity_control_is_read_against_both_sides():
    cap = _result().capacity().set_index(["level", "model", "minus"])
    assert len(cap) == 3 * 3
    row = cap.loc[(1, "aligned + raw", "MLP on raw concatenated")]
    assert row["difference"] == pytest.approx(0.08) and row["wins"] == "6/6"
    assert cap.loc[(2, "MLP on raw concatenated", "raw concatenated"), "difference"] == pytest.approx(-0.01)


def test_choices_are_counted_per_setting_and_the_most_chosen_is_a_dict():
    cv = _result()
    counts = cv.choice_counts(1.0)
    assert counts[("aligned", "C=0.05, fusion=concat")] == 5
    assert counts[("aligned", "C=1.0, fusion=concat")] == 1
    assert counts[("majority", "-")] == 6                   # nothing to choose: one setting, named "-"
    assert counts.sum() == 12                               # fraction 0.2 left out
    assert cv.most_chosen("aligned") == {"C": 0.05, "fusion": "concat"}
    with pytest.raises(ValueError, match="no setting"):
        cv.most_chosen("raw gps")


def test_calibration_and_crosswalked_scores_from_the_pooled_predictions():
    cv = _result()
    p = cv.predictions["aligned"][1]
    correct = (p["true"] == p["pred"]).to_numpy()
    expected = hh.metrics.expected_calibration_error(p["confidence"], correct)
    assert cv.ece("aligned", 1) == pytest.approx(expected) and expected > 0
    # A and B merge into X, C becomes Y: X has 5 right, 1 missed, 1 false; Y 1 right, 1 missed, 1 false
    assert cv.mapped_macro_f1("aligned", 1, {"A": "X", "B": "X", "C": "Y"}) == pytest.approx((5 / 6 + 1 / 2) / 2)
    # a true code that maps to nothing leaves its sites out: only the C sites are scored, one right
    assert cv.mapped_macro_f1("aligned", 1, {"C": "Y"}) == pytest.approx(
        hh.metrics.macro_f1(np.array(["Y", "Y"], object), np.array(["Y", np.nan], object)))


def test_tables_shared_by_the_chapters():
    cv = _result()
    text = hh.report.mean_std_table(cv.summary(), "macro_f1", models=["aligned", "majority"])
    assert list(text.columns) == ["macro-F1 level 1", "macro-F1 level 2", "macro-F1 level 3"]
    assert text.loc["majority", "macro-F1 level 1"] == "0.210 ± 0.009"
    assert list(hh.report.mean_std_table(cv.summary(), "accuracy", label="").columns) == [1, 2, 3]
    both = hh.evaluation.gather({"first": (cv, "raw gps"), "second": (cv, "aligned")})
    assert list(both.index.unique("model")) == ["first", "second"]
    assert both["macro_f1"]["mean"].loc[("first", 3)] == pytest.approx(0.43)
    anym = cv.any_modality_table()
    assert anym.loc[("gps only", "aligned"), "macro-F1 level 2"] == pytest.approx(0.71)
    models = hh.evaluation.default_models(("gps",))
    grids = hh.evaluation.grid_table(models, hh.evaluation.Protocol(folds=3, seeds=(0,)))
    assert grids.loc["majority", "grid"] == "(nothing to choose)"
    assert grids.loc["raw gps", "candidates"] == len(models[[m.name for m in models].index("raw gps")]
                                                     .candidates(hh.evaluation.Protocol(folds=3, seeds=(0,))))


def test_the_plots_draw_what_they_are_given():
    cv = _result()
    comparisons = cv.comparisons("aligned", ["raw gps", "majority"], levels=(2,))
    fig, axes = plt.subplots(1, 4)
    hh.viz.difference_bars(axes[0], comparisons, aim=0.02)
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["raw gps", "majority"]
    assert len(axes[0].patches) == 2
    hh.viz.reliability_curves(axes[1], cv, ["aligned"], levels=(1,))
    assert "ECE" in axes[1].get_legend().get_texts()[0].get_text()
    hh.viz.label_efficiency(axes[2:], cv, ["aligned", "raw gps"], levels=(2, 3))
    assert len(axes[2].lines) >= 2
    plt.close(fig)
    fig, ax = plt.subplots()
    hh.viz.groups_map(ax, [45.0, 46.0, 47.0], [5.0, 6.0, 7.0], np.array(["a", "b", "a"]), (4, 44, 8, 48))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a (2 sites)", "b (1 sites)"]
    plt.close(fig)


def test_uncertainty_of_one_level():
    probs = pd.DataFrame({"A": [1.0, 0.5], "B": [0.0, 0.5]})
    p_top, entropy = hh.classify.uncertainty(probs, ["A", "B"])
    assert p_top.tolist() == [1.0, 0.5]
    assert entropy == pytest.approx([0.0, np.log(2)], abs=1e-9)


def test_the_classification_record_is_what_the_results_chapter_reads(tmp_path):
    cv = _result()
    protocol = hh.evaluation.Protocol(folds=3, seeds=(0, 1), label_fractions=(0.2, 1.0))

    class Data:
        name, synthetic = "hand-made", True

    run = hh.records.run_info("tiny", 0, Data(), "eunis")
    assert run == {"profile": "tiny", "seed": 0, "data": "hand-made", "synthetic": True, "label_scheme": "eunis"}
    metrics = hh.records.write_classification(tmp_path, run, cv, protocol, block_size=1.0, block_rule={},
                                              radius_km=5.0, ceiling=None, consistent=True)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["best_mono_scale"] == "raw gps" == metrics["best_mono_scale"]
    assert "transfer: aligned, photo alone" not in written["models"]
    assert "transfer: aligned, photo alone" in written["models_on_photo_sites"]
    assert written["choices"]["aligned | C=0.05, fusion=concat"] == 5
    assert written["label_efficiency_macro_f1"]["aligned | level2 | 0.2"] == pytest.approx(0.411)
    assert written["any_modality_macro_f1"]["gps only | aligned"]["level1"] == pytest.approx(0.61)
    assert [t["baseline"] for t in written["transfer_comparisons"]] == ["raw photo"] * 2
    rows = hh.report.claim_rows(written)
    assert [(r["fraction"], r["level"]) for r in rows] == [(0.2, 2), (0.2, 3), (1.0, 2), (1.0, 3)]
    assert hh.report.claim_verdict(written) is False                     # level 3 is below raw gps
    assert rows[2]["difference"] == pytest.approx(0.051)


def test_the_real_data_record_counts_every_choice(tmp_path):
    cv = _result()
    points = pd.DataFrame({"lat": [1.0]})
    points.attrs["attribution"] = "© hand-made"
    written = hh.records.write_real_data(
        tmp_path, hh.records.run_info("tiny", 0, scheme="lucas-lc1"), cv, points=points, n_sites=1,
        block_size=1.0, block_rule={}, radius_km=5.0, project=["aligned", "aligned + raw"],
        control=["MLP on raw concatenated"], baselines=["raw gps", "majority"], crosswalk={"A": "X", "B": "X", "C": "Y"},
        map_record={}, qc_displacement=pd.DataFrame(), seconds={})
    assert written["choices"]["aligned | C=0.05, fusion=concat"] == 5   # counted, not overwritten
    assert written["best_versus"][0]["model"] == "aligned + raw"
    assert len(written["capacity_control"]) == 9
    assert written["eunis_l1"]["macro_f1"]["aligned"] == pytest.approx((5 / 6 + 1 / 2) / 2)


def test_retrieval_table_scores_the_sites_with_both_inputs_in_each_direction():
    rng = np.random.default_rng(0)
    n = 40
    emb = {m: rng.normal(size=(n, 6)).astype(np.float32) for m in ("photo", "satellite", "gps")}
    emb["photo"][:30] = np.nan                     # 10 sites with a photo
    emb["satellite"][35:] = np.nan                 # 5 of them with a patch
    cfg = hh.align.AlignConfig(dim=4, hidden=8, modalities=("photo", "satellite", "gps"))
    model = hh.align.AlignmentModel({m: 6 for m in cfg.modalities}, cfg)
    table = hh.align.retrieval_table(model, emb, np.arange(n), [("photo", "satellite"), ("satellite", "gps")])
    assert table["photo → satellite"]["n"] == 5 and table["satellite → gps"]["n"] == 35
    assert 0 <= table["photo → satellite"]["recall@1"] <= table["photo → satellite"]["recall@5"] == 1.0
    one = hh.align.retrieval_table(model, emb, np.arange(29, 31), [("photo", "satellite")])
    assert one["photo → satellite"]["n"] == 1 and np.isnan(one["photo → satellite"]["recall@10"])


def test_the_stage_split_sizes_its_blocks_from_the_labels():
    rng = np.random.default_rng(1)
    lat, lon = rng.uniform(44, 50, 300), rng.uniform(0, 10, 300)
    labels = pd.DataFrame({"label_l1": np.where(lon < 5, "R", "T")}, dtype=object)
    split, block = hh.spatial.stage_split(lat, lon, labels, 0.2, seed=3)
    size, _ = hh.spatial.resolve_block_size(lat, lon, labels, "auto", 3)
    assert block == size
    assert (split == hh.spatial.train_val_test_split(lat, lon, size, 0.2, 0.15, 3)).all()
    assert set(split) == {"train", "val", "test"}
