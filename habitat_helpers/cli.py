"""The command line: ``python -m habitat_helpers <command> ...``.

=============  ===================================================================================
command        what it does
=============  ===================================================================================
``evaluate``   spatial block cross-validation (:func:`habitat_helpers.evaluation.cross_validate`)
               of any table of sites you have: it reads the table, embeds what the chosen
               modalities need, and writes the per-level metrics of the aligned model and of the
               baselines to ``results.json``
=============  ===================================================================================

Why a command line at all: to evaluate your own plots you should not need to write Python or to
reshape your table into the book's format first. ``evaluate`` accepts a plain CSV (or GeoParquet)
with a latitude, a longitude and a EUNIS code per row, whatever the columns are called, and says
row by row what it could not use instead of quietly dropping it.

Adding a command: write ``_add_<name>_arguments(parser)`` and ``run_<name>(args) -> int`` and list
them in :data:`COMMANDS`; ``python -m habitat_helpers --help`` picks it up.

Exit codes: 0 when the command worked; 2 for a problem with what was asked (a column that is not
in the table, no labelled sites, fewer spatial blocks than folds ...), with a message saying what
to change. Anything else is a bug: it raises with a full traceback.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from . import datasets, eunis

#: Other names accepted when the default column name is absent (compared ignoring case, so
#: ``Latitude`` and ``LATITUDE`` are found too). A name you give yourself is only searched as is,
#: unless it is one of these.
COLUMN_ALIASES = {
    "lat": ("lat", "latitude"),
    "lon": ("lon", "longitude"),
    "label": ("eunis_code", "eunis", "Expert System"),
    "site_id": ("site_id", "PlotObservationID", "id"),
}

#: Label cells that mean "no label" (the site is kept, unlabelled).
NO_LABEL = {"", "?", "nan", "none", "na", "n/a", "-"}

#: Separators looked for in a CSV header line; the most frequent one wins.
SEPARATORS = (",", ";", "\t", "|")

MALFORMED = "malformed row (wrong number of fields)"
UNKNOWN_CODE = "unknown EUNIS code (site kept unlabelled)"


class UsageError(Exception):
    """Something in the command or the table that the user can fix (exit code 2, no traceback)."""


# --- reading a table of sites -----------------------------------------------------------------

def read_table(path, *, lat: str = "lat", lon: str = "lon", label: str = "eunis_code",
               site_id: str | None = None, photo_columns=None, satellite: str | None = None,
               esy: bool = False, sep: str | None = None, verbose: bool = True):
    """Read your own table of sites (CSV, TSV or (Geo)Parquet) into the project's site table.

    Parameters
    ----------
    path
        the table. ``.parquet`` / ``.geoparquet`` files are read as (Geo)Parquet; anything
        else as delimited text whose separator (comma, semicolon, tab or ``|``) is the one that
        occurs most often in the header line (``.tsv`` files: tab; ``sep`` forces one).
    lat, lon, label
        the columns holding latitude and longitude (WGS84 degrees; a decimal comma
        as in ``48,25`` is accepted) and the EUNIS label. When the default name is absent, the
        names in :data:`COLUMN_ALIASES` are tried (``latitude``/``Latitude``,
        ``longitude``/``Longitude``, ``EUNIS``, EVA's ``Expert System``). A GeoParquet file
        without latitude and longitude columns gives them from its point geometry.
    site_id
        the column with a unique id per site; by default ``site_id``, ``PlotObservationID``
        or ``id`` if present, else the line number in the file (``line12``; ``row12`` for Parquet).
    photo_columns
        columns holding ground-photo files, one view per column (e.g. LUCAS's
        N, E, S, W). Paths may be relative to the table's folder.
    satellite
        the column holding a satellite patch file (GeoTIFF, band folder or PNG/JPEG).
    esy
        read the labels as EVA ``Expert System`` (EUNIS-ESy) strings such as ``"R22, R23!"``
        or ``"Sb"``. Switched on automatically when the column is called ``Expert System`` or
        its cells use that syntax (commas, ``!`` flags, groupings such as ``Qa``).

    Returns
    -------
    sites
        The site table of :mod:`habitat_helpers.datasets` (a GeoDataFrame). Nothing is
        dropped silently: the :class:`~habitat_helpers.datasets.LoadReport` counts, by reason, rows
        skipped (malformed lines; missing, unreadable or out-of-range coordinates; duplicated ids)
        and notes on kept rows (unknown EUNIS codes, which leave the site unlabelled; missing photo
        files ...). It is printed and stored in ``sites.attrs["load_report"]``, with the columns
        used in ``sites.attrs["columns"]`` and a few unknown codes in
        ``sites.attrs["unknown_codes"]`` (for finding typos).

    Raises
    ------
    UsageError
        When a column is missing (naming the columns the table has).
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"table not found: {path}")
    report = datasets.LoadReport(path.name)
    if path.suffix.lower() in (".parquet", ".geoparquet"):
        table, row_names = _read_parquet(path)
    else:
        table, row_names = _read_delimited(path, sep, report)
    report.rows_read += len(table)

    columns = {
        "lat": _find_column(table, lat, "latitude", "--lat-col"),
        "lon": _find_column(table, lon, "longitude", "--lon-col"),
        "label": _find_column(table, label, "EUNIS label", "--label-col"),
        "site_id": _find_column(table, site_id or "site_id", "site id", "--id-col", required=site_id is not None),
        "photos": [_find_column(table, c, "photo", "--photo-cols") for c in (photo_columns or [])],
        "satellite": _find_column(table, satellite, "satellite", "--satellite-col") if satellite else None,
    }
    if columns["lat"] is None and columns["lon"] is None and _is_geodataframe(table):
        table, columns = _coordinates_from_geometry(table, columns, report)
    for key, what, option in (("lat", "latitude", "--lat-col"), ("lon", "longitude", "--lon-col")):
        if columns[key] is None:
            wanted = lat if key == "lat" else lon
            raise UsageError(_missing_column_message(table, wanted, what, option))

    # Build the candidate site table; datasets.finalise checks coordinates and ids.
    source = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem) or "table"
    df = pd.DataFrame({"source": source}, index=table.index)
    df["site_id"] = _site_ids(table, columns["site_id"], row_names, source, report)
    df["lat"] = _coordinate_text(table[columns["lat"]], report)
    df["lon"] = _coordinate_text(table[columns["lon"]], report)
    df["coord_source"] = "table"
    esy = esy or _looks_like_esy(columns["label"], table[columns["label"]])
    df["eunis_code"], unknown = _clean_labels(table[columns["label"]], esy, report)
    photos, views = _photo_lists(table, columns["photos"])
    df["photos"] = pd.Series(photos, index=df.index, dtype=object)
    df["photo_views"] = pd.Series(views, index=df.index, dtype=object)
    df["satellite"] = table[columns["satellite"]].map(_text) if columns["satellite"] else None
    sites = datasets.finalise(df, report, verbose=False)

    # Image files are checked on the sites that were kept only, so each note counts sites.
    _check_files(sites, path.parent, report)
    sites.attrs["load_report"] = report.as_dict()
    sites.attrs["columns"] = {**columns, "label_format": "EUNIS-ESy (Expert System)" if esy else "EUNIS codes"}
    sites.attrs["unknown_codes"] = dict(unknown.most_common(20))
    if verbose:
        print(report)
        if unknown:
            examples = ", ".join(f"{code!r} ({n})" for code, n in unknown.most_common(5))
            print(f"  unknown EUNIS codes, most frequent first: {examples}")
    return sites


