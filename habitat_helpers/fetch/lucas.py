"""``python -m habitat_helpers fetch lucas``: LUCAS survey points and their photos from GISCO.

LUCAS (Land Use/Cover Area frame Survey, Eurostat) visits a grid of points every three years
(2006, 2009, 2012, 2015, 2018; 2022) and photographs each one looking north, east, south and west
and at the point itself. The photos are public on GISCO's server in the tree
``{year}/{NUTS0}/{pid[0:3]}/{pid[3:6]}/{pid}{view}.jpg`` (:data:`GISCO_PHOTOS`).

:func:`fetch_lucas` (the command's work, callable from a notebook):

1. reads the survey table you give (a local copy, or a URL it downloads first): the harmonised
   LUCAS table of d'Andrimont et al. (2020), one Eurostat primary-data file of a year, or
   either zipped. Column names are matched in any case (Eurostat writes ``POINT_ID``);
   a table without a ``year`` column (Eurostat's files are one year each) takes the one year
   asked for;
2. keeps the points of the years and countries (NUTS0 codes, e.g. ``FR``; Greece is ``EL``)
   asked for, and writes them to ``<out>/lucas_harmonised.csv``;
3. asks for the photo of each view only where the table says a photo was taken (``photo_north``
   ... ``photo_point`` reading ``Photo taken``, or Eurostat's code ``1``), and writes it to
   ``<out>/photos`` in GISCO's tree. Each JPEG must decode, else it is fetched again or
   counted as failed;
4. lists the photos the server does not have (404) in ``<out>/missing_photos.csv`` and those
   that failed (after the retries) in ``<out>/failed_photos.csv``, and writes a summary to
   ``<out>/fetch_report.json``.

The folder then loads with :func:`habitat_helpers.datasets.read_lucas`::

    sites = hh.datasets.read_lucas(out / "lucas_harmonised.csv", photo_root=out / "photos")

Running it again fetches only what is not there yet (complete files are skipped, a part left by
an interrupted run is resumed). Exit code 0 when every photo asked for is there or missing on the
server, 1 when some downloads failed (run again to retry them), 2 for a problem with the options
or the table.

Photos and survey data: Eurostat, LUCAS; cite d'Andrimont et al. (2020) for the harmonised table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import datasets, paths
from ..errors import UsageError, comma_list
from . import http

#: The survey years of LUCAS.
LUCAS_YEARS = (2006, 2009, 2012, 2015, 2018, 2022)

#: The views with a "photo taken" flag in the table (the cover photo C has none).
VIEWS = ("N", "E", "S", "W", "P")

#: GISCO's public photo tree (the folder that holds ``{year}/``).
GISCO_PHOTOS = "https://gisco-services.ec.europa.eu/lucas/photos"

#: Shown with any use of what is fetched.
ATTRIBUTION = "Source: Eurostat, LUCAS (survey data and photos, served by GISCO)"

#: File names written in ``out``.
TABLE_FILE, PHOTO_DIR = "lucas_harmonised.csv", "photos"
MISSING_FILE, FAILED_FILE, REPORT_FILE = "missing_photos.csv", "failed_photos.csv", "fetch_report.json"

_REQUIRED = ("point_id", "nuts0", "th_lat", "th_long")


def photo_url(base_url: str, year, nuts0: str, point_id: str, view: str) -> str:
    """The URL of one photo in GISCO's tree under ``base_url``."""
    pid = str(point_id)
    return f"{base_url.rstrip('/')}/{year}/{nuts0}/{pid[0:3]}/{pid[3:6]}/{pid}{view}.jpg"


def photo_taken(value) -> bool:
    """Whether a ``photo_*`` cell says a photo was taken: the harmonised table's ``Photo taken``
    or Eurostat's primary-data code ``1``."""
    text = str(value).strip().lower() if value is not None else ""
    return text.startswith("photo taken") or text in ("1", "1.0")


