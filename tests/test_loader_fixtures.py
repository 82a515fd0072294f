"""The loaders on tiny files in the real formats, written by ``tests/data/generate.py``.

These tests need nothing outside the checkout (no ``../shared``). Every expected number
below follows from the generator's design (the tables in its docstring), not from a run of
the loaders. Loader bugs found on the way, now fixed, are guarded by the tests at the end of
each section: each docstring says what the loader must do.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import habitat_helpers as hh


def _load_generator():
    path = Path(__file__).parent / "data" / "generate.py"
    spec = importlib.util.spec_from_file_location("loader_fixture_generate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()

MALFORMED = "malformed row (wrong number of fields)"
FALLBACK = "GPS missing or not WGS84: theoretical point used"
UNSIGNED = "GPS longitude without East/West in gps_ew: theoretical point used"
UNKNOWN = "unknown EUNIS code (site kept unlabelled)"
FORMATIONS = "EUNIS-ESy codes of different formations (site kept unlabelled)"
NOT_COVERED = "patch does not cover the site (not attached)"
L2A = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return gen.write_all(tmp_path_factory.mktemp("fixtures"), seed=0)


@pytest.fixture(scope="module")
def lucas(files):
    return hh.datasets.read_lucas(files["lucas_table"], photo_root=files["lucas_photos"]).set_index("site_id")


@pytest.fixture(scope="module")
def eva(files):
    return hh.datasets.read_eva(files["eva_header"]).set_index("site_id")


@pytest.fixture(scope="module")
def embal(files):
    return hh.datasets.read_embal(files["embal_table"], photo_root=files["embal_photos"]).set_index("site_id")


def _band_ids(patch: np.ndarray) -> list[int]:
    """The band of each layer, from the generator's values ``100 * position + [0, 50)``."""
    ids = np.floor(patch / 100).reshape(len(patch), -1)
    assert (ids.min(axis=1) == ids.max(axis=1)).all(), "a layer mixes bands"
    return ids[:, 0].astype(int).tolist()


# --- the generator ----------------------------------------------------------------------------

def test_generator_is_deterministic_and_fast(files, tmp_path):
    start = time.perf_counter()
    again = gen.write_all(tmp_path / "again", seed=0)
    assert time.perf_counter() - start < 2.0
    first = sorted(p.relative_to(files["lucas_table"].parents[1]) for p in
                   files["lucas_table"].parents[1].rglob("*") if p.is_file())
    second = sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file())
    assert first == second and len(first) == 84     # 2 + 1 CSVs, 44 + 7 JPEGs, 6 + 2 x 12 GeoTIFFs
    for key in ("lucas_table", "eva_header", "embal_table"):
        assert again[key].read_bytes() == files[key].read_bytes()
    for rel in first:
        assert (tmp_path / "again" / rel).read_bytes() == (files["lucas_table"].parents[1] / rel).read_bytes()
    other = gen.write_all(tmp_path / "other", seed=1)           # the seed changes pixels only
    assert other["lucas_table"].read_bytes() == files["lucas_table"].read_bytes()
    assert (other["sentinel2"] / "1001.tif").read_bytes() != (files["sentinel2"] / "1001.tif").read_bytes()


def test_generator_command_line(tmp_path, capsys):
    gen.main([str(tmp_path / "out"), "--seed", "3"])
    assert (tmp_path / "out/lucas/2015/FR/374/028/37402876C.jpg").is_file()
    assert "eva_header: " in capsys.readouterr().out


def test_generated_files_keep_the_real_quirks(files):
    lines = files["lucas_table"].read_text().splitlines()
    assert len(lines) == 13 and len(lines[0].split(",")) == 53
    assert [len(line.split(",")) for line in lines[1:]].count(55) == 1      # the unquoted label
    raw = pd.read_csv(files["lucas_table"], dtype=str, keep_default_na=False, on_bad_lines="skip")
    assert (raw["gps_long"].astype(float) >= 0).all()                       # sign only in gps_ew
    assert set(raw["gps_ew"]) == {"East", "West", "8"}
    assert {"> 75 %", "50 - 75 %"} <= set(raw["lc1_perc"])
    header = files["eva_header"].read_text(encoding="utf-8").splitlines()[0].split("\t")
    assert {"Relevé area (m²)", "Expert System", "Location uncertainty (m)"} <= set(header)
    embal_header = files["embal_table"].read_text().splitlines()[0].split(",")
    assert embal_header == list(hh.datasets.EMBAL_COLUMNS)                  # the documented schema
    with Image.open(files["lucas_photos"] / "2018/ES/294/819/29481920P.jpg") as im:
        assert im.format == "JPEG" and im.size == (32, 24)