def _read_delimited(path: Path, sep: str | None, report) -> tuple[pd.DataFrame, list[str]]:
    """All cells as text, plus a name for each row saying where it is in the file (``line12``).

    Python's ``csv`` module is used rather than ``pandas.read_csv`` because it lets us see every
    row with too many *or too few* fields (pandas pads short rows silently), so each one can be
    counted as malformed. Quoted cells may contain separators and line breaks."""
    try:
        return _parse_delimited(path, sep, report, encoding="utf-8-sig")   # -sig: Excel's byte-order mark
    except UnicodeDecodeError:
        report.note("file is not UTF-8: read as Latin-1")
        return _parse_delimited(path, sep, report, encoding="latin-1")


def _parse_delimited(path: Path, sep: str | None, report, encoding: str):
    with open(path, newline="", encoding=encoding) as f:
        first_line = f.readline()
        if not first_line.strip():
            raise UsageError(f"{path} is empty or starts with a blank line: the first line must name the columns")
        if sep is None:
            sep = "\t" if path.suffix.lower() == ".tsv" else _guess_separator(first_line)
        f.seek(0)
        reader = csv.reader(f, delimiter=sep)
        header = [name.strip() for name in next(reader)]
        rows, row_names, malformed = [], [], 0
        for fields in reader:
            if not any(cell.strip() for cell in fields):
                continue                         # blank line, e.g. at the end of the file
            if len(fields) != len(header):
                malformed += 1
                continue
            rows.append(fields)
            row_names.append(f"line{reader.line_num}")
    report.rows_read += malformed                # read_table adds the rows that parsed
    report.skip(MALFORMED, malformed)
    return pd.DataFrame(rows, columns=header, dtype=object), row_names


