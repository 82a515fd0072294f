"""``python -m habitat_helpers fetch covariates`` against the local server: a tiny "global" WorldClim zip
and CHELSA GeoTIFFs made here (1° cells, values linear in lat/lon so bilinear sampling is exact), clipped
to COGs that load through ``--env-raster`` / :func:`habitat_helpers.environment.sample`."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from habitat_helpers import cli, environment
from habitat_helpers.cli import options as cli_options
from habitat_helpers.fetch import covariates

NODATA = -3.4e38
LAT = np.array([48.2, 40.4, 55.7, 70.0])          # the last one lies outside the europe bbox
LON = np.array([11.46, -3.7, 12.6, 20.0])


def temperature(lat, lon):
    return 0.1 * lon + 0.2 * lat


def precipitation(lat, lon):
    return 500.0 + 10.0 * lat


def _grid():
    lon = np.arange(-180, 180) + 0.5
    lat = 90 - (np.arange(180) + 0.5)
    return np.meshgrid(lat, lon, indexing="ij")


def _write(path, data, dtype, nodata):
    with rasterio.open(path, "w", driver="GTiff", width=360, height=180, count=1, dtype=dtype,
                       crs="EPSG:4326", transform=from_origin(-180, 90, 1, 1), nodata=nodata) as dst:
        dst.write(data.astype(dtype), 1)


def _worldclim_zip(folder, resolution="10m"):
    lat, lon = _grid()
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"wc2.1_{resolution}_bio.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for n, f in ((1, temperature), (2, temperature), (12, precipitation)):
            data = np.where(lat < -60, NODATA, f(lat, lon))
            tif = folder / f"wc2.1_{resolution}_bio_{n}.tif"
            _write(tif, data, "float32", NODATA)
            zf.write(tif, tif.name)
            tif.unlink()
    return archive


def _chelsa(folder):
    lat, lon = _grid()
    folder.mkdir(parents=True, exist_ok=True)
    stored = {1: np.round((temperature(lat, lon) + 273.15) / 0.1), 12: np.round(precipitation(lat, lon) / 0.1)}
    for n, values in stored.items():
        _write(folder / f"CHELSA_bio{n}_1981-2010_V.2.1.tif", np.where(lat < -60, 65535, values), "uint16", 65535)


def _args(out, server, *more, source="worldclim", base="wc"):
    return ["fetch", "covariates", "--source", source, "--out", str(out), "--base-url", server.url(base),
            "--rate", "0", "--backoff", "0", "--retries", "2", "--no-progress", *more]


def _sample(rasters: dict):
    covs = cli_options.env_rasters([f"{name}={path}" for name, path in rasters.items()])   # the --env-raster path
    return environment.sample(LAT, LON, covariates=[], rasters=covs)


def test_worldclim_clipped_cogs_load_as_env_rasters(tmp_path, http_server):
    _worldclim_zip(http_server.root / "wc")
    out = tmp_path / "cov"
    assert cli.main(_args(out, http_server, "--variables", "bio1,bio12", "--region", "europe")) == 0
    bio1, bio12 = out / "worldclim_10m_bio1_europe.tif", out / "worldclim_10m_bio12_europe.tif"
    for path in (bio1, bio12):
        with rasterio.open(path) as src:
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert tuple(src.bounds) == pytest.approx(covariates.REGIONS["europe"])
            assert src.nodata == pytest.approx(NODATA) and src.crs.to_epsg() == 4326
    lines = (out / "env_rasters.txt").read_text().splitlines()
    assert lines == [f"--env-raster worldclim_bio1={bio1}", f"--env-raster worldclim_bio12={bio12}"]

    table, report = _sample({"worldclim_bio1": bio1, "worldclim_bio12": bio12})
    inside = slice(0, 3)
    assert table["worldclim_bio1"][inside].to_numpy() == pytest.approx(temperature(LAT, LON)[inside], abs=1e-4)
    assert table["worldclim_bio12"][inside].to_numpy() == pytest.approx(precipitation(LAT, LON)[inside], abs=1e-3)
    assert np.isnan(table["worldclim_bio1"][3]) and report.outside["worldclim_bio1"] == 1

    # resume: the outputs are there, nothing is asked for; a new variable reuses the kept zip
    assert cli.main(_args(out, http_server, "--variables", "bio1,bio12", "--region", "europe")) == 0
    assert cli.main(_args(out, http_server, "--variables", "bio2", "--region", "europe")) == 0
    assert http_server.hits("wc/wc2.1_10m_bio.zip") == 1
    assert (out / "worldclim_10m_bio2_europe.tif").exists()


def test_worldclim_bbox_resumes_a_partial_zip(tmp_path, http_server):
    archive = _worldclim_zip(http_server.root / "wc", "5m")
    out = tmp_path / "cov"
    part = out / "downloads" / (archive.name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(archive.read_bytes()[:1000])
    report = covariates.fetch_covariates("worldclim", ["bio12"], bbox=(5.2, 43.5, 17.0, 48.5), resolution="5m",
                                         out=out, base_url=http_server.url("wc"), progress=False,
                                         session=covariates.http.Session(rate=None, backoff=0),
                                         delete_downloads=True)
    assert report.ok and report.written == ["bio12"]
    assert ("GET", "/wc/wc2.1_5m_bio.zip", "bytes=1000-") in http_server.requests
    assert not (out / "downloads" / archive.name).exists()           # --delete-downloads
    path = report.rasters["worldclim_bio12"]
    assert path.name == "worldclim_5m_bio12_bbox5.2_43.5_17_48.5.tif"
    with rasterio.open(path) as src:                                 # whole source cells around the bbox
        assert tuple(src.bounds) == (5.0, 43.0, 17.0, 49.0)


def test_chelsa_scaled_retried_and_missing_reported(tmp_path, http_server, capsys):
    _chelsa(http_server.root / "ch")
    out = tmp_path / "cov"
    http_server.fail("ch/CHELSA_bio1_1981-2010_V.2.1.tif", 503, 503)
    args = _args(out, http_server, "--variables", "bio1,bio12,bio5", "--region", "europe", source="chelsa",
                 base="ch")
    assert cli.main(args) == 1                                       # bio5 is not on the server
    captured = capsys.readouterr()
    assert "bio5: missing" in captured.out and "1 variable(s) could not be written" in captured.err
    assert http_server.hits("ch/CHELSA_bio1_1981-2010_V.2.1.tif") == 3
    bio1, bio12 = out / "chelsa_30s_bio1_europe.tif", out / "chelsa_30s_bio12_europe.tif"
    with rasterio.open(bio1) as src:
        assert (src.scales[0], src.offsets[0]) == (0.1, -273.15) and src.dtypes[0] == "uint16"
    table, _ = _sample({"chelsa_bio1": bio1, "chelsa_bio12": bio12})
    assert table["chelsa_bio1"][:3].to_numpy() == pytest.approx(temperature(LAT, LON)[:3], abs=0.06)
    assert table["chelsa_bio12"][:3].to_numpy() == pytest.approx(precipitation(LAT, LON)[:3], abs=0.06)


def test_permanent_server_error_exit_1(tmp_path, http_server, capsys):
    _worldclim_zip(http_server.root / "wc")
    http_server.fail("wc/wc2.1_10m_bio.zip", 500, 500, 500)
    assert cli.main(_args(tmp_path / "cov", http_server, "--variables", "bio1", "--region", "alps")) == 1
    captured = capsys.readouterr()
    assert "HTTP 500" in captured.out and "gave up after 3 tries" in captured.out
    assert http_server.hits("wc/wc2.1_10m_bio.zip") == 3
    assert not (tmp_path / "cov" / "worldclim_10m_bio1_alps.tif").exists()


@pytest.mark.parametrize("more, message", [
    (["--variables", "bio20", "--region", "europe"], "bio20"),
    (["--resolution", "1m", "--region", "europe"], "10m, 5m, 2.5m, 30s"),
    (["--bbox", "30,36,-10,62"], "minlon < maxlon"),
    (["--bbox", "a,b,c,d"], "four numbers"),
    (["--bbox", "1,2,3"], "four"),
    (["--region", "atlantis"], "invalid choice"),
    (["--region", "europe", "--bbox", "0,0,1,1"], "not allowed with"),
    ([], "one of the arguments --bbox --region is required"),
    (["--region", "europe", "--workers", "0"], "--workers"),
])
def test_bad_options_exit_2(tmp_path, http_server, capsys, more, message):
    assert cli.main(_args(tmp_path / "cov", http_server, *more)) == 2
    assert message in capsys.readouterr().err
    assert not http_server.requests


def test_chelsa_has_only_30s(tmp_path, http_server, capsys):
    args = _args(tmp_path / "cov", http_server, "--region", "europe", "--resolution", "10m", source="chelsa")
    assert cli.main(args) == 2
    assert "chelsa serves the resolution(s) 30s" in capsys.readouterr().err
