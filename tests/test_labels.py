"""Label schemes: EUNIS, LUCAS LC1, CORINE and user CSVs, plus the crosswalks."""

from __future__ import annotations

import csv

import pandas as pd
import pytest

import habitat_helpers as hh
from habitat_helpers import labels


def write_csv(path, rows, header="code,parent,name"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


# --- built-in schemes ---------------------------------------------------------------------


def test_eunis_scheme_agrees_with_hh_eunis():
    scheme = labels.get("eunis")
    assert scheme.levels == (1, 2, 3)
    assert [len(scheme.codes(k)) for k in (1, 2, 3)] == [7, 42, 270]
    for k in (1, 2, 3):
        assert scheme.codes(k) == hh.eunis.codes(k)
    table = hh.eunis.hierarchy()
    for code, parent in zip(table["code"], table["parent"]):
        assert scheme.parent(code) == (parent or None)
        assert scheme.level_of(code) == hh.eunis.level_of(code)
        assert scheme.level_columns(code) == hh.eunis.level_columns(code)
    assert scheme.name_of("T1") == hh.eunis.name("T1")
    assert scheme.children("R2") == hh.eunis.children("R2")


def test_eunis_clean_reuses_esy_parsing():
    scheme = labels.eunis()
    assert scheme.clean("R22, R23!") == "R2"
    assert scheme.clean("Sb") == "S"
    assert scheme.clean("R22, T11") is None  # no common formation
    assert scheme.clean(float("nan")) is None
    with pytest.raises(ValueError, match="XX"):
        scheme.clean("XX")


def test_lucas_lc1_levels_and_ancestors():
    scheme = labels.get("lucas-lc1")
    assert scheme.levels == (1, 2, 3)
    assert scheme.codes(1) == list("ABCDEFGH")
    assert scheme.ancestor("B11", 2) == "B1"
    assert scheme.ancestor("B11", 1) == "B"
    assert scheme.ancestor("B11", 3) == "B11"
    assert scheme.ancestor("B", 2) is None  # coarser than the level
    assert scheme.name_of("B11") == "Common wheat"
    # LUCAS's own "..0" codes for undivided classes are level-3 leaves
    assert [scheme.ancestor("C10", k) for k in (1, 2, 3)] == ["C", "C1", "C10"]
    # the 2018 photo-interpretation codes sit under their own level-2 node
    assert scheme.parent("Bx1") == "Bx" and scheme.parent("Bx") == "B"
    assert scheme.children("Bx") == ["Bx1", "Bx2"]
    assert scheme.level_columns("B1") == {"label_l1": "B", "label_l2": "B1", "label_l3": None}


def test_lucas_clean_normalises_case_and_trailing_zeros():
    scheme = labels.lucas_lc1()
    assert scheme.clean(" b11 ") == "B11"
    assert scheme.clean("BX1") == "Bx1"
    assert scheme.clean("B10") == "B1"  # LUCAS spelling of a level-2 class
    assert scheme.clean("B00") == "B"
    assert scheme.clean("C10") == "C10"  # itself a code
    assert scheme.clean("") is None
    with pytest.raises(ValueError, match="lucas-lc1"):
        scheme.clean("Z99")


def test_every_lucas_code_in_shared_data_is_valid(shared_dir):
    scheme = labels.lucas_lc1()
    sources = [shared_dir / "data/lucas_points/lucas2015_points_west_north.csv",
               shared_dir / "data/lucas_sample/metadata_subset.csv"]
    sources = [s for s in sources if s.exists()]
    if not sources:
        pytest.skip("no LUCAS table under shared/data")
    seen = {}
    for source in sources:
        with source.open(newline="") as f:
            seen.update((r["lc1"], r["lc1_label"]) for r in csv.DictReader(f))
    assert len(seen) > 10
    for code, label in seen.items():
        assert scheme.is_valid(code), code
        assert scheme.name_of(code) == " ".join(label.split()), code


def test_corine_sizes_and_clean():
    scheme = labels.get("corine")
    assert [len(scheme.codes(k)) for k in scheme.levels] == [5, 15, 44]
    assert scheme.clean("2.1.1") == "211"
    assert scheme.clean(211) == "211"
    assert scheme.clean(211.0) == "211"
    assert scheme.ancestor("211", 1) == "2"
    assert scheme.name_of("211") == "Non-irrigated arable land"
    with pytest.raises(ValueError, match="corine"):
        scheme.clean("9.9.9")


def test_get_rejects_unknown_names_and_caches():
    with pytest.raises(ValueError, match="lucas-lc1"):
        labels.get("eunis2012")
    assert labels.get("LUCAS_LC1") is labels.get("lucas-lc1")
    scheme = labels.corine()
    assert labels.get(scheme) is scheme


def test_table_is_a_copy():
    scheme = labels.corine()
    table = scheme.table
    assert list(table.columns[:4]) == ["code", "level", "parent", "name"]
    table.loc[0, "name"] = "changed"
    assert scheme.table.loc[0, "name"] != "changed"


# --- user CSVs ------------------------------------------------------------------------------


def test_user_csv_parents_are_not_prefixes(tmp_path):
    path = write_csv(tmp_path / "my_habitats.csv", [
        "A,,Open land", "B,,Closed land", "X9,A,Dunes", "B7,X9,Grey dunes",
    ])
    scheme = labels.get(str(path))
    assert scheme.name == "my_habitats"
    assert scheme.levels == (1, 2, 3)
    assert scheme.ancestor("X9", 1) == "A"
    assert scheme.ancestor("B7", 1) == "A"  # not "B", though the code starts with B
    assert scheme.ancestor("B7", 2) == "X9"
    assert scheme.level_columns("B7") == {"label_l1": "A", "label_l2": "X9", "label_l3": "B7"}
    assert scheme.children("B") == []


def test_user_csv_with_comments_level_column_and_four_levels(tmp_path):
    path = tmp_path / "deep.csv"
    path.write_text("# my own scheme\ncode,level,parent,name\n"
                    "1,1,,a\n11,2,1,b\n111,3,11,c\n1111,4,111,d\n")
    scheme = labels.from_csv(path, title="Deep")
    assert scheme.levels == (1, 2, 3, 4)
    assert scheme.clean(1111) == "1111"
    assert scheme.level_columns("1111")["label_l4"] == "1111"


@pytest.mark.parametrize("rows, message", [
    (["A,,Open", "X9,Q,Dunes"], r"line 3 \('X9' has parent 'Q'\)"),
    (["A,,Open", "A1,A,Dunes", "A1,A,Again"], r"repeats codes: line 3 \('A1'\), line 4 \('A1'\)"),
    (["A,,Open", "B,C,x", "C,B,y"], r"cycle B -> C -> B at line 3 \('B'\), line 4 \('C'\)"),
    (["A,A,Self"], r"cycle A -> A"),
])
def test_bad_csv_names_the_rows(tmp_path, rows, message):
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(ValueError, match=message):
        labels.from_csv(path)


def test_bad_tables_missing_column_and_wrong_level(tmp_path):
    with pytest.raises(ValueError, match="lacks column"):
        labels.LabelScheme(pd.DataFrame({"code": ["A"], "name": ["x"]}), name="t")
    path = write_csv(tmp_path / "lv.csv", ["A,1,,x", "A1,1,A,y"], header="code,level,parent,name")
    with pytest.raises(ValueError, match=r"level column disagrees .* line 3 \('A1'\)"):
        labels.from_csv(path)
    with pytest.raises(FileNotFoundError):
        labels.get(tmp_path / "absent.csv")


# --- crosswalks -----------------------------------------------------------------------------


@pytest.mark.parametrize("code, formation", [
    ("B", "V"), ("C", "T"), ("D", "S"), ("E", "R"), ("F", "U"), ("H", "Q"),
    ("A", None), ("G", None), ("B11", "V"), ("Bx1", "V"), ("C10", "T"), ("H1", "Q"),
])
def test_lucas_lc1_to_eunis_l1(code, formation):
    assert labels.lucas_lc1_to_eunis_l1(code) == formation


def test_lucas_crosswalk_targets_are_eunis_formations():
    formations = {f for f in labels.LUCAS_LC1_TO_EUNIS_L1.values() if f}
    assert formations <= set(labels.eunis().codes(1))
    assert labels.crosswalk(["B11", "G11"], "lucas-lc1", "eunis") == [["V"], []]


def test_corine_eunis_crosswalk_round_trip():
    eunis, clc = labels.eunis(), labels.corine()
    found = labels.corine_to_eunis("211")
    assert found and all(eunis.is_valid(code) for code in found)
    assert labels.corine_to_eunis("2.1.1") == found
    for code in found:
        assert "211" in labels.eunis_to_corine(code)
    assert labels.eunis_to_corine("N11") == ["331"]
    assert "N11" in labels.corine_to_eunis("331")
    # a coarser CLC class collects the links of the classes below it
    assert set(found) <= set(labels.corine_to_eunis("2"))
    assert all(clc.is_valid(c) for e in eunis.codes(3) for c in labels.eunis_to_corine(e))
    with pytest.raises(ValueError, match="no crosswalk"):
        labels.crosswalk(["211"], "corine", "lucas-lc1")


def test_tables_with_the_old_label_names_are_read_with_a_deprecation_warning(tmp_path):
    """Site tables of earlier versions (eunis_code, eunis_l1..3, eunis_candidates) keep working for a
    release: renamed to the scheme-neutral names, with a warning that names them."""
    import numpy as np
    import pandas as pd

    old = pd.DataFrame({"site_id": ["a", "b"], "lat": [48.0, 49.0], "lon": [2.0, 3.0], "eunis_code": ["R22", None],
                        "eunis_l1": ["R", None], "eunis_l2": ["R2", None], "eunis_l3": ["R22", None],
                        "eunis_candidates": [None, None]})
    with pytest.warns(DeprecationWarning, match="eunis_code, eunis_l1, eunis_l2, eunis_l3, eunis_candidates"):
        new = hh.labels.current_names(old)
    assert list(new.columns[3:]) == ["label", "label_l1", "label_l2", "label_l3", "label_candidates"]
    current = new.copy()
    assert hh.labels.current_names(current) is current                  # nothing to rename: no warning
    import geopandas as gpd

    table = gpd.GeoDataFrame(old.assign(photos=[[], []], photo_views=[[], []]),
                             geometry=gpd.points_from_xy(old["lon"], old["lat"]), crs="EPSG:4326")
    path = hh.datasets.write_sites(table, tmp_path / "old.parquet")
    with pytest.warns(DeprecationWarning):
        sites = hh.datasets.read_sites(path)
    assert sites["label_l3"].tolist()[0] == "R22"
    with pytest.warns(DeprecationWarning):
        hh.spatial.resolve_block_size(np.array([48.0, 49.0]), np.array([2.0, 3.0]), old, "auto")
