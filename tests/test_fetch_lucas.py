"""``python -m habitat_helpers fetch lucas`` against the local server (tests/local_server.py): the GISCO
layout, loading through read_lucas, resume, retries, missing photos and bad options. Every fixture is
made here: tiny JPEGs (PIL) and a tiny survey table."""

from __future__ import annotations

import io
import zipfile

import pandas as pd
import pytest
from PIL import Image

from habitat_helpers import cli, datasets
from habitat_helpers.fetch import lucas

TAKEN, NONE = "Photo taken", "No photo"

#: (point_id, year, nuts0, th_lat, th_long, views flagged "Photo taken")
POINTS = [
    ("36062768", "2018", "FR", "47.2501", "-1.5502", "NESWP"),
    ("37022842", "2018", "FR", "47.0573", "2.3980", "P"),
    ("44402990", "2018", "DE", "48.2012", "11.4601", "NP"),
    ("37402876", "2015", "FR", "47.9021", "1.9047", "NESWP"),      # another year: left out
]
#: photos flagged as taken that the server does not have (answered 404)
ABSENT = {("44402990", "P")}


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (seed * 40 % 256, 90, 160)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _table(points=POINTS) -> pd.DataFrame:
    words = datasets._LUCAS_VIEW_WORDS
    rows = []
    for pid, year, nuts0, lat, lon, taken in points:
        rows.append({"point_id": pid, "year": year, "nuts0": nuts0, "th_lat": lat, "th_long": lon,
                     "gps_proj": "WGS84", "gps_lat": lat, "gps_long": lon.lstrip("-"),
                     "gps_ew": "West" if lon.startswith("-") else "East", "gps_prec": "5", "survey_date": "14/06/18",
                     "lc1": "E20", **{f"photo_{w}": TAKEN if v in taken else NONE for v, w in words.items()}})
    return pd.DataFrame(rows)


def _serve(server, points=POINTS) -> dict[str, bytes]:
    """Write the photos of ``points`` in GISCO's tree under the server's root; {relative path: bytes}."""
    served = {}
    for k, (pid, year, nuts0, *_, taken) in enumerate(points):
        for view in taken:
            if (pid, view) in ABSENT:
                continue
            rel = lucas.photo_url("", year, nuts0, pid, view).lstrip("/")
            path = server.root / "photos" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data := _jpeg(k * 5 + "NESWP".index(view)))
            served[f"photos/{rel}"] = data
    return served


def _args(table, out, server, *more):
    return ["fetch", "lucas", "--table", str(table), "--out", str(out), "--base-url", server.url("photos"),
            "--year", "2018", "--rate", "0", "--backoff", "0", "--retries", "2", "--workers", "3",
            "--no-progress", *more]


@pytest.fixture
def survey(tmp_path, http_server):
    table = tmp_path / "lucas_table.csv"
    _table().to_csv(table, index=False)
    return table, tmp_path / "out", _serve(http_server)


def test_fetch_lands_in_gisco_layout_and_loads(survey, http_server):
    table, out, served = survey
    assert cli.main(_args(table, out, http_server)) == 0
    # every served 2018 photo is there, byte for byte, in the layout read_lucas reads
    for rel, data in served.items():
        if "/2018/" in rel:
            assert (out / rel).read_bytes() == data
    assert not any("/2015/" in str(p) for p in (out / "photos").rglob("*.jpg"))
    # views flagged "No photo" are never asked for
    assert http_server.hits("photos/2018/FR/370/228/37022842N.jpg") == 0
    missing = pd.read_csv(out / lucas.MISSING_FILE, dtype=str)
    assert missing[["point_id", "view"]].values.tolist() == [["44402990", "P"]]
    assert not (out / lucas.FAILED_FILE).exists()

    sites = datasets.read_lucas(out / lucas.TABLE_FILE, photo_root=out / "photos", verbose=False)
    views = dict(zip(sites["site_id"], sites["photo_views"]))
    assert views == {"lucas:36062768:2018": ["N", "E", "S", "W", "P"], "lucas:37022842:2018": ["P"],
                     "lucas:44402990:2018": ["N"]}
    assert sites.attrs["load_report"]["notes"]["photo P expected but missing under photo_root"] == 1
    photos = sites.set_index("site_id")["photos"]
    assert photos["lucas:36062768:2018"][0] == str(datasets.lucas_photo_path(out / "photos", 2018, "FR", "36062768", "N"))


