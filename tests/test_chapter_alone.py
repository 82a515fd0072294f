"""Chapter 4 alone, from an empty cache: it makes what the earlier chapters would have made.

A file of its own so that `pytest -n` (``--dist loadfile``) can run it beside the shared run of
tests/test_notebooks.py.
"""

import pytest

import habitat_helpers as hh

pytestmark = pytest.mark.slow


def test_chapter_4_runs_alone_on_a_new_seed_in_an_empty_cache(tmp_path, monkeypatch):
    """No chapter ran for seed 7: chapter 4 makes the demo and the embeddings itself, says so in
    one line, and records its numbers."""
    import json

    cache = tmp_path / "cache"
    monkeypatch.setenv("HABITAT_HELPERS_CACHE", str(cache))
    chapter = [p for p in hh.notebooks.notebook_paths() if p.stem.startswith("04_")]
    smaller = {"FOLDS": 3, "N_SEEDS": 1, "LABEL_FRACTIONS": [1.0]}   # tests/test_notebooks.py runs the full settings
    hh.notebooks.run_all("tiny", 7, tmp_path / "out", notebooks=chapter, progress=False, extra_parameters=smaller)
    m = hh.metrics.read_metrics(tmp_path / "out" / "outputs" / "04_classify_habitats")
    assert m["seed"] == 7 and m["profile"] == "tiny" and m["hierarchy_consistent"]
    assert m["models"]["aligned"]["level1"]["n"] > 0
    assert (cache / "runs" / "tiny-seed7" / "site_embeddings.npz").exists()
    cells = json.loads((tmp_path / "out" / "notebooks" / "04_classify_habitats.ipynb").read_text())["cells"]
    printed = "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code"
                      for o in c.get("outputs", []))
    assert "embeddings: not in the run folder yet (chapter 2 makes them): making it now" in printed
