"""The shipped copy of the real LUCAS 2015 points: the script that writes it and its loader.

The script's tests write their own small table in the format of
``../shared/data/lucas_points/lucas2015_points_west_north.csv``, with bad rows planted.
Only the last test needs ``../shared`` (and skips without it).
"""

import importlib.util
import re
from collections import Counter

import pandas as pd
import pytest

import habitat_helpers as hh

SHIPPED = hh.paths.resource("lucas2015_points.csv")
ATTRIBUTION = "Source: Eurostat, LUCAS 2015 primary data"
SHARED_FILE = "data/lucas_points/lucas2015_points_west_north.csv"
# Level-1 counts of the 14,613 points, from ../shared/README.md.
LEVEL1 = {"B": 5725, "C": 4772, "E": 2903, "D": 638, "F": 493, "H": 44, "A": 33, "G": 5}
COUNTRIES = set("ES PT FR BE NL LU DE DK UK IE SE FI EE LV LT".split())

SOURCE_HEADER = "point_id,year,lat,lon,lc1,lc1_label,lu1,lu1_label,nuts0,nuts2"
SOURCE_ROWS = [
    "30001001,2015,43.123456789,-1.987654321,B11,Common wheat,U111,Agriculture,FR,FRI1",
    "30001002,2015,,2.500000000,E20,Grassland without tree/shrub cover,U111,Agriculture,FR,FRJ2",  # no lat
    "30001003,2015,45.000000000,3.000000000,Z99,Nothing,U111,Agriculture,FR,FRK2",  # unknown lc1
    "30001001,2015,43.100000000,-1.900000000,C10,Broadleaved woodland,U120,Forestry,FR,FRI1",  # duplicate
    "30001004,2015,40.000004900,-0.000000100,C10,Broadleaved woodland,U120,Forestry,ES,ES24",
    "20001005,2015,60.123456000,24.999999999,E20,Grassland without tree/shrub cover,,,FI,FI1B",
]


