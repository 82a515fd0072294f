"""A Sentinel-2 L2A patch around each site, from a STAC API: ``python -m habitat_helpers fetch sentinel2``.

For every site of a table (``site_id``, ``lat``, ``lon``) it

1. searches the STAC API (by default Element 84's Earth Search, collection ``sentinel-2-l2a``) for
   the scenes whose footprint holds the site within the season of one year
   (:func:`season_window`);
2. keeps the scenes with at most ``max_cloud`` % cloud (the scene's ``eo:cloud_cover``) and takes
   the least cloudy; when its window is not complete (the site near the edge of the scene or of
   the satellite's swath: no-data pixels) the next least cloudy is tried, up to ``tries`` scenes;
3. reads a ``size`` x ``size`` window at 10 m around the site from each band's Cloud-Optimised
   GeoTIFF, over HTTP with range requests (GDAL's ``/vsicurl/``; only the few tiles of the window
   are downloaded, never the scene), in the scene's own CRS (a UTM zone) so no pixel is
   resampled; 20 m and 60 m bands are resampled to the 10 m grid (bilinear; ``SCL`` nearest);
4. writes ``OUT/<name>.tif``: one band per requested band (described ``B04``, ``B03`` ...),
   ``uint16``, 0 = no data. ``<name>`` is the part of ``site_id`` after ``source:`` with ``:``
   made ``_``, the name :func:`habitat_helpers.datasets.read_satellite` looks for, so
   ``read_satellite(sites, OUT)`` attaches the patches.

The values are surface reflectance x 10,000, as in the demo's patches and as
:func:`habitat_helpers.datasets.patch_to_rgb` expects (true colour: divided by 3,000). Since
processing baseline 04.00 (25 January 2022) the L2A digital numbers carry an offset of +1,000
(``BOA_ADD_OFFSET`` = -1,000); it is removed (:func:`boa_offset`) so that scenes from before and
after 2022 are on one scale. ``raw=True`` (``--raw``) keeps the digital numbers as stored.
Nothing is scaled to 8 bits: the readers of the package take reflectance and scale it themselves.

What was fetched goes to ``OUT/sentinel2_scenes.csv`` (site, file, scene id, date, cloud cover,
CRS, offset removed; the same is stored in each GeoTIFF's tags), and every site without a patch
to ``OUT/sentinel2_report.csv`` with the reason (:data:`REASONS`). Nothing is dropped silently.

A run is resumable: a patch is written to ``<name>.tif.part`` and renamed when complete, and a
later run skips every site whose patch is there with the same request (bands, size, dates,
collection, scaling; asking for something else fetches it again), without asking the STAC API.
Sites run in a bounded pool of threads (``workers``). The STAC requests come at most ``rate`` a
second and retry on 429 and 5xx with backoff (:func:`open_client`), GDAL's reads likewise
(:data:`GDAL_OPTIONS`).

The data: Copernicus Sentinel-2 data (ESA), processed to L2A by ESA and served as COGs by the
Registry of Open Data on AWS (``sentinel-cogs``); free and open under the Copernicus licence, which
asks to credit "contains modified Copernicus Sentinel data [year]".
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from .. import datasets, paths, profiles
from ..errors import UsageError
from .http import add_http_arguments, default_user_agent, retryable

#: The Sentinel-2 bands by name, each with (its common name, the asset key at Earth Search v1, its resolution in m).
BANDS: dict[str, tuple[str, int]] = {
    "B01": ("coastal", 60), "B02": ("blue", 10), "B03": ("green", 10), "B04": ("red", 10),
    "B05": ("rededge1", 20), "B06": ("rededge2", 20), "B07": ("rededge3", 20), "B08": ("nir", 10),
    "B8A": ("nir08", 20), "B09": ("nir09", 60), "B11": ("swir16", 20), "B12": ("swir22", 20),
    "SCL": ("scl", 20),
}

#: The seasons by name, each with (first month, last month). ``winter`` of a year runs from the December before.
SEASONS: dict[str, tuple[int, int]] = {"spring": (3, 5), "summer": (6, 8), "autumn": (9, 11),
                                       "winter": (12, 2), "year": (1, 12)}

#: The pixel size of the patches in metres (Sentinel-2's finest bands).
PIXEL_M = 10.0

#: The file (in the output folder) listing the sites without a patch, and the one listing the scenes used.
REPORT_FILE = "sentinel2_report.csv"
SCENES_FILE = "sentinel2_scenes.csv"

#: Why a site has no patch (the ``reason`` column of the report).
REASONS = {
    "no_scene": "no scene in the season",
    "cloudy": "every scene too cloudy",
    "incomplete": "no complete patch in the least cloudy scenes",
    "search_failed": "search failed",
    "read_failed": "read failed",
    "name": "site id unusable as a file name",
}

#: GDAL settings for the COG reads (inside a ``rasterio.Env``, with ``GDAL_HTTP_MAX_RETRY`` and
#: ``GDAL_HTTP_RETRY_DELAY`` from the options' ``retries`` and ``backoff``: retries on 429/5xx with a
#: growing delay): no directory listing on open (one request less per file), only ``.tif`` files probed.
GDAL_OPTIONS = {
    "GDAL_HTTP_TIMEOUT": 60,
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF",
    "GDAL_HTTP_MULTIRANGE": "YES",
    "AWS_NO_SIGN_REQUEST": "YES",           # for s3:// hrefs of public buckets
}

def user_agent() -> str:
    """The user agent of every request (STAC and COG reads): that of :mod:`habitat_helpers.fetch.http`."""

    return f"{default_user_agent()} fetch sentinel2"


@dataclass(frozen=True)
class Sentinel2Options:
    """What to fetch; the defaults of :func:`fetch_sentinel2` and of the command line."""

    #: side of a patch in pixels at 10 m (the ``full`` profile's satellite size: 1.2 km, as BigEarthNet)
    size: int = profiles.get("full").satellite_size
    bands: tuple[str, ...] = ("B04", "B03", "B02")
    season: str = "summer"
    year: int = 2022                                 # the latest LUCAS survey
    max_cloud: float = 20.0
    stac_url: str = "https://earth-search.aws.element84.com/v1"
    collection: str = "sentinel-2-l2a"
    workers: int = 4
    tries: int = 3
    raw: bool = False
    #: tries after the first on 429, 5xx and dropped connections, for the STAC API and the COG reads
    retries: int = 4
    #: first wait before a retry (s), doubled at each retry
    backoff: float = 1.0
    #: at most this many requests per second to the STAC API (0 for no limit; the COG reads are bounded by ``workers``)
    rate: float = 5.0


# --- checking what is asked --------------------------------------------------------------------

def parse_bands(bands) -> tuple[str, ...]:
    """Band names (``"B04,B03,B02"`` or a list; ``b8`` is ``B08``), checked against :data:`BANDS`."""
    items = bands.split(",") if isinstance(bands, str) else list(bands)
    out = []
    for item in items:
        name = str(item).strip().upper()
        if re.fullmatch(r"B\d", name):
            name = f"B0{name[1]}"
        if name not in BANDS:
            raise ValueError(f"unknown band {item!r}; Sentinel-2 L2A has {', '.join(BANDS)}")
        if name in out:
            raise ValueError(f"band {name} asked twice")
        out.append(name)
    if not out:
        raise ValueError("no band asked for")
    return tuple(out)


def season_window(season: str, year: int) -> str:
    """The search's date range ``"YYYY-MM-DD/YYYY-MM-DD"`` for a season of ``year``.

    ``season`` is a name of :data:`SEASONS` (``summer`` is June to August) or ``MM-MM``, first and
    last month included (``05-09``: May to September). A range that wraps over New Year (``winter``,
    ``11-02``) starts in the year before: winter 2022 is December 2021 to February 2022."""
    text = season.strip().lower()
    if text in SEASONS:
        first, last = SEASONS[text]
    else:
        match = re.fullmatch(r"(\d{1,2})-(\d{1,2})", text)
        if not match or not all(1 <= int(m) <= 12 for m in match.groups()):
            raise ValueError(f"season {season!r}: use one of {', '.join(SEASONS)} or MM-MM months (e.g. 05-09)")
        first, last = (int(m) for m in match.groups())
    start_year = year - 1 if first > last else year
    end_day = calendar.monthrange(year, last)[1]
    return f"{start_year}-{first:02d}-01/{year}-{last:02d}-{end_day:02d}"


def check_options(options: Sentinel2Options) -> Sentinel2Options:
    """``options`` with the bands normalised; ``ValueError`` saying what to change otherwise."""
    bands = parse_bands(options.bands)
    if not 8 <= options.size <= 2048:
        raise ValueError(f"size {options.size}: a patch needs 8 to 2048 pixels a side")
    if not 2015 <= options.year <= 2100:
        raise ValueError(f"year {options.year}: Sentinel-2 started in 2015")
    season_window(options.season, options.year)
    if not 0 <= options.max_cloud <= 100:
        raise ValueError(f"max cloud {options.max_cloud}: a percentage, 0 to 100")
    if options.workers < 1 or options.tries < 1:
        raise ValueError("workers and tries must be at least 1")
    if options.retries < 0 or options.backoff < 0 or options.rate < 0:
        raise ValueError("retries, backoff and rate must be 0 or more")
    if not re.match(r"https?://", options.stac_url):
        raise ValueError(f"STAC URL {options.stac_url!r}: expected http(s)://...")
    return Sentinel2Options(**{**asdict(options), "bands": bands})


def patch_name(site_id: str) -> str | None:
    """The file stem of a site's patch, as :func:`habitat_helpers.datasets.read_satellite` builds
    it (the id after ``source:``, ``:`` made ``_``); None when it cannot be a file name."""
    name = str(site_id).split(":", 1)[-1].replace(":", "_")
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        return None
    return name


# --- STAC --------------------------------------------------------------------------------------

def open_client(stac_url: str, *, retries: int = 4, backoff: float = 1.0, rate: float = 5.0, timeout: float = 60.0):
    """A ``pystac_client.Client`` on ``stac_url`` whose requests say who asks (:func:`user_agent`),
    come at most ``rate`` a second, and are retried ``retries`` times after ``backoff``, doubled
    each time, on the answers :func:`habitat_helpers.fetch.http.retryable` names (the search is a
    POST, retried too: it changes nothing). Raises :class:`StacUnavailable` when it cannot be used."""
    from pystac import STACTypeError
    from pystac_client import Client, ConformanceClasses
    from pystac_client.errors import ClientTypeError
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry


    retry = Retry(total=retries, backoff_factor=backoff, status_forcelist=[s for s in range(400, 600) if retryable(s)],
                  allowed_methods=None, respect_retry_after_header=True, raise_on_status=False)
    io = StacApiIO(headers={"User-Agent": user_agent()}, timeout=timeout, max_retries=retry,
                   request_modifier=_RateLimit(rate) if rate else None)
    try:
        client = Client.open(stac_url, stac_io=io)
    except (ClientTypeError, STACTypeError) as err:       # a collection, an item, not STAC at all
        raise StacUnavailable(f"{stac_url} is not a STAC API landing page: {err}") from None
    except Exception as err:
        if not _is_network_error(err):
            raise
        raise StacUnavailable(f"cannot open the STAC API {stac_url}: {type(err).__name__}: {err}") from None
    if not client.conforms_to(ConformanceClasses.ITEM_SEARCH) or client.get_single_link("search") is None:
        raise StacUnavailable(f"{stac_url} is not a STAC API with item search (its landing page lacks the "
                              "item-search conformance class or the 'search' link)")
    return client


class _RateLimit:
    """A ``request_modifier``: each request waits for its turn, at most ``rate`` a second."""

    def __init__(self, rate: float):
        import threading

        self.interval, self._next, self._lock = 1.0 / rate, 0.0, threading.Lock()

    def __call__(self, request):
        import time

        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)
        return request


class StacUnavailable(ConnectionError):
    """The STAC API cannot be opened (unreachable, or not an API with item search)."""


def search_scenes(client, lat: float, lon: float, window: str, collection: str,
                  max_cloud: float | None = None) -> list[dict]:
    """The items of ``collection`` whose footprint holds the point, within ``window``, as dicts;
    with ``max_cloud``, only those with at most that cloud cover where the API filters (the
    ``query`` extension). Sorted by cloud cover where the API sorts; the caller sorts again."""
    from pystac_client import ConformanceClasses

    search = {"collections": [collection], "intersects": {"type": "Point", "coordinates": [lon, lat]},
              "datetime": window, "limit": 100, "max_items": 1000}
    if max_cloud is not None and client.conforms_to(ConformanceClasses.QUERY):
        search["query"] = {"eo:cloud_cover": {"lte": max_cloud}}
    if client.conforms_to(ConformanceClasses.SORT):
        search["sortby"] = [{"field": "properties.eo:cloud_cover", "direction": "asc"}]
    return list(client.search(**search).items_as_dicts())


def cloud_cover(item: dict) -> float:
    """The scene's ``eo:cloud_cover`` (%); 100 when it does not say."""
    value = item.get("properties", {}).get("eo:cloud_cover")
    return 100.0 if value is None else float(value)