def test_second_run_fetches_nothing_and_repairs_bad_files(survey, http_server):
    table, out, served = survey
    assert cli.main(_args(table, out, http_server)) == 0
    photo_paths = [rel for rel in served if "/2018/" in rel]
    assert all(http_server.hits(rel) == 1 for rel in photo_paths)

    assert cli.main(_args(table, out, http_server)) == 0           # resume: nothing to do
    assert all(http_server.hits(rel) == 1 for rel in photo_paths)

    # a truncated photo is fetched again; a part left by an interrupted run is continued (Range)
    cut, partial = "photos/2018/FR/360/627/36062768N.jpg", "photos/2018/FR/360/627/36062768E.jpg"
    (out / cut).write_bytes(served[cut][: len(served[cut]) // 2])
    (out / partial).unlink()
    (out / (partial + ".part")).write_bytes(served[partial][:100])
    report = lucas.fetch_lucas(table, years=[2018], out=out, base_url=http_server.url("photos"),
                               session=lucas.http.Session(rate=None, backoff=0), progress=False)
    assert report.ok and report.downloads.counts() == {"fetched": 2, "skipped": 5, "missing": 1, "failed": 0}
    assert (out / cut).read_bytes() == served[cut] and (out / partial).read_bytes() == served[partial]
    assert not (out / (partial + ".part")).exists()
    assert ("GET", "/" + partial, "bytes=100-") in http_server.requests
    assert http_server.hits(cut) == 2


def test_retries_then_success_and_permanent_failure(survey, http_server, capsys):
    table, out, served = survey
    flaky, broken = "photos/2018/FR/360/627/36062768S.jpg", "photos/2018/DE/444/029/44402990N.jpg"
    http_server.fail(flaky, 503, 503)
    http_server.fail(broken, 500, 500, 500)                  # 1 try + 2 retries, all 500
    assert cli.main(_args(table, out, http_server)) == 1
    assert http_server.hits(flaky) == 3 and (out / flaky).read_bytes() == served[flaky]
    assert http_server.hits(broken) == 3 and not (out / broken).exists()
    failed = pd.read_csv(out / lucas.FAILED_FILE, dtype=str)
    assert failed[["point_id", "view"]].values.tolist() == [["44402990", "N"]]
    assert "HTTP 500" in failed["reason"][0] and "3 tries" in failed["reason"][0]
    assert "failed" in capsys.readouterr().err

    assert cli.main(_args(table, out, http_server)) == 0     # the server works again: the rerun completes
    assert (out / broken).read_bytes() == served[broken] and not (out / lucas.FAILED_FILE).exists()


def test_eurostat_primary_table_zipped_from_url(tmp_path, http_server):
    """Eurostat's primary data: upper-case columns, no YEAR, photo flags as codes, semicolons."""
    points = POINTS[:2]
    served = _serve(http_server, points)
    table = _table(points).drop(columns="year")
    for column in [c for c in table.columns if c.startswith("photo_")]:
        table[column] = table[column].map({TAKEN: "1", NONE: "2"})
    table.columns = [c.upper() for c in table.columns]
    with zipfile.ZipFile(http_server.root / "FR_2018.zip", "w") as archive:
        archive.writestr("FR_2018_20200213.csv", table.to_csv(index=False, sep=";"))
    out = tmp_path / "out"
    args = _args("x", out, http_server, "--countries", "fr")
    args[args.index("--table"):args.index("--table") + 2] = ["--table-url", http_server.url("FR_2018.zip")]
    assert cli.main(args) == 0
    assert (out / "source/FR_2018.zip").exists()
    sites = datasets.read_lucas(out / lucas.TABLE_FILE, photo_root=out / "photos", verbose=False)
    assert sorted(map(len, sites["photos"])) == [1, 5]
    assert sum(len(p) for p in sites["photos"]) == len(served)


@pytest.mark.parametrize("change, message", [
    (["--year", "2010"], "2010"),
    (["--views", "N,X"], "'X'"),
    (["--countries", "FRA"], "NUTS0"),
    (["--countries", "IT"], "no point of 2018 in IT"),
    (["--workers", "0"], "--workers"),
    (["--table", "nowhere.csv"], "not found"),
])
def test_bad_options_exit_2(survey, http_server, capsys, change, message):
    table, out, _ = survey
    args = _args(table, out, http_server)
    for option, value in zip(change[::2], change[1::2]):
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err
    assert not any(m == "GET" for m, *_ in http_server.requests)


def test_table_without_year_needs_one_year(tmp_path, http_server, capsys):
    table = tmp_path / "t.csv"
    _table().drop(columns="year").to_csv(table, index=False)
    args = _args(table, tmp_path / "out", http_server)
    args[args.index("--year") + 1] = "2015,2018"
    assert cli.main(args) == 2
    assert "single --year" in capsys.readouterr().err
    assert cli.main(["fetch", "lucas", "--year", "2018", "--no-progress"]) == 2     # no table given
