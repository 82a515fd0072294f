"""Loaders for real survey formats, all returning one site table.

The site table
--------------
One row per site, a GeoDataFrame in EPSG:4326 (point geometry at ``lon, lat``):

=======================  ==============  =====================================================
column                   type            meaning
=======================  ==============  =====================================================
``site_id``              str             unique in the table: ``<source>:<native id>``
``source``               str             ``lucas``, ``eva``, ``embal`` or ``demo``
``lat``, ``lon``         float           WGS84 degrees
``coord_uncertainty_m``  float           radius of the location's uncertainty (NaN: unknown)
``coord_source``         str             where the coordinates came from (``gps``, ``theoretical`` ...)
``date``                 datetime        survey date (NaT: unknown)
``label``                str / None      the label as given, cleaned (deepest level known)
``label_l1..l3``         str / None      the label at each level (None below its own level)
``label_candidates``     str / None      a label cell listing several codes (EVA ``R22, R23!``; an
                                         EMBAL site whose rows differ): the distinct codes joined
                                         by ``;`` in the order given (``R22;R23``; ``label`` is
                                         their common ancestor ``R2``); None for one code or no label
``photos``               list[str]       ground-photo files (or URLs), one per view
``photo_views``          list[str]       the view of each photo (LUCAS ``N E S W P C``, EMBAL ``T1-03`` ...)
``satellite``            str / None      satellite patch file
``on_land``              bool            the point lies on land in the 1 km ``global-land-mask``
=======================  ==============  =====================================================

Every loader reports what it did: rows read, sites kept and rows skipped by reason, notes on
kept rows, and where known the first few rows of each reason (``line 12 ...``;
``sites.attrs["load_report"]``, also printed). Nothing is dropped silently: a line with too few
or too many fields is skipped as malformed, never padded or cut; a missing required column
raises ``ValueError`` naming it.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import eunis, landmask, paths
from . import labels as schemes

SITE_COLUMNS = ["site_id", "source", "lat", "lon", "coord_uncertainty_m", "coord_source", "date",
                "label", "label_l1", "label_l2", "label_l3", "label_candidates", "photos", "photo_views",
                "satellite", "on_land"]

#: The inputs of a site that a pre-trained encoder embeds (ground photos, a satellite patch, the
#: coordinates); the environmental covariates, ``env``, are sampled, not embedded.
MODALITIES = ("photo", "satellite", "gps")
LUCAS_VIEWS = ("N", "E", "S", "W", "P", "C")
_LUCAS_VIEW_WORDS = {"N": "north", "E": "east", "S": "south", "W": "west", "P": "point"}
LUCAS_PHOTO_URL = "https://gisco-services.ec.europa.eu/lucas/photos/{year}/{nuts0}/{p1}/{p2}/{pid}{view}.jpg"


#: How many places (``line 12 ...``) a load report keeps per reason: enough to find the rows.
PLACES_KEPT = 5


@dataclass
class LoadReport:
    """What a loader read, kept and skipped (by reason), plus notes on kept rows.

    ``where`` keeps, per reason, the places in the file of its first few rows (``line 12 ...``)
    where the loader knows them, so that you can find and fix them."""

    source: str
    rows_read: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    where: dict = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1, where=()) -> None:
        if n:
            self.skipped[reason] += int(n)
            self._remember(reason, where)

    def note(self, what: str, n: int = 1, where=()) -> None:
        if n:
            self.notes[what] += int(n)
            self._remember(what, where)

    def _remember(self, reason: str, where) -> None:
        where = list(where)
        if where:
            places = self.where.setdefault(reason, [])
            places.extend(where[:PLACES_KEPT - len(places)])

    def as_dict(self) -> dict:
        return {"source": self.source, "rows_read": self.rows_read, "kept": self.kept,
                "skipped": dict(self.skipped), "notes": dict(self.notes),
                "where": {reason: list(places) for reason, places in self.where.items()}}

    def __str__(self) -> str:
        lines = [f"{self.source}: read {self.rows_read} rows, kept {self.kept} sites, "
                 f"skipped {sum(self.skipped.values())} rows"]
        lines += [f"  skipped, {reason}: {n}{_places(self.where, reason, n)}"
                  for reason, n in sorted(self.skipped.items())]
        lines += [f"  note, {what}: {n}{_places(self.where, what, n)}" for what, n in sorted(self.notes.items())]
        return "\n".join(lines)


def _places(where: dict, reason: str, n: int) -> str:
    """`` (line 3 ...; line 9 ...)`` for a reason with known places (``; ...`` when there are more)."""
    places = where.get(reason, [])
    if not places:
        return ""
    return f" ({'; '.join(places)}{'; ...' if n > len(places) else ''})"


def _read_export(table, report: LoadReport, sep=",") -> pd.DataFrame:
    """A survey export in a documented layout (LUCAS, EVA, EMBAL) as a DataFrame of strings
    (empty cells missing), from a path (CSV/TSV/Parquet) or a DataFrame; its rows are added to
    ``report.rows_read``. Text is read by :func:`_read_delimited`, as for :func:`read_table`:
    lines with too many *or too few* fields are counted in ``report`` (read, and skipped as
    malformed, with the lines of the first few) instead of stopping the read or being padded,
    and the rows kept are named by their line (``line12``, the index). Your own table of sites,
    whatever its columns are called, is read by :func:`read_table` instead."""
    if isinstance(table, pd.DataFrame):
        df = table.copy()
    else:
        path = Path(table)
        if not path.exists():
            raise FileNotFoundError(f"table not found: {path}")
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df, row_names = _read_delimited(path, sep, report)
            df = df.astype(str).set_axis(row_names)          # each row named by its line: line12
            df = df.mask(df.eq(""))
    report.rows_read += len(df)
    return df


def _row_places(index) -> list[str]:
    """Where rows are, for a load report: ``line 12`` for the rows of a text file read by
    :func:`_read_export` (named ``line12``), ``row 3`` for those of a DataFrame (its index)."""
    return [f"line {name[4:]}" if isinstance(name, str) and re.fullmatch(r"line\d+", name) else f"row {name}"
            for name in index]


def _require(df: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks required column(s) {missing}; it has {list(df.columns)[:20]}...")


def _clean_label(value, scheme, report: LoadReport,
                 unknown: Counter | None = None) -> tuple[str | None, str | None]:
    """One label cell as a code of ``scheme`` (a :class:`~habitat_helpers.labels.LabelScheme`;
    EUNIS: a plain code or an EUNIS-ESy string), by its ``clean`` rules, and its candidates:
    ``(code, candidates)``, ``code`` None for no label. The survey loaders and
    :func:`read_table` both clean labels with it.

    * An unknown code is noted in ``report`` (the site is kept unlabelled) and, given a Counter
      ``unknown``, counted there by value.
    * A EUNIS cell listing several codes (``"R22, R23!"``) gives their common ancestor (``"R2"``)
      and, as ``candidates``, the distinct codes joined by ``;`` in the order given
      (``"R22;R23"``, the site table's ``label_candidates``); ``candidates`` is None otherwise.
    * Codes of different formations (``"R22, S31"``: no common ancestor) leave the site
      unlabelled, noted in ``report``.
    """

    try:
        code = scheme.clean(value)
    except ValueError:
        what = (UNKNOWN_CODE if scheme.name == "eunis"
                else f"unknown {scheme.title} code (site kept unlabelled)")
        report.note(what)
        if unknown is not None:
            unknown[_text(value)] += 1
        return None, None
    text = _text(value)
    codes = eunis.parse_esy(text) if scheme.name == "eunis" and text is not None else []
    if len(codes) < 2:
        return code, None
    if code is None:
        report.note(DIFFERENT_FORMATIONS)
        return None, None
    return code, ";".join(codes)


def _labels(values, report: LoadReport, label_scheme="eunis") -> tuple[list[str | None], list[str | None]]:
    """Clean labels with the scheme's rules (:func:`_clean_label`): the codes and the candidates
    of multi-code cells (``label`` and ``label_candidates``). Unknown codes are counted, not
    kept."""

    scheme = schemes.get(label_scheme)
    cleaned = [_clean_label(v, scheme, report) for v in values]
    return [code for code, _ in cleaned], [candidates for _, candidates in cleaned]


def finalise(df: pd.DataFrame, report: LoadReport, sea: str = "flag", verbose: bool = True,
             label_scheme="eunis"):
    """Validate and normalise a candidate site table into the documented schema.

    Rows with missing or out-of-range coordinates or a duplicated ``site_id`` are skipped
    and counted; ``sea="flag"`` keeps points off the land mask (``on_land=False``, counted in
    the notes: coastal habitats sit on the shore line of a 1 km mask), ``sea="drop"`` skips them.
    """
    import geopandas as gpd


    if sea not in {"flag", "drop"}:
        raise ValueError("sea must be 'flag' or 'drop'")
    df = df.copy()
    for col in SITE_COLUMNS:
        if col not in df.columns:
            df[col] = [[] for _ in range(len(df))] if col in ("photos", "photo_views") else None
    given = df["lat"].notna() & df["lon"].notna()
    df["lat"] = pd.to_numeric(df["lat"], errors="coerce")
    df["lon"] = pd.to_numeric(df["lon"], errors="coerce")
    missing = df["lat"].isna() | df["lon"].isna()
    report.skip("missing coordinates", (missing & ~given).sum())
    report.skip("unreadable coordinates (not a number)", (missing & given).sum())
    df = df[~missing]
    bad = ~(df["lat"].between(-90, 90) & df["lon"].between(-180, 180))
    report.skip("coordinates out of range", bad.sum())
    df = df[~bad]
    dup = df["site_id"].duplicated()
    report.skip("duplicated site id", dup.sum())
    df = df[~dup]
    df["on_land"] = landmask.is_land(df["lat"].to_numpy(float), df["lon"].to_numpy(float)) if len(df) else []
    if sea == "drop":
        report.skip("on the sea (land mask)", (~df["on_land"]).sum())
        df = df[df["on_land"]]
    else:
        report.note("on the sea in the 1 km land mask (kept, on_land=False)", (~df["on_land"]).sum())

    scheme = schemes.get(label_scheme)
    levels = [scheme.level_columns(c) for c in df["label"]]
    for k in (1, 2, 3):
        df[f"label_l{k}"] = [lv[f"label_l{k}"] for lv in levels]
    df["label_candidates"] = _candidates_column(df["label_candidates"])
    df["coord_uncertainty_m"] = pd.to_numeric(df["coord_uncertainty_m"], errors="coerce")
    df["date"] = pd.to_datetime(df["date"], errors="coerce")
    report.kept = len(df)
    sites = gpd.GeoDataFrame(df[SITE_COLUMNS].reset_index(drop=True),
                             geometry=gpd.points_from_xy(df["lon"], df["lat"]), crs="EPSG:4326")
    sites.attrs["load_report"] = report.as_dict()
    sites.attrs["label_scheme"] = scheme.name
    if verbose:
        print(report)
    return sites


def _candidates_column(values) -> pd.Series:
    """``label_candidates`` as text or None (not NaN: pandas and Parquet turn None into NaN in a
    column of text), in an object column."""
    return pd.Series([v if isinstance(v, str) else None for v in values], index=values.index, dtype=object)


# --- LUCAS -----------------------------------------------------------------------------------

def _lucas_numbers(values: pd.Series, no_data: str) -> pd.Series:
    """Numbers, with the cells that fully match the regular expression ``no_data`` as NaN."""
    text = values.astype("string").str.strip()
    sentinel = text.str.fullmatch(no_data).fillna(False).astype(bool)
    numbers = pd.to_numeric(text.mask(sentinel), errors="coerce")
    return pd.Series(numbers.to_numpy(dtype=float, na_value=np.nan), index=values.index)


def _lucas_coordinate(values: pd.Series) -> pd.Series:
    """Degrees (``th_lat``, ``gps_long`` ...), with the LUCAS 'no data' codes 88.888..., 8, 88,
    888 and 8888... as NaN, also when written as decimals (``88.0``, a table saved by a program
    that made the column numeric): none of them is a latitude or longitude in the survey area."""
    return _lucas_numbers(values, r"88\.8+|(8|88|888|8888+)(\.0+)?")


def _lucas_metres(values: pd.Series) -> pd.Series:
    """Metres (``gps_prec``, ``obs_dist``), with only the long 'no data' codes 88.888... and
    8888... (``8888.0`` too) as NaN: 8, 88 and 888 m are real distances (an 8 m GPS fix is
    common)."""
    return _lucas_numbers(values, r"88\.8+|8888+(\.0+)?")


def _lucas_dates(values: pd.Series) -> pd.Series:
    """Survey dates as dd/mm/yy or dd/mm/yyyy (both occur)."""
    text = values.astype("string").str.strip()
    long_year = pd.to_datetime(text, format="%d/%m/%Y", errors="coerce")
    short_year = pd.to_datetime(text, format="%d/%m/%y", errors="coerce")
    return long_year.fillna(short_year)


def lucas_photo_path(root, year, nuts0, point_id, view) -> Path:
    """Local file in the GISCO layout ``{year}/{NUTS0}/{pid[0:3]}/{pid[3:6]}/{pid}{view}.jpg``."""
    pid = str(point_id)
    return Path(root) / str(year) / str(nuts0) / pid[0:3] / pid[3:6] / f"{pid}{view}.jpg"


def read_lucas(table, photo_root=None, labels=None, *, coordinates: str = "gps",
               views=LUCAS_VIEWS, label_column: str = "eunis_code", sea: str = "flag",
               label_scheme="eunis", verbose: bool = True):
    """Read the harmonised LUCAS in-situ table (d'Andrimont et al. 2020) into a site table.

    * ``gps_long`` carries no sign: ``gps_ew`` ``"West"`` (or ``"W"``) makes it negative, ``"East"``
      (``"E"``) keeps it. ``th_long`` is signed.
    * ``coordinates="gps"`` (default) uses ``gps_lat/gps_long`` and falls back to the theoretical
      grid point ``th_lat/th_long`` where the GPS fix is missing (sentinels) or not WGS84
      (a blank ``gps_proj`` too: the datum is unknown), and where ``gps_ew`` is blank or neither
      East nor West (or the column is absent) for a non-zero ``gps_long``: its side of Greenwich
      is unknown. Each fallback is counted in the load report by reason (the unknown sides with
      the first few points); ``coord_source`` says which point was used. ``"theoretical"``
      always uses ``th_*``.
      Uncertainty: ``gps_prec`` (m) for GPS, ``obs_dist`` (m, observer to point) for the fallback.
    * ``survey_date`` in dd/mm/yy or dd/mm/yyyy.
    * Photos: with ``photo_root``, the files of ``views`` in the GISCO layout that exist
      (missing files are counted); without it, the GISCO URLs (``file_path_gisco_*`` columns
      when present, else the public URL pattern).
    * ``labels``: optional table (or path) with ``point_id``, ``year`` and ``label_column``
      (EUNIS codes or EUNIS-ESy strings). Without it, ``label_column`` may name a column of the
      LUCAS table itself, e.g. ``"lc1"`` with ``label_scheme="lucas-lc1"`` (land cover).
    * ``label_scheme``: the hierarchy of the labels (:func:`habitat_helpers.labels.get`).
    """
    if coordinates not in {"gps", "theoretical"}:
        raise ValueError("coordinates must be 'gps' or 'theoretical'")
    report = LoadReport("LUCAS")
    df = _read_export(table, report)
    _require(df, ["point_id", "year", "th_lat", "th_long"], "LUCAS table")
    df["point_id"] = df["point_id"].astype(str).str.strip()
    df["year"] = df["year"].astype(str).str.strip()
    th_lat, th_lon = _lucas_coordinate(df["th_lat"]), _lucas_coordinate(df["th_long"])
    if coordinates == "gps" and {"gps_lat", "gps_long"} <= set(df.columns):
        gps_lat, gps_lon = _lucas_coordinate(df["gps_lat"]), _lucas_coordinate(df["gps_long"])
        ew = df.get("gps_ew", pd.Series(pd.NA, index=df.index)).astype("string").str.strip().str.lower()
        west = ew.isin(["west", "w"]).fillna(False).astype(bool)
        east = ew.isin(["east", "e"]).fillna(False).astype(bool)
        gps_lon = gps_lon.where(~west, -gps_lon.abs())
        wgs84 = True
        if "gps_proj" in df.columns:   # a blank projection: the fix's datum is unknown
            proj = df["gps_proj"].astype("string").str.strip().str.upper()
            wgs84 = proj.eq("WGS84").fillna(False).astype(bool)
        gps_found = gps_lat.notna() & gps_lon.notna() & wgs84
        unsigned = gps_found & ~(east | west) & gps_lon.ne(0)    # blank or unknown gps_ew: East or West?
        use_gps = gps_found & ~unsigned
        prec = _lucas_metres(df["gps_prec"]) if "gps_prec" in df.columns else np.nan
        obs = _lucas_metres(df["obs_dist"]) if "obs_dist" in df.columns else np.nan
        df["lat"] = gps_lat.where(use_gps, th_lat)
        df["lon"] = gps_lon.where(use_gps, th_lon)
        df["coord_uncertainty_m"] = pd.Series(prec, index=df.index).where(use_gps, obs)
        df["coord_source"] = np.where(use_gps, "gps", "theoretical")
        report.note(GPS_FALLBACK, (~gps_found).sum())
        report.note(GPS_UNSIGNED, unsigned.sum(), where=("point " + df["point_id"] + ", " + df["year"])[unsigned])
    else:
        df["lat"], df["lon"] = th_lat, th_lon
        df["coord_uncertainty_m"] = _lucas_metres(df["obs_dist"]) if "obs_dist" in df.columns else np.nan
        df["coord_source"] = "theoretical"
    df["date"] = _lucas_dates(df["survey_date"]) if "survey_date" in df.columns else pd.NaT
    report.note("survey date unreadable (kept, NaT)",
                (df["date"].isna() & df.get("survey_date", pd.Series(index=df.index)).notna()).sum())
    df["site_id"] = "lucas:" + df["point_id"] + ":" + df["year"]
    df["source"] = "lucas"

    # labels
    df["label"] = None
    if labels is not None:
        label_report = LoadReport("LUCAS labels")
        lab = _read_export(labels, label_report)
        _require(lab, ["point_id", "year", label_column], "LUCAS label table")
        report.note("malformed label rows ignored (wrong number of fields)", label_report.skipped[MALFORMED],
                    where=label_report.where.get(MALFORMED, ()))
        lab = lab.assign(point_id=lab["point_id"].astype(str).str.strip(), year=lab["year"].astype(str).str.strip())
        dup = lab.duplicated(["point_id", "year"])
        report.note("duplicated label rows ignored", dup.sum())
        lab = lab[~dup]
        merged = df[["point_id", "year"]].merge(lab[["point_id", "year", label_column]], how="left",
                                                on=["point_id", "year"])
        df["label"], df["label_candidates"] = _labels(merged[label_column].tolist(), report, label_scheme)
        unmatched = len(lab) - merged[label_column].notna().sum()
        report.note("label rows matching no LUCAS point", unmatched)
    elif label_column in df.columns:
        df["label"], df["label_candidates"] = _labels(df[label_column].tolist(), report, label_scheme)

    # photos
    if "nuts0" not in df.columns:
        raise ValueError("LUCAS table lacks required column ['nuts0'] (needed for photo paths)")
    photos, photo_views = [], []
    for row in df.itertuples(index=False):
        files, names = [], []
        for view in views:
            if photo_root is not None:
                path = lucas_photo_path(photo_root, row.year, row.nuts0, row.point_id, view)
                if path.exists():
                    files.append(str(path))
                    names.append(view)
                elif _lucas_photo_expected(row, view):
                    report.note(f"photo {view} expected but missing under photo_root")
            elif _lucas_photo_expected(row, view):
                files.append(_lucas_url(row, view))
                names.append(view)
        photos.append(files)
        photo_views.append(names)
    df["photos"], df["photo_views"] = photos, photo_views
    df["satellite"] = None
    return finalise(df, report, sea=sea, verbose=verbose, label_scheme=label_scheme)


def _lucas_photo_expected(row, view: str) -> bool:
    word = _LUCAS_VIEW_WORDS.get(view)
    if word is None:
        return False  # the C (cover) photo has no flag column; it is only found on disk
    flag = getattr(row, f"photo_{word}", None)
    return isinstance(flag, str) and flag.strip().lower().startswith("photo taken")


def _lucas_url(row, view: str) -> str:
    word = _LUCAS_VIEW_WORDS.get(view, "")
    given = getattr(row, f"file_path_gisco_{word}", None)
    if isinstance(given, str) and given.startswith("http"):
        return given
    pid = row.point_id
    return LUCAS_PHOTO_URL.format(year=row.year, nuts0=row.nuts0, p1=pid[0:3], p2=pid[3:6], pid=pid, view=view)


_LUCAS_POINTS_FILE = "lucas2015_points.csv"
_LUCAS_POINTS_ATTRIBUTION = "Source: Eurostat, LUCAS 2015 primary data"


def lucas_points(path=None, *, countries=None, verbose: bool = True):
    """The real LUCAS 2015 survey points shipped with the package, as a site table.

    The package ships a compact copy of 14,613 real LUCAS 2015 points in 15 western and
    northern countries (ES PT FR BE NL LU DE DK UK IE SE FI EE LV LT), written by
    ``scripts/build_lucas_points.py``: point id, the LUCAS *theoretical* point (WGS84, rounded
    to 5 decimals, about 1 m), land cover ``lc1``, land use ``lu1`` and country. These are the
    points of the LUCAS topsoil sub-sample (about 1 LUCAS point in 10), so artificial land
    (A), water (G) and wetlands (H) are nearly absent: the class shares are not Europe's.

    Parameters
    ----------
    path
        None (default) for the shipped copy; otherwise a CSV with the columns ``point_id``,
        ``lat``, ``lon`` and ``lc1``, and optionally ``lu1``, ``country`` (or ``nuts0``) and
        ``year`` (2015 when absent), such as the full table
        ``../shared/data/lucas_points/lucas2015_points_west_north.csv``. Leading ``#``
        comment lines are skipped.
    countries
        keep only these countries (NUTS0 codes such as ``("FR", "ES")``, or one code);
        None keeps all.
    verbose
        print the load report.

    Returns
    -------
    sites
        The site table (see the top of this module; a GeoDataFrame) with ``source``
        ``"lucas"``, site ids ``lucas:<point_id>:<year>`` as in :func:`read_lucas`,
        ``coord_source`` ``"theoretical"`` and the land cover in ``label`` and its
        levels in ``label_l1`` .. ``label_l3`` (the LC1 tree of
        ``habitat_helpers.labels.get("lucas-lc1")``: ``E20`` gives ``E``, ``E2``, ``E20``),
        plus two columns ``lu1`` and ``country``. Nothing is dropped silently: the load
        report (:class:`LoadReport`, printed and in ``sites.attrs["load_report"]``) counts
        malformed lines, missing or unreadable coordinates and duplicated ids (skipped),
        points left out by ``countries``, and codes the scheme does not know or blank
        ``lc1`` cells (kept unlabelled; a few unknown codes in
        ``sites.attrs["unknown_codes"]``). ``sites.attrs["attribution"]`` holds the
        attribution to show with any use of the data: "Source: Eurostat, LUCAS 2015 primary
        data" (reuse under Commission Decision 2011/833/EU; nomenclature: d'Andrimont et
        al. 2020, Sci. Data 7:352).

    Raises
    ------
    ValueError
        When ``countries`` names a country that is not in the table (the message lists
        those that are) or a required column is missing.

    Example
    -------
    >>> import habitat_helpers as hh
    >>> sites = hh.datasets.lucas_points(countries=("FR", "ES"), verbose=False)
    >>> len(sites), sites["label_l1"].value_counts().index[0]
    (7077, 'B')
    >>> sites.attrs["attribution"]
    'Source: Eurostat, LUCAS 2015 primary data'
    """

    path = paths.resource(_LUCAS_POINTS_FILE) if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LUCAS points table not found: {path}")
    report = LoadReport(path.name)
    df, row_names = _read_delimited(path, ",", report, comments=True)
    report.rows_read += len(df)
    _require(df, ["point_id", "lat", "lon", "lc1"], "LUCAS points table")
    df = df.set_axis(row_names)
    country_column = "country" if "country" in df.columns else "nuts0" if "nuts0" in df.columns else None
    country = (df[country_column].str.strip().str.upper() if country_column
               else pd.Series("", index=df.index, dtype=object))
    if countries is not None:
        wanted = [countries] if isinstance(countries, str) else list(countries)
        wanted = [str(c).strip().upper() for c in wanted]
        available = sorted(set(country) - {""})
        unknown = [c for c in wanted if c not in available]
        if unknown:
            raise ValueError(f"unknown countries {unknown}: the table has {', '.join(available)}")
        keep = country.isin(wanted)
        report.skip(f"country not in countries={wanted} (left out on request)", (~keep).sum())
        df, country = df[keep], country[keep]

    year = df["year"].str.strip() if "year" in df.columns else "2015"
    out = pd.DataFrame(index=df.index)
    out["site_id"] = "lucas:" + df["point_id"].str.strip() + ":" + year
    out["source"] = "lucas"
    out["lat"] = _coordinate_text(df["lat"], report)
    out["lon"] = _coordinate_text(df["lon"], report)
    out["coord_source"] = "theoretical"
    codes, candidates, unknown_codes = _clean_labels(df["lc1"], report, "lucas-lc1")
    out["label"], out["label_candidates"] = codes, candidates
    extra = pd.DataFrame({"lu1": df["lu1"].map(_text) if "lu1" in df.columns else None,
                          "country": country.map(_text)}, index=df.index)
    # The rows finalise keeps: readable, in-range coordinates, the first row of each site id.
    lat, lon = pd.to_numeric(out["lat"], errors="coerce"), pd.to_numeric(out["lon"], errors="coerce")
    ids = out.loc[lat.between(-90, 90) & lon.between(-180, 180), "site_id"]
    extra = extra.loc[ids[~ids.duplicated()].index]
    sites = finalise(out, report, verbose=False, label_scheme="lucas-lc1")
    if len(extra) != len(sites):                 # finalise changed its rules: say so, never misalign
        raise RuntimeError("lucas_points: the rows kept by finalise are not the ones expected")
    position = list(sites.columns).index("on_land") + 1
    for k, column in enumerate(("lu1", "country")):
        sites.insert(position + k, column, extra[column].to_numpy(dtype=object))
    sites.attrs["load_report"] = report.as_dict()
    sites.attrs["unknown_codes"] = dict(unknown_codes.most_common(20))
    sites.attrs["attribution"] = _LUCAS_POINTS_ATTRIBUTION
    if verbose:
        print(report)
        if unknown_codes:
            examples = ", ".join(f"{code!r} ({n})" for code, n in unknown_codes.most_common(5))
            print(f"  unknown lucas-lc1 codes, most frequent first: {examples}")
    return sites


# --- EVA -------------------------------------------------------------------------------------

def read_eva(header, *, label_column: str = "Expert System", sep: str = "\t", sea: str = "flag",
             label_scheme="eunis", verbose: bool = True):
    """Read an EVA header export (tab-separated ``*_header.csv``) into a site table.

    Uses ``PlotObservationID``, ``Latitude``, ``Longitude`` (required), ``Expert System``
    (EUNIS-ESy codes: several comma-separated, ``!``-flagged, groupings such as ``Sb``, ``?``),
    ``Location uncertainty (m)`` and ``Date of recording`` (dd.mm.yyyy) when present.
    Several codes give their common ancestor (``R22, R23!`` -> ``R2``), the codes themselves
    kept in ``label_candidates`` (``R22;R23``); codes of different formations (``R22, S31``)
    leave the plot unlabelled, counted in the load report.
    """
    report = LoadReport("EVA")
    df = _read_export(header, report, sep=sep)
    _require(df, ["PlotObservationID", "Latitude", "Longitude"], "EVA header")
    df["site_id"] = "eva:" + df["PlotObservationID"].astype(str).str.strip()
    df["source"] = "eva"
    df["lat"], df["lon"] = df["Latitude"], df["Longitude"]
    df["coord_source"] = "eva"
    df["coord_uncertainty_m"] = df.get("Location uncertainty (m)", np.nan)
    if "Date of recording" in df.columns:
        df["date"] = pd.to_datetime(df["Date of recording"].astype("string").str.strip(), format="%d.%m.%Y",
                                    errors="coerce")
        report.note("date unreadable (kept, NaT)", (df["date"].isna() & df["Date of recording"].notna()).sum())
    else:
        df["date"] = pd.NaT
    if label_column in df.columns:
        df["label"], df["label_candidates"] = _labels(df[label_column].tolist(), report, label_scheme)
    else:
        df["label"] = None
    return finalise(df, report, sea=sea, verbose=verbose, label_scheme=label_scheme)


# --- EMBAL -----------------------------------------------------------------------------------

#: The documented EMBAL CSV schema, one row per transect photo.
EMBAL_COLUMNS = {"site": "site identifier", "transect": "transect identifier within the site",
                 "lat": "site latitude (WGS84)", "lon": "site longitude (WGS84)",
                 "photo": "photo file, relative to photo_root or absolute",
                 "eunis_code": "optional EUNIS code of the site", "date": "optional survey date (ISO)"}


def read_embal(table, photo_root=None, columns: dict | None = None, *, sea: str = "flag",
               label_scheme="eunis", verbose: bool = True):
    """Read EMBAL transect photos (one CSV row per photo, schema :data:`EMBAL_COLUMNS`).

    ``columns`` maps our names to yours for other layouts, e.g. ``{"site": "PlotID"}``.
    Rows of one site are grouped: their photos become the site's views (``T<transect>-<k>``).
    Rows whose photo file is missing or whose photo cell is empty are counted; a site keeps the
    photos that exist. Rows without a site id are skipped (counted, with their lines). A site
    whose rows give different codes gets their common ancestor, the codes in
    ``label_candidates``, as for an EVA cell listing several codes.
    """
    report = LoadReport("EMBAL")
    df = _read_export(table, report)
    rename = {theirs: ours for ours, theirs in (columns or {}).items()}
    df = df.rename(columns=rename)
    _require(df, ["site", "transect", "lat", "lon", "photo"], "EMBAL table")
    no_site = df["site"].map(_text).isna()
    report.skip("no site id", no_site.sum(), where=_row_places(df.index[no_site]))
    df = df[~no_site]
    records = []
    for site, rows in df.groupby("site", sort=False):
        lat = pd.to_numeric(rows["lat"], errors="coerce")
        lon = pd.to_numeric(rows["lon"], errors="coerce")
        if lat.nunique() > 1 or lon.nunique() > 1:
            report.note("sites with differing coordinates across rows (first used)")
        photos, views = [], []
        for k, r in enumerate(rows.itertuples(index=False)):
            if _text(r.photo) is None:
                report.note("photo cell empty")
                continue
            path = Path(r.photo) if photo_root is None else Path(photo_root) / r.photo
            if photo_root is not None and not path.exists():
                report.note("photo file missing")
                continue
            photos.append(str(path))
            views.append(f"T{r.transect}-{k:02d}")
        codes = rows["eunis_code"].dropna().unique() if "eunis_code" in rows.columns else []
        if len(codes) > 1:
            report.note("sites with conflicting EUNIS codes (common ancestor used)")
        label = ", ".join(codes) if len(codes) else None
        records.append({"site_id": f"embal:{site}", "source": "embal", "lat": lat.iloc[0], "lon": lon.iloc[0],
                        "coord_source": "embal", "coord_uncertainty_m": np.nan,
                        "date": rows["date"].iloc[0] if "date" in rows.columns else None,
                        "label": label, "photos": photos, "photo_views": views, "satellite": None})
    out = pd.DataFrame(records, columns=list(records[0]) if records else SITE_COLUMNS)
    if len(out):
        out["label"], out["label_candidates"] = _labels(out["label"].tolist(), report, label_scheme)
    return finalise(out, report, sea=sea, verbose=verbose, label_scheme=label_scheme)


# --- satellite patches -----------------------------------------------------------------------

def patch_bounds_wgs84(path) -> tuple[float, float, float, float]:
    """``(lon_min, lat_min, lon_max, lat_max)`` of a georeferenced raster, in WGS84."""
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as src:
        if src.crs is None:
            raise ValueError(f"{path} has no CRS: cannot check it against the site's coordinates")
        return transform_bounds(src.crs, "EPSG:4326", *src.bounds)


def _bounds_cover(bounds, lat: float, lon: float, tolerance_m: float = 1000.0) -> bool:
    """Whether the point ``lat, lon`` lies within ``bounds`` (``lon_min, lat_min, lon_max,
    lat_max`` in WGS84) grown by ``tolerance_m`` on every side: the check that a satellite patch
    lies over its site (a patch of the wrong place would teach the model nonsense)."""
    lon_min, lat_min, lon_max, lat_max = bounds
    pad_lat = tolerance_m / 111_320
    pad_lon = pad_lat / max(float(np.cos(np.deg2rad(lat))), 1e-6)
    return bool(lat_min - pad_lat <= lat <= lat_max + pad_lat and lon_min - pad_lon <= lon <= lon_max + pad_lon)


def read_patch(path, bands=None) -> np.ndarray:
    """A satellite patch as a float32 array ``(bands, H, W)``.

    * a multi-band GeoTIFF: ``bands`` are 1-based indices or band descriptions (``"B04"``);
      default all bands
    * a folder of single-band GeoTIFFs (BigEarthNet-S2: ``<name>_B04.tif`` ...): ``bands`` are
      band names, default ``("B04", "B03", "B02")``; coarser bands are resampled to the finest
    * a PNG/JPEG: its RGB (or RGB + NIR) channels
    """
    import rasterio
    from rasterio.enums import Resampling

    path = Path(path)
    if path.is_dir():
        names = list(bands or ("B04", "B03", "B02"))
        files = {re.search(r"_(B\w+)\.tif$", p.name).group(1): p for p in path.glob("*_B*.tif")}
        missing = [b for b in names if b not in files]
        if missing:
            raise ValueError(f"{path} lacks band files {missing}; has {sorted(files)}")
        shape = (0, 0)
        for b in names:  # resample every band to the finest grid among them
            with rasterio.open(files[b]) as ref:
                shape = max(shape, ref.shape)
        layers = []
        for b in names:
            with rasterio.open(files[b]) as src:
                layers.append(src.read(1, out_shape=shape, resampling=Resampling.bilinear).astype(np.float32))
        return np.stack(layers)
    if path.suffix.lower() in {".tif", ".tiff"}:
        with rasterio.open(path) as src:
            if bands is None:
                index = list(range(1, src.count + 1))
            else:
                desc = {d: i + 1 for i, d in enumerate(src.descriptions) if d}
                index = [b if isinstance(b, int) else desc.get(b) for b in bands]
                if None in index:
                    raise ValueError(f"{path}: bands {bands} not all found; descriptions {src.descriptions}")
            return src.read(index).astype(np.float32)
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGBA" if im.mode == "RGBA" else "RGB"), dtype=np.float32)
    return arr.transpose(2, 0, 1)


def read_satellite(sites, root, pattern: str = "{name}.tif", *, tolerance_m: float = 1000.0,
                   verbose: bool = True):
    """Attach satellite patches to ``sites``: the file ``root / pattern`` per site, where
    ``{name}`` is the native part of ``site_id`` (after ``source:``, with ``:`` made ``_``).

    Georeferenced patches are checked against the site: its point must lie within the patch's
    WGS84 bounds grown by ``tolerance_m``; patches that do not are not attached (counted).
    Returns a copy of ``sites`` with the ``satellite`` column filled where a patch was found; the
    counts are in ``attrs["satellite_report"]`` and printed with ``verbose``.
    """
    report = LoadReport("satellite", rows_read=len(sites))
    sites = sites.copy()
    found = []
    for row in sites.itertuples(index=False):
        name = row.site_id.split(":", 1)[-1].replace(":", "_")
        path = Path(root) / pattern.format(name=name, site_id=row.site_id)
        if not path.exists():
            report.note("no patch file")
            found.append(None)
            continue
        if path.suffix.lower() in {".tif", ".tiff"} or path.is_dir():
            probe = path if path.is_file() else next(path.glob("*_B04.tif"))
            if not _bounds_cover(patch_bounds_wgs84(probe), row.lat, row.lon, tolerance_m):
                report.note("patch does not cover the site (not attached)")
                found.append(None)
                continue
        found.append(str(path))
    sites["satellite"] = found
    report.kept = int(sum(p is not None for p in found))
    sites.attrs["satellite_report"] = report.as_dict()
    if verbose:
        print(report)
    return sites


# --- your own table of sites ---------------------------------------------------------------

#: Other names accepted when the default column name is absent (compared ignoring case, so
#: ``Latitude`` and ``LATITUDE`` are found too). A name you give yourself is only searched as is,
#: unless it is one of these.
COLUMN_ALIASES = {
    "lat": ("lat", "latitude"),
    "lon": ("lon", "longitude"),
    "label": ("eunis_code", "label", "eunis", "Expert System"),
    "site_id": ("site_id", "PlotObservationID", "id"),
}

#: Label cells that mean "no label" (the site is kept, unlabelled).
NO_LABEL = {"", "?", "nan", "none", "na", "n/a", "-"}

#: Separators looked for in a CSV header line; the most frequent one wins.
SEPARATORS = (",", ";", "\t", "|")
#: A separator as a shell passes it (``--sep '\t'`` arrives as two characters), and its name.
SEPARATOR_NAMES = {"\\t": "\t", "tab": "\t"}

MALFORMED = "malformed row (wrong number of fields)"
UNKNOWN_CODE = "unknown EUNIS code (site kept unlabelled)"
DIFFERENT_FORMATIONS = "EUNIS-ESy codes of different formations (site kept unlabelled)"
GPS_FALLBACK = "GPS missing or not WGS84: theoretical point used"
GPS_UNSIGNED = "GPS longitude without East/West in gps_ew: theoretical point used"


class TableError(ValueError):
    """A problem with your table that you can fix (a missing column, an empty file ...):
    the message says what to change. The command line reports it with exit code 2."""


def read_table(path, *, lat: str = "lat", lon: str = "lon", label: str | None = "eunis_code",
               site_id: str | None = None, photo_columns=None, satellite: str | None = None,
               esy: bool = False, sep: str | None = None, label_scheme: str = "eunis",
               verbose: bool = True, label_required: bool = True):
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
        ``label=None`` reads a table without labels (every site unlabelled, e.g. the sites to
        fetch inputs for or to map); ``label_required=False`` reads the labels when the column is
        there and none when it is not.
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
    label_scheme
        the hierarchy of the labels (``"eunis"``, the default, or another scheme of
        :mod:`habitat_helpers.labels`, whose codes are then read with its own rules).

    Returns
    -------
    sites
        The site table (see the top of this module; a GeoDataFrame). Nothing is
        dropped silently: the :class:`LoadReport` counts, by reason, rows
        skipped (malformed lines, with too few or too many fields, and the first few of them by
        line; missing, unreadable or out-of-range coordinates; duplicated ids)
        and notes on kept rows (unknown EUNIS codes and EUNIS-ESy codes of different formations,
        which leave the site unlabelled; missing photo files ...). A cell of several codes of one
        formation gives their common ancestor and keeps the codes in ``label_candidates``.
        The report is printed and stored in ``sites.attrs["load_report"]``, with the columns
        used in ``sites.attrs["columns"]`` and a few unknown codes in
        ``sites.attrs["unknown_codes"]`` (for finding typos).

    Raises
    ------
    TableError
        When a column is missing (naming the columns the table has).
    """
    path = Path(path)
    if not path.exists():
        raise TableError(f"table not found: {path}")
    report = LoadReport(path.name)
    if path.suffix.lower() in (".parquet", ".geoparquet"):
        table, row_names = _read_parquet(path)
    else:
        table, row_names = _read_delimited(path, sep, report)
    report.rows_read += len(table)

    columns = {
        "lat": _find_column(table, lat, "latitude", "--lat-col"),
        "lon": _find_column(table, lon, "longitude", "--lon-col"),
        "label": _find_column(table, label, "EUNIS label", "--label-col", required=label_required),
        "site_id": _find_column(table, site_id or "site_id", "site id", "--id-col", required=site_id is not None),
        "photos": [_find_column(table, c, "photo", "--photo-cols") for c in (photo_columns or [])],
        "satellite": _find_column(table, satellite, "satellite", "--satellite-col") if satellite else None,
    }
    if columns["lat"] is None and columns["lon"] is None and _is_geodataframe(table):
        table, columns = _coordinates_from_geometry(table, columns, report)
    for key, what, option in (("lat", "latitude", "--lat-col"), ("lon", "longitude", "--lon-col")):
        if columns[key] is None:
            wanted = lat if key == "lat" else lon
            raise TableError(_missing_column_message(table, wanted, what, option))

    # Build the candidate site table; finalise checks coordinates and ids.
    source = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem) or "table"
    df = pd.DataFrame({"source": source}, index=table.index)
    df["site_id"] = _site_ids(table, columns["site_id"], row_names, source, report)
    df["lat"] = _coordinate_text(table[columns["lat"]], report)
    df["lon"] = _coordinate_text(table[columns["lon"]], report)
    df["coord_source"] = "table"
    eunis_labels = label_scheme == "eunis"
    if columns["label"] is None:                 # label=None: a table of sites without labels
        df["label"], df["label_candidates"], unknown = None, None, Counter()
        report.note("no label column (label=None): every site unlabelled", len(df))
    else:
        esy = eunis_labels and (esy or _looks_like_esy(columns["label"], table[columns["label"]]))
        df["label"], df["label_candidates"], unknown = _clean_labels(table[columns["label"]], report,
                                                                           label_scheme)
    photos, views = _photo_lists(table, columns["photos"])
    df["photos"] = pd.Series(photos, index=df.index, dtype=object)
    df["photo_views"] = pd.Series(views, index=df.index, dtype=object)
    df["satellite"] = table[columns["satellite"]].map(_text) if columns["satellite"] else None
    sites = finalise(df, report, verbose=False, label_scheme=label_scheme)

    # Image files are checked on the sites that were kept only, so each note counts sites.
    _check_files(sites, path.parent, report)
    sites.attrs["load_report"] = report.as_dict()
    label_format = ("none" if columns["label"] is None else "EUNIS-ESy (Expert System)" if esy
                    else "EUNIS codes" if eunis_labels else f"{label_scheme} codes")
    sites.attrs["columns"] = {**columns, "label_format": label_format}
    sites.attrs["unknown_codes"] = dict(unknown.most_common(20))
    if verbose:
        print(report)
        if unknown:
            examples = ", ".join(f"{code!r} ({n})" for code, n in unknown.most_common(5))
            print(f"  unknown {'EUNIS' if eunis_labels else label_scheme} codes, most frequent first: {examples}")
    return sites