def _guess_separator(header_line: str) -> str:
    counts = {s: header_line.count(s) for s in SEPARATORS}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _read_parquet(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """A Parquet file (a GeoDataFrame when it carries GeoParquet metadata) and a name per row."""
    import geopandas as gpd

    try:
        table = gpd.read_parquet(path)
    except ValueError:                           # plain Parquet: no geometry metadata
        table = pd.read_parquet(path)
    table = table.reset_index(drop=True)
    return table, [f"row{n}" for n in range(1, len(table) + 1)]


def _find_column(table: pd.DataFrame, name: str | None, what: str, option: str, required: bool = True) -> str | None:
    """The column called ``name``; for a default name, also its aliases, ignoring case.

    Returns None when an optional column (or a latitude/longitude that a GeoParquet geometry
    may still give) is absent; raises :class:`UsageError` naming the table's columns otherwise."""
    if name is None:
        return None
    if name in table.columns:
        if list(table.columns).count(name) > 1:
            raise UsageError(f"the table has more than one column called {name!r}")
        return name
    candidates = next((names for names in COLUMN_ALIASES.values() if name.lower() in map(str.lower, names)), ())
    lower = {str(c).lower(): c for c in table.columns}
    for alias in candidates:
        if alias.lower() in lower:
            return lower[alias.lower()]
    if not required or what in ("latitude", "longitude"):
        return None
    raise UsageError(_missing_column_message(table, name, what, option))


def _missing_column_message(table, name: str, what: str, option: str) -> str:
    tried = next((names for names in COLUMN_ALIASES.values() if name.lower() in map(str.lower, names)), (name,))
    available = ", ".join(repr(str(c)) for c in table.columns)
    return (f"no {what} column: looked for {' / '.join(repr(t) for t in tried)}. "
            f"The table has the columns {available}. Name yours with {option} COLUMN.")


def _is_geodataframe(table) -> bool:
    import geopandas as gpd

    return isinstance(table, gpd.GeoDataFrame)


def _coordinates_from_geometry(table, columns: dict, report):
    """Latitude and longitude from a GeoParquet's point geometry (reprojected to WGS84)."""
    geometry = table.geometry
    if geometry.crs is not None and not geometry.crs.equals("EPSG:4326"):
        geometry = geometry.to_crs("EPSG:4326")
    points = (geometry.geom_type == "Point").to_numpy()
    report.note("geometry is not a point (no coordinates)", int((~points & geometry.notna().to_numpy()).sum()))
    lat, lon = np.full(len(table), np.nan), np.full(len(table), np.nan)
    lat[points], lon[points] = geometry[points].y, geometry[points].x
    table = table.assign(**{"latitude (from geometry)": lat, "longitude (from geometry)": lon})
    return table, {**columns, "lat": "latitude (from geometry)", "lon": "longitude (from geometry)"}


def _text(value) -> str | None:
    """A cell as stripped text; None for empty cells and missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    text = str(value).strip()
    return text or None


def _site_ids(table, column, row_names, source: str, report) -> list[str]:
    """``<source>:<id>``; without an id column (or for an empty id cell) the row's place in the
    file (``line12``) is used, so that a site can always be found in the file."""
    if column is None:
        return [f"{source}:{name}" for name in row_names]
    ids = []
    for value, name in zip(table[column], row_names):
        text = _text(value)
        if text is None:
            report.note("no site id (line number used)")
            text = name
        ids.append(f"{source}:{text}")
    return ids


def _coordinate_text(values: pd.Series, report) -> pd.Series:
    """Coordinates as text, with a decimal comma (``48,25``, common in European spreadsheets
    saved with ``;`` separators) turned into a point. Unreadable values stay as they are:
    :func:`habitat_helpers.datasets.finalise` counts them."""
    out, commas = [], 0
    for value in values:
        text = _text(value)
        if text is not None and re.fullmatch(r"-?\d+,\d+", text):
            text = text.replace(",", ".")
            commas += 1
        out.append(text)
    report.note("coordinates with a decimal comma (read as a point)", commas)
    return pd.Series(out, index=values.index, dtype=object)


def _looks_like_esy(column: str, values: pd.Series) -> bool:
    """True when labels look like EVA ``Expert System`` strings rather than plain codes."""
    if column.strip().lower() == "expert system":
        return True
    for value in values:
        text = _text(value)
        if text and ("," in text or text.endswith("!") or re.fullmatch(r"[A-Z][a-z]", text)):
            return True
    return False


def _clean_labels(values: pd.Series, esy: bool, report) -> tuple[list[str | None], Counter]:
    """One EUNIS code (or None) per row. Unknown codes are noted and counted by code."""
    labels, unknown = [], Counter()
    for value in values:
        text = _text(value)
        if text is None or text.lower() in NO_LABEL:
            report.note("no EUNIS label (site kept unlabelled)")
            labels.append(None)
            continue
        try:
            code = eunis.esy_label(text) if esy else eunis.check(text)
        except ValueError:
            report.note(UNKNOWN_CODE)
            unknown[text] += 1
            labels.append(None)
            continue
        if code is None:       # ESy codes of different formations: no common label
            report.note("EUNIS-ESy codes of different formations (site kept unlabelled)")
        labels.append(code)
    return labels, unknown


def _photo_lists(table, photo_columns: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """Per site, the photo cells that are filled and the name of each view (its column).
    A cell holding a list (as in a saved site table) gives one view per element."""
    photos, views = [], []
    for i in range(len(table)):
        files, names = [], []
        for column in photo_columns:
            value = table[column].iat[i]
            items = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
            for k, item in enumerate(items):
                text = _text(item)
                if text is not None:
                    files.append(text)
                    names.append(column if len(items) == 1 else f"{column}-{k}")
        photos.append(files)
        views.append(names)
    return photos, views


def _local_file(text: str, folder: Path) -> Path | None:
    """A path relative to the table's folder (or absolute); None for a URL."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", text, flags=re.IGNORECASE):
        return None
    path = Path(text).expanduser()
    return path if path.is_absolute() else folder / path


def _check_files(sites, folder: Path, report) -> None:
    """Keep only image files that exist (made absolute); note the others by reason."""
    all_photos, all_views = [], []
    for files, views in zip(sites["photos"], sites["photo_views"]):
        kept, kept_views = [], []
        for text, view in zip(files, views):
            path = _local_file(text, folder)
            if path is None:
                report.note("photo given as a URL (not downloaded; photo ignored)")
            elif not path.exists():
                report.note("photo file missing (photo ignored)")
            else:
                kept.append(str(path))
                kept_views.append(view)
        all_photos.append(kept)
        all_views.append(kept_views)
    sites["photos"] = pd.Series(all_photos, index=sites.index, dtype=object)
    sites["photo_views"] = pd.Series(all_views, index=sites.index, dtype=object)

    patches = []
    for text, lat, lon in zip(sites["satellite"], sites["lat"], sites["lon"]):
        text = _text(text)
        path = _local_file(text, folder) if text else None
        if text is None:
            patches.append(None)
        elif path is None or not path.exists():
            report.note("satellite patch missing or a URL (patch ignored)")
            patches.append(None)
        elif not _patch_covers(path, lat, lon, report):
            patches.append(None)
        else:
            patches.append(str(path))
    sites["satellite"] = patches


def _patch_covers(path: Path, lat: float, lon: float, report, tolerance_m: float = 1000.0) -> bool:
    """Whether a georeferenced patch lies over its site (within ``tolerance_m``), as
    :func:`habitat_helpers.datasets.read_satellite` checks: a patch of the wrong place would
    teach the model nonsense. Patches without georeferencing (PNG, no CRS) are accepted."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return True
    try:
        lon_min, lat_min, lon_max, lat_max = datasets.patch_bounds_wgs84(path)
    except ValueError:
        report.note("satellite patch without a CRS (kept, not checked against the site)")
        return True
    except OSError:
        report.note("satellite patch unreadable (patch ignored)")
        return False
    pad_lat = tolerance_m / 111_320
    pad_lon = pad_lat / max(math.cos(math.radians(lat)), 1e-6)
    if lat_min - pad_lat <= lat <= lat_max + pad_lat and lon_min - pad_lon <= lon <= lon_max + pad_lon:
        return True
    report.note("satellite patch does not cover the site (patch ignored)")
    return False


# --- embeddings ---------------------------------------------------------------------------------

def embed_for_evaluation(sites, modalities, *, cache_dir, image_encoder: str | None = None,
                         image_size: int | None = None, device: str = "cpu", batch_size: int = 64,
                         num_workers: int = 0, progress: bool = True) -> dict[str, np.ndarray]:
    """The embeddings that ``modalities`` need, one row per site (NaN rows where a site lacks
    the input), as :func:`habitat_helpers.evaluation.cross_validate` takes them.

    Only the requested modalities are embedded: a GPS-only evaluation never loads an image
    model. Image embeddings go through the resumable cache of :mod:`habitat_helpers.embed`
    (a second run with the same files reads them back); ground photos are averaged over the
    views a site has."""
    from . import embed, encoders

    out = {}
    if "gps" in modalities:
        out["gps"] = gps_embeddings(sites["lat"].to_numpy(float), sites["lon"].to_numpy(float),
                                    cache_dir=cache_dir, device=device, progress=progress)
    image_modalities = [m for m in modalities if m in ("photo", "satellite")]
    if image_modalities:
        encoder = encoders.get_encoder(image_encoder or encoders.OFFLINE_IMAGE_DEFAULT,
                                       image_size=image_size, device=device)
        for modality in image_modalities:
            per_item, site_row, _ = embed.embed_modality(sites, modality, encoder, cache_dir, device=device,
                                                         batch_size=batch_size, num_workers=num_workers,
                                                         progress=progress)
            out[modality] = _mean_per_site(per_item, site_row, len(sites), encoder.dim)
    return out


def env_features(lat, lon, covariates=None, rasters=None):
    """The env modality for :func:`habitat_helpers.evaluation.cross_validate`: the covariates
    sampled at the sites (:func:`habitat_helpers.environment.features`): matrix, column names,
    sampling report."""
    from . import environment

    covariates = environment.DEFAULT_COVARIATES if covariates is None else covariates
    return environment.features(lat, lon, list(covariates), rasters)


def _mean_per_site(per_item: np.ndarray, site_row: np.ndarray, n_sites: int, dim: int) -> np.ndarray:
    """Average the items (photo views, patches) of each site; NaN rows for sites without any."""
    sums = np.zeros((n_sites, dim))
    np.add.at(sums, site_row, per_item)
    counts = np.bincount(site_row, minlength=n_sites)
    out = np.full((n_sites, dim), np.nan, dtype=np.float32)
    has = counts > 0
    out[has] = sums[has] / counts[has, None]
    return out


def gps_embeddings(lat, lon, *, cache_dir, device: str = "cpu", progress: bool = True,
                   chunk: int = 4096) -> np.ndarray:
    """GeoCLIP location embeddings of the coordinates, in chunks behind a progress bar, saved in
    ``cache_dir`` under a hash of the coordinates (so the same table is embedded once)."""
    from tqdm.auto import tqdm

    from . import embed, encoders

    encoder = encoders.get_encoder("geoclip-location", device=device)
    coordinates = np.round(np.column_stack([lat, lon]).astype(np.float64), 6)
    digest = hashlib.sha1(coordinates.tobytes()).hexdigest()[:12]
    path = Path(cache_dir) / encoder.cache_key / f"gps-{digest}.npz"
    if path.exists():
        with np.load(path) as data:
            return data["embeddings"]
    parts = []
    with tqdm(total=len(lat), desc="gps", unit="site", disable=not progress) as bar:
        for start in range(0, len(lat), chunk):
            parts.append(embed.embed_locations(lat[start:start + chunk], lon[start:start + chunk], encoder,
                                               device=device))
            bar.update(len(parts[-1]))
    result = np.concatenate(parts) if parts else np.empty((0, encoder.dim), np.float32)
    embed.save_npz_atomic(path, embeddings=result)
    return result


# --- results.json -------------------------------------------------------------------------------

def plain(value):
    """``value`` with NumPy and pandas numbers made plain Python, NaN and infinity made None,
    so that ``json.dumps(..., allow_nan=False)`` writes standard JSON (``NaN`` is not JSON,
    and many tools refuse to read a file that contains it)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray, pd.Index)):
        return [plain(v) for v in value]
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (pd.Timestamp, Path)):
        return str(value)
    if value is pd.NaT or value is pd.NA:
        return None
    return value