def find_asset(item: dict, band: str) -> dict | None:
    """The asset of ``band`` in an item: keyed by the band (``B04``: Planetary Computer, Earth
    Search v0) or by its common name (``red``: Earth Search v1), or whose ``eo:bands`` name it;
    JPEG 2000 copies (``red-jp2``) are passed over for the COGs."""
    common = BANDS[band][0]
    assets = {k: a for k, a in item.get("assets", {}).items()
              if not k.endswith("-jp2") and not str(a.get("href", "")).lower().endswith(".jp2")}
    for key in (band, common, band.lower()):
        if key in assets:
            return assets[key]
    for asset in assets.values():
        names = {b.get("name") for b in asset.get("eo:bands", [])}
        if band in names or (len(names) == 1 and common in names):
            return asset
    return None


def boa_offset(item: dict, asset: dict) -> int:
    """What to add to the stored digital numbers for reflectance x 10,000 (0 or -1,000).

    In this order: the asset's ``raster:bands`` ``offset / scale`` when it states an offset (Earth
    Search's documented way: -0.1 / 0.0001 for scenes whose numbers carry the offset of processing
    baseline 04.00, 0 for those that do not); else Earth Search's item property
    ``earthsearch:boa_offset_applied`` (known to be wrong for some scenes, hence second); else the
    item's ``s2:processing_baseline`` (04.00 or later: -1,000; Planetary Computer); else 0."""
    props = item.get("properties", {})
    for band in asset.get("raster:bands", []):
        if band.get("offset") is not None and band.get("scale"):
            return int(round(band["offset"] / band["scale"]))
    if "earthsearch:boa_offset_applied" in props:
        return -1000 if props["earthsearch:boa_offset_applied"] else 0
    baseline = props.get("s2:processing_baseline")
    try:
        return -1000 if baseline is not None and float(baseline) >= 4.0 else 0
    except ValueError:
        return 0


