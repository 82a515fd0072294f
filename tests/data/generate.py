"""Tiny files in the real survey formats, with their real quirks, for the loader tests.

Run ``python tests/data/generate.py OUT_DIR [--seed N]`` to write them, or call
:func:`write_all` (the tests do, into a temporary folder). Nothing here is real data: the
formats are copied from the real files (the harmonised LUCAS table and photo folders in
``../shared/data/lucas_sample``, EVA header exports, the EMBAL schema of
``habitat_helpers.datasets.EMBAL_COLUMNS``, Sentinel-2 GeoTIFFs and BigEarthNet band
folders), the values are made up. This module does not import ``habitat_helpers``: the
files are written from the formats alone, so the loaders are tested against them.

The tables are fixed by design, so that tests can state exact expectations; ``seed`` only
changes pixel values (photos and patches). Same seed, same bytes. Writing everything takes
well under a second.

Layout (:func:`write_all` returns these paths by key)::

    lucas/metadata_subset.csv                          lucas_table
    lucas/{year}/{NUTS0}/{pid[0:3]}/{pid[3:6]}/{pid}{N,E,S,W,P,C}.jpg
                                                       (lucas_photos = lucas/)
    eva/fixture_header.csv                             eva_header
    embal/transect_photos.csv                          embal_table
    embal/photos/{site}/T{transect}_{k}.jpg            (embal_photos)
    sentinel2/{name}.tif                               sentinel2
    bigearthnet/{name}/{name}_B01.tif ... _B12.tif     bigearthnet

``{name}`` is the native part of a site id, as ``read_satellite`` looks for it: LUCAS
``{point_id}_{year}``, EVA ``{PlotObservationID}``.

LUCAS (harmonised in-situ table, d'Andrimont et al. 2020): 12 data lines
------------------------------------------------------------------------
53 of the 118 columns, in the real order (every column ``read_lucas`` reads, plus ``lc1``,
``lc1_label``, ``lc1_perc``, ``lu1``, ``lu1_label``, the GISCO photo URLs and others).
Eleven points in FR, DE and ES, surveyed in 2015 and 2018 (point 44402990 in both years:
one point, two sites), and one malformed line.

========  ====  =====  ====================================================================
point     year  where  quirk, and what it exercises
========  ====  =====  ====================================================================
37402876  2015  FR     all six photos N E S W P C; date ``14/06/15`` (dd/mm/yy); a
                       12-band Sentinel-2 GeoTIFF centred on it (attached)
37442850  2015  FR     the W photo is flagged "Photo taken" but its file is missing: counted
                       as ``photo W expected but missing under photo_root``; dd/mm/yyyy date
36062768  2018  FR     West: ``gps_long`` 1.55031 with ``gps_ew`` West -> lon -1.55031
36082770  2018  FR     no GPS fix: ``gps_lat``/``gps_long`` are the no-data code 88.888888
                       (``gps_proj`` still says WGS84, so only the sentinel check can send
                       it back) -> theoretical point, and ``th_long`` -1.3004 is signed
                       already; uncertainty from ``obs_dist`` (15 m); only N and P taken
37022842  2018  FR     only the P photo (the other views "Photo not taken": nothing missing)
44402990  2015  DE     all six photos; a 4-band GeoTIFF (B02 B03 B04 B08) centred on it
44382986  2015  DE     only P; dd/mm/yyyy date
44402990  2018  DE     the 2015 point revisited (its own site ``lucas:44402990:2018``); N E S
                       W P without C; a BigEarthNet band folder centred on it
43842920  2018  DE     ``gps_prec`` 8 (an 8 m fix, which the sentinel codes 8/88/888 shadow);
                       its GeoTIFF lies 20 km north of it: must not be attached
29481920  2018  ES     West, all six photos
28861834  2018  ES     West, only P; date ``02/06/18`` (2 June, not 6 February)
37462848  2015  FR     malformed: a label with commas written without quotes, so the line
                       has two fields too many -> ``malformed row (wrong number of fields)``
========  ====  =====  ====================================================================

Other real quirks kept: sentinels 8 / 88.0 / 888.0 in unused columns (``lc1_spec``,
``cprn_lc1n``, ``cprn_lc1n_brdth``), ``lc1_perc`` as a text class (``> 75 %``), the photo
flags ``Photo taken`` / ``Photo not taken``, the GISCO URLs only for photos taken, no quoting.
Photos: 44 JPEGs of 32 x 24 px (the 4:3 of the real 1600 x 1200), one flat colour per view and
point. ``read_lucas(table, photo_root)``: 12 lines read, 11 sites kept, 1 line skipped,
1 theoretical fallback, 44 photos; without ``photo_root``: 40 GISCO URLs (C has no flag).

EVA header export: 12 rows, tab-separated, UTF-8
------------------------------------------------
Columns of a real ``*_header.csv`` (``PlotObservationID``, ``Country``, ``Date of recording``
dd.mm.yyyy, ``Relevé area (m²)``, ``Aspect (°)``, ``Expert System``, ``Longitude``,
``Latitude``, ``Location uncertainty (m)``, ``Dataset`` ...). ``Expert System`` cells:

=====  ============  ==============================================================
plot   cell          exercises
=====  ============  ==============================================================
1001   ``R22``       a plain level-3 code; a GeoTIFF centred on the plot (attached)
1002   ``R22, R23!`` several codes, one ``!``-flagged -> common ancestor ``R2``,
                     ``label_candidates`` ``R22;R23``
1003   ``R23!``      a flagged code alone -> ``R23``; a BigEarthNet band folder
1004   ``R``         level 1 only; its GeoTIFF lies 600 m east: attached within the
                     default 1 km tolerance, not with ``tolerance_m=0``
1005   ``Qa``        ESy grouping -> ``Q``; its GeoTIFF lies 3 km east (not attached)
1006   ``Sb``        ESy grouping -> ``S``; date ``00.06.1998`` (day unknown) -> NaT, noted
1007   ``?``         no label; West longitude, signed in EVA (-0.8503)
1008   (empty)       no label; empty date, area and uncertainty
1009   ``E1.2a``     an old (EUNIS 2007) code, not EUNIS 2021: counted, kept unlabelled
1010   ``R22``       no coordinates -> skipped, ``missing coordinates``
1002   ``R22, R23!`` the same PlotObservationID again -> skipped, ``duplicated site id``
1011   ``R22, T11``  codes of two formations -> no common ancestor, unlabelled (counted)
=====  ============  ==============================================================

``read_eva``: 12 rows read, 10 kept, skipped 1 + 1; 6 sites labelled at level 1.

EMBAL transect photos: 8 rows, one per photo
--------------------------------------------
Columns ``site, transect, lat, lon, photo, eunis_code, date`` (``EMBAL_COLUMNS``), photo
paths relative to ``embal/photos``. The rows of a site are not contiguous and the sites are
not in sorted order (``FR-0107`` first and last): grouping is by ``site``, sites in order of
first appearance, photos in file order.

* ``DE-0412``: transects 1 and 2, two photos each; ``T2_2.jpg`` is not on disk (counted,
  ``photo file missing``) -> views ``T1-00 T1-01 T2-02``; ``R22``.
* ``DE-0413``: two photos, codes ``R22`` and ``R23`` (conflicting: counted, common
  ancestor ``R2``, ``label_candidates`` ``R22;R23``).
* ``FR-0107``: one photo in each of two transects; the code on the first row only
  (``T11``), coordinates differing slightly between rows (counted, first used).

Sentinel-2: GeoTIFF patches and BigEarthNet band folders
--------------------------------------------------------
uint16 reflectances in UTM (EPSG:32631 for France east of 0°, EPSG:32632 for Germany),
10 m pixels, 16 x 16 px, on the 10 m grid. Band ``b`` of the L2A list ``B01 B02 B03 B04 B05
B06 B07 B08 B8A B09 B11 B12`` holds ``100 * (its position in that list) + noise``,
noise in ``[0, 50)``: ``value // 100`` names the band (B04 -> 4, B8A -> 9, B12 -> 12),
so band order can be checked after any read or resampling. Multi-band GeoTIFFs carry the
band names as band descriptions.

* ``sentinel2/37402876_2015.tif``: 12 bands, EPSG:32631, over LUCAS 37402876 (2015).
* ``sentinel2/44402990_2015.tif``: 4 bands B02 B03 B04 B08, EPSG:32632, over 44402990 (2015).
* ``sentinel2/43842920_2018.tif``: 12 bands, 20 km north of its point (misplaced).
* ``sentinel2/1001.tif`` (over the plot), ``1004.tif`` (600 m east), ``1005.tif`` (3 km
  east): 4 bands, EPSG:32632, for EVA plots.
* ``bigearthnet/44402990_2018/`` and ``bigearthnet/1003/``: one single-band GeoTIFF per band
  (``<name>_B02.tif`` ...), 12 x 12 px at 10 m, 6 x 6 px for the 20 m bands (B05 B06 B07 B8A
  B11 B12) and 2 x 2 px for the 60 m bands (B01 B09), as BigEarthNet-S2 stores them; no band
  descriptions.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from pathlib import Path

import numpy as np

# --- LUCAS ------------------------------------------------------------------------------------

#: The columns written, in the order of the harmonised table (53 of its 118).
LUCAS_COLUMNS = [
    "id", "point_id", "year", "nuts0", "nuts1", "nuts2", "nuts3", "th_lat", "th_long", "office_pi",
    "survey_date", "gps_proj", "gps_prec", "gps_altitude", "gps_lat", "gps_ew", "gps_long", "obs_dist",
    "obs_direct", "obs_type", "obs_radius", "letter_group", "lc1", "lc1_label", "lc1_spec",
    "lc1_spec_label", "lc1_perc", "lc2", "lc2_label", "lu1", "lu1_label", "lu1_type", "lu1_perc", "lu2",
    "lu2_label", "parcel_area_ha", "grazing", "cprn_lc1n", "cprn_lc1n_brdth", "photo_point",
    "photo_north", "photo_south", "photo_east", "photo_west", "transect", "revisit", "th_gps_dist",
    "file_path_gisco_north", "file_path_gisco_south", "file_path_gisco_east", "file_path_gisco_west",
    "file_path_gisco_point", "pointidyear",
]

_AGRI = "Agriculture (excluding fallow land and kitchen gardens)"
#: lc1 -> (letter_group, lc1_label, lc1_perc, lu1, lu1_label)
_LAND_COVER = {
    "B11": ("B", "Common wheat", "> 75 %", "U111", _AGRI),
    "B16": ("B", "Maize", "> 75 %", "U111", _AGRI),
    "C10": ("C", "Broadleaved woodland", "50 - 75 %", "U120", "Forestry"),
    "C21": ("C", "Spruce dominated coniferous woodland", "> 75 %", "U120", "Forestry"),
    "D10": ("D", "Shrubland with sparse tree cover", "> 75 %", "U420",
            "Semi-natural and natural areas not in use"),
    "E10": ("E", "Grassland with sparse tree/shrub cover", "> 75 %", "U111", _AGRI),
    "E20": ("E", "Grassland without tree/shrub cover", "> 75 %", "U111", _AGRI),
}
_NUTS = {"FR": ("FRB", "FRB0"), "DE": ("DE2", "DE21"), "ES": ("ES3", "ES30")}
_VIEW_FLAG = {"P": "photo_point", "N": "photo_north", "S": "photo_south", "E": "photo_east", "W": "photo_west"}
_VIEW_WORD = {"N": "north", "S": "south", "E": "east", "W": "west", "P": "point"}
GISCO = "https://gisco-services.ec.europa.eu/lucas/photos/{year}/{nuts0}/{p1}/{p2}/{pid}{view}.jpg"

#: One dict per point. ``gps``: (gps_lat, gps_ew, gps_long, gps_prec) as written; ``taken``:
#: views flagged "Photo taken"; ``files``: views whose JPEG is written.
LUCAS_POINTS = [
    dict(id="1204511", pid="37402876", year="2015", nuts0="FR", th=("47.902100", "1.904700"),
         gps=("47.90216", "East", "1.90481", "3"), date="14/06/15", lc1="B11",
         taken="NESWP", files="NESWPC"),
    dict(id="1204637", pid="37442850", year="2015", nuts0="FR", th=("47.644310", "2.033270"),
         gps=("47.64428", "East", "2.03340", "5"), date="02/07/2015", lc1="C10",
         taken="NESWP", files="NESPC"),
    dict(id="432218", pid="36062768", year="2018", nuts0="FR", th=("47.250100", "-1.550200"),
         gps=("47.25015", "West", "1.55031", "4"), date="18/06/18", lc1="E20",
         taken="NESWP", files="NESWPC"),
    dict(id="432291", pid="36082770", year="2018", nuts0="FR", th=("47.401200", "-1.300400"),
         gps=("88.888888", "8", "88.888888", "8888"), obs_dist="15.0", date="26/07/2018", lc1="B16",
         taken="NP", files="NP"),
    dict(id="433905", pid="37022842", year="2018", nuts0="FR", th=("47.057300", "2.398000"),
         gps=("47.05736", "East", "2.39812", "6"), date="05/08/18", lc1="B16",
         taken="P", files="P"),
    dict(id="1388120", pid="44402990", year="2015", nuts0="DE", th=("48.201200", "11.460100"),
         gps=("48.20118", "East", "11.46022", "4"), date="21/07/15", lc1="E10",
         taken="NESWP", files="NESWPC"),
    dict(id="1387944", pid="44382986", year="2015", nuts0="DE", th=("48.003100", "11.200500"),
         gps=("48.00305", "East", "11.20061", "7"), date="30/06/2015", lc1="C21",
         taken="P", files="P"),
    dict(id="455102", pid="44402990", year="2018", nuts0="DE", th=("48.201200", "11.460100"),
         gps=("48.20121", "East", "11.46015", "2"), date="12/06/18", lc1="E10",
         taken="NESWP", files="NESWP"),
    dict(id="453377", pid="43842920", year="2018", nuts0="DE", th=("48.688000", "10.850000"),
         gps=("48.68794", "East", "10.85013", "8"), date="09/07/18", lc1="B11",
         taken="NESWP", files="NESWP"),
    dict(id="421736", pid="29481920", year="2018", nuts0="ES", th=("40.530100", "-3.640200"),
         gps=("40.53006", "West", "3.64031", "3"), date="23/05/18", lc1="D10",
         taken="NESWP", files="NESWPC"),
    dict(id="419852", pid="28861834", year="2018", nuts0="ES", th=("39.860000", "-4.020000"),
         gps=("39.86009", "West", "4.02011", "5"), date="02/06/18", lc1="E20",
         taken="P", files="P"),
]
#: Index in the table before which the malformed line is written.
_MALFORMED_AT = 6
_VIEW_RGB = {"N": (200, 40, 40), "E": (40, 200, 40), "S": (40, 40, 200), "W": (200, 200, 40),
             "P": (200, 40, 200), "C": (40, 200, 200)}


def _metres(lat1, lon1, lat2, lon2) -> float:
    """Great-circle distance in metres (for the table's ``th_gps_dist``)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * 6_371_008.8 * math.asin(math.sqrt(a))


def _lucas_row(p: dict) -> dict:
    group, lc1_label, lc1_perc, lu1, lu1_label = _LAND_COVER[p["lc1"]]
    gps_lat, gps_ew, gps_long, gps_prec = p["gps"]
    th_lat, th_long = p["th"]
    if gps_ew in ("East", "West"):
        lon = float(gps_long) * (-1 if gps_ew == "West" else 1)
        dist = f"{_metres(float(th_lat), float(th_long), float(gps_lat), lon):.2f}"
    else:
        dist = "8888"
    pid, year, nuts0 = p["pid"], p["year"], p["nuts0"]
    row = dict.fromkeys(LUCAS_COLUMNS, "")
    row.update(
        id=p["id"], point_id=pid, year=year, nuts0=nuts0, nuts1=_NUTS[nuts0][0], nuts2=_NUTS[nuts0][1],
        th_lat=th_lat, th_long=th_long, office_pi="0", survey_date=p["date"], gps_proj="WGS84",
        gps_prec=gps_prec, gps_altitude="8888" if dist == "8888" else "412", gps_lat=gps_lat,
        gps_ew=gps_ew, gps_long=gps_long, obs_dist=p.get("obs_dist", dist), obs_direct="On the point",
        obs_type="In situ < 100 m", obs_radius="1.5" if group == "B" else "20.0", letter_group=group,
        lc1=p["lc1"], lc1_label=lc1_label, lc1_spec="8", lc1_spec_label="Not relevant",
        lc1_perc=lc1_perc, lc2="8", lc2_label="Not relevant", lu1=lu1, lu1_label=lu1_label,
        lu1_type="8", lu1_perc="> 90 %", lu2="8", lu2_label="Not relevant",
        parcel_area_ha="1 - 10 ha", grazing="No signs of grazing", revisit="2", th_gps_dist=dist,
        pointidyear=pid + year,
    )
    if year == "2018":  # the Copernicus module exists from 2018; its no-data codes
        row.update(cprn_lc1n="88.0", cprn_lc1n_brdth="888.0")
    for view, flag in _VIEW_FLAG.items():
        taken = view in p["taken"]
        row[flag] = "Photo taken" if taken else "Photo not taken"
        if taken:
            row[f"file_path_gisco_{_VIEW_WORD[view]}"] = GISCO.format(
                year=year, nuts0=nuts0, p1=pid[0:3], p2=pid[3:6], pid=pid, view=view)
    return row


def _malformed_line() -> str:
    """A 2015 FR point whose land-use label has commas and lost its quotes (two extra fields)."""
    row = _lucas_row(dict(id="1204702", pid="37462848", year="2015", nuts0="FR",
                          th=("47.512300", "1.711000"), gps=("47.51236", "East", "1.71108", "4"),
                          date="03/07/15", lc1="E20", taken="P", files="P"))
    row["lu1"] = "U310"
    row["lu1_label"] = "Transport, communication networks, storage and protective works"
    return ",".join(row[c] for c in LUCAS_COLUMNS)


def _jpeg(path: Path, rgb, rng: np.random.Generator, size=(32, 24)) -> None:
    from PIL import Image

    noise = rng.integers(-6, 7, size=(size[1], size[0], 3))
    pixels = np.clip(np.asarray(rgb)[None, None, :] + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="RGB").save(path, format="JPEG", quality=90)


def write_lucas(folder, seed: int = 0) -> Path:
    """The LUCAS table ``folder/metadata_subset.csv`` and its photos in the GISCO layout under
    ``folder``; returns the table's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LUCAS_COLUMNS, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writeheader()
    for i, point in enumerate(LUCAS_POINTS):
        if i == _MALFORMED_AT:
            buf.write(_malformed_line() + "\n")
        writer.writerow(_lucas_row(point))
    table = folder / "metadata_subset.csv"
    table.write_text(buf.getvalue(), encoding="utf-8")
    rng = np.random.default_rng(seed)
    for k, p in enumerate(LUCAS_POINTS):
        pid = p["pid"]
        for view in p["files"]:
            shade = (k * 9) % 50
            rgb = tuple(min(255, c + shade) for c in _VIEW_RGB[view])
            path = folder / p["year"] / p["nuts0"] / pid[0:3] / pid[3:6] / f"{pid}{view}.jpg"
            _jpeg(path, rgb, rng)
    return table


# --- EVA --------------------------------------------------------------------------------------

EVA_COLUMNS = ["PlotObservationID", "PlotID", "TV2 relevé number", "Country", "Cover abundance scale",
               "Date of recording", "Relevé area (m²)", "Altitude (m)", "Aspect (°)", "Slope (°)",
               "Expert System", "Longitude", "Latitude", "Location uncertainty (m)", "Dataset"]

#: (PlotObservationID, Country, Date of recording, Relevé area, Expert System, Longitude,
#: Latitude, Location uncertainty (m)), in file order.
EVA_ROWS = [
    ("1001", "Germany", "01.06.2015", "25", "R22", "11.50330", "48.10210", "10"),
    ("1002", "Germany", "15.07.2016", "16", "R22, R23!", "10.95030", "47.60120", "50"),
    ("1003", "Germany", "03.08.2012", "20", "R23!", "11.10020", "47.45010", "100"),
    ("1004", "Germany", "12.06.2009", "9", "R", "8.70020", "50.10030", "1000"),
    ("1005", "Germany", "20.05.2011", "50", "Qa", "9.70030", "52.40010", "25"),
    ("1006", "Czech Republic", "00.06.1998", "100", "Sb", "14.20010", "49.80020", "250"),
    ("1007", "France", "11.07.2003", "10", "?", "-0.85030", "46.20010", "5"),
    ("1008", "France", "", "", "", "3.10030", "45.70020", ""),
    ("1009", "France", "24.06.2007", "4", "E1.2a", "4.20020", "44.30010", "30"),
    ("1010", "France", "02.06.2010", "16", "R22", "", "", ""),
    ("1002", "Germany", "15.07.2016", "16", "R22, R23!", "10.95034", "47.60125", "50"),
    ("1011", "Czech Republic", "19.07.2001", "25", "R22, T11", "16.60020", "49.20030", "10"),
]
_EVA_DATASET = {"Germany": "DE_FIX Fixture grassland database", "France": "FR_FIX Fixture relevés",
                "Czech Republic": "CZ_FIX Fixture vegetation database"}


def write_eva(folder) -> Path:
    """An EVA header export ``folder/fixture_header.csv`` (tab-separated, UTF-8)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(EVA_COLUMNS)]
    for n, (plot, country, date, area, esy, lon, lat, unc) in enumerate(EVA_ROWS):
        cells = [plot, str(70000 + n), str(n + 1), country, "Braun-Blanquet (old)", date, area,
                 "" if not lat else str(200 + 10 * n), "180" if n % 2 else "", "5" if n % 2 else "",
                 esy, lon, lat, unc, _EVA_DATASET[country]]
        lines.append("\t".join(cells))
    path = folder / "fixture_header.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- EMBAL ------------------------------------------------------------------------------------

