"""The command line ``python -m habitat_helpers evaluate`` on small synthetic tables.

The tables are written by the tests themselves: about 300 sites in survey clusters over three
European regions whose habitats depend on where they lie (so k-NN on coordinates and the GPS
embedding must beat the majority baseline), plus one row of each kind of problem the reader
must report rather than drop silently.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from habitat_helpers import cli, datasets, evaluation, pipeline

# Three regions: (centre lat, centre lon, level-2 habitats west / east of the centre).
# The level-3 habitat adds 1 south of the centre and 2 north of it (R21 / R22 ...).
REGIONS = [(41.5, -2.5, ("R1", "R2")), (48.5, 7.0, ("T1", "T3")), (53.0, 17.0, ("S3", "S4"))]

# The problem rows and what the load report must say about each (skipped rows, or notes on kept rows).
EXPECTED_SKIPS = {"missing coordinates": 1, "unreadable coordinates (not a number)": 1,
                  "coordinates out of range": 1, "duplicated site id": 1,
                  "malformed row (wrong number of fields)": 1}
EXPECTED_UNKNOWN_CODES = 1


def synthetic_sites(n_clusters: int = 12, per_cluster: int = 8, seed: int = 0) -> list[dict]:
    """Good sites: ``n_clusters`` survey clusters per region, ``per_cluster`` sites each."""
    rng = np.random.default_rng(seed)
    rows = []
    for lat0, lon0, (west, east) in REGIONS:
        for _ in range(n_clusters):
            clat, clon = lat0 + rng.uniform(-1.5, 1.5), lon0 + rng.uniform(-2.0, 2.0)
            for _ in range(per_cluster):
                lat, lon = clat + rng.normal(0, 0.03), clon + rng.normal(0, 0.03)
                level2 = west if lon < lon0 else east
                rows.append({"site_id": f"S{len(rows):04d}", "lat": round(lat, 5), "lon": round(lon, 5),
                             "eunis_code": level2 + ("1" if lat < lat0 else "2")})
    return rows


def write_table(folder: Path, *, eva: bool = False) -> Path:
    """The synthetic sites plus the problem rows, as a comma-separated CSV with our default
    column names, or (``eva=True``) as a tab-separated EVA-like header export with
    ``PlotObservationID, Latitude, Longitude, Expert System`` and EUNIS-ESy strings."""
    rows = synthetic_sites()
    good = len(rows)
    rows += [
        {"site_id": "bad-missing", "lat": "", "lon": 5.0, "eunis_code": "T11"},
        {"site_id": "bad-text", "lat": "fifty", "lon": 5.0, "eunis_code": "T11"},
        {"site_id": "bad-range", "lat": 95.0, "lon": 5.0, "eunis_code": "T11"},
        {"site_id": "unknown-code", "lat": 48.0, "lon": 7.5, "eunis_code": "Z99"},
        {**rows[0], "eunis_code": rows[0]["eunis_code"]},          # the first site again: duplicated id
    ]
    if eva:
        # Expert System strings: several codes (common ancestor), '!' flags, a grouping
        rows[0]["eunis_code"] = rows[0]["eunis_code"][:2] + "1, " + rows[0]["eunis_code"][:2] + "2!"
        rows[1]["eunis_code"] += "!"
        rows[2]["eunis_code"] = "?"
    header = ["PlotObservationID", "Latitude", "Longitude", "Expert System", "Country"] if eva else \
        ["site_id", "lat", "lon", "eunis_code", "note"]
    path = folder / ("eva_header.csv" if eva else "sites.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t" if eva else ",")
        writer.writerow(header)
        for i, row in enumerate(rows):
            writer.writerow([row["site_id"], row["lat"], row["lon"], row["eunis_code"], "XX" if eva else ""])
            if i == good // 2:                                      # a line with one field too many
                writer.writerow(["bad-fields", 48.0, 7.0, "T11", "", "extra"])
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def sites_csv(folder) -> Path:
    return write_table(folder)


@pytest.fixture(scope="module")
def eva_csv(folder) -> Path:
    return write_table(folder, eva=True)


def _assert_report(report: dict, n_good: int) -> None:
    assert report["skipped"] == EXPECTED_SKIPS
    assert report["notes"]["unknown EUNIS code (site kept unlabelled)"] == EXPECTED_UNKNOWN_CODES
    assert report["rows_read"] == n_good + 6
    assert report["kept"] == n_good + 1                        # the unknown-code site is kept, unlabelled


# --- reading ------------------------------------------------------------------------------------

def test_read_table_counts_every_bad_row(sites_csv, capsys):
    sites = datasets.read_table(sites_csv)
    n_good = len(synthetic_sites())
    _assert_report(sites.attrs["load_report"], n_good)
    assert sites.attrs["unknown_codes"] == {"Z99": 1}
    assert sites.attrs["columns"]["label_format"] == "EUNIS codes"
    row = sites[sites["site_id"] == "sites:unknown-code"].iloc[0]
    assert pd.isna(row["label"]) and pd.isna(row["label_l1"])
    assert sites["label_l3"].notna().sum() == n_good
    printed = capsys.readouterr().out
    assert "skipped, duplicated site id: 1" in printed and "'Z99' (1)" in printed


def test_read_table_finds_eva_names_and_reads_expert_system(eva_csv):
    sites = datasets.read_table(eva_csv)                       # tab separator and column names found alone
    columns = sites.attrs["columns"]
    assert (columns["lat"], columns["lon"], columns["label"], columns["site_id"]) == \
        ("Latitude", "Longitude", "Expert System", "PlotObservationID")
    assert columns["label_format"].startswith("EUNIS-ESy")
    _assert_report(sites.attrs["load_report"], len(synthetic_sites()))
    labels = sites.set_index("site_id")["label"]
    first = synthetic_sites()[:3]
    assert labels[f"eva_header:{first[0]['site_id']}"] == first[0]["eunis_code"][:2]   # "R11, R12!" -> R1
    assert labels[f"eva_header:{first[1]['site_id']}"] == first[1]["eunis_code"]       # "R12!" -> R12
    assert pd.isna(labels[f"eva_header:{first[2]['site_id']}"])                       # "?" -> unlabelled


def test_read_table_semicolons_decimal_commas_and_no_id_column(tmp_path):
    path = tmp_path / "plots.csv"
    path.write_text("Latitude;Longitude;EUNIS\n48,25;7,5;T11\n48,30;7,6;Qa\n;7,7;T12\n")
    sites = datasets.read_table(path, verbose=False)
    assert sites["lat"].tolist() == [48.25, 48.30]
    assert sites["site_id"].tolist() == ["plots:line2", "plots:line3"]   # line numbers in the file
    assert sites["label"].tolist() == ["T11", "Q"]                  # 'Qa' switched on ESy reading
    report = sites.attrs["load_report"]
    assert report["skipped"] == {"missing coordinates": 1}
    assert report["notes"]["coordinates with a decimal comma (read as a point)"] == 5


def test_read_table_geoparquet_geometry_in_another_crs(tmp_path):
    import geopandas as gpd

    plots = gpd.GeoDataFrame({"plot": ["a", "b"], "EUNIS": ["T11", "R22"]},
                             geometry=gpd.points_from_xy([7.1, 3.0], [48.1, 45.0]), crs="EPSG:4326")
    plots.to_crs("EPSG:3035").to_parquet(tmp_path / "plots.parquet")          # ETRS89-LAEA metres
    sites = datasets.read_table(tmp_path / "plots.parquet", site_id="plot", verbose=False)
    np.testing.assert_allclose(sites[["lat", "lon"]].to_numpy(float), [[48.1, 7.1], [45.0, 3.0]], atol=1e-6)
    assert sites["site_id"].tolist() == ["plots:a", "plots:b"] and sites["label"].tolist() == ["T11", "R22"]


def test_read_table_photo_and_satellite_columns(tmp_path):
    from PIL import Image

    (tmp_path / "photos").mkdir()
    for name in ("a_N.png", "a_S.png", "b_N.png"):
        Image.new("RGB", (8, 8), (30, 120, 30)).save(tmp_path / "photos" / name)
    Image.new("RGB", (8, 8), (90, 90, 90)).save(tmp_path / "sat_a.png")
    (tmp_path / "sites.csv").write_text(
        "id,lat,lon,eunis_code,photo_N,photo_S,patch\n"
        "a,48.1,7.1,T11,photos/a_N.png,photos/a_S.png,sat_a.png\n"
        "b,48.2,7.2,T12,photos/b_N.png,photos/b_S_missing.png,sat_b_missing.png\n"
        "c,48.3,7.3,T31,https://example.org/c.jpg,,\n")
    sites = datasets.read_table(tmp_path / "sites.csv", photo_columns=["photo_N", "photo_S"], satellite="patch",
                                verbose=False)
    assert [len(p) for p in sites["photos"]] == [2, 1, 0]
    assert sites["photo_views"].iloc[0] == ["photo_N", "photo_S"]
    assert Path(sites["photos"].iloc[0][0]) == tmp_path / "photos" / "a_N.png"    # relative to the table
    assert sites["satellite"].notna().tolist() == [True, False, False]
    notes = sites.attrs["load_report"]["notes"]
    assert notes["photo file missing (photo ignored)"] == 1
    assert notes["photo given as a URL (not downloaded; photo ignored)"] == 1
    assert notes["satellite patch missing or a URL (patch ignored)"] == 1


def test_read_table_ignores_geotiffs_of_another_place(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    def write_patch(name, lat, lon):
        with rasterio.open(tmp_path / name, "w", driver="GTiff", width=10, height=10, count=3, dtype="uint16",
                           crs="EPSG:4326", transform=from_origin(lon - 0.005, lat + 0.005, 0.001, 0.001)) as dst:
            dst.write(np.full((3, 10, 10), 1000, dtype="uint16"))

    write_patch("here.tif", 48.1, 7.1)
    write_patch("elsewhere.tif", 40.0, 0.0)
    (tmp_path / "sites.csv").write_text("lat,lon,eunis_code,patch\n48.1,7.1,T11,here.tif\n48.2,7.2,T12,elsewhere.tif\n")
    sites = datasets.read_table(tmp_path / "sites.csv", satellite="patch", verbose=False)
    assert sites["satellite"].notna().tolist() == [True, False]
    assert sites.attrs["load_report"]["notes"]["satellite patch does not cover the site (patch ignored)"] == 1


def test_table_problems_raise_a_value_error_the_command_line_reports(tmp_path):
    path = tmp_path / "plots.csv"
    path.write_text("x,y,eunis_code\n48.1,7.1,T11\n")
    with pytest.raises(datasets.TableError, match="no latitude column"):
        datasets.read_table(path, verbose=False)
    assert issubclass(datasets.TableError, ValueError)
    assert not hasattr(cli, "read_table")                       # one reader of users' tables


# --- the evaluate command -----------------------------------------------------------------------

def _evaluate(table: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["evaluate", "--sites", str(table), "--modalities", "gps", "--folds", "3", "--out", str(out),
            "--cache", str(cache), "--no-progress", *extra]


def test_evaluate_gps_writes_results_for_the_requested_levels(sites_csv, folder, capsys):
    out = folder / "gps" / "results.json"
    assert cli.main(_evaluate(sites_csv, out, folder / "cache", "--levels", "1,2")) == 0
    text = out.read_text()
    results = json.loads(text)
    assert results["levels"] == [1, 2]
    _assert_report(results["load_report"], len(synthetic_sites()))
    assert results["input"]["columns"]["lat"] == "lat" and results["habitat_helpers_version"]
    assert results["settings"]["selection_sites"] == evaluation.Protocol().selection_sites
    scores = results["results"]["all labelled test sites"]
    for model in ("raw gps", "k-NN on coordinates", "majority"):
        assert set(scores[model]) == {"level1", "level2"}
        for level in ("level1", "level2"):
            assert isinstance(scores[model][level]["macro_f1"]["mean"], float)
            assert isinstance(scores[model][level]["macro_f1"]["std"], float)
    assert "aligned" not in scores                              # one modality: nothing to align
    assert "level3" not in text and {r["level"] for r in results["folds"]} == {1, 2}
    knn = scores["k-NN on coordinates"]["level1"]["macro_f1"]["mean"]
    assert knn > scores["majority"]["level1"]["macro_f1"]["mean"] + 0.3
    assert scores["raw gps"]["level1"]["macro_f1"]["mean"] > scores["majority"]["level1"]["macro_f1"]["mean"]
    printed = capsys.readouterr().out
    assert "macro-F1" in printed and "k-NN on coordinates" in printed and "level 2" in printed
    assert "level 3" not in printed.split("macro-F1")[-1]


def test_evaluate_eva_export_with_named_columns(eva_csv, folder):
    out = folder / "eva" / "results.json"
    args = _evaluate(eva_csv, out, folder / "cache", "--label-col", "Expert System", "--lat-col", "Latitude",
                     "--lon-col", "Longitude", "--id-col", "PlotObservationID", "--seeds", "0,1",
                     "--selection-sites", "all", "--fit-sites", "all")
    assert cli.main(args) == 0
    results = json.loads(out.read_text())
    assert results["input"]["columns"]["label_format"].startswith("EUNIS-ESy")
    assert results["settings"]["seeds"] == [0, 1] and results["settings"]["selection_sites"] is None
    assert results["settings"]["fit_sites"] is None
    assert set(results["results"]["all labelled test sites"]["majority"]) == {"level1", "level2", "level3"}


@pytest.mark.parametrize("extra, message", [
    (["--lat-col", "Breite"], "no latitude column: looked for 'Breite'. The table has the columns 'site_id', 'lat'"),
    (["--label-col", "habitat"], "no EUNIS label column"),
    (["--block-size-deg", "40"], "cannot make 3 folds"),
    (["--align-grid", "radius=1,2"], "expected FIELD=V1,V2 with FIELD among"),
    (["--align-grid", "radius_km=near"], "'near' is not a float"),
    (["--modalities", "gps,photo"], "--photo-cols"),
    (["--modalities", "gps,photo", "--photo-cols", "note"], "no site has a usable photo file"),
    (["--modalities", "gps,env", "--align-pool", "extra"], "--align-pool extra needs unlabelled extra sites"),
    (["--align-pool", "transductive"], "the alignment needs two or more --modalities"),
    (["--modalities", "gps,env", "--extra-sites", "x.csv"], "--extra-sites is read only with --align-pool"),
    (["--align-grid", "positives=radius,nearby"], "positives must be one of"),
    (["--align-grid", "photo_views=mean,each"], "photo_views must be one of"),
    (["--align-grid", "location_layers=frozen,all"], "location_layers must be one of"),
    (["--selection-sites", "5"], "selection_sites must be an integer of at least 10"),
    (["--selection-sites", "few"], "expected a number of sites or 'all'"),
    (["--fit-sites", "9"], "fit_sites must be an integer of at least 10"),
    (["--keep", "raw gps"], "--keep names the model --save-model keeps"),
])
def test_usage_problems_exit_with_code_2(sites_csv, folder, capsys, extra, message):
    out = folder / "never" / "results.json"
    assert cli.main(_evaluate(sites_csv, out, folder / "cache", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_no_labelled_rows_exit_with_code_2(tmp_path, capsys):
    path = tmp_path / "unlabelled.csv"
    path.write_text("lat,lon,eunis_code\n48.1,7.1,Z99\n49.1,8.1,\n")
    assert cli.main(_evaluate(path, tmp_path / "r.json", tmp_path / "cache")) == 2
    assert "no labelled rows" in capsys.readouterr().err


def test_bad_option_values_exit_with_code_2(sites_csv, tmp_path, capsys):
    assert cli.main(_evaluate(sites_csv, tmp_path / "r.json", tmp_path, "--levels", "1,4")) == 2
    assert "'4' is not one of 1, 2, 3" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0
    assert "evaluate" in capsys.readouterr().out


# Each command and one option that only it has: its --help shows it.
COMMAND_OPTIONS = {"evaluate": "--block-size-deg", "embed": "--shard-size", "align": "--radius-km",
                   "notebooks": "--profile", "report": "metrics.json", "workshop": "--check",
                   "fetch": "sentinel2", "qc": "--false-alarm", "map": "--tile"}


def test_every_command_is_listed_and_has_its_help(capsys):
    """``python -m habitat_helpers --help`` lists every command of cli.COMMANDS with its help;
    ``COMMAND --help`` exits 0 and shows the command's own options."""
    assert set(cli.COMMANDS) == set(COMMAND_OPTIONS)
    assert cli.main(["--help"]) == 0
    listing = " ".join(capsys.readouterr().out.split())       # argparse wraps long help lines
    for name, command in cli.COMMANDS.items():
        assert f" {name} " in listing and " ".join(command.help.split()) in listing
    for name, option in COMMAND_OPTIONS.items():
        assert cli.main([name, "--help"]) == 0, name
        out = capsys.readouterr().out
        assert out.startswith(f"usage: python -m habitat_helpers {name} ") and option in out, (name, out)
    assert cli.main(["embed", "--sites", "x.parquet"]) == 2                       # --cache is required
    assert "--cache" in capsys.readouterr().err
    assert cli.main(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_help_imports_only_the_command_asked_for():
    """The listing imports no command module (no torch); a command imports its own."""
    code = ("import sys; from habitat_helpers import cli; cli.main(['--help']); "
            "assert 'torch' not in sys.modules and 'habitat_helpers.embed' not in sys.modules; "
            "cli.main(['report', '--help']); assert 'habitat_helpers.report' in sys.modules; "
            "assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]


def test_module_runs_from_the_shell(sites_csv, tmp_path):
    """One real ``python -m habitat_helpers evaluate`` in a new process, as a user runs it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "habitat_helpers", "evaluate", "--sites", str(sites_csv),
                           "--modalities", "gps", "--folds", "3", "--out", str(out), "--cache", str(tmp_path / "c")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "k-NN on coordinates" in done.stdout
    results = json.loads(out.read_text())
    assert set(results["results"]["all labelled test sites"]["raw gps"]) == {"level1", "level2", "level3"}
    listed = subprocess.run([sys.executable, "-m", "habitat_helpers", "--help"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert listed.returncode == 0 and "evaluate" in listed.stdout


def test_evaluate_photos_and_gps_trains_the_aligned_model(tmp_path):
    """Photos (small coloured images, one view per column; some sites without) and GPS: two
    modalities, so the contrastive heads are trained and the aligned model is scored too."""
    from PIL import Image

    rng = np.random.default_rng(1)
    colours = {"R": (180, 190, 60), "T": (20, 90, 30), "S": (120, 70, 110)}
    (tmp_path / "img").mkdir()
    with open(tmp_path / "sites.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["site_id", "lat", "lon", "eunis_code", "photo_N", "photo_S"])
        for k, row in enumerate(synthetic_sites(n_clusters=8, per_cluster=6)):
            files = []
            for view in ("N", "S"):
                if k % 5 == 0:                                  # every fifth site has no photos
                    files.append("")
                    continue
                pixels = np.clip(np.array(colours[row["eunis_code"][0]]) + rng.normal(0, 25, (16, 16, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "img" / f"{k}{view}.png")
                files.append(f"img/{k}{view}.png")
            writer.writerow([row["site_id"], row["lat"], row["lon"], row["eunis_code"], *files])
    out = tmp_path / "results.json"
    args = ["evaluate", "--sites", str(tmp_path / "sites.csv"), "--photo-cols", "photo_N,photo_S",
            "--modalities", "photo,gps", "--folds", "3", "--levels", "1", "--image-size", "32",
            "--align-epochs", "3", "--align-grid", "radius_km=0,5", "--out", str(out),
            "--cache", str(tmp_path / "cache"), "--no-progress"]
    assert cli.main(args) == 0
    results = json.loads(out.read_text())
    # the alignment's radius is chosen on the validation blocks of each fold, like every other setting
    assert results["settings"]["align_grid"] == {"radius_km": [0.0, 5.0]}
    aligned = [c for c in results["choices"] if c["model"] == "aligned"]
    assert len(aligned) == 3 * len(results["settings"]["seeds"])                   # one choice per fold
    assert all(c["params"]["radius_km"] in (0.0, 5.0) for c in aligned)
    per_heads = len(evaluation.default_models(("photo", "gps"))[0].candidates(evaluation.Protocol()))
    assert all(c["candidates"] == 2 * per_heads for c in aligned)          # every candidate for each radius
    scores = results["results"]["all labelled test sites"]
    assert {"aligned", "raw photo", "raw gps", "raw concatenated", "k-NN on coordinates", "majority"} <= set(scores)
    assert results["embeddings"]["photo"]["sites_with_input"] == 144 - len(range(0, 144, 5))
    assert "test sites with photos" in results["results"]
    assert scores["raw photo"]["level1"]["macro_f1"]["mean"] > 0.9      # the colour gives the formation away


def test_evaluate_gps_and_env_reports_both_beside_each_other(sites_csv, folder, tmp_path):
    """The env modality (covariates sampled offline) next to GPS; a user raster in another CRS adds a
    covariate. The three regions differ in climate, so env alone must separate the level-1 habitats."""
    import rasterio
    from rasterio.transform import from_origin

    # a user covariate in EPSG:3035 (metres): its value grows eastwards, like the level-2 split
    x0, y0, res = 2_500_000, 4_200_000, 20_000
    grid = np.tile(np.arange(150, dtype=np.float32), (150, 1))
    grid[:5] = -9999                                          # a nodata strip in the far north
    raster = tmp_path / "eastness_3035.tif"
    with rasterio.open(raster, "w", driver="GTiff", height=150, width=150, count=1, dtype="float32",
                       crs="EPSG:3035", transform=from_origin(x0, y0, res, res), nodata=-9999) as dst:
        dst.write(grid, 1)
    out = tmp_path / "results.json"
    args = _evaluate(sites_csv, out, folder / "cache", "--modalities", "gps,env", "--levels", "1,2",
                     "--align-epochs", "3", "--covariates", "t_mean_annual,p_annual,koppen_main,coast_km",
                     "--env-raster", f"eastness={raster}:1", "--save-model", str(tmp_path / "model"),
                     "--keep", "raw concatenated")
    assert cli.main(args) == 0
    results = json.loads(out.read_text())
    # the kept model, refitted on every site, predicts from coordinates alone: GPS and the covariates
    # (the user raster included) sampled again and standardised as at training
    kept = pipeline.load(tmp_path / "model")
    assert kept.model == "raw concatenated" and kept.env["rasters"]["eastness"]["path"] == str(raster)
    table = pd.DataFrame(synthetic_sites())
    cells = kept.predict_locations(table["lat"], table["lon"])
    assert cells["label_l1"].notna().all()
    assert (cells["label_l1"] == table["eunis_code"].str[0]).mean() > 0.8
    scores = results["results"]["all labelled test sites"]
    assert {"aligned", "raw gps", "raw env", "raw concatenated", "k-NN on coordinates", "majority"} <= set(scores)
    env = results["embeddings"]["env"]
    assert env["covariates"] == ["t_mean_annual", "p_annual", "koppen_main", "coast_km", "eastness"]
    assert "eastness" in env["features"] and "koppen_main=3" in env["features"]
    assert env["sites_with_input"] == results["load_report"]["kept"]       # never a NaN row
    assert set(env["missing_per_covariate"]) == set(env["covariates"])
    majority = scores["majority"]["level1"]["macro_f1"]["mean"]
    assert scores["raw env"]["level1"]["macro_f1"]["mean"] > majority + 0.3


@pytest.mark.parametrize("extra, message", [
    (["--modalities", "gps,env", "--covariates", "t_mean_annual,altitude"], "unknown covariate(s) altitude"),
    (["--modalities", "gps,env", "--env-raster", "dem=/no/such/file.tif"], "no file /no/such/file.tif"),
    (["--modalities", "gps,env", "--env-raster", "just-a-path.tif"], "expected NAME=PATH"),
    (["--covariates", "t_mean_annual"], "add env to --modalities"),
])
def test_env_usage_problems_exit_with_code_2(sites_csv, folder, capsys, extra, message):
    out = folder / "never-env" / "results.json"
    assert cli.main(_evaluate(sites_csv, out, folder / "cache", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_with_extra_sites_and_the_alignment_options(sites_csv, folder, tmp_path, capsys):
    """Unlabelled extra sites train the heads (--align-pool extra) and are never scored; what a
    neighbour is and the GPS hub are chosen on the validation blocks; the peers' models are in
    results.json."""
    extra_rows = synthetic_sites(n_clusters=6, per_cluster=8, seed=7)
    extra_csv = tmp_path / "extra.csv"
    pd.DataFrame(extra_rows).assign(eunis_code="").to_csv(extra_csv, index=False)
    out = tmp_path / "results.json"
    args = _evaluate(sites_csv, out, folder / "cache", "--modalities", "gps,env", "--levels", "1", "--seed", "0",
                     "--align-epochs", "2", "--align-pool", "extra", "--extra-sites", str(extra_csv),
                     "--align-grid", "positives=radius,own_half", "--align-grid", "hub=none,gps")
    assert cli.main(args) == 0
    results = json.loads(out.read_text())
    settings = results["settings"]
    assert settings["align_pool"] == "extra" and settings["n_extra_sites"] == len(extra_rows)
    assert settings["align_grid"] == {"positives": ["radius", "own_half"], "hub": ["none", "gps"]}
    assert settings["align_pool_sites_per_fold"]["all"] > settings["n_sites"] * 0.3
    scores = results["results"]["all labelled test sites"]
    assert {"aligned", "aligned + raw", "MLP on raw concatenated", "raw concatenated"} <= set(scores)
    kept = results["load_report"]["kept"]
    assert settings["n_sites"] == kept                          # the extra sites are not study sites
    chosen = [c for c in results["choices"] if c["model"] == "aligned + raw"]
    assert chosen and all(c["params"]["positives"] in ("radius", "own_half") and c["params"]["hub"] in ("none", "gps")
                          for c in chosen)
    assert all(c["candidates"] == 16 * 4 for c in chosen)      # its grid times the four alignments
    # a labelled row among the extra sites is an error, not a silent drop
    pd.DataFrame(extra_rows).to_csv(extra_csv, index=False)
    assert cli.main(args) == 2
    assert "rows carry a label" in capsys.readouterr().err


def test_evaluate_reads_extra_sites_from_a_data_spec(sites_csv, folder, tmp_path):
    """A data spec's source marked 'extra: true' gives the unlabelled sites of --align-pool extra,
    without --extra-sites."""
    extra_rows = synthetic_sites(n_clusters=6, per_cluster=8, seed=11)
    pd.DataFrame(extra_rows)[["site_id", "lat", "lon"]].to_csv(tmp_path / "more.csv", index=False)
    (tmp_path / "spec.yml").write_text(f"name: with-extra\nsources:\n  - kind: table\n    path: {sites_csv}\n"
                                       "    site_id: site_id\n  - kind: table\n    path: more.csv\n"
                                       "    site_id: site_id\n    label: null\n    extra: true\n")
    out = tmp_path / "results.json"
    args = _evaluate(tmp_path / "spec.yml", out, folder / "cache", "--modalities", "gps,env", "--levels", "1",
                     "--seed", "0", "--align-epochs", "2", "--align-pool", "extra")
    assert cli.main(args) == 0
    settings = json.loads(out.read_text())["settings"]
    assert settings["align_pool"] == "extra" and settings["n_extra_sites"] == len(extra_rows)
    assert settings["align_pool_sites_per_fold"]["all"] > settings["n_sites"] * 0.3