def _gdal_path(href: str) -> str:
    if href.startswith(("http://", "https://")):
        return f"/vsicurl/{href}"
    if href.startswith("s3://"):
        return f"/vsis3/{href[5:]}"
    return href


# --- reading a patch ---------------------------------------------------------------------------

class _Unusable(Exception):
    """The scene gives no complete patch for the site (edge, no data, a band missing)."""


def read_window(item: dict, lat: float, lon: float, bands, size: int, raw: bool = False):
    """The ``size`` x ``size`` patch around the site from the item's band COGs: ``(array
    (bands, size, size) uint16, profile for rasterio.open, offsets applied per band)``.

    Raises ``_Unusable`` when a band is missing, the window leaves the scene or holds no-data
    pixels; ``rasterio.errors.RasterioIOError`` when a file cannot be read."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin
    from rasterio.warp import transform as warp_points
    from rasterio.windows import Window

    assets = {}
    for band in bands:
        asset = find_asset(item, band)
        if asset is None:
            raise _Unusable(f"no asset for {band}")
        assets[band] = asset
    layers, offsets, grid = [], [], None
    for band in bands:
        with rasterio.open(_gdal_path(assets[band]["href"])) as src:
            if grid is None:                      # the 10 m grid of the scene, aligned on its origin
                (x,), (y,) = warp_points("EPSG:4326", src.crs, [lon], [lat])
                origin_x, origin_y = src.transform.c, src.transform.f
                col = int(np.floor((x - origin_x) / PIXEL_M)) - size // 2
                row = int(np.floor((origin_y - y) / PIXEL_M)) - size // 2
                left, top = origin_x + col * PIXEL_M, origin_y - row * PIXEL_M
                grid = {"crs": src.crs, "transform": from_origin(left, top, PIXEL_M, PIXEL_M),
                        "bounds": (left, top - size * PIXEL_M, left + size * PIXEL_M, top)}
            elif src.crs != grid["crs"]:
                raise _Unusable(f"{band} is in another CRS than {bands[0]}")
            window = src.window(*grid["bounds"])
            if (window.col_off < -1e-6 or window.row_off < -1e-6 or window.col_off + window.width > src.width + 1e-6
                    or window.row_off + window.height > src.height + 1e-6):
                raise _Unusable("the patch crosses the scene's edge")
            if abs(src.res[0] - PIXEL_M) < 1e-6:
                window = Window(round(window.col_off), round(window.row_off), size, size)
                data = src.read(1, window=window)
            else:
                resampling = Resampling.nearest if band == "SCL" else Resampling.bilinear
                data = src.read(1, window=window, out_shape=(size, size), resampling=resampling)
        if data.shape != (size, size):
            raise _Unusable(f"{band}: read {data.shape}, not {size} x {size}")
        if (data == 0).any():
            raise _Unusable(f"no data in {int((data == 0).sum())} pixels of {band} (edge of the swath)")
        offset = 0 if raw or band == "SCL" else boa_offset(item, assets[band])
        if offset:
            data = np.clip(data.astype(np.int32) + offset, 1, 65535)   # 0 stays "no data"
        layers.append(data.astype(np.uint16))
        offsets.append(offset)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": len(bands), "dtype": "uint16",
               "crs": grid["crs"], "transform": grid["transform"], "nodata": 0, "compress": "deflate"}
    return np.stack(layers), profile, offsets


def _request_key(options: Sentinel2Options, window: str) -> str:
    return json.dumps({"bands": list(options.bands), "size": options.size, "datetime": window,
                       "collection": options.collection, "raw": options.raw}, sort_keys=True)


def _existing(path: Path, request: str) -> dict | None:
    """The tags of a complete patch made by the same request; None otherwise."""
    if not path.is_file():
        return None
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as src:
            tags = src.tags()
    except RasterioIOError:
        return None
    return tags if tags.get("hh_request") == request else None


def _write(path: Path, data: np.ndarray, profile: dict, bands, tags: dict) -> None:
    """Write the patch to ``<path>.part``, then rename it: a patch on disk is always complete."""
    import rasterio

    part = path.with_name(path.name + ".part")
    with rasterio.open(part, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = tuple(bands)
        dst.update_tags(**tags)
    os.replace(part, path)


# --- one site, all sites -----------------------------------------------------------------------

def _fetch_site(site: dict, client, options: Sentinel2Options, out: Path, window: str) -> dict:
    """Fetch one site's patch (not there yet); returns its row of the result table."""
    import rasterio
    from rasterio.errors import RasterioIOError

    row = _row(site)
    try:
        items = search_scenes(client, site["lat"], site["lon"], window, options.collection, options.max_cloud)
        usable = sorted((i for i in items if cloud_cover(i) <= options.max_cloud),
                        key=lambda i: (cloud_cover(i), i.get("properties", {}).get("datetime") or ""))
        if not usable and not items:         # nothing at all, or only cloudy scenes? (the API may filter)
            items = search_scenes(client, site["lat"], site["lon"], window, options.collection)
    except Exception as err:
        if not _is_network_error(err):
            raise
        return {**row, "reason": REASONS["search_failed"], "detail": f"{type(err).__name__}: {err}"}
    if not items:
        return {**row, "reason": REASONS["no_scene"],
                "detail": f"no {options.collection} item over the site in {window}"}
    if not usable:
        least = min(cloud_cover(i) for i in items)
        return {**row, "reason": REASONS["cloudy"],
                "detail": f"{len(items)} scene(s) in {window}, the least cloudy {least:g}% > {options.max_cloud:g}%"}

    path = out / f"{patch_name(site['site_id'])}.tif"
    problems, failed_reads = [], 0
    with rasterio.Env(GDAL_HTTP_USERAGENT=user_agent(), GDAL_HTTP_MAX_RETRY=options.retries,
                      GDAL_HTTP_RETRY_DELAY=options.backoff, **GDAL_OPTIONS):
        for item in usable[:options.tries]:
            try:
                data, profile, offsets = read_window(item, site["lat"], site["lon"], options.bands, options.size,
                                                     options.raw)
            except _Unusable as err:
                problems.append(f"{item.get('id')}: {err}")
                continue
            except RasterioIOError as err:
                failed_reads += 1
                problems.append(f"{item.get('id')}: {err}")
                continue
            props = item.get("properties", {})
            tags = {"hh_request": _request_key(options, window), "stac_item": item.get("id"),
                    "stac_collection": options.collection, "stac_url": options.stac_url,
                    "datetime": props.get("datetime"), "eo_cloud_cover": f"{cloud_cover(item):g}",
                    "boa_offset": ",".join(map(str, offsets)),
                    "scaling": "digital numbers as stored" if options.raw else "surface reflectance x 10000",
                    "attribution": f"contains modified Copernicus Sentinel data {str(props.get('datetime'))[:4]}"}
            _write(path, data, profile, options.bands, tags)
            return {**row, "file": str(path), "status": "fetched", **_tag_fields(tags)}
    reason = REASONS["read_failed"] if failed_reads == len(problems) else REASONS["incomplete"]
    return {**row, "reason": reason, "detail": "; ".join(problems)}


