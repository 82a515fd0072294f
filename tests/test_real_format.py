"""The notebooks under papermill (`tiny`) with DATA naming real files the demo did not make.

The data spec (tests/real_format.py) names the 7 real LUCAS points with their photos, the six real
BigEarthNet-S2 patches and a sample of the real LUCAS 2015 points, with LUCAS land-cover (LC1)
labels: photos and patches exist for a handful of sites only, classes are tiny, no site has both a
photo and a patch. Every chapter must still run to the end, saying in one line what it could not do.
"""

import json

import pytest

import habitat_helpers as hh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_dir):
    from real_format import write_real_spec

    folder = tmp_path_factory.mktemp("real")
    spec = write_real_spec(folder / "data", shared_dir, n_points=200)
    out = folder / "book"
    # fewer ablation variants, folds and label fractions than the book: the run stays a few minutes
    smaller = {"ABLATION_RADII_KM": [0.0, 5.0], "FOLDS": 3, "N_SEEDS": 1, "LABEL_FRACTIONS": [1.0]}
    chapters = [p for p in hh.notebooks.notebook_paths() if hh.notebooks.reads_data(p)]   # not the LUCAS study
    timings = hh.notebooks.run_all("tiny", 0, out, chapters, progress=False, data=str(spec),
                                   extra_parameters=smaller)
    return out, timings


def metrics(run, name):
    return hh.metrics.read_metrics(run[0] / "outputs" / name)


def printed(run, name) -> str:
    cells = json.loads((run[0] / "notebooks" / f"{name}.ipynb").read_text())["cells"]
    return "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code"
                   for o in c.get("outputs", []))


def test_every_chapter_ran_on_the_real_files(run):
    for nb in hh.notebooks.notebook_paths():
        if not hh.notebooks.reads_data(nb):
            continue
        m = metrics(run, nb.stem)
        assert m["data"] == "real-formats" and m["synthetic"] is False and m["profile"] == "tiny", nb.stem


def test_explore_reads_every_source_in_the_lc1_scheme(run):
    m = metrics(run, "01_explore_data")
    assert m["label_scheme"] == "lucas-lc1" and m["ceiling_accuracy"] is None
    assert m["n_sites_by_source"] == {"lucas": 7, "bigearthnet": 6, "lucas_points_sample": 200}
    assert m["n_with_photos"] == 7 and m["n_with_satellite"] == 6
    assert m["n_labelled"]["level1"] == 207                       # the patches have no LC1 label
    assert m["codes_per_level"]["1"] == 8                          # A .. H


def test_embeddings_cover_the_few_images(run):
    m = metrics(run, "02_extract_embeddings")
    assert m["n_sites_with"] == {"photo": 7, "satellite": 6, "gps": 213}
    assert m["all_finite"]


def test_alignment_says_what_it_could_not_score(run):
    assert "photo → satellite: 0 test sites have both inputs: not scored" in printed(run, "03_contrastive_alignment")


def test_classification_scores_the_lc1_levels(run):
    m = metrics(run, "04_classify_habitats")
    assert m["hierarchy_consistent"]
    majority = m["models"]["majority"]["level1"]
    assert m["models"]["k-NN on coordinates"]["level1"]["n"] == majority["n"] > 30
    for level in ("level1", "level2", "level3"):
        assert 0 <= m["models"]["raw gps"][level]["macro_f1"] <= 1


def test_map_uses_lc1_classes(run):
    m = metrics(run, "05_map_habitats")
    assert m["hierarchy_consistent"]
    lc1 = set(hh.labels.get("lucas-lc1").codes(1))
    assert set(m["level1_share"]) <= lc1