def _read_delimited(path: Path, sep: str | None, report, comments: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """All cells as text, plus a name for each row saying where it is in the file (``line12``).

    Python's ``csv`` module is used rather than ``pandas.read_csv`` because it lets us see every
    row with too many *or too few* fields (pandas pads short rows silently), so each one can be
    skipped as malformed, counted in ``report`` with the lines of the first few
    (:data:`PLACES_KEPT`). Quoted cells may contain separators and line breaks. With ``comments``,
    the lines starting with ``#`` before the header are skipped (a table that states its source).
    ``sep`` may also be named as typed in a shell (:data:`SEPARATOR_NAMES`)."""
    sep = SEPARATOR_NAMES.get(sep, sep)
    try:
        return _parse_delimited(path, sep, report, "utf-8-sig", comments)   # -sig: Excel's byte-order mark
    except UnicodeDecodeError:
        report.note("file is not UTF-8: read as Latin-1")
        return _parse_delimited(path, sep, report, "latin-1", comments)


def _parse_delimited(path: Path, sep: str | None, report, encoding: str, comments: bool = False):
    with open(path, newline="", encoding=encoding) as f:
        skipped = 0                              # comment lines before the header
        first_line = f.readline()
        while comments and first_line.startswith("#"):
            skipped += 1
            first_line = f.readline()
        if not first_line.strip():
            raise TableError(f"{path} is empty or starts with a blank line: the first line must name the columns")
        if sep is None:
            sep = "\t" if path.suffix.lower() == ".tsv" else guess_separator(first_line)
        f.seek(0)
        for _ in range(skipped):
            f.readline()
        reader = csv.reader(f, delimiter=sep)
        header = [name.strip() for name in next(reader)]
        rows, row_names, malformed = [], [], []
        while True:
            start = skipped + reader.line_num + 1   # where the row starts (a quoted cell may span lines)
            fields = next(reader, None)
            if fields is None:
                break
            if not any(cell.strip() for cell in fields):
                continue                         # blank line, e.g. at the end of the file
            if len(fields) != len(header):       # too few fields (a cut line) or too many (lost quotes)
                malformed.append(f"line {start}: {len(fields)} fields, the header has {len(header)}")
                continue
            rows.append(fields)
            row_names.append(f"line{skipped + reader.line_num}")
    report.rows_read += len(malformed)           # read_table adds the rows that parsed
    report.skip(MALFORMED, len(malformed), where=malformed)
    return pd.DataFrame(rows, columns=header, dtype=object), row_names


def guess_separator(header_line: str) -> str:
    """The separator of a delimited table from its header line: the most frequent of
    :data:`SEPARATORS`, a comma when none occurs."""
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
    may still give) is absent; raises :class:`TableError` naming the table's columns otherwise."""
    if name is None:
        return None
    if name in table.columns:
        if list(table.columns).count(name) > 1:
            raise TableError(f"the table has more than one column called {name!r}")
        return name
    candidates = next((names for names in COLUMN_ALIASES.values() if name.lower() in map(str.lower, names)), ())
    lower = {str(c).lower(): c for c in table.columns}
    for alias in candidates:
        if alias.lower() in lower:
            return lower[alias.lower()]
    if not required or what in ("latitude", "longitude"):
        return None
    raise TableError(_missing_column_message(table, name, what, option))


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
    :func:`finalise` counts them."""
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


def _clean_labels(values: pd.Series, report, label_scheme: str = "eunis"):
    """One code (or None) and its candidates per row, by :func:`_clean_label`, for
    :func:`read_table`: ``(codes, candidates, unknown)``. Empty cells are noted too, and unknown
    codes counted by code in the Counter ``unknown``.

    EUNIS cells are read as EUNIS-ESy strings, a plain code being a one-code ESy cell; a column
    that does not look like ESy (:func:`_looks_like_esy`) has no cell that the two readings
    treat differently.

    Each distinct cell is cleaned once (a land-cover column holds a few dozen classes over thousands
    of rows), its notes and unknown codes counted once per row that holds it."""

    scheme = schemes.get(label_scheme)
    eunis_labels = label_scheme == "eunis"
    no_label = f"no {'EUNIS ' if eunis_labels else ''}label (site kept unlabelled)"
    texts = [_text(value) for value in values]
    cleaned, unknown = {}, Counter()
    for text, n in Counter(texts).items():
        if text is None or text.lower() in NO_LABEL:
            report.note(no_label, n)
            cleaned[text] = (None, None)
            continue
        part, unknown_here = LoadReport(report.source), Counter()
        cleaned[text] = _clean_label(text, scheme, part, unknown_here)
        for what, k in part.notes.items():
            report.note(what, k * n)
        for code, k in unknown_here.items():
            unknown[code] += k * n
    labels = [cleaned[t][0] for t in texts]
    candidates = [cleaned[t][1] for t in texts]
    return labels, candidates, unknown


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
    """Whether a georeferenced patch lies over its site (within ``tolerance_m``; the check of
    :func:`read_satellite`, :func:`_bounds_cover`). Patches without georeferencing (PNG, no CRS)
    are accepted."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return True
    try:
        bounds = patch_bounds_wgs84(path)
    except ValueError:
        report.note("satellite patch without a CRS (kept, not checked against the site)")
        return True
    except OSError:
        report.note("satellite patch unreadable (patch ignored)")
        return False
    if _bounds_cover(bounds, lat, lon, tolerance_m):
        return True
    report.note("satellite patch does not cover the site (patch ignored)")
    return False