@dataclass
class LucasReport:
    """What :func:`fetch_lucas` did: the table kept, the photos asked for (``downloads``, a
    :class:`habitat_helpers.fetch.http.Report`) and the notes on the rows and flags."""

    table: Path
    photo_root: Path
    points: int
    downloads: http.Report
    notes: dict[str, int] = field(default_factory=dict)
    photo_flags: dict[str, dict[str, int]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No photo failed (missing ones are allowed)."""
        return self.downloads.ok

    def __str__(self) -> str:
        lines = [f"LUCAS: {self.points} points in {self.table}", str(self.downloads)]
        lines += [f"  note, {what}: {n}" for what, n in self.notes.items() if n]
        lines += [f"written: {', '.join(str(p) for p in self.files)}", ATTRIBUTION]
        return "\n".join(lines)


def read_survey_table(path, *, years, countries=None, chunksize: int = 200_000):
    """The rows of ``years`` (and ``countries``, NUTS0 codes) of the survey table at ``path``
    (CSV or TSV, gzipped or not, a zip holding one CSV, or Parquet), as strings with lower-case
    column names and a ``year`` column (taken from ``years`` when the table has none, which then
    needs exactly one year). Read in chunks, so the 1.3 million rows of the harmonised table
    need little memory. Returns the rows and ``{note: count}`` (rows left out and why)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"LUCAS table not found: {path}")
    wanted_years = [str(y) for y in years]
    notes = {"rows in the table": 0, "rows of other years left out": 0}
    if countries is not None:
        notes["rows of other countries left out"] = 0

    def tidy(df):
        df.columns = [str(c).strip().lower() for c in df.columns]
        missing = [c for c in _REQUIRED if c not in df.columns]
        if missing:
            raise ValueError(f"{path.name}: not a LUCAS table, it lacks the column(s) {', '.join(missing)} "
                             f"(columns found: {', '.join(list(df.columns)[:12])} ...)")
        if "year" not in df.columns:
            if len(years) != 1:
                raise ValueError(f"{path.name} has no year column (one survey per file): give a single --year")
            df["year"] = wanted_years[0]
        for column in ("point_id", "year", "nuts0"):
            df[column] = df[column].astype(str).str.strip()
        df["year"] = df["year"].str.replace(r"\.0$", "", regex=True)
        df["nuts0"] = df["nuts0"].str.upper()
        notes["rows in the table"] += len(df)
        keep = df["year"].isin(wanted_years)
        notes["rows of other years left out"] += int((~keep).sum())
        df = df[keep]
        if countries is not None:
            keep = df["nuts0"].isin(countries)
            notes["rows of other countries left out"] += int((~keep).sum())
            df = df[keep]
        return df

    if path.suffix.lower() == ".parquet":
        return tidy(pd.read_parquet(path).astype(str)).copy(), notes
    with _open_table(path) as raw:
        sep = datasets.guess_separator(raw.readline().decode("utf-8-sig", errors="replace"))
    with _open_table(path) as raw:
        parts = [tidy(chunk) for chunk in pd.read_csv(raw, dtype=str, keep_default_na=False, sep=sep,
                                                       encoding="utf-8-sig", chunksize=chunksize)]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return df.copy(), notes


@contextlib.contextmanager
def _open_table(path: Path):
    """The bytes of a table file: plain, gzipped, or the one CSV inside a zip."""
    import gzip
    import zipfile

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.lower().endswith((".csv", ".txt", ".tsv"))]
            if len(names) != 1:
                raise ValueError(f"{path.name}: expected one CSV in the zip, found {names or 'none'}")
            with archive.open(names[0]) as file:
                yield file
        return
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    with (gzip.open(path) if gzipped else open(path, "rb")) as file:
        yield file


