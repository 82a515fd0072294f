"""``python -m habitat_helpers fetch covariates``: bioclimatic rasters clipped to a region, as COGs.

The built-in climate covariates of :mod:`habitat_helpers.environment` (ERA5 at 0.25°, shipped
inside a package) stay the offline default. With a connection, this command fetches the 19
BIOCLIM variables at up to 30 arc-seconds (about 1 km) from one of two sources:

==============  =========================================================  ======================
source          what is downloaded                                         resolutions
==============  =========================================================  ======================
``worldclim``   WorldClim 2.1 (1970-2000; Fick & Hijmans 2017): one zip    ``10m`` ``5m``
                per resolution, ``wc2.1_{res}_bio.zip``, holding            ``2.5m`` ``30s``
                ``wc2.1_{res}_bio_{n}.tif`` (°C, mm; float32)
``chelsa``      CHELSA V2.1 (1981-2010; Karger et al. 2017): one GeoTIFF    ``30s``
                per variable, ``CHELSA_bio{n}_1981-2010_V.2.1.tif``
                (integers; scale 0.1, offset -273.15 for temperatures)
==============  =========================================================  ======================

Each variable is clipped to the region (``--bbox`` or a named ``--region``, :data:`REGIONS`)
on whole source cells, without resampling, and written as a Cloud-Optimized GeoTIFF
``<out>/<source>_<res>_<variable>_<region>.tif`` with the source's nodata value. A CHELSA
integer raster without its own scale and offset gets CHELSA's (:data:`CHELSA_SCALING`), so
:mod:`habitat_helpers.environment` reads °C and mm from both sources. The files are ready for
``python -m habitat_helpers evaluate --modalities env --env-raster worldclim_bio1=<file>``
or ``hh.environment.sample(lat, lon, rasters={"worldclim_bio1": path})``; the command prints the
``--env-raster`` options and writes them to ``<out>/env_rasters.txt``.

Downloads go to ``<out>/downloads/`` (kept, so asking later for other variables or another
region fetches nothing again; ``--delete-downloads`` removes them). A run skips every output that
is already there and readable. Exit code 0 when every variable was written, 1 when a download
failed or a file was missing on the server, 2 for a problem with the options.

URL layouts (``--base-url`` replaces the folder): WorldClim's
``https://geodata.ucdavis.edu/climate/worldclim/2_1/base/wc2.1_10m_bio.zip``; CHELSA's
``https://os.zhdk.cloud.switch.ch/envicloud/chelsa/chelsa_V2/GLOBAL/climatologies/1981-2010/bio/``
``CHELSA_bio1_1981-2010_V.2.1.tif``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from ..errors import UsageError, comma_list
from . import http

#: The default folders the files are fetched from.
BASE_URLS = {
    "worldclim": "https://geodata.ucdavis.edu/climate/worldclim/2_1/base",
    "chelsa": "https://os.zhdk.cloud.switch.ch/envicloud/chelsa/chelsa_V2/GLOBAL/climatologies/1981-2010/bio",
}

#: Resolutions each source serves (the first is the default).
RESOLUTIONS = {"worldclim": ("10m", "5m", "2.5m", "30s"), "chelsa": ("30s",)}

#: The 19 BIOCLIM variables.
VARIABLES = tuple(f"bio{n}" for n in range(1, 20))

#: Named regions as (min lon, min lat, max lon, max lat) in degrees; ``europe`` is the demo's.
REGIONS = {
    "europe": (-10.0, 36.0, 30.0, 62.0),
    "europe-wide": (-32.0, 27.0, 45.0, 72.0),
    "alps": (5.0, 43.5, 17.0, 48.5),
    "iberia": (-10.0, 35.5, 4.5, 44.0),
    "british-isles": (-11.0, 49.5, 2.0, 61.0),
    "scandinavia": (4.0, 54.5, 32.0, 71.5),
}

#: The scale and offset of each CHELSA V2.1 variable, stored as integers (value = stored * scale + offset,
#: in °C for temperatures and kg m-2, i.e. mm, for precipitation).
CHELSA_SCALING = {v: (0.1, -273.15 if v in ("bio1", "bio5", "bio6", "bio8", "bio9", "bio10", "bio11") else 0.0)
                  for v in VARIABLES}

CITATIONS = {
    "worldclim": "WorldClim 2.1, Fick & Hijmans (2017), Int. J. Climatol. 37: 4302-4315",
    "chelsa": "CHELSA V2.1, Karger et al. (2017), Sci. Data 4: 170122",
}


def worldclim_zip(resolution: str) -> str:
    """The name of WorldClim 2.1's zip of the 19 variables at ``resolution``."""
    return f"wc2.1_{resolution}_bio.zip"