# --- LUCAS ------------------------------------------------------------------------------------

LUCAS_SITES = ["lucas:37402876:2015", "lucas:37442850:2015", "lucas:36062768:2018", "lucas:36082770:2018",
               "lucas:37022842:2018", "lucas:44402990:2015", "lucas:44382986:2015", "lucas:44402990:2018",
               "lucas:43842920:2018", "lucas:29481920:2018", "lucas:28861834:2018"]


def test_lucas_report(lucas):
    report = lucas.attrs["load_report"]
    assert (report["rows_read"], report["kept"]) == (12, 11)
    assert report["skipped"] == {MALFORMED: 1}                                # 37462848
    assert report["where"] == {MALFORMED: ["line 8: 55 fields, the header has 53"]}
    assert report["notes"] == {FALLBACK: 1, "photo W expected but missing under photo_root": 1}
    assert list(lucas.index) == LUCAS_SITES                                  # file order, revisit kept
    assert lucas["on_land"].all() and lucas.crs.to_epsg() == 4326


def test_lucas_west_longitudes_are_negative(lucas):
    assert lucas.loc["lucas:36062768:2018", "lon"] == pytest.approx(-1.55031)  # gps_ew West
    assert lucas.loc["lucas:29481920:2018", "lon"] == pytest.approx(-3.64031)
    assert lucas.loc["lucas:28861834:2018", "lon"] == pytest.approx(-4.02011)
    assert lucas.loc["lucas:37402876:2015", "lon"] == pytest.approx(1.90481)   # East
    assert (lucas["lon"] < 0).sum() == 4             # three West GPS fixes, one signed th_long


def test_lucas_gps_sentinels_fall_back_to_the_theoretical_point(lucas):
    row = lucas.loc["lucas:36082770:2018"]
    assert row["coord_source"] == "theoretical"
    assert (row["lat"], row["lon"]) == (pytest.approx(47.4012), pytest.approx(-1.3004))
    assert row["coord_uncertainty_m"] == pytest.approx(15.0)                 # obs_dist
    assert (lucas["coord_source"] == "gps").sum() == 10
    assert lucas.loc["lucas:37402876:2015", "lat"] == pytest.approx(47.90216)   # GPS, not th_lat
    assert lucas.loc["lucas:37402876:2015", "coord_uncertainty_m"] == pytest.approx(3.0)


def test_lucas_theoretical_coordinates_on_request(files):
    sites = hh.datasets.read_lucas(files["lucas_table"], coordinates="theoretical").set_index("site_id")
    assert (sites["coord_source"] == "theoretical").all()
    assert sites.loc["lucas:36062768:2018", "lon"] == pytest.approx(-1.5502)
    assert FALLBACK not in sites.attrs["load_report"]["notes"]


def test_lucas_dates_in_both_formats(lucas):
    expected = ["2015-06-14", "2015-07-02", "2018-06-18", "2018-07-26", "2018-08-05", "2015-07-21",
                "2015-06-30", "2018-06-12", "2018-07-09", "2018-05-23", "2018-06-02"]
    assert lucas["date"].tolist() == [pd.Timestamp(d) for d in expected]


