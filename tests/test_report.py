"""The results chapter's tables (hh.report), rendered from hand-made metrics."""

import json

import pytest

from habitat_helpers import cli, report

BEST = "raw satellite"


INTERVAL = "95% corrected resampled t over 15 folds x seeds"


def claim_row(fraction, level, aligned, baseline, ci_low, ci_high, wins="9/15"):
    """One row of notebook 4's ``claim``; the recorded flag always says False (the report recomputes it)."""
    return {"labelled fraction": fraction, "level": level, "aligned": aligned, BEST: baseline,
            "difference": None if aligned is None else aligned - baseline, "ci_low": ci_low,
            "ci_high": ci_high, "interval": INTERVAL, "aligned wins": wins,
            "better (interval above 0)": False}


def old_claim_row(fraction, level, aligned, baseline, std_aligned, std_baseline, wins="3/5"):
    """A row as an older notebook 4 wrote it: fold standard deviations, no interval."""
    return {"labelled fraction": fraction, "level": level, "aligned": aligned, BEST: baseline,
            "difference": aligned - baseline, "fold std of aligned": std_aligned,
            f"fold std of {BEST}": std_baseline, "folds aligned wins": wins,
            "beats by more than the std": True}


def comparison(baseline, level, model_mean, baseline_mean, ci_low, ci_high, wins=12, verdict="better"):
    return {"model": "aligned", "baseline": baseline, "level": level, "model_mean": model_mean,
            "fraction": 1.0, "baseline_mean": baseline_mean, "difference": model_mean - baseline_mean,
            "ci_low": ci_low, "ci_high": ci_high, "wins": wins, "pairs": 15, "interval": INTERVAL,
            "verdict": verdict}


def classify_metrics(level2=(0.80, 0.70, 0.05, 0.15), level3=(0.40, 0.30, 0.02, 0.18)):
    """Notebook 4's metrics: with the defaults the aligned model's intervals lie above 0 at levels 2 and 3.
    ``level2``, ``level3``: aligned mean, baseline mean, ci_low, ci_high with all labels."""
    return {
        "profile": "tiny", "seed": 0, "synthetic": True, "folds": 5, "seeds": [0, 1, 2],
        "block_size_deg": 3.7,
        "block_size_rule": {"block_size_deg": 3.7,
                            "block_size_rule": "auto: the level-1 labels' autocorrelation range",
                            "autocorrelation_range_km": 270.0,
                            "autocorrelation_method": "indicator variogram"},
        "buffer_km": 20.0, "radius_km": 5.0, "best_mono_scale": BEST,
        "models": {
            "majority": {"level1": {"macro_f1": 0.1, "macro_f1_std": 0.01, "n": 40.0}},
            "aligned": {"level1": {"accuracy": 0.91234, "accuracy_std": 0.0123, "macro_f1": 0.8, "macro_f1_std": 0.05,
                                   "ece": None, "n": 40.4},
                        "level2": {"macro_f1": 0.7}},
        },
        "claim": [claim_row(0.1, 2, 0.5, 0.45, -0.02, 0.12, "10/15"),
                  claim_row(1.0, 2, *level2),
                  claim_row(1.0, 3, *level3)],
        "comparisons": [comparison("majority", 1, 0.8, 0.1, 0.6, 0.8),
                        comparison("raw gps", 2, 0.7, 0.69, -0.02, 0.04, 8, verdict="better"),
                        comparison("raw gps", 1, 0.8, 0.85, -0.09, -0.01, 3, verdict="worse"),
                        comparison(BEST, 3, 0.4, 0.3, None, None, 0)],
        "grids": {"majority": {}, "raw gps": {"C": [0.02, 0.5, 5.0]},
                  "aligned": {"C": [0.05, 0.5, 5.0], "fusion": ["concat", "mean"]}},
        "choices": {"aligned | C=0.5, fusion=concat": 9, "aligned | C=5.0, fusion=mean": 6,
                    "majority | -": 15, "raw gps | C=0.5": 15},
        "label_efficiency_macro_f1": {"aligned | level2 | 0.1": 0.5, "aligned | level2 | 1": 0.8,
                                      "majority | level2 | 1": 0.02},
        "any_modality_macro_f1": {"gps only | aligned": {"level1": 0.3, "level2": 0.2, "level3": None},
                                  "photo + gps | aligned": {"level1": 0.9, "level2": 0.8, "level3": 0.5}},
    }