def keep_levels(value, levels):
    """Drop every ``level<k>`` entry (and every fold record of a ``level``) outside ``levels``,
    wherever it sits in the nested result, so that results.json reports only the levels asked for."""
    wanted = {f"level{k}" for k in levels}
    if isinstance(value, dict):
        return {k: keep_levels(v, levels) for k, v in value.items()
                if not (re.fullmatch(r"level\d+", str(k)) and k not in wanted)}
    if isinstance(value, list):
        return [keep_levels(v, levels) for v in value
                if not (isinstance(v, dict) and isinstance(v.get("level"), (int, np.integer)) and v["level"] not in levels)]
    return value


def summary_text(result, levels) -> str:
    """A small table: mean ± std macro-F1 over the folds, per model (rows) and level (columns)."""
    from . import evaluation

    table = result.summary(evaluation.ALL_SITES)
    models = list(dict.fromkeys(table.index.get_level_values(0)))
    rows = {}
    for model in models:
        cells = {}
        for level in levels:
            mean = table["macro_f1"]["mean"].get((model, level), np.nan)
            std = table["macro_f1"]["std"].get((model, level), np.nan)
            cells[f"level {level}"] = "-" if np.isnan(mean) else f"{mean:.3f} ± {0.0 if np.isnan(std) else std:.3f}"
        rows[model] = cells
    text = pd.DataFrame.from_dict(rows, orient="index").rename_axis("model").to_string()
    return f"macro-F1 on the test blocks (mean ± std over folds and seeds):\n{text}"


