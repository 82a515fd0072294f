"""The registered experiment "When does alignment pay?" (book/alignment_pays.md), read from its
committed results (experiments/results/alignment_pays/): every cell is the registered rule applied to
the committed fold-level scores, the design's grid is complete, and the page reports what they show."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import habitat_helpers as hh

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "alignment_pays"


@pytest.fixture(scope="module")
def run():
    if not (RESULTS / "cells.csv").exists():
        pytest.skip("the experiment has not been run (python experiments/alignment_pays.py)")
    return {"scores": pd.read_csv(RESULTS / "scores.csv"), "cells": pd.read_csv(RESULTS / "cells.csv"),
            "transfer": pd.read_csv(RESULTS / "transfer.csv"),
            "settings": json.loads((RESULTS / "settings.json").read_text())}


def test_every_cell_is_the_registered_rule_on_the_committed_scores(run):
    again = hh.evaluation.alignment_pays(run["scores"], run["settings"]["folds"])
    cells = run["cells"]
    assert len(again) == len(cells)
    for column in ("difference", "ci_low", "ci_high", "model_mean", "baseline_mean"):
        np.testing.assert_allclose(again[column].to_numpy(float), cells[column].to_numpy(float), atol=1e-9)
    assert (again["pays"].to_numpy() == cells["pays"].to_numpy()).all()
    assert (cells["pays"] == (cells["ci_low"] > 0)).all()
    assert not cells["best_without_alignment"].isin(hh.evaluation.ALIGNMENT_MODELS).any()


def test_the_grid_of_the_design_is_complete(run):
    settings, cells = run["settings"], run["cells"]
    assert not settings["quick"] and settings["rule"] == hh.evaluation.PAYS_RULE
    assert set(cells["pool"]) == set(hh.evaluation.ALIGN_POOLS)
    assert set(cells["fraction"]) == {0.05, 0.2, 1.0}
    assert set(cells["subset"]) == {hh.evaluation.ALL_SITES, hh.evaluation.PHOTO_SITES}
    assert set(cells["level"]) == {1, 2, 3}
    assert len(cells) == 4 * 3 * 2 * 3
    assert (cells["pairs"] == len(settings["seeds"]) * settings["folds"]).all()
    assert len(settings["seeds"]) == 3 and settings["folds"] == 3
    sizes = settings["heads_trained_on_sites_per_fold"]
    assert sizes["training"]["all"] < sizes["extra"]["all"] < sizes["transductive"]["all"]
    assert sizes["labelled"]["0.05"] < sizes["labelled"]["1"] <= sizes["training"]["all"]
    assert set(run["transfer"]["pool"]) == set(hh.evaluation.ALIGN_POOLS)


def test_the_page_reports_the_run_it_includes(run):
    page = (ROOT / "book" / "alignment_pays.md").read_text()
    assert "results/alignment_pays/results.md" in page and "results/alignment_pays/heatmap.png" in page
    text = (RESULTS / "results.md").read_text()
    assert f"Cells where alignment pays: {int(run['cells']['pays'].sum())} of {len(run['cells'])}." in text


def test_what_the_page_says_holds(run):
    """The statements of the page's "What it showed", one by one."""
    cells = run["cells"]
    assert not cells["pays"].any()
    assert set(cells["best_without_alignment"]) == {"raw satellite"}
    by_pool = cells.groupby("pool")["difference"].mean()
    assert by_pool["labelled"] < by_pool["training"] < by_pool["extra"] < by_pool["transductive"]
    positive = cells[cells["difference"] > 0]
    assert set(positive["pool"]) == {"transductive"} and set(positive["fraction"]) == {1.0}
    assert (positive["ci_low"] <= 0).all()
    capacity = pd.read_csv(RESULTS / "capacity.csv")
    mlp = capacity[capacity["model"] == hh.evaluation.MLP]
    assert mlp["difference"].mean() < 0 and not mlp["pays"].any()
    ours = capacity[capacity["model"] == hh.evaluation.ALIGNED_AND_RAW].groupby("pool")["difference"].mean()
    assert ours["extra"] > 0 and ours["transductive"] > 0 and not capacity["pays"].any()
    transfer = run["transfer"]
    pays = transfer.groupby("pool")["pays"].sum()
    assert pays["labelled"] == 0 and (pays[["training", "extra", "transductive"]] > 0).all()
    lead = transfer.groupby("pool")["difference"].mean()
    assert lead["labelled"] < lead["training"] < lead["extra"] < lead["transductive"]
    choices = pd.read_csv(RESULTS / "choices.csv")
    step0 = choices[choices["step"].str.startswith("0")]["params"].map(json.loads)
    settings = {(p["positives"], p["hub"]) for p in step0}
    assert len(step0) == 3 and len(settings) > 1                 # validation did not agree across the folds


SETTINGS = ROOT / "experiments" / "results" / "alignment_settings"


def test_the_alignment_settings_run_and_the_defaults_follow_its_rule():
    """The registered selection run (book/alignment_pays.md, "The alignment settings"): its counts
    are recomputed from every fold's choice, the rule gives the package's defaults, and the page
    states the counts it shows."""
    if not (SETTINGS / "choices.csv").exists():
        pytest.skip("the selection run has not been run (python experiments/alignment_settings.py)")
    choices = pd.read_csv(SETTINGS / "choices.csv")
    choices["params"] = choices["params"].map(json.loads)
    settings = json.loads((SETTINGS / "settings.json").read_text())
    assert len(choices) == 2 * len(settings["seeds"]) * settings["folds"]
    old_defaults = hh.align.AlignConfig(**{k: v for k, v in settings["package_defaults"].items()})
    chosen = {}
    for stage, grid in settings["stages"].items():
        picked, counts = hh.evaluation.most_chosen(choices[choices["stage"] == stage], grid, old_defaults)
        saved = pd.read_csv(SETTINGS / "counts.csv")
        saved = saved[saved["stage"] == stage].drop(columns="stage").reset_index(drop=True)
        pd.testing.assert_frame_equal(counts, saved, check_dtype=False)
        chosen.update(picked)
    assert chosen == settings["chosen"]
    defaults = hh.align.AlignConfig()
    assert {name: getattr(defaults, name) for name in chosen} == chosen    # the package follows the rule
    page = (ROOT / "book" / "alignment_pays.md").read_text()
    assert "results/alignment_settings/results.md" in page
    counts = pd.read_csv(SETTINGS / "counts.csv").set_index(["setting", "value"])["folds"]
    assert f"(`site`) in {counts[('positives', 'site')]} of 9 folds" in page
    assert f"chosen in {counts[('photo_views', 'items')]} of 9 folds" in page
    assert f"frozen in {counts[('location_layers', 'frozen')]} of 9" in page