def rows(markdown):
    """Table rows (without header and rule) as lists of cells."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_numbers_are_rounded_and_missing_values_shown_as_a_dash():
    assert report.number(0.12345) == "0.123"
    assert report.number(12, 0) == "12"
    assert report.number(None) == report.number(float("nan")) == report.number("x") == report.number(True) == "–"
    assert report.mean_std(0.8, 0.051) == "0.800 ± 0.051"
    assert report.mean_std(0.8, None) == "0.800"
    assert report.mean_std(None, 0.1) == "–"
    assert report.percent(0.05) == "5 %" and report.percent(None) == "–"


def test_scores_table_orders_models_and_fills_gaps():
    table = report.scores_table(classify_metrics(), level=1)
    body = rows(table)
    assert [r[0] for r in body] == ["aligned", "majority"]          # the aligned model first, then baselines
    aligned = dict(zip(["model", "accuracy", "top-3 accuracy", "macro-F1", "balanced accuracy", "ECE", "n"], body[0]))
    assert aligned["accuracy"] == "0.912 ± 0.012"
    assert aligned["macro-F1"] == "0.800 ± 0.050"
    assert aligned["top-3 accuracy"] == aligned["ECE"] == "–"
    assert aligned["n"] == "40"
    assert rows(report.macro_f1_table(classify_metrics()))[0] == ["aligned", "0.800 ± 0.050", "0.700", "–"]


def test_claim_holds_when_both_intervals_lie_above_zero():
    held = classify_metrics()
    # the recorded flag says False everywhere; the verdict comes from ci_low > 0
    assert report.claim_verdict(held) is True
    table = report.claim_table(held)
    assert table.splitlines()[0] == (f"| labelled fraction | level | aligned | {BEST} | difference "
                                     "| 95 % interval | aligned wins | better |")
    body = rows(table)
    assert body[0] == ["10 %", "2", "0.500", "0.450", "0.050", "[-0.020, 0.120]", "10/15", "no"]
    assert body[1] == ["100 %", "2", "0.800", "0.700", "0.100", "[0.050, 0.150]", "9/15", "yes"]
    assert body[2] == ["100 %", "3", "0.400", "0.300", "0.100", "[0.020, 0.180]", "9/15", "yes"]
    assert "**With all labels the claim held in this run**" in table and "did not hold" not in table
    assert "level 3: difference 0.100, interval [0.020, 0.180], above 0" in table
    assert INTERVAL in table                                   # the sentence names the interval's method


def test_claim_does_not_hold_when_an_interval_straddles_zero():
    close = classify_metrics(level3=(0.34, 0.30, -0.01, 0.09))
    close["claim"][2]["better (interval above 0)"] = True     # a wrong recorded flag is not believed
    assert report.claim_verdict(close) is False
    text = report.claim_table(close)
    assert "claim did not hold in this run**: at level 3 the 95 % interval" in text
    assert "level 3: difference 0.040, interval [-0.010, 0.090], includes 0" in text
    assert rows(text)[2][-3:] == ["[-0.010, 0.090]", "9/15", "no"]


def test_claim_does_not_hold_when_the_baseline_is_ahead():
    behind = classify_metrics(level2=(0.6, 0.7, -0.15, -0.05), level3=(0.2, 0.3, -0.18, -0.02))
    assert report.claim_verdict(behind) is False
    text = report.claim_table(behind)
    assert rows(text)[1][4:6] == ["-0.100", "[-0.150, -0.050]"]
    assert "at levels 2 and 3 the 95 % interval" in text
    assert "interval [-0.180, -0.020], below 0: the baseline is better" in text


def test_claim_undecided_when_numbers_are_missing():
    m = classify_metrics(level3=(0.34, 0.3, None, 0.09))
    assert report.claim_verdict(m) is None
    text = report.claim_table(m)
    assert rows(text)[2][5] == rows(text)[2][-1] == "–"
    assert "did not record enough numbers" in text and "level 3: difference 0.040, interval –" in text
    no_mean = classify_metrics(level3=(None, 0.3, 0.01, 0.09))
    assert report.claim_verdict(no_mean) is None
    assert rows(report.claim_table(no_mean))[2][2] == "–"
    older = {"models": {"aligned (all inputs)": {"level1": {"macro_f1": 0.7}}}}   # an older notebook 4
    assert report.claim_verdict(older) is None
    assert "not recorded in this run" in report.claim_table(older)


def test_claim_rows_of_an_older_notebook_are_undecided():
    """Rows with fold standard deviations and no interval: shown, never decided, never a crash."""
    m = {"best_mono_scale": BEST, "claim": [old_claim_row(1.0, 2, 0.8, 0.7, 0.05, 0.04),
                                            old_claim_row(1.0, 3, 0.4, 0.3, 0.03, 0.05)]}
    assert report.claim_verdict(m) is None
    text = report.claim_table(m)
    assert rows(text)[0] == ["100 %", "2", "0.800", "0.700", "0.100", "–", "3/5", "–"]
    assert "recorded no paired interval, so the claim is undecided" in text and "held" not in text


def test_comparisons_table_orders_baselines_and_recomputes_verdicts():
    text = report.comparisons_table(classify_metrics())
    assert text.splitlines()[0] == ("| baseline | level | aligned (mean) | baseline (mean) | difference "
                                    "| 95 % interval | aligned wins | verdict |")
    assert rows(text) == [
        [BEST, "3", "0.400", "0.300", "0.100", "–", "0/15", "–"],
        ["raw gps", "1", "0.800", "0.850", "-0.050", "[-0.090, -0.010]", "3/15", "worse"],
        ["raw gps", "2", "0.700", "0.690", "0.010", "[-0.020, 0.040]", "8/15", "no clear difference"],
        ["majority", "1", "0.800", "0.100", "0.700", "[0.600, 0.800]", "12/15", "better"]]
    assert INTERVAL in text
    assert "not recorded in this run" in report.comparisons_table({})


def test_choices_table_shows_grids_and_settings_chosen():
    assert rows(report.choices_table(classify_metrics())) == [
        ["aligned", "C ∈ {0.05, 0.5, 5.0}; fusion ∈ {concat, mean}",
         "C=0.5, fusion=concat (9/15); C=5.0, fusion=mean (6/15)"],
        ["raw gps", "C ∈ {0.02, 0.5, 5.0}", "C=0.5 (15/15)"],
        ["majority", "nothing to choose", "nothing to choose (15/15)"]]
    grid_only = report.choices_table({"grids": {"raw photo": {"C": [1.0]}}})       # nothing chosen
    assert rows(grid_only) == [["raw photo", "C ∈ {1.0}", "–"]]
    assert "not recorded in this run" in report.choices_table({})


def test_run_table_shows_blocks_buffer_and_seeds():
    def run(classify):
        return dict((r[0], r[1]) for r in rows(report.run_table({"04_classify_habitats": classify})))

    auto = run(classify_metrics())
    assert auto["spatial block size (degrees)"] == "3.70 (auto: labels agree above chance up to 270 km)"
    assert auto["buffer around the test sites (km)"] == "20.0"
    assert auto["seeds of the folds"] == "0, 1, 2" and auto["spatial folds × seeds"] == "5 × 3"
    assert auto["spatial-positive radius (km)"] == "5.0"
    given = run({"block_size_deg": 0.5,
                 "block_size_rule": {"block_size_deg": 0.5, "block_size_rule": "given"}})
    assert given["spatial block size (degrees)"] == "0.50 (given)"
    older = run({"block_size_deg": 0.5, "radius_km": 5.0})                        # no rule, buffer or seeds
    assert older["spatial block size (degrees)"] == "0.50"
    assert older["buffer around the test sites (km)"] == older["seeds of the folds"] == "–"


def test_label_efficiency_and_any_modality_tables():
    m = classify_metrics()
    eff = report.label_efficiency_table(m)
    assert eff.splitlines()[0] == "| model | level 2, 10 % | level 2, 100 % |"
    assert rows(eff) == [["aligned", "0.500", "0.800"], ["majority", "–", "0.020"]]
    anym = rows(report.any_modality_table(m))
    assert anym[0] == ["photo + gps", "aligned", "0.900", "0.800", "0.500"]   # more inputs first
    assert anym[1] == ["gps only", "aligned", "0.300", "0.200", "–"]


def test_ablation_retrieval_and_map_tables():
    align = {"ablation": [{"variant": "radius 0 km", "macro-F1 level1": 0.71, "macro-F1 level2": 0.7,
                           "macro-F1 level3": None, "photo → satellite recall@10": 0.38, "best epoch": 6.0},
                          {"variant": "no alignment: raw satellite", "macro-F1 level1": 0.75, "best epoch": None}],
             "retrieval_before": {"photo_to_satellite": {"n": 200, "recall@10": 0.05, "recall@1": 0.01}},
             "retrieval_after": {"photo_to_satellite": {"n": 200, "recall@10": 0.35, "recall@1": 0.04}}}
    assert rows(report.ablation_table(align)) == [
        ["radius 0 km", "0.710", "0.700", "–", "0.380", "6"],
        ["no alignment: raw satellite", "0.750", "–", "–", "–", "–"]]
    assert rows(report.retrieval_table(align)) == [
        ["photo → satellite", "200", "0.050", "0.050", "0.350", "0.010", "0.040"]]
    align["retrieval_habitat_only"] = {"photo_to_satellite": {"n": 200, "recall@10": 0.6}}
    assert rows(report.retrieval_table(align)) == [
        ["photo → satellite", "200", "0.050", "0.050", "0.350", "0.600", "0.010", "0.040"]]
    assert "knowing the true level-3 habitat only" in report.retrieval_table(align)
    maps = {"n_cells": 120, "resolution_deg": 0.1, "mean_p_l3": 0.5, "hierarchy_consistent": True,
            "level1_share": {"T": 0.25, "R": 0.75}}
    body = dict((r[0], r[1]) for r in rows(report.map_table(maps)))
    assert body["grid cells"] == "120" and body["mean entropy of the level-3 prediction (nats)"] == "–"
    assert body["cells predicted as R (Grasslands and lands dominated by forbs, mosses or lichens)"] == "75.0 %"
    assert list(body)[-2:] == ["cells predicted as R (Grasslands and lands dominated by forbs, mosses or lichens)",
                               "cells predicted as T (Forest and other wooded land)"]


def test_write_results_from_an_outputs_folder(tmp_path):
    outputs = tmp_path / "outputs"
    (outputs / "04_classify_habitats").mkdir(parents=True)
    (outputs / "04_classify_habitats" / "metrics.json").write_text(json.dumps(classify_metrics()))
    written = report.write_results(outputs, tmp_path / "results")
    names = {p.stem for p in written}
    assert {"run", "claim", "comparisons", "choices", "macro_f1", "scores_level2", "label_efficiency",
            "any_modality", "ablation", "retrieval", "map", "reference", "environment"} <= names
    assert "claim held in this run" in (tmp_path / "results" / "claim.md").read_text()
    run = dict((r[0], r[1]) for r in rows((tmp_path / "results" / "run.md").read_text()))
    assert run["profile"] == "tiny" and run["sites"] == "–" and run["spatial folds × seeds"] == "5 × 3"
    assert "| raw gps | 2 |" in (tmp_path / "results" / "comparisons.md").read_text()
    assert "| aligned |" in (tmp_path / "results" / "choices.md").read_text()
    assert "not recorded in this run" in (tmp_path / "results" / "ablation.md").read_text()
    assert "## claim" in report.results_markdown(outputs)
    assert cli.main(["report", str(outputs), str(tmp_path / "again")]) == 0


@pytest.mark.parametrize("name", ["claim", "comparisons", "choices", "macro_f1", "map"])
def test_fragments_have_no_headings(tmp_path, name):
    text = report.results_fragments(tmp_path)[name]           # no metrics at all: every table says so
    assert not any(line.startswith("#") for line in text.splitlines())


def test_environment_table_keeps_the_notebook_order_and_shows_gaps():
    cell = {"level1": {"mean": 0.4, "std": 0.02}, "level2": {"mean": 0.25, "std": None}, "level3": {}}
    m = {"env_comparison_macro_f1": {"GPS + env, aligned": cell, "GPS alone (raw GeoCLIP)": cell,
                                     "something new": cell}}
    assert rows(report.environment_table(m)) == [
        ["GPS alone (raw GeoCLIP)", "0.400 ± 0.020", "0.250", "–"],
        ["GPS + env, aligned", "0.400 ± 0.020", "0.250", "–"],
        ["something new", "0.400 ± 0.020", "0.250", "–"]]
    assert "not recorded" in report.environment_table({})


def test_reference_table_without_a_ceiling_for_real_data():
    """Real data have no generating variables: the ceiling row shows dashes instead of failing."""
    outputs = {"01_explore_data": {"ceiling_accuracy": None, "n_classes": {"level1": 5}},
               "04_classify_habitats": {"ceiling_accuracy_from_location": None}}
    table = report.reference_table(outputs)
    ceiling_row = next(line for line in table.splitlines() if "reachable" in line)
    assert ceiling_row.count(report.MISSING) == 3 and "| 5 |" in table


def test_every_site_labelled_table_has_its_own_verdict_and_regime():
    m = classify_metrics()
    assert "no comparison with every site labelled" in report.every_site_table(m)   # not recorded: said
    m["every_site_labelled"] = {"best_mono_scale": "raw photo",
                                "claim": [{**claim_row(1.0, level, 0.6, 0.7, -0.15, -0.05), "raw photo": 0.7}
                                          for level in (2, 3)]}
    text = report.every_site_table(m)
    assert text.splitlines()[0].split(" | ")[3] == "raw photo"
    assert "**With every site labelled the claim did not hold in this run**" in text
    assert rows(text)[0] == ["100 %", "2", "0.600", "0.700", "-0.100", "[-0.150, -0.050]", "9/15", "no"]
    # the main table's verdict is unaffected (it held with the defaults)
    assert "**With all labels the claim held in this run**" in report.claim_table(m)


PROJECT = ["aligned", "raw gps", "raw env", "raw concatenated"]
BASELINES = ["k-NN on coordinates", "random forest on coordinates + env", "majority"]


def versus(level, model, model_mean, baseline, baseline_mean, ci_low, ci_high, wins=7, verdict="better"):
    """One record of ``cv.best_versus`` as chapter 6 writes it (``verdict`` as recorded, possibly wrong)."""
    return {"level": level, "model": model, "model_mean": model_mean, "baseline": baseline,
            "baseline_mean": baseline_mean, "difference": model_mean - baseline_mean, "ci_low": ci_low,
            "ci_high": ci_high, "wins": wins, "pairs": 9, "interval": "95% corrected resampled t over 9 folds x seeds",
            "verdict": verdict}


def lucas_metrics(best_versus=None):
    """Chapter 6's metrics (hand-made): by default the aim is met at every level."""
    def levels(f1, std):
        return {f"level{k}": {"macro_f1": f1 / k, "macro_f1_std": std, "accuracy": 0.5, "n": 200.0}
                for k in (1, 2, 3)}

    return {
        "data": "LUCAS 2015 topsoil points (Eurostat)", "synthetic": False,
        "attribution": "Source: Eurostat, LUCAS 2015 primary data", "profile": "book", "seed": 0,
        "seeds": [0, 1, 2], "folds": 3, "n_points": 14613, "n_sites": 2000, "label_scheme": "lucas-lc1",
        "block_size_deg": 13.75,
        "block_size_rule": {"block_size_deg": 13.75, "block_size_rule": "auto: the level-1 labels' autocorrelation "
                            "range", "autocorrelation_range_km": 1000.0},
        # stored out of order: the table puts the project's models first, then the baselines
        "models": {"majority": levels(0.06, 0.02), "raw gps": levels(0.3, 0.05), "aligned": levels(0.32, 0.04),
                   "k-NN on coordinates": levels(0.24, 0.05)},
        "project_models": PROJECT, "baseline_models": BASELINES,
        "best_versus": best_versus if best_versus is not None else [
            versus(1, "aligned", 0.32, "k-NN on coordinates", 0.24, 0.03, 0.13),
            versus(2, "aligned", 0.16, "k-NN on coordinates", 0.12, 0.01, 0.07),
            versus(3, "raw gps", 0.10, "random forest on coordinates + env", 0.07, 0.005, 0.055)],
        "eunis_l1": {"crosswalk": {"C": "T", "B": "V", "A": "J", "G": None},
                     "macro_f1": {"raw gps": 0.41, "aligned": 0.45}},
    }