def test_lucas_photos_per_view(lucas, files):
    expected = {"lucas:37402876:2015": "NESWPC", "lucas:37442850:2015": "NESPC",
                "lucas:36062768:2018": "NESWPC", "lucas:36082770:2018": "NP", "lucas:37022842:2018": "P",
                "lucas:44402990:2015": "NESWPC", "lucas:44382986:2015": "P", "lucas:44402990:2018": "NESWP",
                "lucas:43842920:2018": "NESWP", "lucas:29481920:2018": "NESWPC", "lucas:28861834:2018": "P"}
    assert {site: "".join(views) for site, views in lucas["photo_views"].items()} == expected
    assert lucas["photos"].str.len().sum() == 44
    root = files["lucas_photos"]
    assert lucas.loc["lucas:36082770:2018", "photos"] == [str(root / "2018/FR/360/827/36082770N.jpg"),
                                                          str(root / "2018/FR/360/827/36082770P.jpg")]
    colours = []
    for path in lucas.loc["lucas:37402876:2015", "photos"]:
        with Image.open(path) as im:
            colours.append(tuple(np.asarray(im).reshape(-1, 3).mean(axis=0).round(-1)))
    assert len(set(colours)) == 6                                            # one colour per view


def test_lucas_without_photo_root_gives_gisco_urls(files):
    sites = hh.datasets.read_lucas(files["lucas_table"]).set_index("site_id")
    assert sites["photos"].str.len().sum() == 40                  # views flagged "Photo taken"; no C
    assert sites.loc["lucas:37402876:2015", "photos"][0] == (
        "https://gisco-services.ec.europa.eu/lucas/photos/2015/FR/374/028/37402876N.jpg")
    assert sites.loc["lucas:36082770:2018", "photo_views"] == ["N", "P"]
    assert "photo W expected but missing under photo_root" not in sites.attrs["load_report"]["notes"]


def test_lucas_gps_precision_of_8_m_is_kept(lucas):
    """gps_prec '8' is an 8 m fix: the no-data codes 8/88/888 are for coordinates only."""
    assert lucas.loc["lucas:43842920:2018", "coord_uncertainty_m"] == pytest.approx(8.0)


def test_lucas_blank_gps_proj_falls_back(files, tmp_path):
    """A blank gps_proj (datum unknown) next to a GPS fix falls back, not 'boolean value of NA'."""
    lines = files["lucas_table"].read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace(",WGS84,", ",,", 1)      # 37402876 (2015): projection not recorded
    path = tmp_path / "blank_proj.csv"
    path.write_text("".join(lines))
    sites = hh.datasets.read_lucas(path).set_index("site_id")
    assert sites.loc["lucas:37402876:2015", "coord_source"] == "theoretical"     # not WGS84
    assert sites.attrs["load_report"]["notes"][FALLBACK] == 2


def test_lucas_truncated_line_is_counted_as_malformed(files, tmp_path):
    """A line with too FEW fields (a truncated export) is malformed, not padded with NaN and kept."""
    text = files["lucas_table"].read_text()
    truncated = ",".join(text.splitlines()[1].split(",")[:12])   # cut after gps_proj, no newline
    path = tmp_path / "truncated.csv"
    path.write_text(text + truncated.replace("37402876", "37402878").replace("1204511", "1204512"))
    sites = hh.datasets.read_lucas(path)
    report = sites.attrs["load_report"]
    assert report["rows_read"] == 13 and report["skipped"] == {MALFORMED: 2} and report["kept"] == 11
    assert "lucas:37402878:2015" not in set(sites["site_id"])
    assert report["where"][MALFORMED] == ["line 8: 55 fields, the header has 53",
                                          "line 14: 12 fields, the header has 53"]


def test_lucas_short_and_long_label_rows_are_noted_with_their_lines(files, tmp_path):
    """A label table's rows with too few or too many fields are noted with their lines, not padded."""
    labels = tmp_path / "labels.csv"
    labels.write_text("point_id,year,eunis_code\n"
                      "37402876,2015,R22\n"
                      "37442850,2015\n"                     # cut short: not 'no label'
                      "36062768,2018,R22,R23\n"             # an unquoted list: not 'R22'
                      "37022842,2018,T11\n")
    sites = hh.datasets.read_lucas(files["lucas_table"], labels=labels).set_index("site_id")
    report = sites.attrs["load_report"]
    assert report["notes"]["malformed label rows ignored (wrong number of fields)"] == 2
    assert report["where"]["malformed label rows ignored (wrong number of fields)"] == [
        "line 3: 2 fields, the header has 3", "line 4: 4 fields, the header has 3"]
    assert sites.loc["lucas:37402876:2015", "label"] == "R22"
    assert sites.loc["lucas:37022842:2018", "label"] == "T11"
    assert pd.isna(sites.loc["lucas:36062768:2018", "label"])


