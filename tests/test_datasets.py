"""Loaders: real LUCAS rows and photos, real Sentinel-2 patches, EVA/EMBAL formats, bad input."""

import tarfile
from importlib import resources

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import habitat_helpers as hh


@pytest.fixture(scope="module")
def lucas_dir(shared_dir):
    path = shared_dir / "data/lucas_sample"
    if not (path / "metadata_subset.csv").exists():
        pytest.skip("LUCAS sample absent from ../shared")
    return path


@pytest.fixture(scope="module")
def lucas(lucas_dir):
    return hh.datasets.read_lucas(lucas_dir / "metadata_subset.csv", photo_root=lucas_dir).set_index("site_id")


# --- real LUCAS rows ---------------------------------------------------------------------------

def test_lucas_signs_longitudes_from_gps_ew(lucas):
    assert lucas.loc["lucas:31603628:2018", "lon"] == pytest.approx(-8.108829)   # West
    assert lucas.loc["lucas:35262736:2006", "lon"] == pytest.approx(-0.52995)    # West
    assert lucas.loc["lucas:47282098:2009", "lon"] == pytest.approx(14.88795)    # East
    assert (lucas["coord_source"] == "gps").all()
    assert lucas.crs.to_epsg() == 4326 and lucas["on_land"].all()


def test_lucas_views_per_point(lucas):
    assert lucas.loc["lucas:31603628:2018", "photo_views"] == ["N", "E", "S", "W", "P", "C"]
    assert lucas.loc["lucas:35262736:2006", "photo_views"] == ["P"]
    assert lucas.loc["lucas:47282098:2009", "photo_views"] == ["P"]
    assert sum(len(v) for v in lucas["photos"]) == 32
    for path in lucas.loc["lucas:32362878:2015", "photos"]:
        with Image.open(path) as im:
            assert min(im.size) >= 1200


def test_lucas_dates_in_both_formats(lucas):
    assert lucas.loc["lucas:35262736:2006", "date"] == pd.Timestamp("2006-05-02")   # dd/mm/yyyy
    assert lucas.loc["lucas:47282098:2009", "date"] == pd.Timestamp("2009-07-02")   # dd/mm/yy
    assert lucas.loc["lucas:31603628:2018", "date"] == pd.Timestamp("2018-09-18")


def test_lucas_report_counts_missing_views(lucas):
    notes = lucas.attrs["load_report"]["notes"]
    assert notes["photo N expected but missing under photo_root"] == 2   # two points ship only P


def test_lucas_sentinels_fall_back_to_theoretical_point(lucas_dir):
    table = pd.read_csv(lucas_dir / "metadata_subset.csv", dtype=str)
    table.loc[0, "gps_lat"] = "88.888888"
    table.loc[1, "gps_long"] = "88.888"
    sites = hh.datasets.read_lucas(table).set_index("site_id")
    row = sites.loc["lucas:35262736:2006"]
    assert row["coord_source"] == "theoretical" and row["lat"] == pytest.approx(47.227824183)
    assert row["lon"] == pytest.approx(-0.529947878) and row["coord_uncertainty_m"] == pytest.approx(0.49203009)
    assert sites.loc["lucas:47282098:2009", "coord_source"] == "theoretical"
    assert sites.attrs["load_report"]["notes"]["GPS missing or not WGS84: theoretical point used"] == 2


def test_lucas_without_photo_root_gives_gisco_urls(lucas_dir):
    sites = hh.datasets.read_lucas(lucas_dir / "metadata_subset.csv").set_index("site_id")
    urls = sites.loc["lucas:31603628:2018", "photos"]
    assert urls[0] == "https://gisco-services.ec.europa.eu/lucas/photos/2018/UK/316/036/31603628N.jpg"


