"""Build ``habitat_helpers/resources/eunis_hierarchy.csv`` from the official EEA EUNIS workbook.

Source
------
European Environment Agency (2021). *EUNIS terrestrial habitat classification 2021*,
release 2021_1, "including crosswalks" workbook (one sheet per formation: Coastal N,
Wetlands Q, Grassland R, Heathland S, Forest T, Sparsely vegetated U, Man-made V).
https://www.eea.europa.eu/data-and-maps/data/eunis-habitat-classification
Also redistributed under CC0 in the R package ``eunis.habitats``.

The EUNIS code list is a public standard. This script keeps levels 1-3 with code,
level, parent, formation and English name, plus the workbook's CORINE Land Cover
(CLC) crosswalk columns (relationship, code, name; several values are joined by ``;``).

Run from the project root::

    python scripts/build_eunis_table.py [path/to/workbook.xlsx]

The default workbook path is ``../shared/data/eunis/`` beside the project.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import openpyxl

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORKBOOK = (
    ROOT.parent
    / "shared/data/eunis/EUNIS terrestrial habitat classification 2021_1 including crosswalks.xlsx"
)
OUTPUT = ROOT / "habitat_helpers" / "resources" / "eunis_hierarchy.csv"
FORMATION_SHEETS = ["Coastal", "Wetlands", "Grassland", "Heathland", "Forest", "Sparsely vegetated", "Man-made"]
COLUMNS = ["code", "level", "parent", "level1", "level2", "name", "formation",
           "clc_relationship", "clc_code", "clc_name"]


def _clean(value) -> str:
    """Workbook cells carry trailing spaces and line breaks inside multi-valued cells."""
    if value is None:
        return ""
    # split multi-valued cells on line breaks; collapse runs of spaces (incl. no-break spaces)
    parts = [" ".join(p.split()) for p in str(value).replace("\r", "").split("\n")]
    return ";".join(p.strip(" ;,") for p in parts if p.strip(" ;,"))


def read_sheet(ws) -> list[dict]:
    rows = ws.iter_rows(values_only=True)
    header = [(_clean(h) or f"col{i}") for i, h in enumerate(next(rows))]
    # The Man-made sheet names its columns "Code 2018" / "Name 2018".
    code_col = next(h for h in header if h.startswith("Code"))
    name_col = next(h for h in header if h.startswith("Name"))
    out = []
    for values in rows:
        row = dict(zip(header, values))
        level, code = _clean(row.get("Level")), _clean(row.get(code_col))
        if not code or level not in {"1", "2", "3"}:
            continue
        out.append({
            "code": code,
            "level": int(level),
            "name": _clean(row.get(name_col)),
            "formation": ws.title,
            "clc_relationship": _clean(row.get("CLC relationship")) if level == "3" else "",
            "clc_code": _clean(row.get("CLC code")) if level == "3" else "",
            "clc_name": _clean(row.get("CLC name")) if level == "3" else "",
        })
    return out


def build(workbook: Path) -> list[dict]:
    wb = openpyxl.load_workbook(workbook, read_only=True)
    records: list[dict] = []
    for sheet in FORMATION_SHEETS:
        records.extend(read_sheet(wb[sheet]))
    seen: set[str] = set()
    for r in records:
        code, level = r["code"], r["level"]
        if code in seen:
            raise ValueError(f"duplicate EUNIS code {code!r} in {workbook}")
        seen.add(code)
        if len(code) != level:
            raise ValueError(f"code {code!r} does not match its level {level}")
        r["parent"] = code[:-1]
        r["level1"] = code[:1]
        r["level2"] = code[:2] if level >= 2 else ""
    for r in records:
        if r["parent"] and r["parent"] not in seen:
            raise ValueError(f"code {r['code']!r} has no parent {r['parent']!r} in the workbook")
    return sorted(records, key=lambda r: r["code"])


def main(argv: list[str]) -> None:
    workbook = Path(argv[1]) if len(argv) > 1 else DEFAULT_WORKBOOK
    if not workbook.exists():
        sys.exit(f"EUNIS workbook not found: {workbook}")
    records = build(workbook)
    OUTPUT.parent.mkdir(exist_ok=True)
    with OUTPUT.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: r[k] for k in COLUMNS} for r in records)
    counts = {lvl: sum(r["level"] == lvl for r in records) for lvl in (1, 2, 3)}
    print(f"wrote {OUTPUT.relative_to(ROOT)}: {len(records)} codes, per level {counts}")


if __name__ == "__main__":
    main(sys.argv)