def source_file(source: str, variable: str, resolution: str) -> str:
    """The name of the source's GeoTIFF of one variable (inside the zip for WorldClim)."""
    n = int(variable[3:])
    if source == "worldclim":
        return f"wc2.1_{resolution}_bio_{n}.tif"
    return f"CHELSA_bio{n}_1981-2010_V.2.1.tif"


def region_tag(bbox, region: str | None = None) -> str:
    """The part of the file name that says where: the region's name, else the bbox
    (``bbox-10_36_30_62``)."""
    return region if region else "bbox" + "_".join(f"{v:g}" for v in bbox)


def output_path(out, source: str, variable: str, resolution: str, tag: str) -> Path:
    """``<out>/<source>_<res>_<variable>_<tag>.tif``."""
    return Path(out) / f"{source}_{resolution}_{variable}_{tag}.tif"


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``"minlon,minlat,maxlon,maxlat"`` -> a checked tuple (no antimeridian crossing)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"bbox {text!r}: expected four numbers minlon,minlat,maxlon,maxlat") from None
    return check_bbox(values)


def check_bbox(bbox) -> tuple[float, float, float, float]:
    """The bbox as four floats, or ``ValueError`` saying what is wrong with it."""
    if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
        raise ValueError(f"bbox {bbox}: expected four finite numbers minlon,minlat,maxlon,maxlat")
    minlon, minlat, maxlon, maxlat = (float(v) for v in bbox)
    if not (-180 <= minlon < maxlon <= 180 and -90 <= minlat < maxlat <= 90):
        raise ValueError(f"bbox {bbox}: need -180 <= minlon < maxlon <= 180 and -90 <= minlat < maxlat <= 90 "
                         "(a region across the antimeridian is not supported)")
    return minlon, minlat, maxlon, maxlat


def normalise_variable(name: str) -> str:
    """``bio01``, ``BIO1``, ``1`` -> ``bio1``; ``ValueError`` for anything else."""
    match = re.fullmatch(r"(?:bio)?0*(\d{1,2})", str(name).strip().lower())
    if not match or f"bio{int(match.group(1))}" not in VARIABLES:
        raise ValueError(f"unknown variable {name!r}: use bio1 ... bio19")
    return f"bio{int(match.group(1))}"


@dataclass
class CovariateReport:
    """What :func:`fetch_covariates` did: ``rasters`` maps a covariate name
    (``<source>_<variable>``) to its COG for every variable written or already there; ``written``
    and ``skipped`` name them; ``failed`` maps the others to the reason; ``downloads`` is the
    :class:`habitat_helpers.fetch.http.Report` of the source files."""

    source: str
    resolution: str
    bbox: tuple
    rasters: dict[str, Path] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    downloads: http.Report = field(default_factory=http.Report)

    @property
    def ok(self) -> bool:
        """True when every variable asked for was written or already there."""
        return not self.failed

    def env_raster_options(self) -> list[str]:
        """``["--env-raster", "worldclim_bio1=/path", ...]`` for ``python -m habitat_helpers evaluate``."""
        return [item for name, path in self.rasters.items() for item in ("--env-raster", f"{name}={path}")]

    def __str__(self) -> str:
        lines = [f"{self.source} {self.resolution} over {self.bbox}: {len(self.written)} written, "
                 f"{len(self.skipped)} already there, {len(self.failed)} failed"]
        if self.downloads.outcomes:
            lines.append("downloads: " + str(self.downloads))
        lines += [f"  failed: {name}: {why}" for name, why in self.failed.items()]
        if self.rasters:
            lines.append("use them with: " + " ".join(self.env_raster_options()))
        lines.append("cite: " + CITATIONS[self.source])
        return "\n".join(lines)