EMBAL_COLUMNS = ["site", "transect", "lat", "lon", "photo", "eunis_code", "date"]
EMBAL_ROWS = [
    ("FR-0107", "1", "47.30010", "2.50020", "FR-0107/T1_1.jpg", "T11", "2023-05-30"),
    ("DE-0412", "1", "48.50030", "11.00020", "DE-0412/T1_1.jpg", "R22", "2023-06-14"),
    ("DE-0412", "1", "48.50030", "11.00020", "DE-0412/T1_2.jpg", "R22", "2023-06-14"),
    ("DE-0413", "1", "48.52010", "11.05030", "DE-0413/T1_1.jpg", "R22", "2023-06-14"),
    ("DE-0412", "2", "48.50030", "11.00020", "DE-0412/T2_1.jpg", "R22", "2023-06-14"),
    ("DE-0412", "2", "48.50030", "11.00020", "DE-0412/T2_2.jpg", "R22", "2023-06-14"),
    ("DE-0413", "1", "48.52010", "11.05030", "DE-0413/T1_2.jpg", "R23", "2023-06-15"),
    ("FR-0107", "2", "47.30012", "2.50024", "FR-0107/T2_1.jpg", "", "2023-05-30"),
]
#: Listed in the table, never written.
EMBAL_MISSING = {"DE-0412/T2_2.jpg"}