def test_real_data_table_shows_models_in_groups_and_the_data():
    text = report.real_data_table({"06_lucas_land_cover": lucas_metrics()})
    assert "LUCAS 2015 topsoil points (Eurostat) (Source: Eurostat, LUCAS 2015 primary data)" in text
    assert "2000 of 14613 points" in text and "3 spatial folds × 3 seeds" in text
    assert "blocks whose side in degrees is 13.75 (auto: labels agree above chance up to 1000 km)" in text
    tables = [block for block in text.split("\n\n") if block.startswith("|")]
    assert tables[0].splitlines()[0] == "| model | group | level 1 | level 2 | level 3 |"
    assert rows(tables[0]) == [
        ["aligned", "project", "0.320 ± 0.040", "0.160 ± 0.040", "0.107 ± 0.040"],
        ["raw gps", "project", "0.300 ± 0.050", "0.150 ± 0.050", "0.100 ± 0.050"],
        ["k-NN on coordinates", "baseline", "0.240 ± 0.050", "0.120 ± 0.050", "0.080 ± 0.050"],
        ["majority", "baseline", "0.060 ± 0.020", "0.030 ± 0.020", "0.020 ± 0.020"]]
    assert rows(tables[1])[0] == ["1", "aligned", "0.320", "k-NN on coordinates", "0.240", "0.080",
                                  "[0.030, 0.130]", "7/9", "better"]
    assert "95% corrected resampled t over 9 folds x seeds" in text
    assert ("EUNIS level 1 (crosswalk A → J, B → V, C → T, G → none) give macro-F1 aligned 0.450, "
            "raw gps 0.410") in text
    assert not any(line.startswith("#") for line in text.splitlines())


