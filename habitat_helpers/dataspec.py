"""What a notebook's ``DATA`` parameter names: the synthetic demo or a data spec of your own
sources, loaded into one site table (:class:`Data`, :func:`load`).

A data spec is a small YAML file naming your sources (:func:`read_spec`; an example is
``data/example_spec.yml``); each source is read by its loader in :mod:`habitat_helpers.datasets`,
the demo is written by :mod:`habitat_helpers.demo` in the same real formats and read back through
the same loaders. Data layer, above the loaders and the demo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import datasets, demo, paths, profiles
from .datasets import read_embal, read_eva, read_lucas, read_satellite, read_table

#: What each kind of source in a data spec accepts (paths are relative to the spec's folder;
#: ``~`` and ``$VARIABLES`` are expanded). Required keys first, then the optional ones. With
#: ``extra`` set to true a source holds unlabelled sites that only train the alignment
#: (:attr:`Data.extra`, ``Protocol(align_pool="extra")``).
SPEC_SOURCES = {
    "lucas": ({"table"}, {"photos", "labels", "label_column", "coordinates", "views", "extra"}),
    "eva": ({"header"}, {"label_column", "sep", "extra"}),
    "embal": ({"table"}, {"photos", "columns", "extra"}),
    "table": ({"path"}, {"lat", "lon", "label", "site_id", "photos", "satellite", "esy", "sep", "extra"}),
    "satellite": ({"root"}, {"pattern", "sources", "tolerance_m"}),
}
SPEC_KEYS = {"name", "description", "label_scheme", "synthetic", "sources"}
_EXTRA = "_extra_source"                  # a part's mark while the parts are put together


@dataclass
class Data:
    """What the notebooks and the CLI work on: the site table and how it was made.

    ``sites`` follows the schema at the top of this module; ``report`` has one row per source
    (rows read, sites kept, rows skipped, notes); ``key`` names the data in cache folders (``None``
    for the demo, whose run folders are named by profile and seed alone)."""

    name: str
    sites: object
    report: pd.DataFrame
    label_scheme: str = "eunis"
    synthetic: bool = False
    key: str | None = None
    folder: Path | None = None          # the demo's folder (its manifest and truth), else None
    spec: dict = field(default_factory=dict)
    #: One boolean per site, true for the sites of the sources a data spec marks ``extra: true``
    #: (unlabelled, they only train the alignment, ``cross_validate(extra=data.extra)``); all false
    #: when None is given.
    extra: np.ndarray | None = None

    def __post_init__(self):
        if self.extra is None:
            self.extra = np.zeros(len(self.sites), bool)

    def run_dir(self, profile: str, seed: int) -> Path:
        """The cache folder for this data, profile and seed (:func:`habitat_helpers.paths.run_dir`)."""

        return paths.run_dir(profile, seed, self.key)

    def source_files(self) -> list[Path]:
        """The tables the sites were read from (the demo's CSVs, or the spec's tables)."""
        if self.is_demo:
            return sorted(self.folder.glob("*/*.csv"))
        keys = ("table", "header", "path", "labels")
        return [Path(s[k]) for s in self.spec.get("sources", []) for k in keys if s.get(k) is not None]

    @property
    def is_demo(self) -> bool:
        """Whether this is the demo, which knows how it was made (every site's true habitat, its
        manifest). :attr:`synthetic` also marks a data spec of synthetic sites, which does not."""
        return self.folder is not None

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """``(lon_min, lat_min, lon_max, lat_max)``: the demo's region, or the sites' extent with a
        margin of 0.5°."""
        if self.is_demo:
            return demo.DEMO_BBOX
        lat, lon = self.sites["lat"], self.sites["lon"]
        return (float(lon.min()) - 0.5, float(lat.min()) - 0.5, float(lon.max()) + 0.5, float(lat.max()) + 0.5)

    def map_bbox(self, profile) -> tuple[float, float, float, float]:
        """The region that chapter 5 maps: for the demo the profile's window (a part of the demo's
        region, sized to the profile's time), for your data the sites' extent (:attr:`bbox`)."""
        prof = profiles.get(profile) if isinstance(profile, str) else profile
        return prof.map_bbox if self.is_demo else self.bbox

    def __repr__(self) -> str:
        kind = "synthetic demo" if self.synthetic else "data spec"
        return (f"Data({self.name!r}, {kind}, {len(self.sites)} sites, labels: {self.label_scheme}, "
                f"sources: {', '.join(self.report.index)})")


def load(data: str | Path = "demo", profile="tiny", seed: int = 0, *, verbose: bool = True) -> Data:
    """Turn a notebook's ``DATA`` parameter into the site table and its load report.

    ``data`` is ``"demo"`` (the synthetic demo of :mod:`habitat_helpers.demo` for ``profile``
    and ``seed``, written in the real formats and read back through the loaders) or the path of
    a data spec, a small YAML file naming your sources (:func:`read_spec`; an example is
    ``data/example_spec.yml``). Every source is read by its loader here (:func:`~habitat_helpers.datasets.read_lucas`,
    :func:`~habitat_helpers.datasets.read_eva`, :func:`~habitat_helpers.datasets.read_embal`, :func:`~habitat_helpers.datasets.read_table`, :func:`~habitat_helpers.datasets.read_satellite`), the parts
    are put together, and one line per source says what was read, kept and skipped.

    Profiles set sizes, encoders and devices, never the data: any profile runs on any data.
    """

    prof = profiles.get(profile) if isinstance(profile, str) else profile
    if isinstance(data, str) and data.strip().lower() == "demo":
        folder = demo.make_demo(prof, seed)
        sites = demo.load_sites(folder)
        reports = sites.attrs.get("load_reports", {})
        result = Data("demo", sites, _report_frame(reports), "eunis", True, None, folder)
    else:
        spec = read_spec(data)
        parts, reports = [], {}
        for source in spec["sources"]:
            kind = source["kind"]
            if kind == "satellite":
                if not parts:
                    raise ValueError(f"{spec['path']}: a satellite source attaches patches to the sites "
                                     "read before it: list it after them")
                parts = _attach_satellite(parts, source, reports)
                continue
            part = _read_source(kind, source, spec["label_scheme"])
            reports[part["source"].iloc[0] if len(part) else kind] = part.attrs.get("load_report", {})
            if source.get("extra") and len(part) and part["label_l1"].notna().any():
                raise ValueError(f"{spec['path']}: the {kind} source is marked extra (unlabelled sites that only "
                                 f"train the alignment), but {int(part['label_l1'].notna().sum())} of its sites "
                                 "carry labels: drop its labels or the extra key")
            part[_EXTRA] = bool(source.get("extra", False))
            parts.append(part)
        sites = _combine(parts)
        extra = sites.pop(_EXTRA).fillna(False).to_numpy(bool)
        result = Data(spec["name"], sites, _report_frame(reports), spec["label_scheme"],
                      spec["synthetic"], _spec_key(spec), None, spec, extra)
    if verbose:
        _print_report(result)
    return result


def read_spec(path) -> dict:
    """Read and check a data spec (YAML). Returns it with absolute paths, defaults filled in
    and ``path`` added. Unknown keys, unknown source kinds, missing required keys and missing
    files are errors that name the key and the file."""
    import os

    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"DATA is neither 'demo' nor an existing data spec: {path} not found "
                                "(see data/example_spec.yml for the format)")
    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a data spec is a mapping with the keys {sorted(SPEC_KEYS)}")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; a data spec has {sorted(SPEC_KEYS)}")
    sources = spec.get("sources")
    if not isinstance(sources, list) or not sources:
        raise ValueError(f"{path}: 'sources' must list at least one source "
                         f"(kinds: {', '.join(SPEC_SOURCES)})")
    folder = path.resolve().parent

    def resolve(value):
        expanded = os.path.expandvars(os.path.expanduser(str(value)))
        if "$" in expanded:
            raise ValueError(f"{path}: environment variable not set in {value!r}")
        target = Path(expanded)
        return target if target.is_absolute() else folder / target

    checked = []
    for number, source in enumerate(sources, start=1):
        where = f"{path}, source {number}"
        if not isinstance(source, dict) or "kind" not in source:
            raise ValueError(f"{where}: each source is a mapping with a 'kind' ({', '.join(SPEC_SOURCES)})")
        kind = source["kind"]
        if kind not in SPEC_SOURCES:
            raise ValueError(f"{where}: unknown kind {kind!r}; choose one of {', '.join(SPEC_SOURCES)}")
        required, optional = SPEC_SOURCES[kind]
        missing = required - set(source)
        extra = set(source) - required - optional - {"kind"}
        if missing:
            raise ValueError(f"{where} ({kind}): missing {sorted(missing)}")
        if extra:
            raise ValueError(f"{where} ({kind}): unknown key(s) {sorted(extra)}; "
                             f"it takes {sorted(required)} and optionally {sorted(optional)}")
        if not isinstance(source.get("extra", False), bool):
            raise ValueError(f"{where} ({kind}): extra is true or false, not {source['extra']!r}")
        source = dict(source)
        for key in ("table", "header", "path", "root", "labels"):
            if key in source and source[key] is not None:
                source[key] = resolve(source[key])
                if not source[key].exists():
                    raise FileNotFoundError(f"{where} ({kind}): {key} {source[key]} does not exist")
        if kind in ("lucas", "embal") and source.get("photos") is not None:
            source["photos"] = resolve(source["photos"])
            if not source["photos"].is_dir():
                raise FileNotFoundError(f"{where} ({kind}): photos folder {source['photos']} does not exist")
        checked.append(source)
    return {"name": str(spec.get("name") or path.stem), "description": str(spec.get("description", "")),
            "label_scheme": str(spec.get("label_scheme", "eunis")), "synthetic": bool(spec.get("synthetic", False)),
            "sources": checked, "path": path.resolve()}


def _read_source(kind: str, source: dict, label_scheme: str):
    """One source of a data spec through its loader."""
    if kind == "lucas":
        return read_lucas(source["table"], source.get("photos"), source.get("labels"),
                          coordinates=source.get("coordinates", "gps"),
                          views=tuple(source.get("views", datasets.LUCAS_VIEWS)),
                          label_column=source.get("label_column", "eunis_code"),
                          label_scheme=label_scheme, verbose=False)
    if kind == "eva":
        return read_eva(source["header"], label_column=source.get("label_column", "Expert System"),
                        sep=source.get("sep", "\t"), label_scheme=label_scheme, verbose=False)
    if kind == "embal":
        return read_embal(source["table"], source.get("photos"), source.get("columns"),
                          label_scheme=label_scheme, verbose=False)
    photos = source.get("photos") or []
    return read_table(source["path"], lat=source.get("lat", "lat"), lon=source.get("lon", "lon"),
                      label=source.get("label", "eunis_code"), site_id=source.get("site_id"),
                      photo_columns=[photos] if isinstance(photos, str) else list(photos),
                      satellite=source.get("satellite"), esy=bool(source.get("esy", False)),
                      sep=source.get("sep"), label_scheme=label_scheme, verbose=False)


def _attach_satellite(parts: list, source: dict, reports: dict) -> list:
    """Attach patches under ``root`` to the parts whose source is listed (default: all)."""
    wanted = source.get("sources")
    out = []
    for part in parts:
        name = part["source"].iloc[0] if len(part) else None
        if len(part) and (wanted is None or name in wanted):
            part = read_satellite(part, source["root"], source.get("pattern", "{name}.tif"),
                                  tolerance_m=float(source.get("tolerance_m", 1000.0)), verbose=False)
            reports[f"satellite ({name})"] = part.attrs["satellite_report"]
        out.append(part)
    return out


def _combine(parts: list):
    """One site table from the parts; site ids must stay unique across sources. A part without
    ``label_candidates`` (a table read before the column existed) gives None there."""
    import geopandas as gpd

    parts = [p for p in parts if len(p)]
    if not parts:
        raise ValueError("no source gave a single usable site: see the load report above")
    sites = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs="EPSG:4326")
    sites["label_candidates"] = datasets._candidates_column(sites.get("label_candidates", pd.Series(index=sites.index)))
    dup = sites["site_id"].duplicated()
    if dup.any():
        raise ValueError(f"{int(dup.sum())} site ids occur in more than one source, e.g. "
                         f"{sites.loc[dup, 'site_id'].iloc[0]!r}: give the sources different names")
    return sites


def _report_frame(reports: dict[str, dict]) -> pd.DataFrame:
    """One row per source (the site table's ``source`` name): what its loader read, kept, skipped."""
    rows = []
    for source, r in reports.items():
        if not r:
            continue
        skipped, notes, where = r.get("skipped", {}), r.get("notes", {}), r.get("where", {})
        rows.append({"source": source, "rows read": r.get("rows_read", 0), "kept": r.get("kept", 0),
                     "skipped": sum(skipped.values()),
                     "skipped, by reason": "; ".join(f"{k}: {v}{datasets._places(where, k, v)}"
                                                     for k, v in skipped.items()) or "-",
                     "notes": "; ".join(f"{k}: {v}{datasets._places(where, k, v)}" for k, v in notes.items()) or "-"})
    columns = ["source", "rows read", "kept", "skipped", "skipped, by reason", "notes"]
    return pd.DataFrame(rows, columns=columns).set_index("source")


def _print_report(data: Data) -> None:
    sites = data.sites
    labelled = ", ".join(f"level {k} {int(sites[f'label_l{k}'].notna().sum())}" for k in (1, 2, 3))
    print(f"DATA {data.name!r}: {len(sites)} sites; labelled ({data.label_scheme}): {labelled}; "
          f"with photos {int((sites['photos'].str.len() > 0).sum())}, "
          f"with a satellite patch {int(sites['satellite'].notna().sum())}")
    for source, row in data.report.iterrows():
        print(f"  {source}: read {row['rows read']}, kept {row['kept']}, skipped {row['skipped']}"
              + (f" ({row['skipped, by reason']})" if row["skipped"] else ""))


def _spec_key(spec: dict) -> str:
    """A short name for the spec's data in cache folders: its name plus a hash of the spec and
    of the size and modification time of every file it names (edit a table, get a new key)."""
    import hashlib
    import re as _re

    digest = hashlib.sha1(Path(spec["path"]).read_bytes())
    for source in spec["sources"]:
        for key in ("table", "header", "path", "labels"):
            if source.get(key) is not None:
                stat = Path(source[key]).stat()
                digest.update(f"{source[key]}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    slug = _re.sub(r"[^A-Za-z0-9_.-]+", "_", spec["name"])[:40]
    return f"{slug}-{digest.hexdigest()[:8]}"