# --- GeoParquet ------------------------------------------------------------------------------

def write_sites(sites, path) -> Path:
    """Save a site table as GeoParquet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sites.to_parquet(path, index=False)
    return path


def read_sites(path):
    """Read a site table written by :func:`write_sites` (list columns back as Python lists; the
    label columns of earlier versions renamed, :func:`habitat_helpers.labels.current_names`)."""
    import geopandas as gpd

    sites = schemes.current_names(gpd.read_parquet(path), str(path))
    for col in ("photos", "photo_views"):
        if col in sites.columns:
            sites[col] = [list(v) if v is not None else [] for v in sites[col]]
    if "label_candidates" in sites.columns:
        sites["label_candidates"] = _candidates_column(sites["label_candidates"])
    return sites


def data_card(sites) -> pd.DataFrame:
    """One row per source: sites, photos, views, satellite patches and label coverage per level."""
    rows = []
    for source, group in sites.groupby("source", sort=True):
        n_photos = group["photos"].str.len()
        views = sorted({v.split("-")[0] for vs in group["photo_views"] for v in vs})
        rows.append({
            "source": source, "sites": len(group),
            "sites with photos": int((n_photos > 0).sum()), "photos": int(n_photos.sum()),
            "views": " ".join(views) if views else "-",
            "satellite patches": int(group["satellite"].notna().sum()),
            **{f"labelled at level {k}": f"{group[f'label_l{k}'].notna().mean():.0%}" for k in (1, 2, 3)},
            "on land": f"{group['on_land'].mean():.0%}",
        })
    return pd.DataFrame(rows).set_index("source")


def patch_to_rgb(patch: np.ndarray, scale: float = 3000.0):
    """A PIL RGB image from the first three bands of a reflectance patch (``(bands, H, W)``).

    Sentinel-2 L2A reflectances are integers of about 0-10,000; dividing by ``scale`` (3,000)
    and clipping to [0, 1] is the usual true-colour rendering. 8-bit patches pass through.
    """
    from PIL import Image

    rgb = patch[:3].transpose(1, 2, 0)
    if patch.max() > 255:
        rgb = np.clip(rgb / scale, 0, 1) * 255
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")


def open_image(path, bands=("B04", "B03", "B02"), draft_size: int | None = None):
    """Any image input as a PIL RGB image: JPEG/PNG photos and patches, multi-band GeoTIFFs or
    BigEarthNet band folders (true colour from ``bands``, see :func:`patch_to_rgb`).

    ``draft_size``: decode a JPEG at a reduced scale (1/2, 1/4 or 1/8) that is still at least
    this many pixels on each side. For a 1600 x 1200 survey photo going into a 112 px model this
    cuts decoding from about 30 ms to 8 ms; the model sees the same content at its input size."""
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        return patch_to_rgb(read_patch(path, bands))
    if path.suffix.lower() in {".tif", ".tiff"}:
        import rasterio

        with rasterio.open(path) as src:
            named = set(src.descriptions) >= set(bands)
            count = src.count
        return patch_to_rgb(read_patch(path, list(bands) if named else list(range(1, min(count, 3) + 1))))
    with Image.open(path) as im:
        if draft_size:
            im.draft("RGB", (draft_size, draft_size))
        return im.convert("RGB")