def fetch_covariates(source: str = "worldclim", variables=("bio1", "bio12"), *, bbox=None, region: str | None = None,
                     resolution: str | None = None, out=None, base_url: str | None = None,
                     session: http.Session | None = None, workers: int = 2, delete_downloads: bool = False,
                     progress: bool = True) -> CovariateReport:
    """Fetch bioclimatic ``variables`` of ``source`` and clip them to ``bbox`` (or the named
    ``region``) as COGs in ``out`` (default ``$HABITAT_HELPERS_CACHE/covariates``); see the
    module's text. Returns a :class:`CovariateReport`; raises ``ValueError`` for options it cannot
    use, before anything is fetched."""

    if source not in BASE_URLS:
        raise ValueError(f"unknown source {source!r}: use {' or '.join(BASE_URLS)}")
    resolution = resolution or RESOLUTIONS[source][0]
    if resolution not in RESOLUTIONS[source]:
        raise ValueError(f"{source} serves the resolution(s) {', '.join(RESOLUTIONS[source])}, not {resolution!r}")
    variables = list(dict.fromkeys(normalise_variable(v) for v in variables))
    if not variables:
        raise ValueError("give at least one variable (bio1 ... bio19)")
    if (bbox is None) == (region is None):
        raise ValueError("give either a bbox or a named region (one of the two)")
    if region is not None and region not in REGIONS:
        raise ValueError(f"unknown region {region!r}: use one of {', '.join(REGIONS)} or a bbox")
    bbox = check_bbox(REGIONS[region] if region else bbox)
    out = Path(out) if out is not None else paths.cache_dir() / "covariates"
    base_url = (base_url or BASE_URLS[source]).rstrip("/")
    tag = region_tag(bbox, region)
    report = CovariateReport(source, resolution, bbox)
    targets = {v: output_path(out, source, v, resolution, tag) for v in variables}
    todo = []
    for variable, path in targets.items():
        if path.exists() and _readable(path):
            report.skipped.append(variable)
            report.rasters[f"{source}_{variable}"] = path
        else:
            todo.append(variable)
    if not todo:
        return _finish(report, out)

    downloads = out / "downloads"
    own = session is None
    session = http.Session(pool_size=workers) if own else session
    try:
        if source == "worldclim":
            name = worldclim_zip(resolution)
            jobs = [http.Job(f"{base_url}/{name}", downloads / name, verify=http.verify_zip)]
        else:
            jobs = [http.Job(f"{base_url}/{source_file(source, v, resolution)}",
                             downloads / source_file(source, v, resolution), verify=http.verify_geotiff,
                             meta={"variable": v}) for v in todo]
        report.downloads = http.fetch_all(jobs, session=session, workers=workers, desc=f"{source} rasters",
                                          progress=progress)
    finally:
        if own:
            session.close()

    bad = {o.path: f"{o.status}: {o.url}: {o.reason}" for o in report.downloads.outcomes
           if o.status in ("missing", "failed")}
    for variable in todo:
        if source == "worldclim":
            archive = downloads / worldclim_zip(resolution)
            where = f"/vsizip/{archive}/{source_file(source, variable, resolution)}"
        else:
            archive = downloads / source_file(source, variable, resolution)
            where = str(archive)
        if archive in bad:
            report.failed[variable] = bad[archive]
            continue
        try:
            clip_to_cog(where, targets[variable], bbox, scaling=CHELSA_SCALING[variable] if source == "chelsa" else None,
                        tags={"source": CITATIONS[source], "variable": variable, "resolution": resolution,
                              "bbox": ",".join(f"{v:g}" for v in bbox)})
        except (OSError, ValueError) as err:         # rasterio's errors are OSErrors (RasterioIOError ...)
            report.failed[variable] = f"{type(err).__name__}: {err}"
            continue
        report.written.append(variable)
        report.rasters[f"{source}_{variable}"] = targets[variable]
    if delete_downloads and report.ok:
        for outcome in report.downloads.outcomes:
            outcome.path.unlink(missing_ok=True)
    return _finish(report, out)


def _finish(report: CovariateReport, out: Path) -> CovariateReport:
    """Write ``env_rasters.txt`` (one ``--env-raster NAME=PATH`` per line) and order the names."""
    report.rasters = dict(sorted(report.rasters.items(), key=lambda kv: int(kv[0].rsplit("bio", 1)[1])))
    if report.rasters:
        out.mkdir(parents=True, exist_ok=True)
        (out / "env_rasters.txt").write_text("".join(f"--env-raster {name}={path}\n"
                                                     for name, path in report.rasters.items()))
    return report


def _readable(path: Path) -> bool:
    """Whether an output already there opens (a broken one is written again)."""
    try:
        http.verify_geotiff(path)
    except Exception:  # noqa: BLE001 - any failure to open means: write it again
        return False
    return True


