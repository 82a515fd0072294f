"""Write ``habitat_helpers/resources/lucas2015_points.csv``: the real LUCAS 2015 points, compact.

Output columns ``point_id, lat, lon, lc1, lu1, country``, one row per point, sorted by
``point_id``, under a header of ``#`` lines that carries the attribution::

    point_id   LUCAS point id (8 digits)
    lat, lon   WGS84 degrees of the LUCAS *theoretical* point, rounded to 5 decimals (about 1 m)
    lc1        land cover as given (``E20``, ``B11``; see ``hh.labels.get("lucas-lc1")``)
    lu1        land use as given (``U111``), may be empty
    country    NUTS0 code (``FR``, ``UK`` ...), may be empty

Read it with ``hh.datasets.lucas_points()``.

Source
------
Eurostat, LUCAS (Land Use/Cover Area frame Survey) 2015 primary data: the 14,613 points of
``../shared/data/lucas_points/lucas2015_points_west_north.csv`` (15 western and northern
countries). They are the points of the LUCAS topsoil sub-sample (about 1 LUCAS point in 10),
so artificial land (A), water (G) and wetlands (H) are nearly absent and the class shares
are not Europe's. Land-cover nomenclature: d'Andrimont, R. et al. (2020) "Harmonised LUCAS
in-situ land cover and use database for field surveys from 2006 to 2018 in the European
Union", *Scientific Data* 7:352, https://doi.org/10.1038/s41597-020-00675-z.

Licence: Eurostat data may be reused with attribution under the Eurostat reuse policy
(Commission Decision 2011/833/EU). Attribution: "Source: Eurostat, LUCAS 2015 primary
data". Only the survey columns above are kept, as the shared folder's README allows.

Bad rows
--------
A row is skipped, counted by reason and reported on stdout (with the lines of the first
few) when it has the wrong number of fields, no point id, missing, unreadable or
out-of-range coordinates, a blank ``lc1`` or one the ``lucas-lc1`` scheme does not know,
or a point id already written (the first valid row of an id is kept). Nothing is dropped
silently, and the same input always gives a byte-identical file.

Run from the project root::

    python scripts/build_lucas_points.py [--source CSV] [--out CSV]

An ``--out`` ending in ``.gz`` writes a gzip file (deterministic: no name, mtime 0).
"""

from __future__ import annotations

import argparse
import csv
import functools
import gzip
import io
import math
from collections import Counter
from pathlib import Path

from habitat_helpers import labels

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "lucas_points" / "lucas2015_points_west_north.csv"
DEFAULT_OUT = ROOT / "habitat_helpers" / "resources" / "lucas2015_points.csv"

COLUMNS = ["point_id", "lat", "lon", "lc1", "lu1", "country"]
REQUIRED = ["point_id", "lat", "lon", "lc1"]
DECIMALS = 5
#: Above this size the copy should be written gzipped (``--out ....csv.gz``).
MAX_PLAIN_BYTES = 600_000
#: Lines of the first few rows kept per reason in the report.
PLACES_KEPT = 5

ATTRIBUTION = "Source: Eurostat, LUCAS 2015 primary data"

MALFORMED = "malformed row (wrong number of fields)"
NO_ID = "missing point id"
MISSING_COORDINATES = "missing coordinates"
BAD_COORDINATES = "unreadable or out-of-range coordinates"
BLANK_LC1 = "blank lc1"
UNKNOWN_LC1 = "unknown lc1"
DUPLICATE_ID = "duplicated point id"
REASONS = [MALFORMED, NO_ID, MISSING_COORDINATES, BAD_COORDINATES, BLANK_LC1, UNKNOWN_LC1, DUPLICATE_ID]


def header_lines(source_name: str, points: list[dict], rows_read: int, skipped: Counter) -> list[str]:
    """The ``#`` comment lines at the top of the file (attribution first)."""
    countries = sorted({p["country"] for p in points if p["country"]})
    skips = ", ".join(f"{reason} {n}" for reason, n in skipped.items() if n) or "none"
    return [
        "# LUCAS 2015 survey points, a compact derived copy shipped with habitat_helpers.",
        f"# {ATTRIBUTION}",
        "# Reuse: Eurostat reuse policy, with attribution (Commission Decision 2011/833/EU).",
        "# Nomenclature: d'Andrimont et al. 2020, Sci. Data 7:352, https://doi.org/10.1038/s41597-020-00675-z",
        "# Points: the LUCAS theoretical points of the topsoil sub-sample (about 1 point in 10),",
        "# so artificial land (A), water (G) and wetlands (H) are nearly absent and the class",
        "# shares are not Europe's.",
        f"# Rows: {len(points)} points written of {rows_read} source rows (skipped: {skips}).",
        f"# Countries ({len(countries)}): {' '.join(countries)}.",
        f"# lat, lon: WGS84 degrees rounded to {DECIMALS} decimals (about 1 m); country: NUTS0.",
        f"# Written by scripts/build_lucas_points.py from {source_name}: edit the script, not this file.",
    ]


