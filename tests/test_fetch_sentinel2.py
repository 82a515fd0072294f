"""``python -m habitat_helpers fetch sentinel2`` against a local STAC API (tests/local_server.py).

The test catalogue (made by :func:`_catalogue`): a landing page with the item-search and query
conformance classes, a ``/search`` handler that filters by point, dates, collection and cloud
cover, and tiny Cloud-Optimised GeoTIFFs in UTM zone 32N (EPSG:32632), each band's value
``base + 100 * band + column`` so a patch tells which scene and which columns it came from:

========  =====  ===============================  ==========================================
scene     cloud  extent (x, y in m)               role
========  =====  ===============================  ==========================================
clear     5 %    500000-502000, 4998000-5000000   the least cloudy: sites a and b; offset -0.1
hazy      15 %   499000-502000, 4998000-5000000   second: site e, at clear's western edge; offset 0
cloudy    80 %   around site d (no files)         over the threshold: d is reported
autumn    0 %    like clear (no files)            outside the season: never chosen
========  =====  ===============================  ==========================================

Site c lies where no scene is.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pystac_client")
rasterio = pytest.importorskip("rasterio")

from rasterio.transform import from_origin  # noqa: E402
from rasterio.warp import transform as warp_points  # noqa: E402
from rasterio.warp import transform_bounds  # noqa: E402

import habitat_helpers as hh  # noqa: E402
from habitat_helpers.fetch import sentinel2  # noqa: E402

UTM = "EPSG:32632"
SIZE = 16
BANDS = ("B04", "B03", "B02")
KEYS = {"B04": "red", "B03": "green", "B02": "blue"}
#: scene -> (cloud %, datetime, origin x, origin y, width, height px, base value, raster:bands offset,
#: has files)
SCENES = {
    "clear": (5.0, "2022-07-10T10:30:00Z", 500000, 5000000, 200, 200, 3000, -0.1, True),
    "hazy": (15.0, "2022-07-20T10:30:00Z", 499000, 5000000, 300, 200, 6000, 0.0, True),
    "cloudy": (80.0, "2022-07-15T10:30:00Z", 520000, 5020000, 100, 100, 9000, 0.0, False),
    "autumn": (0.0, "2022-10-01T10:30:00Z", 500000, 5000000, 200, 200, 12000, 0.0, False),
}
#: site -> x, y in EPSG:32632 (pixel centres of the 10 m grid), or None for lat/lon given
SITES = {"a": (500505.0, 4999495.0), "b": (501505.0, 4998505.0), "e": (500035.0, 4999005.0),
         "d": (520505.0, 5019495.0)}


def _lonlat(x: float, y: float) -> tuple[float, float]:
    (lon,), (lat,) = warp_points(UTM, "EPSG:4326", [x], [y])
    return lon, lat


def _write_cog(path, origin_x, origin_y, width, height, value_base, res: float = 10.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = np.arange(width, dtype=np.uint16)[None, :].repeat(height, axis=0)
    with rasterio.open(path, "w", driver="COG", width=width, height=height, count=1, dtype="uint16",
                       crs=UTM, transform=from_origin(origin_x, origin_y, res, res), blocksize=128,
                       nodata=0) as dst:
        dst.write(value_base + columns, 1)


def _in_window(value: str, window: str) -> bool:
    start, end = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in window.split("/"))
    return start <= datetime.fromisoformat(value.replace("Z", "+00:00")) <= end


def _catalogue(server) -> dict:
    """Write the static STAC API and its COGs under ``server.root``; the items by id."""
    items = {}
    for scene, (cloud, when, x0, y0, width, height, base, offset, has_files) in SCENES.items():
        assets = {}
        for k, band in enumerate(BANDS):
            relative = f"cogs/{scene}/{band}.tif"
            if has_files:
                _write_cog(server.root / relative, x0, y0, width, height, base + 100 * k)
            assets[KEYS[band]] = {"href": server.url(relative), "type": "image/tiff; application=geotiff",
                                  "eo:bands": [{"name": KEYS[band], "common_name": KEYS[band]}],
                                  "raster:bands": [{"nodata": 0, "scale": 0.0001, "offset": offset}],
                                  "roles": ["data"]}
            assets[f"{KEYS[band]}-jp2"] = {"href": server.url(f"jp2/{scene}/{band}.jp2"), "roles": ["data"]}
        if scene == "clear":            # one 20 m band (B8A), to be resampled to the 10 m grid
            _write_cog(server.root / "cogs/clear/B8A.tif", x0, y0, width // 2, height // 2, 20000, res=20.0)
            assets["nir08"] = {"href": server.url("cogs/clear/B8A.tif"), "roles": ["data"]}
        bbox = list(transform_bounds(UTM, "EPSG:4326", x0, y0 - 10 * height, x0 + 10 * width, y0))
        items[scene] = {
            "type": "Feature", "stac_version": "1.0.0", "id": f"S2_{scene}", "collection": "sentinel-2-l2a",
            "bbox": bbox, "geometry": {"type": "Polygon", "coordinates": [[
                [bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]], [bbox[0], bbox[1]]]]},
            "properties": {"datetime": when, "eo:cloud_cover": cloud, "proj:epsg": 32632},
            "assets": assets, "links": []}
    landing = {
        "type": "Catalog", "id": "test-api", "stac_version": "1.0.0", "description": "local test STAC API",
        "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
                       "https://api.stacspec.org/v1.0.0/item-search#query"],
        "links": [{"rel": "self", "href": server.url("api.json"), "type": "application/json"},
                  {"rel": "root", "href": server.url("api.json"), "type": "application/json"},
                  {"rel": "search", "href": server.url("search"), "type": "application/geo+json", "method": "POST"},
                  {"rel": "data", "href": server.url("collections"), "type": "application/json"}]}
    (server.root / "api.json").write_text(json.dumps(landing))
    (server.root / "collections").mkdir()
    (server.root / "collections" / "sentinel-2-l2a").write_text(json.dumps({
        "type": "Collection", "id": "sentinel-2-l2a", "stac_version": "1.0.0", "description": "test",
        "license": "proprietary", "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                                             "temporal": {"interval": [["2015-06-27T00:00:00Z", None]]}},
        "links": []}))

    def search(body: dict):
        lon, lat = body["intersects"]["coordinates"]
        limit = body.get("query", {}).get("eo:cloud_cover", {}).get("lte", 100)
        found = [item for item in items.values()
                 if item["collection"] in body.get("collections", [item["collection"]])
                 and item["bbox"][0] <= lon <= item["bbox"][2] and item["bbox"][1] <= lat <= item["bbox"][3]
                 and _in_window(item["properties"]["datetime"], body["datetime"])
                 and item["properties"]["eo:cloud_cover"] <= limit]
        found.sort(key=lambda item: -item["properties"]["eo:cloud_cover"])   # the worst first: the client sorts
        return 200, {"type": "FeatureCollection", "features": found, "links": []}

    server.on_post("search", search)
    return items


def _sites_csv(tmp_path) -> tuple:
    """A table of sites with id, lat and lon only (no label column)."""
    rows = [{"id": name, "lat": _lonlat(x, y)[1], "lon": _lonlat(x, y)[0]} for name, (x, y) in SITES.items()]
    rows.append({"id": "c", "lat": 60.0, "lon": 20.0})
    table = pd.DataFrame(rows)
    path = tmp_path / "sites.csv"
    table.to_csv(path, index=False)
    return path, table


def _cli(argv: list[str]) -> int:
    """``python -m habitat_helpers fetch sentinel2 ARGV`` in this process; the exit code. Through
    ``cli.main`` when every fetch source module exists (``fetch --help`` imports them all)."""
    from habitat_helpers import cli, fetch

    if all(importlib.util.find_spec(f"habitat_helpers.fetch.{m}") for _, m in fetch.SOURCES.values()):
        return cli.main(["fetch", "sentinel2", *argv])
    parser = argparse.ArgumentParser(prog="python -m habitat_helpers fetch sentinel2")
    sentinel2.add_arguments(parser)
    try:
        return sentinel2.run(parser.parse_args(argv))
    except SystemExit as stop:
        return stop.code
    except (cli.UsageError, hh.datasets.TableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


@pytest.fixture
def api(http_server, tmp_path):
    _catalogue(http_server)
    sites_path, table = _sites_csv(tmp_path)
    argv = ["--sites", str(sites_path), "--out", str(tmp_path / "patches"), "--stac-url", http_server.url("api.json"),
            "--size", str(SIZE), "--season", "summer", "--year", "2022", "--max-cloud", "20", "--no-progress",
            "--workers", "2"]
    return http_server, argv, tmp_path / "patches", sites_path


def _expected(scene: str, x: float, band: int = 0, raw: bool = False) -> np.ndarray:
    """The first row of values a patch centred on ``x`` gets from ``scene`` (offset removed)."""
    _, _, x0, _, _, _, base, offset, _ = SCENES[scene]
    first = int((x - x0) // 10) - SIZE // 2
    values = base + 100 * band + np.arange(first, first + SIZE)
    return values + (round(offset * 10000) if not raw else 0)


def test_patches_load_through_read_satellite(api):
    server, argv, out, sites_path = api
    assert _cli(argv) == 0

    sites = hh.datasets.read_table(sites_path, label="id", site_id="id", verbose=False)
    sites = hh.datasets.read_satellite(sites, out)
    attached = dict(zip(sites["site_id"].str.split(":").str[1], sites["satellite"]))
    assert pd.isna(attached["c"]) and pd.isna(attached["d"])
    for name, scene in (("a", "clear"), ("b", "clear"), ("e", "hazy")):
        patch = hh.datasets.read_patch(attached[name], list(BANDS))
        assert patch.shape == (3, SIZE, SIZE)
        for band in range(3):     # the right scene (least cloudy), the right columns (the right site)
            np.testing.assert_array_equal(patch[band, 0], _expected(scene, SITES[name][0], band))
        with rasterio.open(attached[name]) as src:
            assert src.crs.to_epsg() == 32632 and src.res == (10.0, 10.0) and src.dtypes[0] == "uint16"
            assert src.descriptions == BANDS
            assert src.tags()["stac_item"] == f"S2_{scene}"
    assert hh.datasets.open_image(attached["a"]).size == (SIZE, SIZE)

    scenes = pd.read_csv(out / sentinel2.SCENES_FILE)
    assert set(scenes["item"]) == {"S2_clear", "S2_hazy"}
    assert (scenes.loc[scenes["item"] == "S2_clear", "boa_offset"] == "-1000,-1000,-1000").all()
    # no JPEG 2000 copy and no file of a cloudy or out-of-season scene was asked for
    assert not any(p.startswith(("/jp2/", "/cogs/cloudy/", "/cogs/autumn/")) for _, p, _ in server.requests)


def test_report_lists_sites_without_a_patch(api):
    server, argv, out, _ = api
    assert _cli(argv) == 0
    report = pd.read_csv(out / sentinel2.REPORT_FILE).set_index("site_id")
    assert sorted(report.index) == ["sites:c", "sites:d"]
    assert report.loc["sites:c", "reason"] == sentinel2.REASONS["no_scene"]
    assert report.loc["sites:d", "reason"] == sentinel2.REASONS["cloudy"]
    assert "80% > 20%" in report.loc["sites:d", "detail"]
    # site e's patch crossed the clear scene's edge: the hazy one was used
    scenes = pd.read_csv(out / sentinel2.SCENES_FILE).set_index("site_id")
    assert scenes.loc["sites:e", "item"] == "S2_hazy"


def test_resume_asks_nothing_for_complete_patches(api):
    server, argv, out, _ = api
    assert _cli(argv) == 0
    before = (server.hits("search", "POST"), sum(1 for m, p, _ in server.requests if p.endswith(".tif")),
              server.hits("api.json"))
    (out / "a.tif").unlink()
    assert _cli(argv) == 0
    # only site a is fetched again, and the two sites without a patch are asked again (each twice:
    # the API filters by cloud cover, so an empty answer is followed by one that says why)
    assert server.hits("search", "POST") == before[0] + 1 + 2 * 2
    # (GDAL keeps the COG blocks it read in this process: site a's window may come from that cache)
    assert sum(1 for m, p, _ in server.requests if p.endswith(".tif")) - before[1] <= 3 * 4
    assert server.hits("api.json") == before[2] + 1
    assert (out / "a.tif").exists()
    assert not list(out.glob("*.part"))
    result = pd.read_csv(out / sentinel2.SCENES_FILE).set_index("site_id")
    assert result.loc["sites:a", "status"] == "fetched" and result.loc["sites:b", "status"] == "present"


def test_second_run_of_complete_patches_is_offline(http_server, tmp_path):
    _catalogue(http_server)
    sites = pd.DataFrame({"site_id": ["x:a", "x:b"], "lat": [_lonlat(*SITES[k])[1] for k in "ab"],
                          "lon": [_lonlat(*SITES[k])[0] for k in "ab"]})
    options = {"size": SIZE, "stac_url": http_server.url("api.json"), "progress": False}
    first = sentinel2.fetch_sentinel2(sites, tmp_path / "p", **options)
    assert list(first["status"]) == ["fetched", "fetched"]
    requests = len(http_server.requests)
    second = sentinel2.fetch_sentinel2(sites, tmp_path / "p", **options)
    assert list(second["status"]) == ["present", "present"]
    assert len(http_server.requests) == requests          # not even the landing page
    assert list(second["item"]) == ["S2_clear", "S2_clear"]
    # another request (other bands) is fetched again, raw digital numbers kept
    third = sentinel2.fetch_sentinel2(sites, tmp_path / "p", bands=["B04"], raw=True, **options)
    assert list(third["status"]) == ["fetched", "fetched"]
    patch = hh.datasets.read_patch(tmp_path / "p" / "a.tif")
    assert patch.shape == (1, SIZE, SIZE)
    np.testing.assert_array_equal(patch[0, 0], _expected("clear", SITES["a"][0], raw=True))


def test_20m_band_resampled_to_10m(http_server, tmp_path):
    _catalogue(http_server)
    lon, lat = _lonlat(*SITES["a"])
    sites = pd.DataFrame({"site_id": ["x:a"], "lat": [lat], "lon": [lon]})
    result = sentinel2.fetch_sentinel2(sites, tmp_path, size=SIZE, bands="B04,B8A", raw=True, progress=False,
                                       stac_url=http_server.url("api.json"))
    assert list(result["status"]) == ["fetched"]
    patch = hh.datasets.read_patch(result["file"][0], ["B04", "B8A"])
    assert patch.shape == (2, SIZE, SIZE)
    first_20m_column = (SITES["a"][0] - 500000) / 20 - SIZE / 4
    row = patch[1, 0]          # bilinear on the 10 m grid: each 20 m column over two pixels, rising
    assert np.all(np.diff(row) >= 0) and abs(row.mean() - (20000 + first_20m_column + SIZE / 4)) <= 1


def test_search_retries_after_503(api):
    server, argv, out, _ = api
    server.fail("search", 503)
    assert _cli(argv) == 0
    # 5 sites, c and d searched twice (is there any scene?), plus the one refused
    assert server.hits("search", "POST") == 5 + 2 + 1
    assert (out / "a.tif").exists()


def test_cog_read_retries_after_503(api):
    server, argv, out, _ = api
    server.fail("cogs/clear/B04.tif", 503, 503)
    assert _cli(argv + ["--backoff", "0.1"]) == 0
    assert (out / "a.tif").exists() and (out / "b.tif").exists()
    asked = [(m, r) for m, p, r in server.requests if p == "/cogs/clear/B04.tif"]
    assert len(asked) >= 3                               # two refused, then served


def test_failed_search_exits_1_and_is_reported(api, capsys):
    server, argv, out, _ = api
    server.fail("search", *[503] * 40)
    assert _cli(argv + ["--retries", "1", "--backoff", "0"]) == 1
    assert "run the same command again" in capsys.readouterr().err
    report = pd.read_csv(out / sentinel2.REPORT_FILE)
    assert len(report) == 5 and (report["reason"] == sentinel2.REASONS["search_failed"]).all()
    assert server.hits("search", "POST") == 5 * 2                # one retry each


@pytest.mark.parametrize("extra, message", [
    (["--bands", "B04,B99"], "unknown band 'B99'"),
    (["--season", "13-02"], "season '13-02'"),
    (["--max-cloud", "150"], "max cloud 150"),
    (["--size", "2"], "size 2"),
    (["--stac-url", "ftp://example.org"], "expected http(s)"),
    (["--retries", "-1"], "must be 0 or more"),
])
def test_bad_arguments_exit_2(api, capsys, extra, message):
    server, argv, out, _ = api
    assert _cli(argv + extra) == 2
    captured = capsys.readouterr()
    assert message in captured.out + captured.err
    assert not server.requests                           # checked before any work


def test_bad_table_or_api_exit_2(api, capsys):
    server, argv, out, sites_path = api
    missing = [a if a != str(sites_path) else str(sites_path.with_name("nope.csv")) for a in argv]
    assert _cli(missing) == 2
    assert "table not found" in capsys.readouterr().err
    not_api = argv + ["--stac-url", server.url("collections/sentinel-2-l2a")]
    assert _cli(not_api) == 2
    assert "is not a STAC API landing page" in capsys.readouterr().err
    assert _cli(argv + ["--stac-url", server.url("nothing.json")]) == 2
    assert "cannot open the STAC API" in capsys.readouterr().err


def test_helpers():
    assert sentinel2.season_window("summer", 2022) == "2022-06-01/2022-08-31"
    assert sentinel2.season_window("winter", 2024) == "2023-12-01/2024-02-29"
    assert sentinel2.season_window("5-9", 2021) == "2021-05-01/2021-09-30"
    assert sentinel2.parse_bands("b4, B8,B8A") == ("B04", "B08", "B8A")
    assert sentinel2.patch_name("lucas:4242:1") == "4242_1" and sentinel2.patch_name("t:a/b") is None
    item = {"properties": {"s2:processing_baseline": "05.09"}}
    assert sentinel2.boa_offset(item, {}) == -1000
    assert sentinel2.boa_offset({"properties": {"s2:processing_baseline": "03.01"}}, {}) == 0
    assert sentinel2.boa_offset({"properties": {}}, {"raster:bands": [{"scale": 0.0001, "offset": -0.1}]}) == -1000
    flagged = {"properties": {"earthsearch:boa_offset_applied": False, "s2:processing_baseline": "04.00"}}
    assert sentinel2.boa_offset(flagged, {"raster:bands": [{"scale": 0.0001, "offset": -0.1}]}) == -1000
    assert sentinel2.boa_offset(flagged, {"raster:bands": [{"scale": 0.0001, "offset": 0}]}) == 0
    assert sentinel2.boa_offset(flagged, {}) == 0
    v0 = {"assets": {"B04": {"href": "x/B04.tif"}}}
    assert sentinel2.find_asset(v0, "B04")["href"] == "x/B04.tif"