def test_lucas_gps_longitude_without_east_or_west_falls_back(files, tmp_path):
    """A blank or unknown gps_ew (gps_long carries no sign) must not give an eastern longitude:
    the theoretical point is used, counted with the points; 'w' reads as West."""
    lines = files["lucas_table"].read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace(",East,1.90481,", ",,1.90481,", 1)         # 37402876 (2015): blank
    lines[2] = lines[2].replace(",East,2.03340,", ",8,2.03340,", 1)        # 37442850 (2015): no-data code
    lines[3] = lines[3].replace(",West,1.55031,", ",w,1.55031,", 1)        # 36062768 (2018): 'w' is West
    path = tmp_path / "blank_ew.csv"
    path.write_text("".join(lines))
    sites = hh.datasets.read_lucas(path).set_index("site_id")
    blank = sites.loc["lucas:37402876:2015"]
    assert blank["coord_source"] == "theoretical"
    assert (blank["lat"], blank["lon"]) == (pytest.approx(47.9021), pytest.approx(1.9047))   # th_*
    assert sites.loc["lucas:37442850:2015", "coord_source"] == "theoretical"
    assert sites.loc["lucas:36062768:2018", "lon"] == pytest.approx(-1.55031)
    assert sites.loc["lucas:36062768:2018", "coord_source"] == "gps"
    report = sites.attrs["load_report"]
    assert report["kept"] == 11 and report["notes"][FALLBACK] == 1                           # 36082770
    assert report["notes"][UNSIGNED] == 2
    assert report["where"][UNSIGNED] == ["point 37402876, 2015", "point 37442850, 2015"]


def _lucas_frame(n: int, **columns) -> pd.DataFrame:
    """``n`` LUCAS points near Munich with a WGS84 GPS fix East of Greenwich; ``columns`` override."""
    table = pd.DataFrame({"point_id": [str(44402990 + 2 * i) for i in range(n)], "year": "2018",
                          "nuts0": "DE", "th_lat": "48.2012", "th_long": "11.4601", "gps_proj": "WGS84",
                          "gps_lat": "48.20118", "gps_ew": "East", "gps_long": "11.46022", "gps_prec": "5",
                          "obs_dist": "12"})
    for name, values in columns.items():
        table[name] = values
    return table


def test_lucas_zero_or_unflagged_longitudes():
    """Longitude 0 needs no East/West; without a gps_ew column every other GPS longitude falls back."""
    sites = hh.datasets.read_lucas(_lucas_frame(2, gps_ew=["", ""], gps_long=["0.00000", "11.46022"]))
    assert sites["coord_source"].tolist() == ["gps", "theoretical"]
    assert sites["lon"].tolist() == pytest.approx([0.0, 11.4601])
    assert sites.attrs["load_report"]["notes"] == {UNSIGNED: 1}
    sites = hh.datasets.read_lucas(_lucas_frame(3).drop(columns="gps_ew"))
    assert (sites["coord_source"] == "theoretical").all()
    assert sites.attrs["load_report"]["notes"] == {UNSIGNED: 3}


def test_lucas_precision_of_8_88_888_m_is_real_8888_is_no_data():
    """gps_prec 8, 88 and 888 m are distances; 8888, 88888 (also written 8888.0) and 88.888 mean
    'no data' (uncertainty unknown, the GPS fix still used)."""
    prec = ["8", "88", "888", "8888", "88888", "8888.0", "88.888", "8.0"]
    sites = hh.datasets.read_lucas(_lucas_frame(len(prec), gps_prec=prec))
    assert (sites["coord_source"] == "gps").all()
    np.testing.assert_array_equal(sites["coord_uncertainty_m"], [8, 88, 888, np.nan, np.nan, np.nan, np.nan, 8])
    obs = ["8", "888", "8888", "8888.00"]                    # the fallback's uncertainty: obs_dist
    sites = hh.datasets.read_lucas(_lucas_frame(4, gps_lat="88.888888", obs_dist=obs))
    np.testing.assert_array_equal(sites["coord_uncertainty_m"], [8, 888, np.nan, np.nan])


