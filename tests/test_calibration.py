"""The demo's calibration (issue 16): each input's probe within a stated tolerance of the published
real-data figure, read from the `book` profile's executed notebooks (`make book`).

Skipped unless ``build/outputs/02_extract_embeddings/metrics.json`` exists and comes from the
``book`` profile; `.ci/run` runs this file after `make book`. The location + environment figure is
the one chapter 6 measures on real LUCAS points, so that row needs chapter 6's output too.
"""

import json
from pathlib import Path

import pandas as pd
import pytest

import habitat_helpers as hh

OUTPUTS = Path(__file__).resolve().parents[1] / "build" / "outputs"


def _metrics(notebook: str) -> dict:
    path = OUTPUTS / notebook / "metrics.json"
    if not path.exists():
        pytest.skip("run `make book` first")
    m = json.loads(path.read_text())
    if m.get("profile") != "book":
        pytest.skip(f"{notebook} ran under another profile: run `make book`")
    return m


@pytest.fixture(scope="module")
def table():
    ch2 = _metrics("02_extract_embeddings")
    if not ch2.get("calibration_probes"):
        pytest.skip("chapter 2 ran on real data or is older than the calibration section")
    real = _metrics(hh.report.REAL_NOTEBOOK)["models"]["raw concatenated"]["level1"]["macro_f1"]
    return hh.calibration.calibration_table(
        pd.DataFrame(ch2["calibration_probes"]), {"gps + env": real}, ch2.get("demo_ceilings")
    )


def test_every_published_figure_has_a_probe(table):
    assert len(table) == len(hh.calibration.PUBLISHED_FIGURES)
    assert table["demo probe (macro-F1)"].notna().all()
    assert table["gap"].notna().all()


@pytest.mark.parametrize("row", range(len(hh.calibration.PUBLISHED_FIGURES)))
def test_probe_within_tolerance_of_published_figure(table, row):
    r = table.iloc[row]
    assert abs(r["gap"]) <= hh.calibration.CALIBRATION_TOLERANCE, r[
        ["inputs", "level", "demo probe (macro-F1)", "gap"]
    ]


def test_probe_stays_below_the_generating_ceiling(table):
    """A probe cannot read more than the cues show: each row's accuracy ceiling is above its macro-F1."""
    known = table.dropna(subset=["ceiling"])
    assert len(known) == len(table)
    assert (known["demo probe (macro-F1)"] <= known["ceiling"] + 0.02).all(), known