def coordinate(text: str, limit: float) -> str | None:
    """``text`` rounded to :data:`DECIMALS` decimals, or None if unreadable or out of range."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or abs(value) > limit:
        return None
    out = f"{value:.{DECIMALS}f}"
    return out[1:] if out.startswith("-") and float(out) == 0 else out  # no "-0.00000"


def read_points(source: Path) -> tuple[list[dict], int, Counter, dict]:
    """The valid points of ``source`` and what was skipped: ``(points, rows_read, skipped,
    where)``, ``where`` holding the lines of the first few rows of each reason."""
    clean = functools.lru_cache(maxsize=None)(labels.get("lucas-lc1").clean)  # few distinct codes
    points, seen = [], set()
    rows_read, skipped, where = 0, Counter({reason: 0 for reason in REASONS}), {}

    def skip(reason: str, line: int, detail: str = "") -> None:
        skipped[reason] += 1
        places = where.setdefault(reason, [])
        if len(places) < PLACES_KEPT:
            places.append(f"line {line}" + (f" {detail}" if detail else ""))

    with source.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [name.strip() for name in next(reader)]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise SystemExit(f"{source} lacks column(s) {missing}; it has {header}")
        country = "nuts0" if "nuts0" in header else "country" if "country" in header else None
        for fields in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in fields):
                continue
            rows_read += 1
            if len(fields) != len(header):
                skip(MALFORMED, line, f"({len(fields)} fields, the header has {len(header)})")
                continue
            row = {name: cell.strip() for name, cell in zip(header, fields)}
            point_id = row["point_id"]
            if not point_id:
                skip(NO_ID, line)
                continue
            if not row["lat"] or not row["lon"]:
                skip(MISSING_COORDINATES, line, f"(point {point_id})")
                continue
            lat, lon = coordinate(row["lat"], 90), coordinate(row["lon"], 180)
            if lat is None or lon is None:
                skip(BAD_COORDINATES, line, f"(point {point_id}: {row['lat']!r}, {row['lon']!r})")
                continue
            try:
                code = clean(row["lc1"])
            except ValueError:
                skip(UNKNOWN_LC1, line, f"(point {point_id}: {row['lc1']!r})")
                continue
            if code is None:
                skip(BLANK_LC1, line, f"(point {point_id})")
                continue
            if point_id in seen:
                skip(DUPLICATE_ID, line, f"(point {point_id})")
                continue
            seen.add(point_id)
            points.append(
                {
                    "point_id": point_id,
                    "lat": lat,
                    "lon": lon,
                    "lc1": row["lc1"],
                    "lu1": row.get("lu1", ""),
                    "country": row[country] if country else "",
                }
            )
    points.sort(key=lambda p: (len(p["point_id"]), p["point_id"]))  # numeric order for digit ids
    return points, rows_read, skipped, where


def render(source_name: str, points: list[dict], rows_read: int, skipped: Counter) -> bytes:
    """The file's bytes: header lines, then the CSV (``\\n`` line ends)."""
    text = io.StringIO(newline="")
    text.write("\n".join(header_lines(source_name, points, rows_read, skipped)) + "\n")
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(points)
    return text.getvalue().encode("utf-8")


def write(path: Path, data: bytes) -> int:
    """Write ``data`` (gzipped when ``path`` ends in ``.gz``, with no name and mtime 0, so the
    bytes depend on the data only); returns the file's size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz:
            gz.write(data)
        data = buffer.getvalue()
    path.write_bytes(data)
    return len(data)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help="the shared LUCAS 2015 points CSV (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="the compact copy to write; .gz for gzip (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if not args.source.is_file():
        raise SystemExit(f"LUCAS points not found: {args.source}")

    points, rows_read, skipped, where = read_points(args.source)
    size = write(args.out, render(args.source.name, points, rows_read, skipped))

    print(f"read {rows_read} rows of {args.source.name}; skipped {sum(skipped.values())}, by reason:")
    for reason in REASONS:
        places = where.get(reason, [])
        more = "; ..." if skipped[reason] > len(places) else ""
        print(f"  {reason}: {skipped[reason]}" + (f" ({'; '.join(places)}{more})" if places else ""))
    countries = len({p["country"] for p in points if p["country"]})
    shown = args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out
    print(f"wrote {shown}: {len(points)} points, {countries} countries, {size:,} bytes")
    if size > MAX_PLAIN_BYTES and args.out.suffix != ".gz":
        print(f"  over {MAX_PLAIN_BYTES:,} bytes: write it gzipped instead (--out ....csv.gz)")
    return {
        "rows_read": rows_read,
        "written": len(points),
        "skipped": dict(skipped),
        "where": where,
        "size": size,
        "out": args.out,
    }


if __name__ == "__main__":
    main()