# --- the evaluate command -----------------------------------------------------------------------

def _comma_list(kind, allowed=None):
    """An argparse type: ``"1,2,3"`` -> ``[1, 2, 3]``, checking each item."""
    def parse(text: str):
        items = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                item = kind(part)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{part!r} is not a {kind.__name__}") from None
            if allowed is not None and item not in allowed:
                raise argparse.ArgumentTypeError(f"{part!r} is not one of {', '.join(map(str, allowed))}")
            items.append(item)
        if not items:
            raise argparse.ArgumentTypeError("give at least one value")
        return list(dict.fromkeys(items))     # drop repeats, keep the order
    return parse


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    from . import encoders

    table = parser.add_argument_group("the table of sites")
    table.add_argument("--sites", required=True, help="CSV/TSV (separator detected) or (Geo)Parquet of sites")
    table.add_argument("--lat-col", default="lat", help="latitude column (default: lat, else latitude / Latitude)")
    table.add_argument("--lon-col", default="lon", help="longitude column (default: lon, else longitude / Longitude)")
    table.add_argument("--label-col", default="eunis_code",
                       help="EUNIS label column (default: eunis_code, else EUNIS or EVA's 'Expert System')")
    table.add_argument("--id-col", default=None,
                       help="unique site id column (default: site_id, PlotObservationID or id if present, "
                            "else the line number)")
    table.add_argument("--esy", action="store_true",
                       help="labels are EVA Expert System (EUNIS-ESy) strings (detected automatically as a rule)")
    table.add_argument("--photo-cols", type=_comma_list(str), default=[],
                       help="comma list of columns holding ground-photo files, one view per column "
                            "(paths may be relative to the table's folder)")
    table.add_argument("--satellite-col", default=None, help="column holding a satellite patch file (GeoTIFF ...)")
    table.add_argument("--sep", default=None, help="force the CSV separator (e.g. ';' or '\\t')")

    cv = parser.add_argument_group("the evaluation")
    cv.add_argument("--modalities", type=_comma_list(str, ("photo", "satellite", "gps", "env")), default=["gps"],
                    help="comma list from photo, satellite, gps, env (default: gps); with two or more the "
                         "aligned model is trained and compared with the baselines. env = environmental "
                         "covariates sampled at the sites (climate, climate zone, land, coast distance)")
    cv.add_argument("--covariates", type=_comma_list(str), default=None,
                    help="built-in covariates of the env modality (default: all; see "
                         "hh.environment.describe()), e.g. t_mean_annual,p_annual,koppen_main; "
                         "--env-raster adds to them")
    cv.add_argument("--env-raster", action="append", default=[], metavar="NAME=PATH[:BAND]",
                    help="one more env covariate from your own GeoTIFF or NetCDF (any CRS, bilinear), e.g. "
                         "dem=/data/eu_dem.tif or bio1=/data/wc2.1_30s_bio_1.tif:1; repeat for several")
    cv.add_argument("--levels", type=_comma_list(int, (1, 2, 3)), default=[1, 2, 3],
                    help="EUNIS levels reported in results.json (default: 1,2,3)")
    cv.add_argument("--folds", type=int, default=5, help="spatial cross-validation folds (default: 5)")
    cv.add_argument("--block-size-deg", type=float, default=0.5,
                    help="side of the square spatial blocks in degrees (default: 0.5)")
    seeds = cv.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    seeds.add_argument("--seeds", type=_comma_list(int), default=None,
                       help="several seeds, e.g. 0,1,2 (the folds are redrawn for each)")
    cv.add_argument("--label-fractions", type=_comma_list(float), default=[1.0],
                    help="fractions of the labelled training sites, for a label-efficiency curve (default: 1)")

    model = parser.add_argument_group("models and embeddings")
    model.add_argument("--image-encoder", default=encoders.OFFLINE_IMAGE_DEFAULT,
                       help=f"image encoder for photos and satellite patches (default: {encoders.OFFLINE_IMAGE_DEFAULT})")
    model.add_argument("--image-size", type=int, default=None, help="image input size in pixels (default: the encoder's)")
    model.add_argument("--batch-size", type=int, default=64, help="images per batch (default: 64)")
    model.add_argument("--num-workers", type=int, default=0, help="processes decoding images (default: 0)")
    model.add_argument("--radius-km", type=float, default=5.0,
                       help="alignment: sites closer than this are positives for each other (default: 5)")
    model.add_argument("--align-epochs", type=int, default=None,
                       help="alignment: most training epochs (default: hh.align.AlignConfig's)")
    model.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto, a GPU when present)")
    model.add_argument("--cache", default=None,
                       help="embedding cache folder (default: $HABITAT_HELPERS_CACHE/embeddings)")

    output = parser.add_argument_group("output")
    output.add_argument("--out", default="results.json", help="results file (default: results.json)")
    output.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_evaluate(args: argparse.Namespace) -> int:
    """Read the table, embed, cross-validate, write results.json and print a summary."""
    import warnings

    with warnings.catch_warnings():      # restores the warning filters afterwards (in-process callers)
        # geoclip calls torch.jit.script, which warns on every run; it is not the user's concern
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*is deprecated")
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    import habitat_helpers

    from . import align, evaluation, paths, runtime

    seeds = args.seeds if args.seeds is not None else [args.seed]
    _check_evaluate_arguments(args)
    sep = {"\\t": "\t", "tab": "\t"}.get(args.sep, args.sep)     # '\t' typed in a shell is two characters

    sites = read_table(args.sites, lat=args.lat_col, lon=args.lon_col, label=args.label_col, site_id=args.id_col,
                       photo_columns=args.photo_cols, satellite=args.satellite_col, esy=args.esy, sep=sep)
    lat, lon = sites["lat"].to_numpy(float), sites["lon"].to_numpy(float)
    labels = pd.DataFrame(sites[["eunis_l1", "eunis_l2", "eunis_l3"]]).reset_index(drop=True)
    _check_sites(sites, labels, args, seeds)

    device = runtime.resolve_device(args.device)
    cache = Path(args.cache) if args.cache else paths.cache_dir() / "embeddings"
    embeddings = embed_for_evaluation(sites, [m for m in args.modalities if m != "env"], cache_dir=cache,
                                      image_encoder=args.image_encoder, image_size=args.image_size, device=device,
                                      batch_size=args.batch_size, num_workers=args.num_workers,
                                      progress=not args.no_progress)
    env_info = None
    if "env" in args.modalities:
        embeddings["env"], env_columns, env_report = env_features(lat, lon, args.covariates, args.env_rasters)
        print(env_report, file=sys.stderr)
        env_info = {"encoder": "environmental covariates (hh.environment), standardised, missing -> 0 + indicator",
                    "covariates": list(env_report.missing), "features": env_columns,
                    "missing_per_covariate": dict(env_report.missing)}

    align_settings = {"radius_km": args.radius_km}
    if args.align_epochs is not None:
        align_settings["epochs"] = args.align_epochs
    try:
        result = evaluation.cross_validate(
            lat=lat, lon=lon, labels=labels, embeddings=embeddings, modalities=tuple(args.modalities),
            folds=args.folds, block_size_deg=args.block_size_deg, seeds=tuple(seeds),
            align_config=align.AlignConfig(**align_settings), label_fractions=tuple(args.label_fractions),
            device=device, progress=not args.no_progress)
    except ValueError as err:            # e.g. fewer spatial blocks than folds for one of the seeds
        raise UsageError(str(err)) from None

    report = {
        "habitat_helpers_version": habitat_helpers.__version__,
        "input": {"file": str(Path(args.sites).resolve()), "columns": sites.attrs["columns"]},
        "load_report": {**sites.attrs["load_report"], "unknown_codes": sites.attrs["unknown_codes"]},
        "levels": list(args.levels),
        "embeddings": {m: {"encoder": "geoclip-location" if m == "gps" else args.image_encoder,
                           **(env_info if m == "env" else {}),
                           "sites_with_input": int((~np.isnan(a).any(axis=1)).sum())}
                       for m, a in embeddings.items()},
        **keep_levels(result.to_json(), args.levels),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(plain(report), indent=2, allow_nan=False))
    print()
    print(summary_text(result, args.levels))
    print(f"\nwrote {out}")
    return 0