def _row(site: dict, **values) -> dict:
    return {**site, "file": None, "status": "missing", "reason": None, "detail": None, "item": None,
            "datetime": None, "cloud_cover": np.nan, "boa_offset": None, **values}


def _tag_fields(tags: dict) -> dict:
    return {"item": tags.get("stac_item"), "datetime": tags.get("datetime"),
            "cloud_cover": float(tags.get("eo_cloud_cover", "nan")), "boa_offset": tags.get("boa_offset")}


def _is_network_error(err: Exception) -> bool:
    """A failed request (connection, HTTP status, bad answer) rather than a bug."""
    import requests
    from pystac_client.exceptions import APIError

    return isinstance(err, (requests.RequestException, APIError, ConnectionError, TimeoutError, json.JSONDecodeError))


def fetch_sentinel2(sites, out, *, progress: bool = True, **options) -> pd.DataFrame:
    """Fetch a Sentinel-2 L2A patch around each site into ``out`` (see the module's description).

    Parameters
    ----------
    sites
        a table with ``site_id``, ``lat`` and ``lon`` (WGS84 degrees), e.g. the site table of
        :func:`habitat_helpers.datasets.read_table`.
    out
        the folder of the patches (created); ``read_satellite(sites, out)`` reads them back.
    progress
        show a progress bar.
    options
        the fields of :class:`Sentinel2Options` (``size``, ``bands``, ``season``, ``year``,
        ``max_cloud``, ``stac_url``, ``collection``, ``workers``, ``tries``, ``raw``).

    Returns
    -------
    pandas.DataFrame
        One row per site: ``site_id``, ``lat``, ``lon``, ``file`` (None without a patch),
        ``status`` (``fetched``, ``present`` from an earlier run, or ``missing``), ``reason`` and
        ``detail`` for a missing one, and the scene used (``item``, ``datetime``, ``cloud_cover``,
        ``boa_offset``). Also written: the missing sites to ``out/sentinel2_report.csv``, the
        others to ``out/sentinel2_scenes.csv``.
    """
    from tqdm.auto import tqdm

    unknown = set(options) - {f.name for f in fields(Sentinel2Options)}
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}")
    opts = check_options(Sentinel2Options(**options))
    missing = [c for c in ("site_id", "lat", "lon") if c not in sites.columns]
    if missing:
        raise ValueError(f"sites lack the column(s) {', '.join(missing)}")
    window = season_window(opts.season, opts.year)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    table = pd.DataFrame({"site_id": sites["site_id"].astype(str).to_numpy(),
                          "lat": pd.to_numeric(sites["lat"]).to_numpy(float),
                          "lon": pd.to_numeric(sites["lon"]).to_numpy(float)})
    request = _request_key(opts, window)
    rows: list[dict | None] = [None] * len(table)
    taken: dict[str, str] = {}
    todo = []
    for i, site in enumerate(table.to_dict("records")):        # what is there already: no network
        name = patch_name(site["site_id"])
        if name is None:
            rows[i] = _row(site, reason=REASONS["name"], detail=f"{site['site_id']!r} holds a path separator")
        elif name in taken:
            rows[i] = _row(site, reason=REASONS["name"], detail=f"{name}.tif would also be the patch of {taken[name]}")
        else:
            taken[name] = site["site_id"]
            tags = _existing(out / f"{name}.tif", request)
            if tags is None:
                todo.append((i, site))
            else:
                rows[i] = _row(site, file=str(out / f"{name}.tif"), status="present", **_tag_fields(tags))

    if todo:
        client = open_client(opts.stac_url, retries=opts.retries, backoff=opts.backoff, rate=opts.rate)
        with ThreadPoolExecutor(max_workers=opts.workers) as pool, \
                tqdm(total=len(todo), desc="sentinel-2 patches", unit="site", disable=not progress) as bar:
            futures = {pool.submit(_fetch_site, site, client, opts, out, window): i for i, site in todo}
            try:
                for future in as_completed(futures):
                    rows[futures[future]] = future.result()
                    bar.update()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    result = pd.DataFrame(rows, columns=["site_id", "lat", "lon", "file", "status", "reason", "detail", "item",
                                         "datetime", "cloud_cover", "boa_offset"])
    has = result["file"].notna()
    result.loc[has, ["site_id", "file", "status", "item", "datetime", "cloud_cover", "boa_offset"]].to_csv(
        out / SCENES_FILE, index=False)
    result.loc[~has, ["site_id", "lat", "lon", "reason", "detail"]].to_csv(out / REPORT_FILE, index=False)
    result.attrs.update(window=window, out=str(out), report=str(out / REPORT_FILE), scenes=str(out / SCENES_FILE))
    return result


