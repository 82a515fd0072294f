"""The results chapter's tables (hh.report), rendered from hand-made metrics."""

import json

import pytest

from habitat_helpers import cli, report

BEST = "raw satellite"


def claim_row(fraction, level, aligned, baseline, std_aligned, std_baseline, wins="3/5"):
    return {"labelled fraction": fraction, "level": level, "aligned": aligned, BEST: baseline,
            "difference": None if aligned is None else aligned - baseline,
            "fold std of aligned": std_aligned, f"fold std of {BEST}": std_baseline,
            "folds aligned wins": wins, "beats by more than the std": False}


def classify_metrics(level2=(0.80, 0.70), level3=(0.40, 0.30)):
    """Notebook 4's metrics: with the defaults the aligned model wins by 0.10 against a std of 0.05."""
    return {
        "profile": "tiny", "seed": 0, "synthetic": True, "folds": 5, "seeds": [0], "block_size_deg": 0.5,
        "radius_km": 5.0, "best_mono_scale": BEST,
        "models": {
            "majority": {"level1": {"macro_f1": 0.1, "macro_f1_std": 0.01, "n": 40.0}},
            "aligned": {"level1": {"accuracy": 0.91234, "accuracy_std": 0.0123, "macro_f1": 0.8, "macro_f1_std": 0.05,
                                   "ece": None, "n": 40.4},
                        "level2": {"macro_f1": 0.7}},
        },
        "claim": [claim_row(0.1, 2, 0.5, 0.45, 0.2, 0.1, "4/5"),
                  claim_row(1.0, 2, *level2, 0.05, 0.04),
                  claim_row(1.0, 3, *level3, 0.03, 0.05)],
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


def test_claim_verdict_is_computed_from_the_numbers():
    held = classify_metrics()
    # the recorded flag says False everywhere; the verdict comes from mean difference > larger fold std
    assert report.claim_verdict(held) is True
    table = report.claim_table(held)
    assert "claim held in this run" in table and "did not hold" not in table
    body = rows(table)
    assert body[0] == ["10 %", "2", "0.500 ± 0.200", "0.450 ± 0.100", "0.050", "0.200", "4/5", "no"]
    assert body[1] == ["100 %", "2", "0.800 ± 0.050", "0.700 ± 0.040", "0.100", "0.050", "3/5", "yes"]
    assert f"| aligned | {BEST} |" in table.splitlines()[0]

    # level 3 within the noise: a difference of 0.04 against a std of 0.05
    close = classify_metrics(level3=(0.34, 0.30))
    assert report.claim_verdict(close) is False
    text = report.claim_table(close)
    assert "did not hold" in text and "at level 3 the aligned" in text
    assert rows(text)[2][-1] == "no"

    # the baseline ahead at both levels
    behind = classify_metrics(level2=(0.6, 0.7), level3=(0.2, 0.3))
    assert report.claim_verdict(behind) is False
    assert rows(report.claim_table(behind))[1][4] == "-0.100"
    assert "at levels 2 and 3" in report.claim_table(behind)


def test_claim_undecided_when_numbers_are_missing():
    m = classify_metrics(level3=(None, 0.3))
    assert report.claim_verdict(m) is None
    text = report.claim_table(m)
    assert rows(text)[2][2] == rows(text)[2][-1] == "–"
    assert "did not record enough numbers" in text
    older = {"models": {"aligned (all inputs)": {"level1": {"macro_f1": 0.7}}}}   # an older notebook 4
    assert report.claim_verdict(older) is None
    assert "not recorded in this run" in report.claim_table(older)


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
    assert {"run", "claim", "macro_f1", "scores_level2", "label_efficiency", "any_modality", "ablation",
            "retrieval", "map", "reference", "environment"} <= names
    assert "claim held in this run" in (tmp_path / "results" / "claim.md").read_text()
    run = dict((r[0], r[1]) for r in rows((tmp_path / "results" / "run.md").read_text()))
    assert run["profile"] == "tiny" and run["sites"] == "–" and run["spatial folds × seeds"] == "5 × 1"
    assert "not recorded in this run" in (tmp_path / "results" / "ablation.md").read_text()
    assert "## claim" in report.results_markdown(outputs)
    assert cli.main(["report", str(outputs), str(tmp_path / "again")]) == 0


@pytest.mark.parametrize("name", ["claim", "macro_f1", "map"])
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