def test_real_data_verdict_is_recomputed_from_the_interval():
    wrong = lucas_metrics([versus(1, "aligned", 0.32, "k-NN on coordinates", 0.24, -0.02, 0.18, verdict="better"),
                           versus(2, "raw gps", 0.10, "majority", 0.15, -0.09, -0.01, 3, verdict="better"),
                           versus(3, "raw gps", 0.10, "majority", 0.07, None, 0.05, verdict="better")])
    text = report.real_data_table({"06_lucas_land_cover": wrong})
    best = rows([block for block in text.split("\n\n") if block.startswith("|")][1])
    assert [r[-1] for r in best] == ["no clear difference", "worse", "–"]
    assert best[1][6:8] == ["[-0.090, -0.010]", "3/9"]


def test_real_data_aim_met_and_not_met():
    met = report.real_data_table({"06_lucas_land_cover": lucas_metrics()})
    assert "ahead of the best classical baseline by at least 0.02 macro-F1 at every level" in met
    assert "**The aim was met in this run**" in met
    assert "level 3: difference 0.030, reached 0.02; interval [0.005, 0.055], above 0" in met
    # level 1: far enough ahead but the interval includes 0; level 2: interval above 0 but under 0.02
    close = lucas_metrics([versus(1, "aligned", 0.32, "k-NN on coordinates", 0.24, -0.02, 0.18),
                           versus(2, "aligned", 0.16, "k-NN on coordinates", 0.15, 0.001, 0.02),
                           versus(3, "raw gps", 0.10, "majority", 0.07, 0.005, 0.055)])
    text = report.real_data_table({"06_lucas_land_cover": close})
    assert "**The aim was not met in this run** (not at levels 1 and 2)" in text
    assert "level 1: difference 0.080, reached 0.02; interval [-0.020, 0.180], includes 0" in text
    assert "level 2: difference 0.010, did not reach 0.02; interval [0.001, 0.020], above 0" in text
    behind = lucas_metrics([versus(lv, "raw gps", 0.1, "majority", 0.2, -0.2, -0.05) for lv in (1, 2, 3)])
    text = report.real_data_table({"06_lucas_land_cover": behind})
    assert "(not at levels 1, 2 and 3)" in text and "below 0" in text
    partial = lucas_metrics(lucas_metrics()["best_versus"][:2])        # level 3 not recorded
    assert "did not record enough numbers to decide it" in report.real_data_table({"06_lucas_land_cover": partial})