def clip_to_cog(src_path: str, dest: Path, bbox, *, scaling: tuple[float, float] | None = None,
                tags: dict | None = None) -> Path:
    """Clip band 1 of the raster at ``src_path`` (a path or a GDAL ``/vsizip/`` name) to ``bbox``
    (WGS84 degrees; the raster must be in geographic coordinates) on whole cells, and write it to
    ``dest`` as a deflate-compressed Cloud-Optimized GeoTIFF, atomically (``<dest>.part.tif``
    renamed). ``scaling``: ``(scale, offset)`` written when the source is integer and has none of
    its own."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    minlon, minlat, maxlon, maxlat = bbox
    with rasterio.open(src_path) as src:
        if src.crs is None or not src.crs.is_geographic:
            raise ValueError(f"{src_path}: expected a raster in geographic coordinates, found {src.crs}")
        t = src.transform
        if t.b or t.d or t.e >= 0:
            raise ValueError(f"{src_path}: expected a north-up grid")
        col0 = max(0, math.floor((minlon - t.c) / t.a + 1e-9))
        col1 = min(src.width, math.ceil((maxlon - t.c) / t.a - 1e-9))
        row0 = max(0, math.floor((t.f - maxlat) / -t.e + 1e-9))
        row1 = min(src.height, math.ceil((t.f - minlat) / -t.e - 1e-9))
        if col1 <= col0 or row1 <= row0:
            raise ValueError(f"{src_path}: the bbox {bbox} does not overlap the raster ({tuple(src.bounds)})")
        window = Window(col0, row0, col1 - col0, row1 - row0)
        data = src.read(1, window=window)
        profile = {"driver": "COG", "width": window.width, "height": window.height, "count": 1,
                   "dtype": data.dtype, "crs": src.crs, "transform": src.window_transform(window),
                   "nodata": src.nodata, "compress": "deflate", "blocksize": 512, "overview_resampling": "nearest"}
        scale, offset = src.scales[0], src.offsets[0]
        band_tags = src.tags(1)
    if (scale, offset) == (1.0, 0.0) and scaling is not None and np.issubdtype(data.dtype, np.integer):
        scale, offset = scaling
    part = dest.with_name(dest.stem + ".part.tif")
    with rasterio.open(part, "w", **profile) as dst:
        dst.write(data, 1)
        dst.scales, dst.offsets = (scale,), (offset,)
        dst.update_tags(**(tags or {}))
        dst.update_tags(1, **band_tags)
    os.replace(part, dest)
    return dest


# --- the command -------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fetch covariates``."""

    what = parser.add_argument_group("what to fetch")
    # dest is not "source": that one names the fetch sub-command (habitat_helpers.fetch)
    what.add_argument("--source", dest="raster_source", choices=tuple(BASE_URLS), default="worldclim",
                      help="worldclim (WorldClim 2.1, 1970-2000) or chelsa (CHELSA V2.1, 1981-2010); "
                           "default: worldclim")
    what.add_argument("--variables", type=comma_list(str), default=["bio1", "bio12"],
                      help="comma list of BIOCLIM variables bio1 ... bio19 (default: bio1,bio12)")
    what.add_argument("--resolution", default=None,
                      help="worldclim: 10m, 5m, 2.5m or 30s (default 10m); chelsa: 30s")
    where = what.add_mutually_exclusive_group(required=True)
    where.add_argument("--bbox", default=None, help="minlon,minlat,maxlon,maxlat in degrees, e.g. -10,36,30,62")
    where.add_argument("--region", choices=tuple(REGIONS), default=None,
                       help=f"a named region: {', '.join(REGIONS)} (europe is the demo's bbox)")
    how = parser.add_argument_group("where and how")
    how.add_argument("--out", default=None, help="output folder (default: $HABITAT_HELPERS_CACHE/covariates)")
    how.add_argument("--base-url", default=None, help="folder the source files are fetched from (default: the "
                     "source's own, see the page 'Fetch real data')")
    how.add_argument("--delete-downloads", action="store_true",
                     help="remove the downloaded source files once clipped (default: keep them in OUT/downloads)")
    http.add_http_arguments(how, workers=2)


def run(args: argparse.Namespace) -> int:
    """``fetch covariates``: 0 when every variable was written, 1 when some could not be."""

    try:
        bbox = parse_bbox(args.bbox) if args.bbox is not None else None
    except ValueError as err:
        raise UsageError(f"--bbox: {err}") from None
    with http.session_from_args(args) as session:
        try:
            report = fetch_covariates(args.raster_source, args.variables, bbox=bbox, region=args.region,
                                      resolution=args.resolution, out=args.out, base_url=args.base_url,
                                      session=session, workers=args.workers,
                                      delete_downloads=args.delete_downloads, progress=not args.no_progress)
        except ValueError as err:
            raise UsageError(str(err)) from None
    print(report)
    if not report.ok:
        print(f"error: {len(report.failed)} variable(s) could not be written (see above); run the same command "
              "again to retry", file=sys.stderr)
        return 1
    return 0
