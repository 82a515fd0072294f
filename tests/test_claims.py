"""The book's central claim, read from the `book` profile's executed notebooks (`make book`).

Skipped unless ``build/outputs/04_classify_habitats/metrics.json`` exists and comes from the
``book`` profile; `.ci/run` runs this file after `make book`.
"""

import json
from pathlib import Path

import pytest

METRICS = Path(__file__).resolve().parents[1] / "build" / "outputs" / "04_classify_habitats" / "metrics.json"


@pytest.fixture(scope="module")
def book():
    if not METRICS.exists():
        pytest.skip("run `make book` first")
    m = json.loads(METRICS.read_text())
    if m["profile"] != "book" or "claim" not in m:
        pytest.skip("metrics are from another profile or an older notebook: run `make book`")
    return m


@pytest.mark.xfail(strict=True, reason=(
    "measured on demo v4 (issue 6 note): with all labels the raw satellite embedding beats the aligned model "
    "at levels 2 and 3 (macro-F1 0.834 vs 0.804, 0.391 vs 0.355, 5 spatial folds); strict, so this "
    "fails loudly once the claim holds"))
def test_aligned_beats_best_mono_scale_by_more_than_fold_std_at_levels_2_and_3(book):
    rows = [r for r in book["claim"] if r["labelled fraction"] == 1.0]
    assert {r["level"] for r in rows} == {2, 3}
    for r in rows:
        assert r["beats by more than the std"], r


def test_claim_table_is_complete_and_consistent(book):
    best = book["best_mono_scale"]
    for r in book["claim"]:
        aligned = book["label_efficiency_macro_f1"][f"aligned | level{r['level']} | {r['labelled fraction']:g}"]
        assert r["aligned"] == pytest.approx(aligned)
        assert r["difference"] == pytest.approx(r["aligned"] - r[best])