# --- the command line --------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m habitat_helpers fetch sentinel2``."""

    d = Sentinel2Options()
    parser.add_argument("--sites", required=True, metavar="TABLE",
                        help="CSV/TSV/(Geo)Parquet of sites with an id, a latitude and a longitude "
                             "(read as habitat_helpers.datasets.read_table reads it; a label column is not needed)")
    parser.add_argument("--lat-col", default="lat", help="latitude column (default: lat / latitude)")
    parser.add_argument("--lon-col", default="lon", help="longitude column (default: lon / longitude)")
    parser.add_argument("--id-col", default=None, help="site id column (default: site_id / id, else the line number)")
    parser.add_argument("--sep", default=None, help="separator of a text table (default: guessed from the header)")
    parser.add_argument("--out", default=None,
                        help=f"folder of the patches (default: ${paths.CACHE_ENV}/sentinel2)")
    parser.add_argument("--size", type=int, default=d.size, help=f"patch side in 10 m pixels (default {d.size})")
    parser.add_argument("--bands", default=",".join(d.bands),
                        help=f"comma-separated bands (default {','.join(d.bands)}; any of {','.join(BANDS)})")
    parser.add_argument("--season", default=d.season,
                        help=f"{', '.join(SEASONS)} or MM-MM months, e.g. 05-09 (default {d.season})")
    parser.add_argument("--year", type=int, default=d.year, help=f"year of the season (default {d.year})")
    parser.add_argument("--max-cloud", type=float, default=d.max_cloud,
                        help=f"largest scene cloud cover, %% (eo:cloud_cover; default {d.max_cloud:g})")
    parser.add_argument("--stac-url", default=d.stac_url, help=f"STAC API (default {d.stac_url}, Earth Search)")
    parser.add_argument("--collection", default=d.collection, help=f"STAC collection (default {d.collection})")
    parser.add_argument("--tries", type=int, default=d.tries,
                        help=f"scenes tried per site when a patch is incomplete (default {d.tries})")
    parser.add_argument("--raw", action="store_true",
                        help="keep the digital numbers as stored (no removal of the 2022 baseline's +1000 offset)")
    add_http_arguments(parser, workers=d.workers)       # --workers --rate --retries --backoff --no-progress