def test_lucas_label_table_joins_on_point_and_year(lucas_dir):
    labels = pd.DataFrame({"point_id": ["31603628", "38023116", "38023114", "99999999"],
                           "year": ["2018", "2006", "2006", "2006"],
                           "eunis_code": ["S42", "V11, V12", "X7", "R2"]})
    sites = hh.datasets.read_lucas(lucas_dir / "metadata_subset.csv", labels=labels).set_index("site_id")
    assert sites.loc["lucas:31603628:2018", ["label_l1", "label_l2", "label_l3"]].tolist() == ["S", "S4", "S42"]
    assert sites.loc["lucas:38023116:2006", "label"] == "V1"                    # common ancestor
    assert pd.isna(sites.loc["lucas:38023114:2006", "label"])                   # unknown code
    notes = sites.attrs["load_report"]["notes"]
    assert notes["unknown EUNIS code (site kept unlabelled)"] == 1
    assert notes["label rows matching no LUCAS point"] == 1


def test_lucas_missing_column_is_named():
    with pytest.raises(ValueError, match="th_lat"):
        hh.datasets.read_lucas(pd.DataFrame({"point_id": ["1"], "year": ["2018"], "th_long": ["1"]}))


# --- EVA -------------------------------------------------------------------------------------

def _eva_header(tmp_path):
    rows = [
        ["1", "48.1", "11.5", "R22", "10", "01.06.2015"],
        ["2", "47.9", "12.1", "R22, R23!", "", "15.07.2016"],
        ["3", "50.0", "14.4", "Sb", "100", ""],
        ["4", "46.0", "13.0", "?", "5", "31.02.2016"],
        ["5", "95.0", "13.0", "T11", "5", ""],          # out of range
        ["5", "46.0", "13.1", "T11", "5", ""],          # duplicate id
        ["6", "", "13.0", "T11", "5", ""],              # missing latitude
        ["7", "46.5", "13.5", "Z99", "5", ""],          # unknown code
        ["8", "54.5", "5.0", "N11", "5", ""],           # North Sea
    ]
    path = tmp_path / "eva_header.csv"
    cols = ["PlotObservationID", "Latitude", "Longitude", "Expert System", "Location uncertainty (m)",
            "Date of recording"]
    path.write_text("\t".join(cols) + "\n" + "\n".join("\t".join(r) for r in rows) + "\n")
    return path


def test_eva_header(tmp_path):
    sites = hh.datasets.read_eva(_eva_header(tmp_path)).set_index("site_id")
    report = sites.attrs["load_report"]
    assert report["rows_read"] == 9 and report["kept"] == 7
    assert report["skipped"] == {"coordinates out of range": 1, "missing coordinates": 1}
    # the duplicate of plot 5 comes after the out-of-range row was skipped, so it is kept once
    assert sites.loc["eva:1", "label_l3"] == "R22" and sites.loc["eva:1", "date"] == pd.Timestamp("2015-06-01")
    assert sites.loc["eva:2", "label"] == "R2" and pd.isna(sites.loc["eva:2", "label_l3"])
    assert sites.loc["eva:2", "label_candidates"] == "R22;R23" and sites.loc["eva:1", "label_candidates"] is None
    assert sites.loc["eva:3", "label"] == "S"
    assert pd.isna(sites.loc["eva:4", "label"]) and pd.isna(sites.loc["eva:4", "date"])
    assert pd.isna(sites.loc["eva:7", "label"])
    assert not sites.loc["eva:8", "on_land"]
    assert report["notes"]["unknown EUNIS code (site kept unlabelled)"] == 1
    assert report["notes"]["date unreadable (kept, NaT)"] == 1