def fetch_lucas(table=None, *, years, countries=None, views=VIEWS, out=None, table_url: str | None = None,
                base_url: str = GISCO_PHOTOS, workers: int = 4, session: http.Session | None = None,
                progress: bool = True) -> LucasReport:
    """Fetch the LUCAS photos of the points of ``years`` and ``countries`` into ``out`` in the
    layout :func:`habitat_helpers.datasets.read_lucas` reads (see the module's text).

    Parameters
    ----------
    table, table_url
        The survey table: a local file, or (exactly one of the two) a URL downloaded first to
        ``<out>/source/``.
    years
        Survey years, among :data:`LUCAS_YEARS`.
    countries
        NUTS0 codes (``FR``, ``DE``, ``EL`` ...); all countries of the table when ``None``.
    views
        Which photos, among :data:`VIEWS` (north, east, south, west, point).
    out
        The folder written (default ``$HABITAT_HELPERS_CACHE/lucas``).
    base_url
        The photo tree (GISCO's by default).
    workers, session, progress
        Threads downloading at once; the :class:`habitat_helpers.fetch.http.Session` they share
        (a default polite one when ``None``); the progress bar.

    Returns a :class:`LucasReport`. Raises ``ValueError`` (or ``FileNotFoundError``) for options
    or a table it cannot use, before any photo is asked for."""
    import pandas as pd


    years = [int(y) for y in years]
    bad = [y for y in years if y not in LUCAS_YEARS]
    if not years or bad:
        raise ValueError(f"year(s) {bad or 'none'}: LUCAS surveyed {', '.join(map(str, LUCAS_YEARS))}")
    views = list(views)
    if not views or any(v not in VIEWS for v in views):
        raise ValueError(f"views must be among {', '.join(VIEWS)} (got {', '.join(views) or 'none'})")
    countries = None if countries is None else [str(c).strip().upper() for c in countries]
    if countries is not None and (not countries or any(not re.fullmatch(r"[A-Z]{2}", c) for c in countries)):
        raise ValueError(f"countries must be two-letter NUTS0 codes such as FR,DE,EL (got {countries})")
    if (table is None) == (table_url is None):
        raise ValueError("give the survey table: either a local file or a URL to download (one of the two)")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    out = Path(out) if out is not None else paths.cache_dir() / "lucas"
    out.mkdir(parents=True, exist_ok=True)

    own = session is None
    session = http.Session(pool_size=workers) if own else session
    try:
        if table_url is not None:
            name = Path(table_url.split("?", 1)[0]).name or "lucas_table.csv"
            got = http.download(table_url, out / "source" / name, session=session)
            if got.status in ("missing", "failed"):
                raise ValueError(f"the survey table could not be downloaded: {got.url}: {got.reason}")
            table = got.path
        df, notes = read_survey_table(table, years=years, countries=countries)
        if df.empty:
            raise ValueError(f"no point of {', '.join(map(str, years))} in {', '.join(countries or ['any country'])} "
                             f"in {Path(table).name}")
        for code in sorted(set(countries or ()) - set(df["nuts0"])):
            notes[f"no point of {code} in the table for {', '.join(map(str, years))}"] = 1
        pid_ok = df["point_id"].str.fullmatch(r"\d{6,}")
        if (~pid_ok).any():
            notes["points without a usable point_id (no photo asked for)"] = int((~pid_ok).sum())

        jobs, flags = [], {}
        for view in views:
            column = f"photo_{datasets._LUCAS_VIEW_WORDS[view]}"
            if column not in df.columns:
                notes[f"no {column} column: no {view} photo asked for"] = len(df)
                continue
            flags[view] = {str(k): int(v) for k, v in df[column].value_counts(dropna=False).items()}
            # Eurostat's code 1 is written as the harmonised table's words, so read_lucas sees it
            df[column] = [("Photo taken" if photo_taken(v) else v) for v in df[column]]
        flagged = [v for v in views if f"photo_{datasets._LUCAS_VIEW_WORDS[v]}" in df.columns]
        columns = ["point_id", "year", "nuts0"] + [f"photo_{datasets._LUCAS_VIEW_WORDS[v]}" for v in flagged]
        for pid, year, nuts0, *cells in df.loc[pid_ok, columns].itertuples(index=False, name=None):
            for view, cell in zip(flagged, cells):
                if photo_taken(cell):
                    jobs.append(http.Job(
                        photo_url(base_url, year, nuts0, pid, view),
                        datasets.lucas_photo_path(out / PHOTO_DIR, year, nuts0, pid, view),
                        verify=http.verify_jpeg, meta={"point_id": pid, "year": year, "nuts0": nuts0, "view": view}))

        table_path = out / TABLE_FILE
        part = table_path.with_name(table_path.name + ".part")
        df.to_csv(part, index=False)
        part.replace(table_path)
        downloads = http.fetch_all(jobs, session=session, workers=workers, desc="LUCAS photos",
                                   progress=progress)
    finally:
        if own:
            session.close()

    files = [table_path]
    for name, status in ((MISSING_FILE, "missing"), (FAILED_FILE, "failed")):
        path = out / name
        rows = [o for o in downloads.outcomes if o.status == status]
        if rows:
            pd.DataFrame([{**o.meta, "url": o.url, "reason": o.reason} for o in rows]).to_csv(path, index=False)
            files.append(path)
        else:
            path.unlink(missing_ok=True)          # a list from an earlier run would be stale
    report = LucasReport(table_path, out / PHOTO_DIR, len(df), downloads, notes, flags)
    summary = {"years": years, "countries": countries, "views": views, "base_url": base_url,
               "table": str(table), "points": len(df), "photos": downloads.counts(), "notes": notes,
               "photo_flags": flags, "attribution": ATTRIBUTION}
    (out / REPORT_FILE).write_text(json.dumps(summary, indent=2))
    report.files = [*files, out / REPORT_FILE]
    return report