def test_lucas_coordinate_no_data_codes_written_as_decimals():
    """88.0 (a no-data code 88 saved by a program that made the column numeric) is no latitude."""
    sites = hh.datasets.read_lucas(_lucas_frame(3, gps_lat=["88.0", "8888.0", "48.20118"]))
    assert sites["coord_source"].tolist() == ["theoretical", "theoretical", "gps"]
    assert sites["lat"].tolist() == pytest.approx([48.2012, 48.2012, 48.20118])
    assert sites.attrs["load_report"]["notes"] == {FALLBACK: 2}


# --- EVA --------------------------------------------------------------------------------------

def test_eva_report(eva):
    report = eva.attrs["load_report"]
    assert (report["rows_read"], report["kept"]) == (12, 10)
    assert report["skipped"] == {"missing coordinates": 1, "duplicated site id": 1}     # 1010, 1002
    assert report["notes"] == {UNKNOWN: 1, "date unreadable (kept, NaT)": 1,           # E1.2a, 00.06
                               FORMATIONS: 1}                                          # R22, T11
    assert list(eva.index) == [f"eva:{n}" for n in (1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009,
                                                   1011)]


def test_eva_expert_system_cells_become_labels(eva):
    expected = {"eva:1001": "R22", "eva:1002": "R2", "eva:1003": "R23", "eva:1004": "R", "eva:1005": "Q",
                "eva:1006": "S", "eva:1007": None, "eva:1008": None, "eva:1009": None, "eva:1011": None}
    got = {site: (code if isinstance(code, str) else None) for site, code in eva["label"].items()}
    assert got == expected
    assert eva.loc["eva:1002", ["label_l1", "label_l2"]].tolist() == ["R", "R2"]
    assert pd.isna(eva.loc["eva:1002", "label_l3"]) and pd.isna(eva.loc["eva:1004", "label_l2"])
    assert eva["label_l1"].notna().sum() == 6


def test_eva_multi_code_cells_keep_their_candidates(eva):
    """A cell listing several codes keeps them, in order, as label_candidates (soft targets); one
    code, a grouping, no label and codes of two formations (unlabelled) give None."""
    assert eva["label_candidates"].to_dict() == {
        "eva:1001": None, "eva:1002": "R22;R23", "eva:1003": None, "eva:1004": None, "eva:1005": None,
        "eva:1006": None, "eva:1007": None, "eva:1008": None, "eva:1009": None, "eva:1011": None}


def test_eva_codes_of_two_formations_are_noted(files, tmp_path):
    """'R22, S31' has no common ancestor: the site is kept unlabelled and counted, not silently."""
    lines = files["eva_header"].read_text(encoding="utf-8").splitlines(keepends=True)
    lines.append(lines[1].replace("1001\t", "1012\t", 1).replace("\tR22\t", "\tR22, S31\t", 1))
    lines.append(lines[1].replace("1001\t", "1013\t", 1).replace("\tR22\t", "\tR23, R22, R23!\t", 1))
    path = tmp_path / "header.csv"
    path.write_text("".join(lines), encoding="utf-8")
    sites = hh.datasets.read_eva(path).set_index("site_id")
    assert sites.attrs["load_report"]["notes"][FORMATIONS] == 2                    # 1011 and 1012
    assert pd.isna(sites.loc["eva:1012", "label"]) and sites.loc["eva:1012", "label_candidates"] is None
    assert sites.loc["eva:1013", ["label", "label_candidates"]].tolist() == ["R2", "R23;R22"]


def test_eva_coordinates_dates_uncertainty(eva):
    assert eva.loc["eva:1007", "lon"] == pytest.approx(-0.8503)                     # signed
    assert eva.loc["eva:1002", ["lat", "lon"]].tolist() == pytest.approx([47.6012, 10.9503])  # first kept
    assert eva.loc["eva:1004", "coord_uncertainty_m"] == 1000.0
    assert pd.isna(eva.loc["eva:1008", "coord_uncertainty_m"])
    assert eva.loc["eva:1001", "date"] == pd.Timestamp("2015-06-01")               # dd.mm.yyyy
    assert pd.isna(eva.loc["eva:1006", "date"]) and pd.isna(eva.loc["eva:1008", "date"])
    assert (eva["coord_source"] == "eva").all() and eva["on_land"].all()


