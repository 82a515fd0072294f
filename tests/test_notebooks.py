"""The six notebooks under papermill and the `tiny` profile: what they recorded and showed.

They run once per test session (the ``tiny_book`` fixture of tests/conftest.py); the student copies
of the workshop are checked against that run too. Chapter 4 also runs alone, from an empty cache
(tests/test_chapter_alone.py).
"""

import ast
import json

import pytest
from test_workshop import WITH_EXERCISES

import habitat_helpers as hh

# `pytest -n` runs a file's tests in one process (--dist loadfile): every test that reads the shared
# run lives in this file, so that the run is made once
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tiny_book):
    return tiny_book.out, tiny_book.timings


def metrics(run, name):
    return hh.metrics.read_metrics(run[0] / "outputs" / name)


def test_every_notebook_wrote_its_metrics(run):
    for nb in hh.notebooks.notebook_paths():
        m = metrics(run, nb.stem)
        assert m["profile"] == "tiny" and m["seed"] == 0
        if hh.notebooks.reads_data(nb):
            assert m["synthetic"] is True and m["data"] == "demo"
        else:                                       # the case study reads real LUCAS points
            assert m["synthetic"] is False and m["data"].startswith("LUCAS 2015")
        assert (run[0] / "notebooks" / nb.name).exists()


def test_explore_counts(run):
    m = metrics(run, "01_explore_data")
    profile = hh.profiles.get("tiny")
    assert m["n_sites"] == profile.n_sites == sum(m["n_sites_by_source"].values())
    assert set(m["n_sites_by_source"]) == {"lucas", "eva", "embal"}
    assert 0.4 * m["n_sites"] < m["n_labelled"]["level1"] < 0.8 * m["n_sites"]
    assert m["n_labelled"]["level1"] >= m["n_labelled"]["level2"] >= m["n_labelled"]["level3"]
    assert m["n_classes"]["level1"] == 6 and m["n_classes"]["level3"] >= 15
    assert m["codes_per_level"] == {"1": 7, "2": 42, "3": 270} and m["label_scheme"] == "eunis"
    assert m["ceiling_accuracy"]["level1"] > m["ceiling_accuracy"]["level3"]
    for source, report in m["load_reports"].items():
        assert report["kept"] == m["n_sites_by_source"][source]
    # spatial autocorrelation: nearby labelled sites agree far more often than chance
    assert m["label_agreement_nearest_bin"] > 2 * m["label_agreement_chance"]


def test_embeddings(run):
    m = metrics(run, "02_extract_embeddings")
    assert m["dims"] == {"photo": 1280, "satellite": 1280, "gps": 512}
    assert m["all_finite"] and m["n_sites_with"]["gps"] == m["n_sites"]
    probe = m["knn_probe_level1"]
    assert len(probe) == 6 and all(0 <= v <= 1 for v in probe.values())
    # the calibration probes: every input set at every level, a photo or satellite patch carries
    # the formation far better than location alone, and every published figure has its source
    probes = {(r["inputs"], r["level"]): r["macro_f1"] for r in m["calibration_probes"]}
    assert set(probes) == {(" + ".join(i), lv) for i in hh.calibration.PROBED_INPUTS for lv in (1, 2, 3)}
    assert all(0 <= v <= 1 for v in probes.values())
    assert min(probes[("photo", 1)], probes[("satellite", 1)]) > probes[("gps", 1)] + 0.2
    assert [(r["inputs"], r["level"]) for r in m["calibration"]] == [
        (f["inputs"], f["level"]) for f in hh.calibration.PUBLISHED_FIGURES]
    assert all(r["source"] for r in m["calibration"])


