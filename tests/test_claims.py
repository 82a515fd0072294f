"""The book's central claim, read from the `book` profile's executed notebooks (`make book`).

Skipped unless ``build/outputs/04_classify_habitats/metrics.json`` exists and comes from the
``book`` profile; `.ci/run` runs this file after `make book`.

The claim: with the labels of the real sources, the aligned model beats the best mono-scale
baseline at EUNIS levels 2 and 3, i.e. the paired 95 % interval of the macro-F1 difference over
folds x seeds lies above 0. The expected failure below is strict and raises only on the claim's
own assertion, so a schema change (a missing key) fails the run instead of passing as expected.
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


def _full_labels(book) -> dict[int, dict]:
    rows = {r["level"]: r for r in book["claim"] if r["labelled fraction"] == 1.0}
    assert set(rows) == {2, 3}
    return rows


def test_claim_rows_are_paired_intervals_over_at_least_three_seeds(book):
    assert len(book["seeds"]) >= 3
    pairs = book["folds"] * len(book["seeds"])
    best = book["best_mono_scale"]
    for r in book["claim"]:
        if r["labelled fraction"] == 1.0:
            assert r["aligned wins"].endswith(f"/{pairs}")
        assert r["ci_low"] < r["difference"] < r["ci_high"]
        assert r["difference"] == pytest.approx(r["aligned"] - r[best])
        assert r["better (interval above 0)"] == (r["ci_low"] > 0)
        aligned = book["label_efficiency_macro_f1"][f"aligned | level{r['level']} | {r['labelled fraction']:g}"]
        assert r["aligned"] == pytest.approx(aligned)


def test_measured_direction_at_levels_2_and_3(book):
    """What the book measured (seed 0-2, demo v5, nested selection, blocks from the labels): the best
    mono-scale baseline ahead of the aligned model at levels 2 and 3. When this fails, the result
    has moved: read the new numbers and update the book's text and this test."""
    for level, r in _full_labels(book).items():
        assert r["difference"] < 0, (level, r)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "measured with the book profile (3 seeds x 3 folds, blocks from the labels' autocorrelation range, "
    "nested selection): the best mono-scale baseline is ahead of the aligned model at levels 2 and 3; "
    "see the issue 16 note for the numbers"))
def test_aligned_beats_best_mono_scale_at_levels_2_and_3(book):
    rows = _full_labels(book)
    for level in (2, 3):
        assert rows[level]["ci_low"] > 0, rows[level]


def test_alignment_retrieval_on_the_book():
    """Chapter 3 on the book profile: a photo finds its own satellite patch among the test blocks' patches
    more than twice as often as chance (measured 0.198 against 0.040, seed 0, 247 sites), and below what
    knowing the true level-3 habitat alone would give (0.709): in the demo the habitat is nearly all a
    photo and its patch share."""
    path = METRICS.parents[1] / "03_contrastive_alignment" / "metrics.json"
    if not path.exists():
        pytest.skip("run `make book` first")
    m = json.loads(path.read_text())
    if m["profile"] != "book":
        pytest.skip("metrics are from another profile: run `make book`")
    pair = m["retrieval_after"]["photo_to_satellite"]
    assert pair["recall@10"] > 2 * 10 / pair["n"]
    assert pair["recall@10"] > m["retrieval_before"]["photo_to_satellite"]["recall@10"]
    assert pair["recall@10"] < m["retrieval_habitat_only"]["photo_to_satellite"]["recall@10"]