def _check_evaluate_arguments(args) -> None:
    """Problems that need no data, found before anything slow runs."""
    if args.folds < 2:
        raise UsageError("--folds must be at least 2")
    if args.block_size_deg <= 0:
        raise UsageError("--block-size-deg must be positive")
    if any(not 0 < f <= 1 for f in args.label_fractions):
        raise UsageError("--label-fractions must lie in (0, 1], e.g. 0.1,0.5,1")
    if "photo" in args.modalities and not args.photo_cols:
        raise UsageError("--modalities photo needs --photo-cols naming the photo column(s)")
    if "satellite" in args.modalities and not args.satellite_col:
        raise UsageError("--modalities satellite needs --satellite-col naming the patch column")
    if (args.covariates or args.env_raster) and "env" not in args.modalities:
        raise UsageError("--covariates and --env-raster describe the env modality: add env to --modalities")
    args.env_rasters = env_rasters(args.env_raster)
    if args.covariates:
        from . import environment

        unknown = [c for c in args.covariates if c not in environment.COVARIATES]
        if unknown:
            raise UsageError(f"unknown covariate(s) {', '.join(unknown)}; built-in: "
                             f"{', '.join(environment.COVARIATES)}")


def env_rasters(specs: list[str]) -> dict:
    """``NAME=PATH[:BAND]`` options -> ``{name: Covariate}`` (files checked to exist)."""
    from . import environment

    out = {}
    for spec in specs:
        name, sep, target = spec.partition("=")
        if not sep or not name or not target:
            raise UsageError(f"--env-raster {spec!r}: expected NAME=PATH or NAME=PATH:BAND")
        path, band = target, 1
        head, colon, tail = target.rpartition(":")
        if colon and tail.isdigit():
            path, band = head, int(tail)
        if not Path(path).exists():
            raise UsageError(f"--env-raster {name}: no file {path}")
        if name in out or name in environment.COVARIATES:
            raise UsageError(f"--env-raster {name}: the name is already used")
        out[name] = environment.user_covariate(path, band=band, name=name)
    return out