def test_alignment_beats_chance_on_held_out_blocks(run):
    m = metrics(run, "03_contrastive_alignment")
    assert m["val_loss_best"] < m["val_loss_initial"]
    assert 0.01 <= m["temperature_final"] <= 1.0
    # In `tiny` the heads learn from ~220 training sites, a third with a photo, and since demo v5 a photo
    # and its patch share only the habitat (no per-site cue): measured recall@10 0.197 against chance
    # 0.141 and 0.141 before training, on 71 test sites. The margin of 2 x chance is checked on the
    # book profile (tests/test_claims.py), where 4.9 x chance was measured.
    pair = m["retrieval_after"]["photo_to_satellite"]
    chance = 10 / pair["n"]
    assert pair["recall@10"] > chance
    assert pair["recall@10"] > m["retrieval_before"]["photo_to_satellite"]["recall@10"]
    habitat = m["retrieval_habitat_only"]["photo_to_satellite"]       # the demo's reference
    assert habitat["n"] == pair["n"] and pair["recall@10"] < habitat["recall@10"] <= 1
    assert m["val_recall_best"] > m["val_recall_initial"]
    ablation = {row["variant"]: row for row in m["ablation"]}
    assert {"radius 0 km", f"radius {m['radius_km']:g} km", "no alignment: raw satellite"} <= set(ablation)
    for row in ablation.values():
        assert 0 <= row["macro-F1 level1"] <= 1 and 0 <= row["macro-F1 level3"] <= 1
    # the sampler puts neighbours in the batch more often than random batches do (in `tiny` a batch
    # holds a third of the sites, so random batches already catch most 25 km neighbours)
    for row in m["neighbours"]:
        assert row["neighbour in batch (sampler)"] >= row["neighbour in batch (random)"]
        if row["sites with a neighbour"] > 0.5 and row["neighbour in batch (random)"] < 0.5:
            assert row["neighbour in batch (sampler)"] > row["neighbour in batch (random)"] + 0.2


def test_classification_cross_validation(run):
    """Stated margins on all labelled test sites (tiny profile, spatial folds): the aligned model
    0.2 above the majority class in accuracy at levels 1 and 2, 0.1 at level 3; k-NN on
    coordinates above the majority at level 1; every model with all three levels."""
    m = metrics(run, "04_classify_habitats")
    assert m["hierarchy_consistent"]
    aligned, majority = m["models"]["aligned"], m["models"]["majority"]
    for level, margin in [("level1", 0.2), ("level2", 0.2), ("level3", 0.1)]:
        assert aligned[level]["accuracy"] > majority[level]["accuracy"] + margin
        assert aligned[level]["top3_accuracy"] >= aligned[level]["accuracy"]
        assert 0 <= aligned[level]["ece"] <= 1 and aligned[level]["n"] > 0
    assert m["models"]["k-NN on coordinates"]["level1"]["macro_f1"] > majority["level1"]["macro_f1"]
    assert set(m["models"]) == {"aligned", "aligned + raw", "raw photo", "raw satellite", "raw gps",
                                "raw concatenated", "MLP on raw concatenated", "k-NN on coordinates", "majority"}
    assert m["models_on_photo_sites"]["raw photo"]["level1"]["n"] == pytest.approx(
        m["models"]["raw photo"]["level1"]["n"])
    assert m["best_mono_scale"] in {"raw satellite", "raw gps"}       # the photo model misses sites
    for row in m["claim"]:           # a paired interval over folds x seeds around the mean difference
        wins, pairs = map(int, row["aligned wins"].split("/"))
        assert 0 <= wins <= pairs <= m["folds"] * len(m["seeds"])   # a 1 % sample may hold one habitat only
        assert row["difference"] == pytest.approx(row["aligned"] - row[m["best_mono_scale"]])
        if pairs >= 2:
            assert row["ci_low"] <= row["difference"] <= row["ci_high"]
            assert row["better (interval above 0)"] == (row["ci_low"] > 0)
        else:                        # no interval from one pair, and no claim either
            assert row["ci_low"] is None and not row["better (interval above 0)"]
        if row["labelled fraction"] == 1.0:
            assert pairs == m["folds"] * len(m["seeds"])
    assert m["block_size_rule"]["block_size_rule"].startswith("auto") and m["block_size_deg"] > 0.5
    assert m["block_size_deg"] == pytest.approx(m["block_size_rule"]["block_size_deg"])
    for model in m["grids"]:           # every model chose from a declared grid
        chosen = sum(n for key, n in m["choices"].items() if key.startswith(f"{model} | "))
        assert chosen == m["folds"] * len(m["seeds"]), model
    assert {"transfer: aligned, photo alone", "transfer: raw gps"} <= set(m["transfer_macro_f1"])
    assert "photo + satellite + gps | aligned" in m["any_modality_macro_f1"]
    assert "aligned | level2 | 1" in m["label_efficiency_macro_f1"]


