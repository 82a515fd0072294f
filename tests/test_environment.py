"""hh.environment: covariate values against independent rasterio / xarray reads of known cells."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from pyproj import Transformer
from rasterio.transform import from_origin
from rasterio.windows import Window

from habitat_helpers import environment as env


@pytest.fixture(scope="module")
def era5():
    with xr.open_dataset(env.era5_path()) as ds:
        yield ds


def _era5_cell(ds, var, lat, lon):
    """Twelve monthly values of one ERA5 cell, read by coordinates (lon in 0..360)."""
    return ds[var].sel(latitude=lat, longitude=lon % 360).values.astype(float)


def test_era5_cell_centres_equal_xarray_reads(era5):
    lats, lons = np.array([48.75, 39.5, 60.5]), np.array([2.25, -0.5, 5.25])
    table, report = env.sample(lats, lons, ["t_mean_annual", "t_seasonality", "t_warmest_month",
                                            "t_coldest_month", "p_annual", "p_seasonality"])
    for i, (lat, lon) in enumerate(zip(lats, lons)):
        t, p = _era5_cell(era5, "t2m", lat, lon), _era5_cell(era5, "tp", lat, lon)
        assert table.t_mean_annual[i] == pytest.approx(t.mean(), rel=1e-6)
        assert table.t_seasonality[i] == pytest.approx(np.std(t, ddof=1), rel=1e-6)
        assert table.t_warmest_month[i] == pytest.approx(t.max(), rel=1e-6)
        assert table.t_coldest_month[i] == pytest.approx(t.min(), rel=1e-6)
        assert table.p_annual[i] == pytest.approx(p.sum(), rel=1e-6)
        q = p + 1
        assert table.p_seasonality[i] == pytest.approx(100 * np.std(q, ddof=1) / q.mean(), rel=1e-6)
    assert sum(report.missing.values()) == 0
    # plausible units: °C and mm (the file's attributes say K and m)
    assert 8 < table.t_mean_annual[0] < 15 and 400 < table.p_annual[0] < 1200


def test_era5_bilinear_off_centre_and_across_the_zero_meridian(era5):
    # (48.80, 2.31): between rows 48.75/49.0 and columns 2.25/2.5; (51.1, -0.1): columns 359.75 and 0.0
    for lat, lon, (la, lb), (oa, ob) in [(48.80, 2.31, (49.0, 48.75), (2.25, 2.5)),
                                         (51.10, -0.10, (51.25, 51.0), (-0.25, 0.0))]:
        v, u = (la - lat) / 0.25, (lon - oa) / 0.25       # fractional position from the top-left centre
        z = {(a, b): _era5_cell(era5, "t2m", a, b) for a in (la, lb) for b in (oa, ob)}
        hand = ((1 - v) * (1 - u) * z[la, oa] + (1 - v) * u * z[la, ob]
                + v * (1 - u) * z[lb, oa] + v * u * z[lb, ob])
        table, report = env.sample([lat], [lon], ["t_mean_annual", "t_warmest_month"])
        assert table.t_mean_annual[0] == pytest.approx(hand.mean(), rel=1e-6)
        assert table.t_warmest_month[0] == pytest.approx(hand.max(), rel=1e-6)
        assert report.fallback["t_mean_annual"] == 0


def test_koppen_nearest_equals_rasterio_windows():
    rng = np.random.default_rng(3)
    lat, lon = rng.uniform(40, 60, 40), rng.uniform(-5, 25, 40)
    table, report = env.sample(lat, lon, ["koppen_main"])
    with rasterio.open(env.koppen_path()) as src:
        expected = []
        for la, lo in zip(lat, lon):
            row, col = src.index(lo, la)
            expected.append(src.read(1, window=Window(col, row, 1, 1))[0, 0])
    expected = np.array(expected, float)
    expected[expected == 0] = np.nan                 # 0 is the raster's nodata (sea)
    np.testing.assert_array_equal(table.koppen_main.to_numpy(), expected)
    assert report.missing["koppen_main"] == report.nodata["koppen_main"] == int(np.isnan(expected).sum())
    # a cell centre and a point near its corner give the cell's class; Paris is temperate, Lapland cold
    t, _ = env.sample([48.8541667, 48.8508, 68.5], [2.3541667, 2.3508, 25.5], ["koppen_main"])
    assert t.koppen_main.tolist() == [3.0, 3.0, 4.0]


def test_land_and_coast(tmp_path):
    from habitat_helpers import landmask

    lat, lon = np.array([48.85, 43.0, 51.0, 46.0]), np.array([2.35, -9.4, 2.0, 1.0])
    table, report = env.sample(lat, lon, ["land", "coast_km"])
    np.testing.assert_array_equal(table.land.to_numpy(), landmask.is_land(lat, lon).astype(float))
    # brute force: haversine to every coast cell centre
    rows, cols, lat_axis, lon_axis = env._coast_cells()
    half = abs(lat_axis[1] - lat_axis[0]) / 2
    clat, clon = np.deg2rad(lat_axis[rows] - half), np.deg2rad(lon_axis[cols] + half)
    for i in range(lat.size):
        p, q = np.deg2rad(lat[i]), np.deg2rad(lon[i])
        h = np.sin((clat - p) / 2) ** 2 + np.cos(p) * np.cos(clat) * np.sin((clon - q) / 2) ** 2
        km = 2 * env.EARTH_RADIUS_KM * np.arcsin(np.sqrt(h)).min()
        assert abs(table.coast_km[i]) == pytest.approx(km, rel=1e-6, abs=1e-6)
        assert np.sign(table.coast_km[i]) == (1 if table.land[i] else -1)
    assert 100 < table.coast_km[0] < 250 and table.coast_km[1] < 0     # Paris inland, off Galicia at sea
    assert report.missing == {"land": 0, "coast_km": 0}


def _write_3035(path, data, nodata=-9999.0, x0=3_900_000.0, y0=2_950_000.0, res=1000.0, crs="EPSG:3035"):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype="float32", crs=crs, transform=from_origin(x0, y0, res, res), nodata=nodata) as dst:
        dst.write(data.astype(np.float32), 1)


def test_user_geotiff_in_epsg3035(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(10, 3, (60, 80))
    path = tmp_path / "field.tif"
    _write_3035(path, data)
    # points inside the raster, given in WGS84
    to_wgs = Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True)
    x = rng.uniform(3_900_000 + 1500, 3_900_000 + 78_500, 25)
    y = rng.uniform(2_950_000 - 58_500, 2_950_000 - 1500, 25)
    lon, lat = to_wgs.transform(x, y)
    near = env.user_covariate(path, method="nearest", name="near")
    bil = env.user_covariate(path, method="bilinear", name="bil")
    table, report = env.sample(lat, lon, [near, bil])
    to_3035 = Transformer.from_crs("EPSG:4326", "EPSG:3035", always_xy=True)
    with rasterio.open(path) as src:
        for i in range(lat.size):
            px, py = to_3035.transform(lon[i], lat[i])
            row, col = src.index(px, py)
            assert table.near[i] == src.read(1, window=Window(col, row, 1, 1))[0, 0]
            # hand bilinear: the four cell centres around (px, py), read with one window
            fc, fr = (px - 3_900_000) / 1000 - 0.5, (2_950_000 - py) / 1000 - 0.5
            c0, r0 = int(np.floor(fc)), int(np.floor(fr))
            u, v = fc - c0, fr - r0
            z = src.read(1, window=Window(c0, r0, 2, 2)).astype(float)
            hand = (1 - v) * ((1 - u) * z[0, 0] + u * z[0, 1]) + v * ((1 - u) * z[1, 0] + u * z[1, 1])
            assert table.bil[i] == pytest.approx(hand, rel=1e-9)
    assert report.missing == {"near": 0, "bil": 0}


def test_nodata_and_outside_are_nan_and_counted(tmp_path):
    data = np.arange(20 * 20, dtype=float).reshape(20, 20)
    data[5, 5] = -9999.0                                   # one nodata cell
    path = tmp_path / "holes.tif"
    _write_3035(path, data)
    to_wgs = Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True)
    centre = lambda r, c: (3_900_000 + (c + 0.5) * 1000, 2_950_000 - (r + 0.5) * 1000)  # noqa: E731
    pts = [centre(5, 5),                                  # the nodata cell itself
           (centre(5, 5)[0] + 400, centre(5, 5)[1]),      # nearest is nodata -> NaN
           (centre(5, 6)[0] - 300, centre(5, 6)[1] - 200),  # bilinear touches nodata, nearest (5, 6) valid
           centre(10, 10),                                # fine
           (3_900_000 - 5000, 2_950_000 - 5000),          # west of the raster
           (3_900_000 + 25_000, 2_950_000 + 3000)]        # north-east of it
    lon, lat = to_wgs.transform(*np.array(pts).T)
    cov = env.user_covariate(path, name="v")
    near = env.user_covariate(path, method="nearest", name="n")
    table, report = env.sample(lat, lon, [cov, near])
    v = table.v.to_numpy()
    assert np.isnan(v[[0, 1, 4, 5]]).all()
    assert v[2] == pytest.approx(data[5, 6]) and v[3] == pytest.approx(data[10, 10])
    assert report.nodata["v"] == 2 and report.outside["v"] == 2 and report.missing["v"] == 4
    assert report.fallback["v"] == 1
    assert report.mask.v.tolist() == [True, True, False, False, True, True]
    assert report.missing["n"] == 4 and table.n[2] == data[5, 6]
    assert not (table.fillna(1).to_numpy() == 0).any()    # never a silent zero
    assert "4 missing" in str(report)


def test_geotiff_without_crs_needs_one(tmp_path):
    path = tmp_path / "nocrs.tif"
    _write_3035(path, np.ones((10, 10)), crs=None)
    lon, lat = Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True).transform(3_905_000, 2_945_000)
    with pytest.raises(ValueError, match="no CRS"):
        env.sample([lat], [lon], [env.user_covariate(path, name="x")])
    table, _ = env.sample([lat], [lon], [env.user_covariate(path, name="x", crs="EPSG:3035")])
    assert table.x[0] == 1.0


def test_user_netcdf_with_months_and_ascending_latitude(tmp_path):
    rng = np.random.default_rng(1)
    lat = np.arange(40.05, 45.0, 0.1)                     # ascending, 0.1° cells
    lon = np.arange(-5.05, 5.0, 0.1)
    values = rng.normal(0, 1, (12, lat.size, lon.size)).astype(np.float32)
    values[3, 10, 10] = np.nan                             # one missing month in one cell
    path = tmp_path / "clim.nc"
    xr.Dataset({"tas": (("month", "lat", "lon"), values)},
               coords={"month": np.arange(1, 13), "lat": lat, "lon": lon}).to_netcdf(path)
    q_lat, q_lon = np.array([42.03, 41.06, 44.0, 41.0, 30.0]), np.array([0.07, -4.04, 2.0, -4.0, 0.0])
    july = env.user_covariate(path, variable="tas", band=7, name="july")
    mean = env.user_covariate(path, variable="tas", band=range(1, 13), reduce=lambda v: v.mean(axis=1),
                              name="mean", method="nearest")
    table, report = env.sample(q_lat, q_lon, [july, mean])
    with xr.open_dataset(path) as ds:
        for i in range(3):
            # hand bilinear from the four centres around the point (lat ascending: row 0 is south)
            r0 = int(np.floor((q_lat[i] - lat[0]) / 0.1 + 1e-9))
            c0 = int(np.floor((q_lon[i] - lon[0]) / 0.1 + 1e-9))
            v, u = (q_lat[i] - lat[r0]) / 0.1, (q_lon[i] - lon[c0]) / 0.1
            z = ds.tas.isel(month=6, lat=slice(r0, r0 + 2), lon=slice(c0, c0 + 2)).values.astype(float)
            hand = (1 - v) * ((1 - u) * z[0, 0] + u * z[0, 1]) + v * ((1 - u) * z[1, 0] + u * z[1, 1])
            assert table.july[i] == pytest.approx(hand, rel=1e-5)
            cell = ds.tas.sel(lat=q_lat[i], lon=q_lon[i], method="nearest").values
            if i == 1:
                assert np.isnan(table["mean"][i])          # month 4 missing in the cell (41.05, -4.05)
            else:
                assert table["mean"][i] == pytest.approx(float(np.mean(cell)), rel=1e-5)
    assert np.isnan(table.july[4]) and report.outside["july"] == 1 and report.outside["mean"] == 1
    assert report.nodata["mean"] == 1


def test_reads_in_strips_give_the_same_values():
    rng = np.random.default_rng(5)
    lat, lon = rng.uniform(36, 62, 3000), rng.uniform(-10, 30, 3000)
    a, _ = env.sample(lat, lon, ["koppen_main", "t_mean_annual"])
    b, _ = env.sample(lat, lon, ["koppen_main", "t_mean_annual"], max_cells=20_000)
    pd.testing.assert_frame_equal(a, b)


def test_bad_coordinates_raise_with_their_number():
    with pytest.raises(ValueError, match="2 of 4 sites"):
        env.sample([10, 91, 0, np.nan], [0, 0, 0, 0], ["t_mean_annual"])
    with pytest.raises(ValueError, match="1 of 2 sites"):
        env.sample([10, 20], [0, -180.5], ["t_mean_annual"])
    with pytest.raises(KeyError, match="unknown covariate"):
        env.sample([10], [0], ["elevation"])
    with pytest.raises(ValueError, match="categorical"):
        env.Covariate("c", path="x.tif", kind="categorical", method="bilinear")


def test_standardise_fits_on_training_rows_only():
    table = pd.DataFrame({"t": [0.0, 2.0, 4.0, 100.0, np.nan], "koppen_main": [3.0, 4.0, 3.0, 5.0, np.nan],
                          "land": [1.0, 1.0, 0.0, 1.0, 1.0]})
    table.attrs["kinds"] = {"t": "continuous", "koppen_main": "categorical", "land": "binary"}
    train = np.array([True, True, True, False, False])
    X, fitted = env.standardise(table, train=train)
    assert fitted.means["t"] == pytest.approx(2.0) and fitted.stds["t"] == pytest.approx(np.std([0, 2, 4]))
    t = X[:, fitted.columns.index("t")]
    np.testing.assert_allclose(t[:4], (np.array([0, 2, 4, 100]) - 2) / np.std([0, 2, 4]), rtol=1e-6)
    assert t[4] == 0 and X[4, fitted.columns.index("t:missing")] == 1
    assert fitted.columns[:1] == ["t"] and "koppen_main=5" in fitted.columns    # known classes 1-5
    onehot = X[:, [fitted.columns.index(f"koppen_main={k}") for k in (1, 2, 3, 4, 5)]]
    np.testing.assert_array_equal(onehot.sum(axis=1), [1, 1, 1, 1, 0])
    assert X.dtype == np.float32 and not np.isnan(X).any()
    X2 = fitted.transform(table.iloc[3:])                 # new sites, same columns
    np.testing.assert_array_equal(X2, X[3:])
    Xn, _ = env.standardise(table, train=train, missing="nan")
    assert np.isnan(Xn[4, 0]) and Xn.shape[1] == X.shape[1] - 3


def test_sample_with_user_rasters_mapping_and_describe(tmp_path):
    path = tmp_path / "one.tif"
    _write_3035(path, np.full((10, 10), 7.0))
    lon, lat = Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True).transform(3_905_000, 2_945_000)
    table, _ = env.sample([lat], [lon], rasters={"seven": path})
    assert list(table.columns) == ["seven"] and table.seven[0] == 7.0
    d = env.describe()
    assert set(d.name) == set(env.COVARIATES) and (d.licence != "").all() and (d.source != "").all()


def test_plot_covariate(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    image = env.plot_covariate(ax, "koppen_main", bbox=(0.0, 45.0, 4.0, 48.0), resolution=0.5)
    assert image.get_array().shape == (6, 8)
    plt.close(fig)


def test_geotiff_scale_and_offset_are_applied(tmp_path):
    path = tmp_path / "scaled.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="int16", crs="EPSG:4326",
                       transform=from_origin(0.0, 50.0, 1.0, 1.0), nodata=-1) as dst:
        dst.write(np.full((4, 4), 300, dtype=np.int16), 1)
        dst.scales, dst.offsets = (0.1,), (-5.0,)
    table, report = env.sample([48.5, 47.5], [1.5, 1.5], [env.user_covariate(path, method="nearest", name="s")])
    assert table.s.tolist() == pytest.approx([25.0, 25.0]) and report.missing["s"] == 0