# --- EMBAL ------------------------------------------------------------------------------------

def test_embal_groups_rows_into_sites(embal, files):
    report = embal.attrs["load_report"]
    assert (report["rows_read"], report["kept"], report["skipped"]) == (8, 3, {})
    assert report["notes"] == {"photo file missing": 1,
                               "sites with conflicting EUNIS codes (common ancestor used)": 1,
                               "sites with differing coordinates across rows (first used)": 1}
    assert list(embal.index) == ["embal:FR-0107", "embal:DE-0412", "embal:DE-0413"]  # first appearance
    assert embal["photo_views"].tolist() == [["T1-00", "T2-01"], ["T1-00", "T1-01", "T2-02"], ["T1-00", "T1-01"]]
    assert embal.loc["embal:DE-0412", "photos"] == [str(files["embal_photos"] / f"DE-0412/{n}.jpg")
                                                    for n in ("T1_1", "T1_2", "T2_1")]
    assert embal["label"].tolist() == ["T11", "R22", "R2"]        # R22 + R23 -> R2
    assert embal["label_candidates"].tolist() == [None, None, "R22;R23"]
    assert embal.loc["embal:FR-0107", ["lat", "lon"]].tolist() == pytest.approx([47.3001, 2.5002])
    assert embal.loc["embal:DE-0413", "date"] == pd.Timestamp("2023-06-14")


def test_embal_empty_photo_cell_is_counted(files, tmp_path):
    """An empty photo cell is counted (not Path(photo_root) / NaN, a TypeError); the site is kept."""
    path = tmp_path / "embal.csv"
    path.write_text(files["embal_table"].read_text() + "FR-0107,2,47.30010,2.50020,,,2023-05-30\n")
    sites = hh.datasets.read_embal(path, photo_root=files["embal_photos"]).set_index("site_id")
    assert sites.attrs["load_report"]["kept"] == 3
    assert sites.attrs["load_report"]["notes"]["photo cell empty"] == 1
    assert sites.loc["embal:FR-0107", "photo_views"] == ["T1-00", "T2-01"]


def test_embal_row_without_site_is_reported(files, tmp_path):
    """A row whose site cell is empty is skipped and counted, not dropped silently by groupby."""
    path = tmp_path / "embal.csv"
    path.write_text(files["embal_table"].read_text() + ",1,48.50030,11.00020,DE-0412/T1_1.jpg,R22,2023-06-14\n"
                    + "  ,1,48.50030,11.00020,DE-0412/T1_2.jpg,R22,2023-06-14\n")
    report = hh.datasets.read_embal(path, photo_root=files["embal_photos"]).attrs["load_report"]
    assert report["rows_read"] == 10 and report["kept"] == 3
    assert report["skipped"] == {"no site id": 2}
    assert report["where"] == {"no site id": ["line 10", "line 11"]}


def test_embal_short_row_is_malformed_not_a_site_without_code(files, tmp_path):
    """A row cut after the photo (no eunis_code, no date fields) is skipped as malformed, with its line."""
    path = tmp_path / "embal.csv"
    path.write_text(files["embal_table"].read_text() + "DE-0499,1,48.50030,11.00020,DE-0412/T1_1.jpg\n")
    sites = hh.datasets.read_embal(path, photo_root=files["embal_photos"])
    report = sites.attrs["load_report"]
    assert (report["rows_read"], report["kept"]) == (9, 3) and "embal:DE-0499" not in set(sites["site_id"])
    assert report["skipped"] == {MALFORMED: 1}
    assert report["where"] == {MALFORMED: ["line 10: 5 fields, the header has 7"]}


# --- satellite patches ------------------------------------------------------------------------

def _attached(sites) -> dict:
    return {s: Path(p).name for s, p in zip(sites["site_id"], sites["satellite"]) if isinstance(p, str)}