def test_environment_comparison(run):
    """Notebook 04 compares GPS, env and both, and the images with and without env, on the same folds."""
    m = metrics(run, "04_classify_habitats")
    assert set(m["env_covariates"]) == set(hh.environment.COVARIATES)
    assert "koppen_main=3" in m["env_features"] and "coast_km:missing" in m["env_features"]
    assert all(count == 0 for count in m["env_missing"].values())       # demo sites lie on land, inside ERA5
    env = m["env_comparison_macro_f1"]
    assert set(env) == {"GPS alone (raw GeoCLIP)", "k-NN on coordinates", "env alone (raw covariates)",
                         "GPS + env, raw concatenated", "GPS + env, aligned",
                         "photo + satellite + GPS, raw concatenated",
                         "photo + satellite + GPS + env, raw concatenated", "photo + satellite + GPS, aligned (above)"}
    majority = m["models"]["majority"]["level1"]["macro_f1"]
    # climate says something: measured 0.134 against 0.058 (tiny demo, blocks of 5.55° from the labels'
    # range, first seed)
    assert env["env alone (raw covariates)"]["level1"]["mean"] > majority + 0.05
    for row in env.values():                 # first seed only (the same folds: tests/test_evaluation.py)
        assert all(0 <= row[f"level{k}"]["mean"] <= 1 for k in (1, 2, 3))


def test_map(run):
    m = metrics(run, "05_map_habitats")
    profile = hh.profiles.get("tiny")
    assert 100 < m["n_cells"] < 600
    assert m["hierarchy_consistent"]
    assert sum(m["level1_share"].values()) == pytest.approx(1.0)
    assert 0 < m["mean_entropy_l3"] < 3.2  # log(24) = 3.18 is the maximum
    assert (run[0] / "outputs" / "05_map_habitats" / "habitat_map_points.parquet").exists()
    assert profile.map_resolution_deg == m["resolution_deg"]
    assert m["geotiffs"]["level3"] == ["habitat_level3.tif", "habitat_level3_legend.csv", "habitat_level3_uncertainty.tif"]
    import rasterio

    with rasterio.open(run[0] / "outputs" / "05_map_habitats" / "habitat_level1.tif") as src:
        values = set(src.read(1).ravel()) - {0}
        classes = {src.tags(1)[f"class_{v}"].split()[0] for v in values}
    assert classes == set(m["level1_share"])


def test_location_check(run):
    """Chapter 5's location check (hh.qc): test sites scored, a flag share near the false-alarm rate,
    and the planted-displacement table for both block choices; chapter 6 runs the label check on real
    LUCAS points. No AUC is asserted here: on these data the check sees little (book/results.md)."""
    qc = metrics(run, "05_map_habitats")["qc"]
    assert qc["test_sites"] > 0 and 0 <= qc["flagged"] <= qc["test_sites"]
    assert qc["flagged"] <= 3 * qc["false_alarm"] * qc["test_sites"] + 3   # calibrated on validation blocks
    for rows, scores in [(qc["displacement"], {"cross_modal_photo", "cross_modal_satellite", "label_surprise"}),
                         (metrics(run, "06_lucas_land_cover")["qc_displacement"], {"label_surprise"})]:
        assert {r["distance_km"] for r in rows} == {1.0, 5.0, 25.0, 100.0} and len({r["blocks"] for r in rows}) == 2
        scored = {r["score"] for r in rows if r["roc_auc"] is not None}        # chapter 6 has no image
        assert scored == scores | {"p_combined", "random", "nearest_same_label_km"}
        for r in rows:
            assert r["roc_auc"] is None or 0 <= r["roc_auc"] <= 1
            assert r["n_displaced"] <= r["n_sites"] and r["not_moved"] == 0


