"""Write the LUCAS land-cover and CORINE Land Cover tables shipped with the package.

Outputs (both with columns ``code, level, parent, name``, roots have an empty parent)::

    habitat_helpers/resources/lucas_lc1.csv    LUCAS land cover (LC1), 3 levels
    habitat_helpers/resources/corine_clc.csv   CORINE Land Cover, 5 / 15 / 44 classes

Sources
-------
LUCAS: Eurostat, *LUCAS Technical reference document C3: Classification (Land cover
& Land use)*, surveys 2009-2018; harmonised across years in d'Andrimont, R. et al.
(2020) "Harmonised LUCAS in-situ land cover and use database for field surveys from
2006 to 2018 in the European Union", *Scientific Data* 7:352,
https://doi.org/10.1038/s41597-020-00675-z (CC BY 4.0). Class names follow the
``lc1_label`` column of that harmonised database, so that ``name_of(lc1)`` matches
the label in the data (runs of spaces are collapsed).

CORINE: European Environment Agency, *CORINE Land Cover nomenclature* (Bossard, M.,
Feranec, J. & Otahel, J. 2000, EEA Technical report 40; Kosztra, B. et al. 2019,
*Updated CLC illustrated nomenclature guidelines*, EEA/Copernicus Land Monitoring
Service). Codes are written without dots: ``2.1.1`` -> ``211``.

Licence: the code lists are public standards. Eurostat material may be reused with
acknowledgement (Commission Decision 2011/833/EU); EEA material is CC BY 4.0.

How the LUCAS tree is built
---------------------------
LUCAS writes a level-2 class with a trailing zero (``B10`` Cereals) and level-1 with
two (``B00``). Here level 2 drops the zero (``B1``), so ``B11 -> B1 -> B``. Where
LUCAS does not subdivide a level-2 class, the survey records the ``..0`` code itself
(``C10`` Broadleaved woodland, ``E20``, ``A30``, ``G30`` ...): those stay level-3
leaves under their level-2 class (``C10 -> C1 -> C``), with the same name.

The 2018 survey added two photo-interpretation-only cropland codes, ``Bx1`` "Arable
land (only PI)" and ``Bx2`` "Permanent crops (only PI)", for points where the crop
could not be identified. They belong under no single level-2 group (arable land spans
``B1``-``B5``, permanent crops ``B7``-``B8``), so they get their own level-2 node
``Bx`` "Cropland, crop not identified (photo-interpretation only)". The tree keeps
three levels and ``Bx1`` rolls up to cropland ``B``.

Run from the project root::

    python scripts/build_label_tables.py

When the shared LUCAS tables (``../shared/data/lucas_points`` and ``lucas_sample``)
are present, the script first checks that every ``lc1`` code found there is in the
table under the same name, and stops with an error otherwise.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "habitat_helpers" / "resources"
SHARED = ROOT.parent / "shared" / "data"
LUCAS_SOURCES = [
    SHARED / "lucas_points" / "lucas2015_points_west_north.csv",
    SHARED / "lucas_sample" / "metadata_subset.csv",
]

# --- LUCAS land cover (LC1) ----------------------------------------------------------
# (code, name) per level; the parent of a code is given by the block it sits in.

LUCAS_LEVEL1 = [
    ("A", "Artificial land"),
    ("B", "Cropland"),
    ("C", "Woodland"),
    ("D", "Shrubland"),
    ("E", "Grassland"),
    ("F", "Bare land and lichens/moss"),
    ("G", "Water areas"),
    ("H", "Wetlands"),
]

# level-2 code -> (name, [(level-3 code, name), ...])
LUCAS_TREE = {
    "A1": ("Roofed built-up areas", [
        ("A11", "Buildings with one to three floors"),
        ("A12", "Buildings with more than three floors"),
        ("A13", "Greenhouses"),
    ]),
    "A2": ("Artificial non-built up areas", [
        ("A21", "Non built-up area features"),
        ("A22", "Non built-up linear features"),
    ]),
    "A3": ("Other artificial areas", [("A30", "Other artificial areas")]),
    "B1": ("Cereals", [
        ("B11", "Common wheat"),
        ("B12", "Durum wheat"),
        ("B13", "Barley"),
        ("B14", "Rye"),
        ("B15", "Oats"),
        ("B16", "Maize"),
        ("B17", "Rice"),
        ("B18", "Triticale"),
        ("B19", "Other cereals"),
    ]),
    "B2": ("Root crops", [
        ("B21", "Potatoes"),
        ("B22", "Sugar beet"),
        ("B23", "Other root crops"),
    ]),
    "B3": ("Non-permanent industrial crops", [
        ("B31", "Sunflower"),
        ("B32", "Rape and turnip rape"),
        ("B33", "Soya"),
        ("B34", "Cotton"),
        ("B35", "Other fibre and oleaginous crops"),
        ("B36", "Tobacco"),
        ("B37", "Other non-permanent industrial crops"),
    ]),
    "B4": ("Dry pulses, vegetables and flowers", [
        ("B41", "Dry pulses"),
        ("B42", "Tomatoes"),
        ("B43", "Other fresh vegetables"),
        ("B44", "Floriculture and ornamental plants"),
        ("B45", "Strawberries"),
    ]),
    "B5": ("Fodder crops (mainly leguminous)", [
        ("B51", "Clovers"),
        ("B52", "Lucerne"),
        ("B53", "Other Leguminous and mixtures for fodder"),
        ("B54", "Mix of cereals"),
        ("B55", "Temporary grassland"),
    ]),
    "B7": ("Permanent crops: fruit trees", [
        ("B71", "Apple fruit"),
        ("B72", "Pear fruit"),
        ("B73", "Cherry fruit"),
        ("B74", "Nuts trees"),
        ("B75", "Other fruit trees and berries"),
        ("B76", "Oranges"),
        ("B77", "Other citrus fruit"),
    ]),
    "B8": ("Other permanent crops", [
        ("B81", "Olive groves"),
        ("B82", "Vineyards"),
        ("B83", "Nurseries"),
        ("B84", "Permanent industrial crops"),
    ]),
    "Bx": ("Cropland, crop not identified (photo-interpretation only)", [
        ("Bx1", "Arable land (only PI)"),
        ("Bx2", "Permanent crops (only PI)"),
    ]),
    "C1": ("Broadleaved woodland", [("C10", "Broadleaved woodland")]),
    "C2": ("Coniferous woodland", [
        ("C21", "Spruce dominated coniferous woodland"),
        ("C22", "Pine dominated coniferous woodland"),
        ("C23", "Other coniferous woodland"),
    ]),
    "C3": ("Mixed woodland", [
        ("C31", "Spruce dominated mixed woodland"),
        ("C32", "Pine dominated mixed woodland"),
        ("C33", "Other mixed woodland"),
    ]),
    "D1": ("Shrubland with sparse tree cover", [("D10", "Shrubland with sparse tree cover")]),
    "D2": ("Shrubland without tree cover", [("D20", "Shrubland without tree cover")]),
    "E1": ("Grassland with sparse tree/shrub cover",
           [("E10", "Grassland with sparse tree/shrub cover")]),
    "E2": ("Grassland without tree/shrub cover", [("E20", "Grassland without tree/shrub cover")]),
    "E3": ("Spontaneously re-vegetated surfaces", [("E30", "Spontaneously re-vegetated surfaces")]),
    "F1": ("Rocks and stones", [("F10", "Rocks and stones")]),
    "F2": ("Sand", [("F20", "Sand")]),
    "F3": ("Lichens and Moss", [("F30", "Lichens and Moss")]),
    "F4": ("Other bare soil", [("F40", "Other bare soil")]),
    "G1": ("Inland water bodies", [
        ("G11", "Inland fresh water bodies"),
        ("G12", "Inland salty water bodies"),
    ]),
    "G2": ("Inland running water", [
        ("G21", "Inland fresh running water"),
        ("G22", "Inland salty running water"),
    ]),
    "G3": ("Transitional water bodies", [("G30", "Transitional water bodies")]),
    "G4": ("Sea and ocean", [("G40", "Sea and ocean")]),
    "G5": ("Glaciers, permanent snow", [("G50", "Glaciers, permanent snow")]),
    "H1": ("Inland wetlands", [
        ("H11", "Inland marshes"),
        ("H12", "Peatbogs"),
    ]),
    "H2": ("Coastal wetlands", [
        ("H21", "Salt marshes"),
        ("H22", "Salines"),
        ("H23", "Intertidal flats"),
    ]),
}

# --- CORINE Land Cover ---------------------------------------------------------------

CORINE_LEVEL1 = [
    ("1", "Artificial surfaces"),
    ("2", "Agricultural areas"),
    ("3", "Forest and semi natural areas"),
    ("4", "Wetlands"),
    ("5", "Water bodies"),
]

CORINE_TREE = {
    "11": ("Urban fabric", [
        ("111", "Continuous urban fabric"),
        ("112", "Discontinuous urban fabric"),
    ]),
    "12": ("Industrial, commercial and transport units", [
        ("121", "Industrial or commercial units"),
        ("122", "Road and rail networks and associated land"),
        ("123", "Port areas"),
        ("124", "Airports"),
    ]),
    "13": ("Mine, dump and construction sites", [
        ("131", "Mineral extraction sites"),
        ("132", "Dump sites"),
        ("133", "Construction sites"),
    ]),
    "14": ("Artificial, non-agricultural vegetated areas", [
        ("141", "Green urban areas"),
        ("142", "Sport and leisure facilities"),
    ]),
    "21": ("Arable land", [
        ("211", "Non-irrigated arable land"),
        ("212", "Permanently irrigated land"),
        ("213", "Rice fields"),
    ]),
    "22": ("Permanent crops", [
        ("221", "Vineyards"),
        ("222", "Fruit trees and berry plantations"),
        ("223", "Olive groves"),
    ]),
    "23": ("Pastures", [("231", "Pastures")]),
    "24": ("Heterogeneous agricultural areas", [
        ("241", "Annual crops associated with permanent crops"),
        ("242", "Complex cultivation patterns"),
        ("243", "Land principally occupied by agriculture, with significant areas of natural vegetation"),
        ("244", "Agro-forestry areas"),
    ]),
    "31": ("Forests", [
        ("311", "Broad-leaved forest"),
        ("312", "Coniferous forest"),
        ("313", "Mixed forest"),
    ]),
    "32": ("Scrub and/or herbaceous vegetation associations", [
        ("321", "Natural grasslands"),
        ("322", "Moors and heathland"),
        ("323", "Sclerophyllous vegetation"),
        ("324", "Transitional woodland-shrub"),
    ]),
    "33": ("Open spaces with little or no vegetation", [
        ("331", "Beaches, dunes, sands"),
        ("332", "Bare rocks"),
        ("333", "Sparsely vegetated areas"),
        ("334", "Burnt areas"),
        ("335", "Glaciers and perpetual snow"),
    ]),
    "41": ("Inland wetlands", [
        ("411", "Inland marshes"),
        ("412", "Peat bogs"),
    ]),
    "42": ("Maritime wetlands", [
        ("421", "Salt marshes"),
        ("422", "Salines"),
        ("423", "Intertidal flats"),
    ]),
    "51": ("Inland waters", [
        ("511", "Water courses"),
        ("512", "Water bodies"),
    ]),
    "52": ("Marine waters", [
        ("521", "Coastal lagoons"),
        ("522", "Estuaries"),
        ("523", "Sea and ocean"),
    ]),
}

LUCAS_HEADER = """\
# LUCAS land cover (LC1) nomenclature, three levels: A..H / B1 / B11.
# Source: Eurostat LUCAS C3 classification (2009-2018 surveys), harmonised in
# d'Andrimont et al. (2020) Sci. Data 7:352, doi:10.1038/s41597-020-00675-z.
# Level 2 is LUCAS's "B10" written "B1"; undivided classes keep their "..0" code
# as a level-3 leaf (C10 -> C1 -> C). Bx1/Bx2 (2018, photo-interpretation only)
# sit under the level-2 node Bx. Reuse: Eurostat, with acknowledgement.
# Generated by scripts/build_label_tables.py: edit the script, not this file.
"""

CORINE_HEADER = """\
# CORINE Land Cover nomenclature: 5 / 15 / 44 classes, codes without dots.
# Source: European Environment Agency, CLC nomenclature (Bossard et al. 2000,
# EEA Technical report 40; Kosztra et al. 2019, updated CLC guidelines). CC BY 4.0.
# Generated by scripts/build_label_tables.py: edit the script, not this file.
"""


def rows_from_tree(level1: list[tuple[str, str]], tree: dict) -> list[dict]:
    """Flatten (level-1 list, level-2 tree) into rows with code, level, parent, name.

    The parent of a level-2 code is the level-1 code it starts with; the parent of a
    level-3 code is the level-2 block it is listed in (never read from its spelling).
    """
    rows = [{"code": code, "level": 1, "parent": "", "name": name} for code, name in level1]
    roots = {code for code, _ in level1}
    for code2, (name2, leaves) in tree.items():
        if code2[0] not in roots:
            raise ValueError(f"level-2 code {code2!r} has no level-1 parent")
        rows.append({"code": code2, "level": 2, "parent": code2[0], "name": name2})
        rows += [{"code": code3, "level": 3, "parent": code2, "name": name3}
                 for code3, name3 in leaves]
    return sorted(rows, key=lambda r: (r["code"][0], r["level"] > 1, r["code"]))


def write_table(path: Path, header: str, rows: list[dict]) -> None:
    codes = [r["code"] for r in rows]
    if len(codes) != len(set(codes)):
        raise ValueError(f"duplicate codes in {path.name}")
    with path.open("w", newline="", encoding="utf-8") as f:
        f.write(header)
        writer = csv.DictWriter(f, fieldnames=["code", "level", "parent", "name"],
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    counts = [sum(r["level"] == k for r in rows) for k in (1, 2, 3)]
    print(f"wrote {path.relative_to(ROOT)}: {counts[0]} / {counts[1]} / {counts[2]} codes")


def check_lucas_coverage(rows: list[dict]) -> None:
    """Every ``lc1`` code of the shared LUCAS tables is in ``rows`` with the same name."""
    names = {r["code"]: r["name"] for r in rows}
    problems = []
    for source in LUCAS_SOURCES:
        if not source.exists():
            print(f"skipped coverage check: {source} is absent")
            continue
        with source.open(newline="", encoding="utf-8") as f:
            seen = {(r["lc1"].strip(), " ".join(r["lc1_label"].split())) for r in csv.DictReader(f)}
        for code, label in sorted(seen):
            if not code:
                continue
            if code not in names:
                problems.append(f"{source.name}: lc1 {code!r} ({label!r}) is not in the table")
            elif label and names[code] != label:
                problems.append(f"{source.name}: lc1 {code!r} is named {label!r} there, "
                                f"{names[code]!r} here")
        print(f"checked {len(seen)} lc1 codes of {source.name}")
    if problems:
        sys.exit("LUCAS table does not cover the shared data:\n  " + "\n  ".join(problems))


def main() -> None:
    lucas = rows_from_tree(LUCAS_LEVEL1, LUCAS_TREE)
    corine = rows_from_tree(CORINE_LEVEL1, CORINE_TREE)
    counts = [sum(r["level"] == k for r in corine) for k in (1, 2, 3)]
    if counts != [5, 15, 44]:
        raise ValueError(f"CORINE must have 5 / 15 / 44 classes, not {counts}")
    check_lucas_coverage(lucas)
    write_table(RESOURCES / "lucas_lc1.csv", LUCAS_HEADER, lucas)
    write_table(RESOURCES / "corine_clc.csv", CORINE_HEADER, corine)


if __name__ == "__main__":
    main()