def test_duplicated_site_ids_are_counted(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("PlotObservationID\tLatitude\tLongitude\n1\t48\t11\n1\t48.1\t11.1\n")
    sites = hh.datasets.read_eva(path)
    assert len(sites) == 1 and sites.attrs["load_report"]["skipped"] == {"duplicated site id": 1}


def test_sea_points_can_be_dropped(tmp_path):
    sites = hh.datasets.read_eva(_eva_header(tmp_path), sea="drop")
    assert "eva:8" not in set(sites["site_id"])
    assert sites.attrs["load_report"]["skipped"]["on the sea (land mask)"] == 1


def test_eunis_esy_parsing():
    assert hh.eunis.parse_esy("R22, R23!") == ["R22", "R23"]
    assert hh.eunis.parse_esy("Qa") == ["Q"]
    assert hh.eunis.parse_esy("?") == [] and hh.eunis.parse_esy(float("nan")) == []
    assert hh.eunis.esy_label("R22, T11") is None
    with pytest.raises(ValueError, match="R99"):
        hh.eunis.parse_esy("R22, R99")


def test_level_encoder_reports_what_it_leaves_out():
    enc = hh.eunis.LevelEncoder(2).fit(["R22", "T1", "R", "Q11"])
    assert enc.classes_ == ["Q1", "R2", "T1"]
    ids = enc.transform(["R21", "V1", "R", None, "T11", "X9"])
    assert ids.tolist() == [1, -1, -1, -1, 2, -1]
    assert enc.last_report == {"encoded": 2, "missing": 1, "unknown_code": 1, "coarser_than_level": 1,
                               "unseen_class": 1}
    assert enc.inverse_transform([2, -1]) == ["T1", None]


def test_corine_links():
    links = hh.eunis.corine_links("V11")
    assert {"relationship": "#", "clc_code": "2.1.1", "clc_name": "Non-irrigated arable land"} in links
    assert hh.eunis.corine_links("V") == []


# --- EMBAL -----------------------------------------------------------------------------------

def test_embal_groups_transect_photos_and_maps_columns(tmp_path):
    for name in ["a1.jpg", "a2.jpg", "b1.jpg"]:
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    table = pd.DataFrame({"PlotID": ["A", "A", "A", "B"], "transect": ["1", "1", "2", "1"],
                          "lat": ["45.1", "45.1", "45.1", "46.0"], "lon": ["7.0", "7.0", "7.0", "8.0"],
                          "photo": ["a1.jpg", "a2.jpg", "gone.jpg", "b1.jpg"], "eunis_code": ["R22", "R22", "R22", None]})
    sites = hh.datasets.read_embal(table, photo_root=tmp_path, columns={"site": "PlotID"}).set_index("site_id")
    assert sites.loc["embal:A", "photo_views"] == ["T1-00", "T1-01"]
    assert sites.loc["embal:A", "label_l3"] == "R22" and pd.isna(sites.loc["embal:B", "label"])
    assert sites.attrs["load_report"]["notes"]["photo file missing"] == 1
    with pytest.raises(ValueError, match="site"):
        hh.datasets.read_embal(table)  # without the mapping, 'site' is missing


# --- satellite ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bigearthnet(tmp_path_factory):
    archive = resources.files("bigearthnet_common") / "BigEarthNet-S2-Example.tar.bz2"
    out = tmp_path_factory.mktemp("ben")
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    return sorted((out / "BigEarthNet-S2-Example").iterdir())


def test_real_sentinel2_patches(bigearthnet):
    assert len(bigearthnet) == 6
    rgb = hh.datasets.read_patch(bigearthnet[0])
    assert rgb.shape == (3, 120, 120) and rgb.dtype == np.float32 and rgb.max() > 0
    twelve = hh.datasets.read_patch(bigearthnet[0], bands=["B01", "B02", "B03", "B04", "B05", "B06", "B07",
                                                           "B08", "B8A", "B09", "B11", "B12"])
    assert twelve.shape == (12, 120, 120)          # 20 m and 60 m bands resampled to 10 m
    lon_min, lat_min, lon_max, lat_max = hh.datasets.patch_bounds_wgs84(next(bigearthnet[0].glob("*_B04.tif")))
    assert 0 < lon_max - lon_min < 0.05 and 0 < lat_max - lat_min < 0.02    # 1.2 km
    with pytest.raises(ValueError, match="B99"):
        hh.datasets.read_patch(bigearthnet[0], bands=["B99"])


def test_read_satellite_checks_georeferencing(bigearthnet, tmp_path):
    b04 = next(bigearthnet[0].glob("*_B04.tif"))
    lon_min, lat_min, lon_max, lat_max = hh.datasets.patch_bounds_wgs84(b04)
    inside = ((lat_min + lat_max) / 2, (lon_min + lon_max) / 2)
    for name in ("here", "far"):
        (tmp_path / f"{name}.tif").write_bytes(b04.read_bytes())
    sites = pd.DataFrame({"site_id": ["eva:here", "eva:far", "eva:none"],
                          "lat": [inside[0], inside[0] + 1, inside[0]], "lon": [inside[1]] * 3})
    out = hh.datasets.read_satellite(sites, tmp_path)
    assert out["satellite"].tolist()[0].endswith("here.tif")
    assert out["satellite"].iloc[1:].isna().all()
    notes = out.attrs["satellite_report"]["notes"]
    assert notes == {"patch does not cover the site (not attached)": 1, "no patch file": 1}


def test_site_table_roundtrip(tmp_path):
    sites = hh.datasets.read_eva(_eva_header(tmp_path))
    path = hh.datasets.write_sites(sites, tmp_path / "sites.parquet")
    back = hh.datasets.read_sites(path)
    assert list(back.columns) == list(sites.columns)
    assert back["photos"].iloc[0] == [] and back.crs.to_epsg() == 4326
    pd.testing.assert_series_equal(back["lat"], sites["lat"])
    assert back["label_candidates"].tolist() == [None, "R22;R23", None, None, None, None, None]
    unlabelled = sites[sites["label"].isna()]       # a column of None only survives as None
    back = hh.datasets.read_sites(hh.datasets.write_sites(unlabelled, tmp_path / "unlabelled.parquet"))
    assert back["label_candidates"].tolist() == [None, None]


def test_candidates_survive_combining_sources(tmp_path):
    """load() of a data spec: EVA sites keep their candidates, a table of single codes gives None,
    and a part read without the column (an older site table) gives None, not NaN."""
    (tmp_path / "plots.csv").write_text("id,lat,lon,eunis_code\np1,48.2,11.4,R22\np2,48.3,11.5,\"V11, V12\"\n")
    (tmp_path / "spec.yml").write_text(f"name: mixed\nsources:\n  - kind: eva\n    header: {_eva_header(tmp_path)}\n"
                                       "  - kind: table\n    path: plots.csv\n")
    data = hh.dataspec.load(tmp_path / "spec.yml", verbose=False)
    candidates = data.sites.set_index("site_id")["label_candidates"]
    assert candidates["eva:2"] == "R22;R23" and candidates["plots:p2"] == "V11;V12"
    assert candidates["plots:p1"] is None and candidates.drop(["eva:2", "plots:p2"]).isna().all()
    old = data.sites[data.sites["source"] == "plots"].drop(columns="label_candidates")
    combined = hh.dataspec._combine([data.sites[data.sites["source"] == "eva"], old])
    assert combined["label_candidates"].tolist()[-2:] == [None, None]
    assert combined["label_candidates"].tolist().count("R22;R23") == 1


def test_a_data_spec_marks_sources_of_extra_sites(tmp_path):
    """A source marked 'extra: true' gives unlabelled sites that only train the alignment
    (Data.extra, one boolean per site); labels in such a source, or a non-boolean mark, are errors."""
    (tmp_path / "plots.csv").write_text("id,lat,lon,eunis_code\np1,48.2,11.4,R22\np2,48.3,11.5,T11\n")
    (tmp_path / "more.csv").write_text("id,lat,lon\nm1,48.4,11.6\nm2,48.5,11.7\nm3,48.6,11.8\n")
    def spec(second: str, *keys: str):
        lines = ["name: pooled", "sources:", "  - kind: table", "    path: plots.csv", "  - kind: table",
                 f"    path: {second}", *(f"    {k}" for k in keys)]
        (tmp_path / "spec.yml").write_text("\n".join(lines) + "\n")
        return tmp_path / "spec.yml"

    data = hh.dataspec.load(spec("more.csv", "label: null", "extra: true"), verbose=False)
    assert data.extra.tolist() == [False, False, True, True, True]
    assert "_extra_source" not in data.sites.columns and data.sites.loc[data.extra, "label_l1"].isna().all()
    assert not hh.dataspec.Data("x", data.sites, data.report).extra.any()       # no spec: no extra sites
    spec("plots.csv", "site_id: id", "extra: true")
    with pytest.raises(ValueError, match="the table source is marked extra .* 2 of its sites carry labels"):
        hh.dataspec.load(tmp_path / "spec.yml", verbose=False)
    with pytest.raises(ValueError, match="extra is true or false"):
        hh.dataspec.load(spec("more.csv", "label: null", "extra: yes please"), verbose=False)


@pytest.mark.slow
def test_demo_eva_candidates(tmp_path):
    """The demo's EVA cells such as 'R22, R21' reach hh.dataspec.load as label_candidates."""
    data = hh.dataspec.load("demo", "tiny", 0, verbose=False)
    header = pd.read_csv(data.folder / "eva/eva_header.csv", sep="\t", dtype=str, keep_default_na=False)
    expected = {f"eva:{plot}": ";".join(hh.eunis.parse_esy(cell))
                for plot, cell in zip(header["PlotObservationID"], header["Expert System"]) if "," in cell}
    sites = data.sites.set_index("site_id")
    assert expected and sites.loc[list(expected), "label_candidates"].to_dict() == expected
    assert sites["label_candidates"].notna().sum() == len(expected)
    multi = sites.loc[list(expected)]
    assert [c.split(";")[0][:2] for c in multi["label_candidates"]] == multi["label"].tolist()


def test_malformed_rows_and_unreadable_coordinates_are_counted(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("PlotObservationID\tLatitude\tLongitude\n"
                    "1\t48\t11\n"
                    "2\t48.1\t11.1\textra\tfields\n"
                    "3\tnorth\t11.2\n"
                    "4\t48.3\n")
    sites = hh.datasets.read_eva(path)
    report = sites.attrs["load_report"]
    assert list(sites["site_id"]) == ["eva:1"] and report["rows_read"] == 4
    assert report["skipped"] == {"malformed row (wrong number of fields)": 2,
                                 "unreadable coordinates (not a number)": 1}
    assert report["where"] == {"malformed row (wrong number of fields)": [
        "line 3: 5 fields, the header has 3", "line 5: 2 fields, the header has 3"]}


def test_read_table_skips_short_and_long_rows_with_their_lines(tmp_path):
    """Rows with too few fields are not padded with NaN, rows with too many not cut: both are
    skipped and counted, with the line each starts on (a quoted cell may span lines)."""
    path = tmp_path / "plots.csv"
    path.write_text("site_id,lat,lon,eunis_code\n"
                    "a,48.0,11.0,R22\n"
                    "b,48.1\n"                              # line 3: cut short
                    "c,48.2,11.2,R22,R23\n"                 # line 4: an unquoted list
                    "d,48.3,11.3,\"R22,\n R23!, R22\"\n"     # lines 5-6: one row, a quoted list
                    "e,48.4,11.4,\"R22, S31\"\n"             # two formations
                    "f,48.5,\"11.5,T11\n"                     # line 8: an open quote eats line 9
                    "g,48.6,11.6,R22\n")
    sites = hh.datasets.read_table(path)
    report = sites.attrs["load_report"]
    assert sites["site_id"].tolist() == ["plots:a", "plots:d", "plots:e"]
    assert (report["rows_read"], report["kept"]) == (6, 3)
    assert report["skipped"] == {"malformed row (wrong number of fields)": 3}
    assert report["where"]["malformed row (wrong number of fields)"] == [
        "line 3: 2 fields, the header has 4", "line 4: 5 fields, the header has 4",
        "line 8: 3 fields, the header has 4"]
    assert sites["label"].tolist()[:2] == ["R22", "R2"] and pd.isna(sites["label"].iloc[2])
    assert sites["label_candidates"].tolist() == [None, "R22;R23", None]
    assert report["notes"] == {"EUNIS-ESy codes of different formations (site kept unlabelled)": 1}


def test_load_report_keeps_the_first_places():
    report = hh.datasets.LoadReport("t")
    report.skip("bad", 3, where=["line 2", "line 3", "line 4"])
    report.skip("bad", 4, where=["line 7", "line 8", "line 9", "line 10"])
    report.note("odd", 1)
    assert report.as_dict()["where"] == {"bad": ["line 2", "line 3", "line 4", "line 7", "line 8"]}
    assert "  skipped, bad: 7 (line 2; line 3; line 4; line 7; line 8; ...)" in str(report)
    assert "  note, odd: 1" in str(report).splitlines()
    frame = hh.dataspec._report_frame({"t": report.as_dict()})
    assert frame.loc["t", "skipped, by reason"] == "bad: 7 (line 2; line 3; line 4; line 7; line 8; ...)"


def test_data_card_and_label_agreement(tmp_path):
    sites = hh.datasets.read_eva(_eva_header(tmp_path))
    card = hh.datasets.data_card(sites)
    assert card.loc["eva", "sites"] == 7 and card.loc["eva", "photos"] == 0
    assert card.loc["eva", "labelled at level 1"] == f"{5 / 7:.0%}"
    # two clusters of identical labels far apart: agreement 1 at short range, 0 at long range
    lat = np.r_[np.full(10, 48.0), np.full(10, 60.0)] + np.linspace(0, 0.05, 20)
    table = hh.spatial.label_agreement_by_distance(lat, np.full(20, 10.0), ["R"] * 10 + ["T"] * 10,
                                                   bins_km=(0, 50, 5000))
    assert table["agreement"].tolist() == [1.0, 0.0]
    assert table["chance"].iloc[0] == pytest.approx(90 / 190)
    assert hh.spatial.haversine_km(0, 0, 0, 1) == pytest.approx(111.195, rel=1e-4)


def test_real_sentinel2_patches_embed_as_true_colour(bigearthnet):
    enc = hh.encoders.get_encoder("efficientnet-lite0-imagenet", image_size=64)
    rgb = hh.datasets.open_image(bigearthnet[0])
    assert rgb.size == (120, 120) and rgb.mode == "RGB"
    emb = hh.embed.embed_images([str(p) for p in bigearthnet[:3]], enc, progress=False)
    assert emb.shape == (3, 1280) and np.isfinite(emb).all()
    assert not np.allclose(emb[0], emb[1])


def test_a_table_without_labels(tmp_path):
    path = tmp_path / "sites.csv"
    path.write_text("id,lat,lon,eunis_code\na,48.1,2.3,R22\nb,45.2,5.7,\nc,91,0,T1\n")
    sites = hh.datasets.read_table(path, label=None, site_id="id", verbose=False)
    assert list(sites["site_id"].str.split(":").str[-1]) == ["a", "b"]           # latitude 91 skipped, counted
    assert sites["label"].isna().all() and sites["label_l1"].isna().all()  # the label column is ignored
    report = sites.attrs["load_report"]
    assert report["notes"]["no label column (label=None): every site unlabelled"] == 3
    assert sum(report["skipped"].values()) == 1 and sites.attrs["columns"]["label_format"] == "none"
    with pytest.raises(hh.datasets.TableError, match="EUNIS label"):
        hh.datasets.read_table(tmp_path / "sites.csv", label="habitat", verbose=False)