@pytest.mark.parametrize("name, figures, maps", [("01_explore_data", 4, 1), ("02_extract_embeddings", 1, 0),
                                                 ("03_contrastive_alignment", 3, 0), ("04_classify_habitats", 1, 0),
                                                 ("05_map_habitats", 3, 1), ("06_lucas_land_cover", 5, 0)])
def test_executed_notebooks_show_their_figures(run, name, figures, maps):
    import json

    nb = json.loads((run[0] / "notebooks" / f"{name}.ipynb").read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    pngs = sum("image/png" in o.get("data", {}) for o in outputs)
    folium_maps = sum("leaflet" in "".join(o.get("data", {}).get("text/html", "")).lower() for o in outputs)
    assert pngs >= figures, f"{name}: {pngs} figures"
    assert folium_maps >= maps, f"{name}: {folium_maps} folium maps"


def test_papermill_parameters_are_hidden_in_the_book(run):
    """Papermill's injected-parameters cell repeats the parameters: the book leaves it out."""
    import json

    for nb in hh.notebooks.notebook_paths():
        cells = json.loads((run[0] / "notebooks" / nb.name).read_text())["cells"]
        injected = [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])]
        assert len(injected) == 1 and "remove-cell" in injected[0]["metadata"]["tags"], nb.name
        # DATA goes only to the chapters that take it
        assert ("DATA = \"demo\"" in "".join(injected[0]["source"])) == hh.notebooks.reads_data(nb), nb.name


def test_lucas_case_study(run):
    """Chapter 6 on real LUCAS points (tiny: a 400-point subsample, one seed): every model at every
    level, the classical baselines beside the project's models, the paired best-versus-best rows,
    the EUNIS crosswalk and a map of one country written as a GeoTIFF whose classes are the map's."""
    import rasterio

    m = metrics(run, "06_lucas_land_cover")
    assert m["n_points"] == 14613 and m["n_sites"] == 400 and m["seeds"] == [0] and m["folds"] == 3
    assert m["label_scheme"] == "lucas-lc1" and "Eurostat" in m["attribution"]
    assert set(m["project_models"]) == {"aligned", "aligned + raw", "raw gps", "raw env", "raw concatenated"}
    assert {"random forest on coordinates + env", "k-NN on coordinates", "majority"} == set(m["baseline_models"])
    assert m["control_models"] == [hh.evaluation.MLP]
    for model in m["project_models"] + m["baseline_models"] + m["control_models"]:
        assert set(m["models"][model]) == {"level1", "level2", "level3"}, model
    majority = m["models"]["majority"]["level1"]["macro_f1"]
    # real labels, location and climate only: every trained model beats the majority at level 1
    for model in m["project_models"] + ["random forest on coordinates + env"]:
        assert m["models"][model]["level1"]["macro_f1"] > majority + 0.05, model
    rows = {r["level"]: r for r in m["best_versus"]}
    assert set(rows) == {1, 2, 3}
    for r in rows.values():
        assert r["model"] in m["project_models"] and r["baseline"] in m["baseline_models"]
        assert r["pairs"] == 3 and r["ci_low"] <= r["difference"] <= r["ci_high"]
    # the capacity control: aligned and aligned + raw against the MLP, the MLP against raw concatenated
    control = {(r["level"], r["model"], r["minus"]): r for r in m["capacity_control"]}
    assert set(control) == {(level, a, b) for level in (1, 2, 3) for a, b in [
        ("aligned", hh.evaluation.MLP), ("aligned + raw", hh.evaluation.MLP), (hh.evaluation.MLP, "raw concatenated")]}
    for r in control.values():
        assert r["ci_low"] <= r["difference"] <= r["ci_high"] and r["wins"].endswith("/3")
        assert r["difference"] == pytest.approx(r["model mean"] - r["minus mean"])
    assert m["eunis_l1"]["crosswalk"]["B"] == "V" and m["eunis_l1"]["crosswalk"]["A"] is None
    assert m["map"]["n_cells"] > 100 and 0 < m["map"]["mean_p_l1"] <= 1
    with rasterio.open(run[0] / "outputs" / "06_lucas_land_cover" / m["map"]["geotiff"]) as src:
        values = set(src.read(1).ravel()) - {0}
        assert {src.tags(1)[f"class_{v}"].split()[0] for v in values} == set(m["map"]["level1_share"])