def write_embal(folder, seed: int = 0) -> Path:
    """The EMBAL table ``folder/transect_photos.csv`` and its photos under ``folder/photos``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EMBAL_COLUMNS)
    writer.writerows(EMBAL_ROWS)
    path = folder / "transect_photos.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    rng = np.random.default_rng([seed, 1])
    for k, row in enumerate(EMBAL_ROWS):
        if row[4] not in EMBAL_MISSING:
            _jpeg(folder / "photos" / row[4], ((60 + 23 * k) % 256, 120, (200 - 17 * k) % 256), rng)
    return path


# --- Sentinel-2 -------------------------------------------------------------------------------

#: The 12 bands of Sentinel-2 L2A (BigEarthNet-S2), with their pixel size in metres.
S2_BANDS = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10,
            "B8A": 20, "B09": 60, "B11": 20, "B12": 20}
BAND_BASE = {b: 100 * (i + 1) for i, b in enumerate(S2_BANDS)}
FOUR_BANDS = ("B02", "B03", "B04", "B08")

#: GeoTIFF patches: (file name, lat, lon, EPSG, bands, shift east m, shift north m).
GEOTIFFS = [
    ("37402876_2015", 47.90216, 1.90481, 32631, tuple(S2_BANDS), 0, 0),
    ("44402990_2015", 48.20118, 11.46022, 32632, FOUR_BANDS, 0, 0),
    ("43842920_2018", 48.68794, 10.85013, 32632, tuple(S2_BANDS), 0, 20_000),
    ("1001", 48.10210, 11.50330, 32632, FOUR_BANDS, 0, 0),
    ("1004", 50.10030, 8.70020, 32632, FOUR_BANDS, 600, 0),
    ("1005", 52.40010, 9.70030, 32632, FOUR_BANDS, 3_000, 0),
]
#: BigEarthNet-style band folders: (name, lat, lon, EPSG).
BAND_FOLDERS = [("44402990_2018", 48.20121, 11.46015, 32632), ("1003", 47.45010, 11.10020, 32632)]


def _origin(lat, lon, epsg, size_m, east=0.0, north=0.0) -> tuple[float, float]:
    """Upper-left corner of a ``size_m`` square centred on ``lat, lon`` (plus a shift), on the
    10 m grid of the UTM zone."""
    from rasterio.warp import transform

    xs, ys = transform("EPSG:4326", f"EPSG:{epsg}", [lon], [lat])
    left = round((xs[0] + east - size_m / 2) / 10) * 10
    top = round((ys[0] + north + size_m / 2) / 10) * 10
    return float(left), float(top)


def _band_values(band: str, size: int, rng: np.random.Generator) -> np.ndarray:
    return (BAND_BASE[band] + rng.integers(0, 50, size=(size, size))).astype(np.uint16)


def _write_tif(path: Path, layers: list[np.ndarray], left, top, pixel, epsg, names=None) -> None:
    import rasterio
    from rasterio.transform import from_origin

    size = layers[0].shape[0]
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=len(layers),
                       dtype="uint16", crs=f"EPSG:{epsg}", transform=from_origin(left, top, pixel, pixel)) as dst:
        dst.write(np.stack(layers))
        for i, name in enumerate(names or []):
            dst.set_band_description(i + 1, name)


def write_sentinel2(folder, seed: int = 0) -> dict[str, Path]:
    """GeoTIFF patches under ``folder/sentinel2`` and band folders under ``folder/bigearthnet``."""
    folder = Path(folder)
    tifs, bands = folder / "sentinel2", folder / "bigearthnet"
    tifs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 2])
    for name, lat, lon, epsg, names, east, north in GEOTIFFS:
        left, top = _origin(lat, lon, epsg, 160, east, north)
        _write_tif(tifs / f"{name}.tif", [_band_values(b, 16, rng) for b in names], left, top, 10, epsg, names)
    for name, lat, lon, epsg in BAND_FOLDERS:
        left, top = _origin(lat, lon, epsg, 120)
        sub = bands / name
        sub.mkdir(parents=True, exist_ok=True)
        for band, pixel in S2_BANDS.items():
            _write_tif(sub / f"{name}_{band}.tif", [_band_values(band, 120 // pixel, rng)], left, top,
                       pixel, epsg)
    return {"sentinel2": tifs, "bigearthnet": bands}


# --- everything ---------------------------------------------------------------------------------

def write_all(folder, seed: int = 0) -> dict[str, Path]:
    """Write every fixture under ``folder``; returns the paths listed in the module docstring."""
    folder = Path(folder)
    out = {"lucas_table": write_lucas(folder / "lucas", seed), "lucas_photos": folder / "lucas",
           "eva_header": write_eva(folder / "eva"),
           "embal_table": write_embal(folder / "embal", seed), "embal_photos": folder / "embal" / "photos"}
    out.update(write_sentinel2(folder, seed))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where to write the files")
    parser.add_argument("--seed", type=int, default=0, help="changes pixel values only")
    args = parser.parse_args(argv)
    for key, path in write_all(args.folder, args.seed).items():
        print(f"{key}: {path}")


if __name__ == "__main__":
    main()