# --- the command -------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fetch lucas``."""

    what = parser.add_argument_group("what to fetch")
    what.add_argument("--year", type=comma_list(int, LUCAS_YEARS), required=True,
                      help=f"survey year(s), comma list among {', '.join(map(str, LUCAS_YEARS))}")
    what.add_argument("--countries", type=comma_list(str), default=None,
                      help="NUTS0 codes, comma list (e.g. FR,DE,EL; default: every country of the table)")
    what.add_argument("--views", type=comma_list(str, VIEWS), default=list(VIEWS),
                      help="photos to fetch, comma list of N,E,S,W,P (default: all five)")
    source = parser.add_argument_group("the survey table (one of the two)")
    tables = source.add_mutually_exclusive_group(required=True)
    tables.add_argument("--table", default=None,
                        help="local copy of the harmonised LUCAS table or of a Eurostat primary-data CSV "
                             "(.csv, .csv.gz, .zip or .parquet)")
    tables.add_argument("--table-url", default=None, help="URL of such a table, downloaded to OUT/source/ first")
    where = parser.add_argument_group("where and how")
    where.add_argument("--out", default=None, help="output folder (default: $HABITAT_HELPERS_CACHE/lucas)")
    where.add_argument("--base-url", default=GISCO_PHOTOS, help=f"photo tree (default: {GISCO_PHOTOS})")
    http.add_http_arguments(where)


def run(args: argparse.Namespace) -> int:
    """``fetch lucas``: 0 when every photo is there or missing on the server, 1 when some failed."""

    with http.session_from_args(args) as session:
        try:
            report = fetch_lucas(args.table, years=args.year, countries=args.countries, views=args.views,
                                 out=args.out, table_url=args.table_url, base_url=args.base_url,
                                 workers=args.workers, session=session, progress=not args.no_progress)
        except (ValueError, FileNotFoundError) as err:
            raise UsageError(str(err)) from None
    print(report)
    if not report.ok:
        print(f"error: {len(report.downloads.failed)} photo(s) failed (listed in "
              f"{Path(report.photo_root).parent / FAILED_FILE}); run the same command again to retry them",
              file=sys.stderr)
        return 1
    return 0