def _check_sites(sites, labels: pd.DataFrame, args, seeds) -> None:
    """Problems in the table itself, found before the (possibly long) embedding."""
    from . import evaluation

    labelled = labels["eunis_l1"].notna()
    if not labelled.any():
        raise UsageError(f"no labelled rows: none of the {len(sites)} sites kept has a known EUNIS code in "
                         f"column {sites.attrs['columns']['label']!r} (see the report above)")
    if labels.loc[labelled, "eunis_l1"].nunique() < 2:
        raise UsageError("all labelled sites share one level-1 habitat: a classifier needs at least two")
    has_input = {"photo": sites["photos"].str.len() > 0, "satellite": sites["satellite"].notna()}
    for modality in ("photo", "satellite"):
        if modality in args.modalities and not has_input[modality].any():
            raise UsageError(f"no site has a usable {modality} file (see the notes above): "
                             f"fix the paths or drop {modality} from --modalities")
    for level in args.levels:
        if labels[f"eunis_l{level}"].isna().all():
            print(f"note: no site is labelled at level {level}; its metrics will be empty", file=sys.stderr)
    for seed in seeds:
        try:
            evaluation.block_folds(sites["lat"].to_numpy(float), sites["lon"].to_numpy(float),
                                   args.block_size_deg, args.folds, seed)
        except ValueError as err:
            raise UsageError(str(err)) from None


#: The subcommands, name -> (function adding its options, function running it, one-line help).
COMMANDS = {
    "evaluate": (_add_evaluate_arguments, run_evaluate,
                 "spatial block cross-validation of your own table of sites -> results.json"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m habitat_helpers",
        description="Command line of habitat_helpers (habitats from photos, satellites and GPS).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     title="commands", help="run 'python -m habitat_helpers COMMAND --help'")
    for name, (add_arguments, run, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:],
                                  prog=f"python -m habitat_helpers {name}")
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (0 fine, 2 a usage problem, explained on stderr).

    Tests and notebooks can call ``main(["evaluate", "--sites", ...])`` in the same process."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:           # --help (0) or a bad option (2); argparse has printed why
        return stop.code if isinstance(stop.code, int) else 0
    try:
        return args.run(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