def run(args: argparse.Namespace) -> int:
    """Check the options, read the sites, fetch, and say what was written: 0 when every site has
    a patch or a reason in the data (no scene, too cloudy, incomplete), 1 when a search or read
    failed for some (run the same command again to retry them)."""

    names = [f.name for f in fields(Sentinel2Options)]
    try:
        options = asdict(check_options(Sentinel2Options(**{n: getattr(args, n) for n in names})))
    except ValueError as err:
        raise UsageError(str(err)) from None
    out = Path(args.out) if args.out else paths.cache_dir() / "sentinel2"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    sites = _site_points(args.sites, lat=args.lat_col, lon=args.lon_col, site_id=args.id_col, sep=args.sep)
    if sites.empty:
        raise UsageError(f"no usable site in {args.sites} (see the report above)")
    try:
        result = fetch_sentinel2(sites, out, progress=not args.no_progress, **options)
    except StacUnavailable as err:
        raise UsageError(str(err)) from None
    counts = result["status"].value_counts()
    print(f"{int(counts.get('fetched', 0))} patches fetched, {int(counts.get('present', 0))} already there, "
          f"{int(counts.get('missing', 0))} sites without a patch ({result.attrs['window']}, "
          f"at most {options['max_cloud']:g}% cloud) in {out}")
    if counts.get("missing", 0):
        for reason, n in result["reason"].value_counts().items():
            print(f"  {reason}: {n}")
        print(f"  the sites and reasons: {result.attrs['report']}")
    print(f"read them with habitat_helpers.datasets.read_satellite(sites, {str(out)!r})", file=sys.stderr)
    failed = int(result["reason"].isin([REASONS["search_failed"], REASONS["read_failed"]]).sum())
    if failed:
        print(f"error: the search or the read failed for {failed} site(s) (listed in {result.attrs['report']}); "
              "run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


def _site_points(path, *, lat: str = "lat", lon: str = "lon", site_id: str | None = None, sep: str | None = None):
    """The site table of ``path`` as :func:`habitat_helpers.datasets.read_table` reads it without
    labels (a fetch needs the ids and coordinates only; a label column is ignored)."""
    return datasets.read_table(path, lat=lat, lon=lon, label=None, site_id=site_id, sep=sep)   # prints its report