@pytest.fixture(scope="module")
def script():
    path = hh.paths.PROJECT_ROOT / "scripts/build_lucas_points.py"
    spec = importlib.util.spec_from_file_location("build_lucas_points", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def source(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("\n".join([SOURCE_HEADER, *SOURCE_ROWS]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def shipped():
    return hh.datasets.lucas_points(verbose=False)


def header_of(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    comments = [line for line in lines if line.startswith("#")]
    return comments, lines[len(comments) :]


def rows_written(path) -> tuple[int, int]:
    """(points written, source rows read), as the file's header says."""
    comments, _ = header_of(path)
    match = re.search(r"Rows: (\d+) points written of (\d+) source rows", "\n".join(comments))
    return int(match.group(1)), int(match.group(2))


# --- the script ---------------------------------------------------------------------------------


def test_script_writes_columns_header_and_rounded_points(script, source, tmp_path, capsys):
    out = tmp_path / "points_compact.csv"
    result = script.main(["--source", str(source), "--out", str(out)])
    comments, lines = header_of(out)
    text = "\n".join(comments)
    assert comments[1] == f"# {ATTRIBUTION}"
    for needed in (
        "Commission Decision 2011/833/EU",
        "d'Andrimont et al. 2020, Sci. Data 7:352, https://doi.org/10.1038/s41597-020-00675-z",
        "theoretical points of the topsoil sub-sample (about 1 point in 10)",
        "artificial land (A), water (G) and wetlands (H) are nearly absent",
        "scripts/build_lucas_points.py",
    ):
        assert needed in text
    assert lines[0] == "point_id,lat,lon,lc1,lu1,country"
    assert lines[1:] == [  # sorted by point id; 5 decimals; no "-0.00000"
        "20001005,60.12346,25.00000,E20,,FI",
        "30001001,43.12346,-1.98765,B11,U111,FR",
        "30001004,40.00000,0.00000,C10,U120,ES",
    ]
    assert result["written"] == 3 and result["rows_read"] == 6
    assert rows_written(out) == (3, 6)
    assert "Countries (3): ES FI FR." in text


def test_script_counts_bad_rows_by_reason(script, source, tmp_path, capsys):
    result = script.main(["--source", str(source), "--out", str(tmp_path / "out.csv")])
    skipped = {reason: n for reason, n in result["skipped"].items() if n}
    assert skipped == {"missing coordinates": 1, "unknown lc1": 1, "duplicated point id": 1}
    assert result["where"]["unknown lc1"] == ["line 4 (point 30001003: 'Z99')"]
    printed = capsys.readouterr().out
    assert "skipped 3, by reason:" in printed
    for line in ("missing coordinates: 1", "unknown lc1: 1", "duplicated point id: 1", "blank lc1: 0"):
        assert f"  {line}" in printed
    assert "missing coordinates 1, unknown lc1 1, duplicated point id 1" in (tmp_path / "out.csv").read_text()


def test_script_output_is_byte_identical_on_a_second_run(script, source, tmp_path, capsys):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    script.main(["--source", str(source), "--out", str(first)])
    script.main(["--source", str(source), "--out", str(second)])
    assert first.read_bytes() == second.read_bytes()
    gz_first, gz_second = tmp_path / "a.csv.gz", tmp_path / "b.csv.gz"  # gzip: mtime 0, no name
    script.main(["--source", str(source), "--out", str(gz_first)])
    script.main(["--source", str(source), "--out", str(gz_second)])
    assert gz_first.read_bytes() == gz_second.read_bytes()


def test_script_defaults_are_the_shared_file_and_the_package_resource(script):
    assert script.DEFAULT_SOURCE == hh.paths.PROJECT_ROOT.parent / "shared" / SHARED_FILE
    assert script.DEFAULT_OUT == SHIPPED
    assert script.ATTRIBUTION == ATTRIBUTION


# --- the loader on any file of the same columns ------------------------------------------------


def test_loader_reads_the_script_output_and_counts_what_it_cannot_use(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text(
        "# my comment\n"
        "point_id,lat,lon,lc1,lu1,country\n"
        "1,43.1,-1.9,B11,U111,FR\n"
        "2,44.2,0.5,Q99,U111,FR\n"  # unknown code: kept unlabelled, counted
        "3,,0.5,E20,U111,FR\n"  # missing lat: skipped, counted
        "4,45.0,1.0,E20,U111\n"  # malformed: skipped, counted
        "5,42.0,-3.5,,,ES\n",  # blank lc1: kept unlabelled, counted
        encoding="utf-8",
    )
    sites = hh.datasets.lucas_points(path, verbose=False).set_index("site_id")
    report = sites.attrs["load_report"]
    assert list(sites.index) == ["lucas:1:2015", "lucas:2:2015", "lucas:5:2015"]
    assert report["skipped"] == {"malformed row (wrong number of fields)": 1, "missing coordinates": 1}
    assert report["where"]["malformed row (wrong number of fields)"] == ["line 6: 5 fields, the header has 6"]
    assert report["notes"]["unknown LUCAS land cover (LC1) code (site kept unlabelled)"] == 1
    assert report["notes"]["no label (site kept unlabelled)"] == 1
    assert sites.attrs["unknown_codes"] == {"Q99": 1}
    assert sites.loc["lucas:1:2015", ["label_l1", "label_l2", "label_l3", "lu1", "country"]].tolist() == [
        "B",
        "B1",
        "B11",
        "U111",
        "FR",
    ]
    assert pd.isna(sites.loc["lucas:2:2015", "label"])
    assert pd.isna(sites.loc["lucas:5:2015", "lu1"]) and sites.loc["lucas:5:2015", "country"] == "ES"


def test_loader_reads_the_source_format_too(source):
    sites = hh.datasets.lucas_points(source, verbose=False)
    assert sites.attrs["load_report"]["skipped"] == {"missing coordinates": 1, "duplicated site id": 1}
    assert set(sites["country"]) == {"FR", "ES", "FI"}  # from nuts0
    assert sites.set_index("site_id").loc["lucas:30001001:2015", "label"] == "B11"  # the first row


# --- the shipped copy ---------------------------------------------------------------------------


def test_shipped_copy_has_every_point_but_the_reported_skips(shipped):
    written, read = rows_written(SHIPPED)
    assert read == 14613
    assert len(shipped) == written
    assert shipped.attrs["load_report"]["skipped"] == {}
    assert shipped["site_id"].is_unique and (shipped["source"] == "lucas").all()
    assert SHIPPED.stat().st_size < 600_000


def test_shipped_copy_level1_counts_and_countries(shipped):
    written, read = rows_written(SHIPPED)
    counts = Counter(shipped["label_l1"].dropna())
    missing = {code: n - counts.get(code, 0) for code, n in LEVEL1.items()}
    assert all(n >= 0 for n in missing.values()) and sum(missing.values()) == read - written
    assert set(counts) == set(LEVEL1)
    assert set(shipped["country"]) == COUNTRIES


def test_shipped_copy_hierarchy_is_consistent(shipped):
    scheme = hh.labels.get("lucas-lc1")
    assert shipped["label_l1"].notna().all()
    for l1, l2, l3 in set(zip(shipped["label_l1"], shipped["label_l2"], shipped["label_l3"])):
        if l2 is not None:
            assert scheme.parent(l2) == l1
        if l3 is not None:
            assert l2 is not None and scheme.parent(l3) == l2
    row = shipped[shipped["label"] == "E20"].iloc[0]
    assert (row["label_l1"], row["label_l2"], row["label_l3"]) == ("E", "E2", "E20")


def test_shipped_copy_carries_the_attribution(shipped):
    assert shipped.attrs["attribution"] == ATTRIBUTION
    assert shipped.attrs["label_scheme"] == "lucas-lc1"
    assert f"# {ATTRIBUTION}\n" in SHIPPED.read_text(encoding="utf-8")


def test_countries_filter_and_its_error(shipped):
    both = hh.datasets.lucas_points(countries=("fr", "ES"), verbose=False)
    assert set(both["country"]) == {"FR", "ES"}
    assert len(both) == shipped["country"].isin(["FR", "ES"]).sum()
    left_out = both.attrs["load_report"]["skipped"]
    assert sum(left_out.values()) == len(shipped) - len(both)
    with pytest.raises(ValueError, match=r"unknown countries \['XX'\].*BE, DE"):
        hh.datasets.lucas_points(countries=("FR", "XX"), verbose=False)


# --- against the shared source -------------------------------------------------------------------


def test_shipped_copy_is_what_the_script_writes_from_the_shared_file(script, shared_dir, tmp_path, capsys):
    source = shared_dir / SHARED_FILE
    if not source.exists():
        pytest.skip(f"{SHARED_FILE} absent from ../shared")
    out = tmp_path / "lucas2015_points.csv"
    script.main(["--source", str(source), "--out", str(out)])
    assert out.read_bytes() == SHIPPED.read_bytes()