def test_geotiffs_attached_where_they_cover_the_site(lucas, eva, files):
    out = hh.datasets.read_satellite(lucas.reset_index(), files["sentinel2"])
    assert _attached(out) == {"lucas:37402876:2015": "37402876_2015.tif",
                              "lucas:44402990:2015": "44402990_2015.tif"}
    report = out.attrs["satellite_report"]
    assert report["kept"] == 2 and report["notes"] == {"no patch file": 8, NOT_COVERED: 1}  # 43842920
    out = hh.datasets.read_satellite(eva.reset_index(), files["sentinel2"])
    assert _attached(out) == {"eva:1001": "1001.tif", "eva:1004": "1004.tif"}   # 1004: 600 m off
    assert out.attrs["satellite_report"]["notes"] == {"no patch file": 7, NOT_COVERED: 1}  # 1005: 3 km
    strict = hh.datasets.read_satellite(eva.reset_index(), files["sentinel2"], tolerance_m=0)
    assert _attached(strict) == {"eva:1001": "1001.tif"}
    assert strict.attrs["satellite_report"]["notes"][NOT_COVERED] == 2


def test_band_folders_attached(lucas, eva, files):
    out = hh.datasets.read_satellite(lucas.reset_index(), files["bigearthnet"], "{name}")
    assert _attached(out) == {"lucas:44402990:2018": "44402990_2018"}
    out = hh.datasets.read_satellite(eva.reset_index(), files["bigearthnet"], "{name}")
    assert _attached(out) == {"eva:1003": "1003"}
    assert out.attrs["satellite_report"]["notes"] == {"no patch file": 9}


def test_read_patch_geotiff_band_order(files):
    twelve = hh.datasets.read_patch(files["sentinel2"] / "37402876_2015.tif")
    assert twelve.shape == (12, 16, 16) and twelve.dtype == np.float32
    assert _band_ids(twelve) == list(range(1, 13))                          # B01 ... B12 as stored
    path = files["sentinel2"] / "37402876_2015.tif"
    assert _band_ids(hh.datasets.read_patch(path, ["B04", "B03", "B02"])) == [4, 3, 2]
    assert _band_ids(hh.datasets.read_patch(path, ["B8A", 8])) == [9, 8]     # names and 1-based indices
    with pytest.raises(ValueError, match="B10"):
        hh.datasets.read_patch(path, ["B10"])                               # not in L2A
    four = files["sentinel2"] / "44402990_2015.tif"
    assert _band_ids(hh.datasets.read_patch(four)) == [2, 3, 4, 8]
    assert _band_ids(hh.datasets.read_patch(four, ["B08", "B04"])) == [8, 4]
    assert _band_ids(hh.datasets.read_patch(four, [3])) == [4]               # third band is B04
    lon_min, lat_min, lon_max, lat_max = hh.datasets.patch_bounds_wgs84(four)
    assert lat_min < 48.20118 < lat_max and lon_min < 11.46022 < lon_max


def test_read_patch_band_folder(files):
    folder = files["bigearthnet"] / "1003"
    rgb = hh.datasets.read_patch(folder)
    assert rgb.shape == (3, 12, 12) and _band_ids(rgb) == [4, 3, 2]         # default B04 B03 B02
    full = hh.datasets.read_patch(folder, L2A)
    assert full.shape == (12, 12, 12) and _band_ids(full) == list(range(1, 13))  # 20/60 m resampled
    with pytest.raises(ValueError, match="B99"):
        hh.datasets.read_patch(folder, ["B99"])


def test_open_image_true_colour(files):
    im = hh.datasets.open_image(files["sentinel2"] / "44402990_2015.tif")
    assert im.mode == "RGB" and im.size == (16, 16)
    r, g, b = np.asarray(im).reshape(-1, 3).mean(axis=0)
    assert r > g > b                                   # B04 (~420) > B03 (~320) > B02 (~220)
    assert r == pytest.approx(425 / 3000 * 255, abs=3)
    assert hh.datasets.open_image(files["bigearthnet"] / "44402990_2018").size == (12, 12)