def test_real_data_not_recorded_in_an_older_run(tmp_path):
    for outputs in ({}, {"06_lucas_land_cover": {}}, {"06_lucas_land_cover": None}):
        assert "not recorded in this run" in report.real_data_table(outputs)
    (tmp_path / "04_classify_habitats").mkdir()                      # an older run: chapters 1-5 only
    (tmp_path / "04_classify_habitats" / "metrics.json").write_text(json.dumps(classify_metrics()))
    fragments = report.results_fragments(tmp_path)
    assert "not recorded in this run" in fragments["real_lucas"]
    run = dict((r[0], r[1]) for r in rows(fragments["run"]))
    assert run["profile"] == "tiny"                                  # the run table reads the synthetic chapters
    (tmp_path / "06_lucas_land_cover").mkdir()
    (tmp_path / "06_lucas_land_cover" / "metrics.json").write_text(json.dumps(lucas_metrics()))
    fragments = report.results_fragments(tmp_path)
    assert "**The aim was met in this run**" in fragments["real_lucas"]
    assert dict((r[0], r[1]) for r in rows(fragments["run"]))["profile"] == "tiny"   # not chapter 6's "book"


def test_calibration_fragment_fills_the_measured_figure_from_chapter_6():
    probes = [{"inputs": "photo", "level": 1, "macro_f1": 0.99}, {"inputs": "gps + env", "level": 1, "macro_f1": 0.5}]
    ceilings = {"ceiling_accuracy": {"level1": 0.7}, "cue_agreement": {"photo": {"level1": 0.95, "level2": 0.8}}}
    outputs = {"02_extract_embeddings": {"calibration_probes": probes, "demo_ceilings": ceilings},
               "06_lucas_land_cover": {"models": {"raw concatenated": {"level1": {"macro_f1": 0.25}}}}}
    text = report.calibration_fragment(outputs)
    body = {(r[0], r[1]): r for r in rows(text)}
    assert body[("photo", "1")][2:6] == ["0.950", "0.990", "0.890", "0.100"]
    assert body[("gps + env", "1")][2:6] == ["0.700", "0.500", "0.250", "0.250"]
    assert body[("photo", "2")][2:5] == ["0.800", "–", "0.610-0.630"]
    assert body[("satellite + env", "3")][2] == "–"                     # no satellite cues recorded
    del outputs["06_lucas_land_cover"]
    assert {(r[0], r[1]): r for r in rows(report.calibration_fragment(outputs))}[("gps + env", "1")][4] == "–"
    del outputs["02_extract_embeddings"]["demo_ceilings"]                 # an older chapter 2: no ceilings
    assert rows(report.calibration_fragment(outputs))[0][2] == "–"
    assert "not recorded in this run" in report.calibration_fragment({})


