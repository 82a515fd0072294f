import html

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import habitat_helpers as hh


@pytest.fixture(scope="module")
def encoders():
    return (hh.encoders.get_encoder("efficientnet-lite0-imagenet", image_size=32),
            hh.encoders.get_encoder("geoclip-location"))


def _sites(tmp_path, n=6):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        views = ["N"] if i % 3 == 0 else ["N", "E"]   # some sites miss a view
        if i == 5:
            views = []                                 # and one has no photo at all
        paths = []
        for view in views:
            p = tmp_path / f"s{i}{view}.png"
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
            paths.append(str(p))
        sat = tmp_path / f"s{i}sat.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(sat)
        rows.append({"site_id": f"s{i}", "lat": 45 + i, "lon": 5 + i, "photos": paths, "photo_views": views,
                     "satellite": str(sat)})
    return pd.DataFrame(rows)


def test_embed_sites_pools_views_and_uses_the_cache(tmp_path, encoders, monkeypatch):
    sites = _sites(tmp_path)
    out = hh.embed.embed_sites(sites, *encoders, tmp_path / "cache", progress=False)
    assert out["photo_per_view"].shape == (8, 1280) and out["gps"].shape == (6, 512)
    assert out["photo_site"].tolist() == [0, 1, 1, 2, 2, 3, 4, 4]
    assert out["photo_view"].tolist() == ["N", "N", "E", "N", "E", "N", "N", "E"]
    np.testing.assert_allclose(out["photo"][0], out["photo_per_view"][0])                    # one view
    np.testing.assert_allclose(out["photo"][1], out["photo_per_view"][1:3].mean(axis=0), rtol=1e-5)
    assert np.isnan(out["photo"][5]).all() and np.isfinite(out["photo"][:5]).all()          # no photo
    # second call reads the cache: no image is opened
    monkeypatch.setattr(hh.embed, "embed_images", lambda *a, **k: pytest.fail("recomputed"))
    again = hh.embed.embed_sites(sites, *encoders, tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(again["satellite"], out["satellite"])
    assert not list((tmp_path / "cache").glob("*.tmp*"))


def test_missing_or_corrupt_image_names_the_file(tmp_path, encoders):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(OSError, match="broken.jpg"):
        hh.embed.embed_images([str(bad)], encoders[0], progress=False)
    with pytest.raises(FileNotFoundError, match="nothere.jpg"):
        hh.embed.embed_images([str(tmp_path / "nothere.jpg")], encoders[0], progress=False)


def test_site_embeddings_roundtrip(tmp_path):
    arrays = {"gps": np.ones((2, 3), np.float32)}
    path = hh.embed.save_site_embeddings(tmp_path / "e.npz", pd.Series(["a", "b"]), arrays)
    ids, loaded = hh.embed.load_site_embeddings(path)
    assert list(ids) == ["a", "b"] and loaded["gps"].shape == (2, 3)


def test_grid_is_land_only_and_rasterises_back():
    grid = hh.maps.make_grid((-5.0, 42.0, 10.0, 52.0), 0.5)
    assert grid.attrs["shape"] == (20, 30)
    assert 0.5 * 600 < len(grid) < 600  # France and neighbours: mostly land, some sea
    raster = hh.maps.to_raster(grid, np.ones(len(grid)))
    assert np.nansum(raster) == len(grid) and np.isnan(raster).sum() == 600 - len(grid)
    assert grid["lat"].max() == pytest.approx(51.75)


def test_class_colours_follow_formations():
    colours = hh.maps.class_colours(["R", "R1", "R2", "T1"])
    assert colours["R"] == hh.maps.FORMATION_COLOURS["R"]
    assert colours["R1"] != colours["R2"] and len(set(colours.values())) == 4


def test_folium_popups_are_escaped():
    sites = pd.DataFrame({"site_id": ["<script>alert(1)</script>", "b"], "lat": [48.0, 49.0],
                          "lon": [2.0, 3.0], "label_l1": ["R", None], "label": ["R2", None]})
    page = hh.maps.folium_sites_map(sites).get_root().render()
    assert "<script>alert(1)</script>" not in page
    assert html.escape("<script>alert(1)</script>") in page or "&amp;lt;script&amp;gt;" in page


def test_class_geotiff_reopens_with_crs_transform_and_codes(tmp_path):
    import rasterio

    grid = hh.maps.make_grid((4.0, 44.0, 6.0, 46.0), 0.5, land_only=False)
    codes = np.where(grid["lon"] < 5, "R2", "T1").astype(object)
    codes[0] = None                                             # no prediction in one cell
    p_top = np.linspace(0.3, 0.9, len(grid))
    paths = hh.maps.write_class_geotiff(tmp_path / "l2.tif", grid, codes, p_top=p_top,
                                        entropy=np.full(len(grid), 0.5))
    with rasterio.open(paths["classes"]) as src:
        assert src.crs.to_epsg() == 4326 and src.shape == grid.attrs["shape"]
        assert src.transform.a == pytest.approx(0.5) and src.transform.c == pytest.approx(4.0)
        assert src.transform.f == pytest.approx(46.0)
        band = src.read(1)
        tags = src.tags(1)
        assert tags["class_1"].startswith("R2 ") and tags["class_2"].startswith("T1 ")
        assert band[0, 0] == 0 and band[0, 1] == 1 and band[0, 3] == 2     # west R2, east T1
        assert src.colormap(1)[1][:3] == tuple(int(hh.maps.class_colours(["R2", "T1"])["R2"][i:i + 2], 16)
                                               for i in (1, 3, 5))
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    with rasterio.open(paths["uncertainty"]) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.descriptions == ("p_top", "entropy")
        assert src.read(1)[0, 0] == pytest.approx(p_top[0]) and src.read(2)[1, 1] == pytest.approx(0.5)
    legend = pd.read_csv(paths["legend"])           # the same legend for people and other tools
    assert legend["value"].tolist() == [1, 2] and legend["code"].tolist() == ["R2", "T1"]
    assert legend["name"].tolist() == [hh.eunis.name("R2"), hh.eunis.name("T1")]
    assert legend["colour"].tolist() == [hh.maps.class_colours(["R2", "T1"])[c] for c in ("R2", "T1")]


def test_streamed_prediction_equals_the_whole_grid():
    bbox, res = (4.0, 43.0, 8.0, 46.0), 0.25
    grid = hh.maps.make_grid(bbox, res)

    def predict(cells):
        code = np.where(cells["lon"].to_numpy() < 6, "R21", "T12").astype(object)
        return pd.DataFrame({"label_l1": [c[:1] for c in code], "label_l2": [c[:2] for c in code],
                             "label_l3": code, "p_l3": cells["lat"].to_numpy() / 100,
                             "entropy_l3": np.ones(len(cells))})

    out = hh.maps.predict_rasters(bbox, res, predict, {1: ["R", "T"], 2: ["R2", "T1"], 3: ["R21", "T12"]},
                                  chunk_rows=3, progress=False)
    assert out["cells"] == len(grid) and out["level1"].shape == grid.attrs["shape"]
    whole = predict(grid)
    np.testing.assert_array_equal(out["level3"][grid["row"], grid["col"]],
                                  np.where(whole["label_l3"] == "R21", 1, 2))
    np.testing.assert_allclose(out["p_l3"], hh.maps.to_raster(grid, whole["p_l3"]), rtol=1e-6)
    assert (out["level1"] == 0).sum() == out["level1"].size - len(grid)          # sea cells: no data


def test_streamed_rasters_write_the_same_geotiffs_as_the_grid(tmp_path):
    import rasterio

    bbox, res = (4.0, 43.0, 8.0, 46.0), 0.25
    grid = hh.maps.make_grid(bbox, res)

    def predict(cells):
        code = np.where(cells["lon"].to_numpy() < 6, "T12", "R21").astype(object)
        return pd.DataFrame({"label_l1": [c[:1] for c in code], "label_l2": [c[:2] for c in code],
                             "label_l3": code, "p_l3": np.full(len(cells), 0.7), "entropy_l3": np.ones(len(cells))})

    # classes given unsorted: raster values still follow the sorted legend
    out = hh.maps.predict_rasters(bbox, res, predict, {1: ["T", "R"], 2: ["T1", "R2"], 3: ["T12", "R21"]},
                                  chunk_rows=4, progress=False)
    streamed = hh.maps.write_rasters_geotiffs(tmp_path / "s", out)
    pred = predict(grid)
    whole = hh.maps.write_class_geotiff(tmp_path / "w" / "habitat_level3.tif", grid, pred["label_l3"],
                                        p_top=pred["p_l3"], entropy=pred["entropy_l3"])
    with rasterio.open(streamed[3]["classes"]) as a, rasterio.open(whole["classes"]) as b:
        assert a.transform == b.transform and a.crs == b.crs
        np.testing.assert_array_equal(a.read(1), b.read(1))
        assert a.tags(1)["class_1"].startswith("R21 ") and a.colormap(1)[2] == b.colormap(1)[2]
    with rasterio.open(streamed[3]["uncertainty"]) as a, rasterio.open(whole["uncertainty"]) as b:
        np.testing.assert_allclose(a.read(), b.read(), equal_nan=True)
    assert set(streamed) == {1, 2, 3} and "uncertainty" not in streamed[1]


def test_country_grid_keeps_only_its_cells():
    austria = hh.maps.country_shape("Austria")
    assert hh.maps.country_shape("AUT").equals(austria)
    grid = hh.maps.make_grid(None, 0.1, within=austria)
    lon_min, lat_min, lon_max, lat_max = grid.attrs["bbox"]
    x0, y0, x1, y1 = austria.bounds                           # Natural Earth 1:110m: about 9.5-17.0 E, 46.4-49.0 N
    assert 9.3 < x0 < 9.7 and 16.8 < x1 < 17.3 and 46.2 < y0 < 46.6 and 48.8 < y1 < 49.1
    for edge, bound in [(lon_min, x0), (lat_min, y0)]:       # snapped outward to the 0.1 degree grid
        assert bound - 0.1 < edge <= bound
    for edge, bound in [(lon_max, x1), (lat_max, y1)]:
        assert bound <= edge < bound + 0.1
    # Austria is about 84,000 km2; a 0.1 degree cell at 47.5 N is about 8.2 x 11.1 km
    assert 84_000 / 91 * 0.85 < len(grid) < 84_000 / 91 * 1.15
    france = hh.maps.country_shape("France")                   # clipped to Europe: no French Guiana
    assert france.bounds[1] > 40
    with pytest.raises(ValueError, match="unknown country"):
        hh.maps.country_shape("Atlantis")
    with pytest.raises(ValueError, match="bbox"):
        hh.maps.make_grid(None, 0.1)