def test_student_copies_of_the_notebooks_stop_at_their_first_exercise(tmp_path, tiny_book):
    """Student copies of the six notebooks, checked on the session's `tiny` run of the sources
    (tests/conftest.py) instead of a second run. A copy run top to bottom executes the source's cells up
    to and including its first exercise stub (solutions sit after their stub), then the call of that stub:
    1. the copy's code cells before its first call are the source's, in order, and each ran cleanly in
       the source run, with the same state: the earlier chapters wrote nothing while their exercises
       ran (papermill's time stamps against the files' modification times), and metrics.json was
       written before;
    2. the call calls the stub (that every stub raises NotImplementedError("Exercise N.M: ...") is
       tests/test_workshop.py::test_source_notebooks_follow_the_convention).
    The mechanics of a real papermill run of a copy: test_the_student_copy_runs_up_to_the_exercise."""
    copies = hh.workshop.make_student_copies(hh.notebooks.NOTEBOOK_DIR, tmp_path / "workshop", profile="tiny")
    assert [c.stem for c in copies] == [p.stem for p in hh.notebooks.notebook_paths()]
    for copy in copies:
        student = json.loads(copy.read_text())
        executed_path = tiny_book.out / "notebooks" / copy.name
        executed = {c["id"]: c for c in json.loads(executed_path.read_text())["cells"] if c["cell_type"] == "code"}
        code = [c for c in student["cells"] if c["cell_type"] == "code"]
        calls = [i for i, c in enumerate(code) if "exercise-call" in c["metadata"].get("tags", [])]
        if copy.stem[:2] in WITH_EXERCISES:
            assert calls, f"{copy.name}: no exercise"
        stop = calls[0] if calls else len(code)
        ran = [cid for cid, c in executed.items() if "injected-parameters" not in c["metadata"].get("tags", [])
               and "solution" not in c["metadata"].get("tags", [])]
        assert [c["id"] for c in code[:stop]] == ran[:stop], copy.name
        for cell in code[:stop]:
            source = executed[cell["id"]]
            assert "".join(cell["source"]) == "".join(source["source"]) or "parameters" in cell["metadata"]["tags"]
            assert source["execution_count"] is not None, f"{copy.name}: cell {cell['id']} did not run"
            assert not [o for o in source["outputs"] if o["output_type"] == "error"], f"{copy.name}: {cell['id']}"
        assert hh.workshop.written_during_exercises(executed_path, [tiny_book.out, tiny_book.cache]) == [], copy.name
        # written, and not while the exercises ran (above): before them
        assert (tiny_book.out / "outputs" / copy.stem / "metrics.json").exists(), copy.name
        if calls:
            [first, *_] = hh.workshop.find_exercises(student, copy.stem)
            assert first.call_cell == code[stop]["id"] and first.number == f"{int(copy.stem[:2])}.1"
            called = {n.func.id for n in ast.walk(ast.parse("".join(code[stop]["source"])))
                      if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            assert first.function in called, f"{copy.name}: the first call does not call {first.function}"