def test_qc_table_reads_both_chapters_and_drops_a_repeated_combined_score():
    def records(blocks, scores, auc):
        return [{"seed": seed, "distance_km": d, "score": s, "blocks": blocks,
                 "roc_auc": None if auc is None else auc + 0.1 * seed, "pr_auc": None if auc is None else 0.2,
                 "prevalence": 0.1}
                for seed in (0, 1) for d in (1.0, 100.0) for s in scores]
    outputs = {"05_map_habitats": {"qc": {"displacement": records("auto", ["cross_modal_photo", "label_surprise",
                                                                        "p_combined", "random"], 0.5)}},
               "06_lucas_land_cover": {"qc_displacement": records("0.1°", ["label_surprise", "p_combined",
                                                                          "random"], 0.6)
                                                           + records("0.1°", ["cross_modal_photo"], None)}}
    table = rows(report.qc_table(outputs))
    assert [r[:3] for r in table] == [["demo (chapter 5)", "auto", "cross_modal_photo"],
                                      ["demo (chapter 5)", "auto", "label_surprise"],
                                      ["demo (chapter 5)", "auto", "p_combined"],
                                      ["demo (chapter 5)", "auto", "random"],
                                      ["LUCAS 2015 (chapter 6)", "0.1°", "label_surprise"],
                                      ["LUCAS 2015 (chapter 6)", "0.1°", "random"]]
    assert table[0][3:] == ["0.550 / 0.200 (0.10)"] * 2          # the mean over the two seeds
    assert "100 km: ROC-AUC / PR-AUC" in report.qc_table(outputs)
    assert "not recorded" in report.qc_table({}).lower()


def test_capacity_table_recomputes_the_verdict_and_names_both_models():
    rows = [{"level": 1, "model": "aligned", "minus": "MLP on raw concatenated", "model mean": 0.30,
             "minus mean": 0.28, "difference": 0.02, "ci_low": 0.005, "ci_high": 0.035, "wins": "8/9"},
            {"level": 1, "model": "MLP on raw concatenated", "minus": "raw concatenated", "model mean": 0.28,
             "minus mean": 0.29, "difference": -0.01, "ci_low": -0.03, "ci_high": 0.01, "wins": "3/9"}]
    text = report.capacity_table({"06_lucas_land_cover": {"capacity_control": rows}})
    lines = [line for line in text.splitlines() if line.startswith("| 1 ")]
    assert "aligned − MLP on raw concatenated" in lines[0] and lines[0].rstrip(" |").endswith("better")
    assert "MLP on raw concatenated − raw concatenated" in lines[1] and "no clear difference" in lines[1]
    assert "[0.005, 0.035]" in lines[0] or "0.005" in lines[0]
    assert "not recorded" in report.capacity_table({"06_lucas_land_cover": {}})
