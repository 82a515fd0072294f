"""Label hierarchies as objects: EUNIS 2021, LUCAS land cover, CORINE, or your own.

A :class:`LabelScheme` is a tree of codes read from a table with columns
``code, parent, name`` (the parent is empty for the roots). A code's level is its
depth in the tree: roots are level 1, their children level 2, and so on. Ancestors
always follow the ``parent`` column, never the spelling of a code, so a scheme whose
codes do not spell their own path works too.

Built-in schemes, by name (see :func:`get`):

===============  ===========================================================
``"eunis"``      EUNIS 2021 terrestrial habitats, 7 / 42 / 270 codes
``"lucas-lc1"``  LUCAS land cover (LC1), 8 / 30 / 76 codes: ``B``, ``B1``, ``B11``
``"corine"``     CORINE Land Cover, 5 / 15 / 44 codes: ``2``, ``21``, ``211``
===============  ===========================================================

Any other hierarchy is a CSV file: ``get("my_habitats.csv")`` (see :func:`from_csv`).

Example
-------
>>> import habitat_helpers as hh
>>> lucas = hh.labels.get("lucas-lc1")
>>> lucas.ancestor("B11", 1), lucas.name_of("B1")
('B', 'Cereals')
>>> lucas.clean(" b11 ")
'B11'
>>> hh.labels.lucas_lc1_to_eunis_l1("B11")
'V'

A site table names its labels the same for every scheme: ``label`` (the code as given),
``label_l1, label_l2, label_l3`` (:data:`LEVEL_COLUMNS`) and ``label_candidates``; the scheme
says what the codes mean, so the rest of the package works unchanged whichever scheme made them.
Tables with the names of earlier versions (``eunis_code``, ``eunis_l1`` ...) are still read, with
a ``DeprecationWarning`` (:func:`current_names`), until the next release.

The LUCAS and CORINE tables are written by ``scripts/build_label_tables.py``, which
cites their sources.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

import pandas as pd

# The module is also a factory name here (``labels.eunis()``), so import it under
# another name.
from . import eunis as _eunis
from . import paths

#: The levels of every scheme (EUNIS's three; a scheme with deeper codes is read to level 3).
LEVELS = _eunis.LEVELS
#: Column name of each level in a site table, the same for every scheme.
LEVEL_COLUMNS = {1: "label_l1", 2: "label_l2", 3: "label_l3"}
#: The column of the label as given (cleaned), and of a cell's several codes.
LABEL_COLUMN, CANDIDATES_COLUMN = "label", "label_candidates"
#: The names of earlier versions, read until the next release (:func:`current_names`).
OLD_COLUMNS = {"eunis_code": "label", "eunis_l1": "label_l1", "eunis_l2": "label_l2", "eunis_l3": "label_l3",
               "eunis_candidates": "label_candidates"}

#: Names accepted by :func:`get`, besides a path to a CSV file.
SCHEMES = ("eunis", "lucas-lc1", "corine")

#: EUNIS 2021 level-1 formation of each LUCAS level-1 land-cover class; ``None``
#: where EUNIS terrestrial habitats have no counterpart (artificial land, water).
LUCAS_LC1_TO_EUNIS_L1 = {
    "A": None,  # artificial land
    "B": "V",   # cropland -> vegetated man-made habitats
    "C": "T",   # woodland -> forests
    "D": "S",   # shrubland -> heathland, scrub and tundra
    "E": "R",   # grassland -> grasslands
    "F": "U",   # bare land, lichens and moss -> sparsely vegetated habitats
    "G": None,  # water areas
    "H": "Q",   # wetlands -> wetlands
}

# Cell values that mean "no label" (the same tokens hh.eunis treats as missing).
_MISSING = _eunis._MISSING

# A cleaner turns a stripped, non-missing cell into a candidate code (or None for
# "no label"); LabelScheme.clean then checks the candidate.
Cleaner = Callable[["LabelScheme", str], "str | None"]


class LabelScheme:
    """A hierarchy of label codes read from a table.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per code, with columns ``code``, ``parent`` (empty or NaN for a
        root) and ``name``. A ``level`` column, if present, must agree with the
        depth of each code. Other columns are kept in :attr:`table`.
    name : str
        Short name, e.g. ``"eunis"``, ``"lucas-lc1"`` or a CSV file's stem.
    title : str, optional
        Human-readable name used in messages; defaults to ``name``.
    cleaner : callable, optional
        ``cleaner(scheme, text) -> code or None`` used by :meth:`clean` to turn a
        raw cell into a code. By default the stripped text must be a code.

    Raises
    ------
    ValueError
        When a column is missing, a code is empty or repeated, a parent is not a
        code, the parents form a cycle, or a ``level`` value disagrees with the
        depth. The message names the rows (``line N`` for a CSV file).

    Attributes
    ----------
    name : str
    title : str
    levels : tuple of int
        ``(1, 2, ..., depth)``, e.g. ``(1, 2, 3)``.
    """

    def __init__(self, table: pd.DataFrame, *, name: str, title: str | None = None,
                 cleaner: Cleaner | None = None):
        self.name = name
        self.title = title or name
        self._cleaner = cleaner
        table = _normalise(table, name)
        self._parent: dict[str, str] = dict(zip(table["code"], table["parent"]))
        self._name: dict[str, str] = dict(zip(table["code"], table["name"]))
        self._level = _depths(table, name)
        table["level"] = table["code"].map(self._level)
        self.levels: tuple[int, ...] = tuple(range(1, max(self._level.values()) + 1))
        self._children: dict[str, list[str]] = {code: [] for code in self._parent}
        for code, parent in self._parent.items():
            if parent:
                self._children[parent].append(code)
        first = ["code", "level", "parent", "name"]
        self._table = table[first + [c for c in table.columns if c not in first]]

    # --- the table and its codes -----------------------------------------------------

    @property
    def table(self) -> pd.DataFrame:
        """A copy of the hierarchy table with the columns ``code, level, parent, name``, then
        any other columns of the source table."""
        return self._table.reset_index(drop=True).copy()

    def codes(self, level: int | None = None) -> list[str]:
        """Codes at ``level``, sorted; all codes (by level, then code) when ``None``."""
        if level is None:
            return sorted(self._level, key=lambda c: (self._level[c], c))
        self._check_level(level)
        return sorted(c for c, k in self._level.items() if k == level)

    def is_valid(self, code) -> bool:
        """True when ``code`` is a code of this scheme (exactly, no cleaning)."""
        return isinstance(code, str) and code in self._level

    def check(self, code) -> str:
        """Return ``code`` stripped of surrounding spaces.

        Raises
        ------
        ValueError
            When it is not a code of this scheme; the message names the scheme.
        """
        stripped = code.strip() if isinstance(code, str) else code
        if not self.is_valid(stripped):
            examples = ", ".join(repr(self.codes(k)[0]) for k in self.levels[:3])
            raise ValueError(f"unknown {self.title} code {code!r} "
                             f"(scheme {self.name!r}; codes look like {examples})")
        return stripped

    def level_of(self, code: str) -> int:
        """Level of ``code``: 1 for a root, 2 for its children, ..."""
        return self._level[self.check(code)]

    def parent(self, code: str) -> str | None:
        """Parent of ``code``, or ``None`` for a level-1 code."""
        return self._parent[self.check(code)] or None

    def ancestor(self, code: str, level: int) -> str | None:
        """The code above ``code`` at ``level``, following the parent column.

        Returns ``code`` itself when it is at ``level`` and ``None`` when it is
        coarser than ``level`` (a level-1 label says nothing about level 3).
        """
        current = self.check(code)
        self._check_level(level)
        while self._level[current] > level:
            current = self._parent[current]
        return current if self._level[current] == level else None

    def name_of(self, code: str) -> str:
        """English name of ``code``."""
        return self._name[self.check(code)]

    def children(self, code: str) -> list[str]:
        """Direct children of ``code``, sorted (none for the finest codes)."""
        return sorted(self._children[self.check(code)])

    def descendants(self, code: str) -> list[str]:
        """All codes below ``code`` (children, their children, ...), by level then code."""
        found: list[str] = []
        todo = list(self._children[self.check(code)])
        while todo:
            child = todo.pop()
            found.append(child)
            todo.extend(self._children[child])
        return sorted(found, key=lambda c: (self._level[c], c))

    def level_columns(self, code: str | None) -> dict[str, str | None]:
        """Per-level columns for a site table, ``None`` below the code's own level.

        The keys are :data:`LEVEL_COLUMNS` (``label_l1, label_l2, label_l3``) for
        every scheme, plus ``label_l4``, ... for deeper schemes. A missing code
        (``None`` or NaN) gives ``None`` everywhere.

        >>> get("lucas-lc1").level_columns("B1")
        {'label_l1': 'B', 'label_l2': 'B1', 'label_l3': None}
        """
        deepest = max(len(LEVEL_COLUMNS), len(self.levels))
        if _as_text(code) is None:
            return {_level_column(k): None for k in range(1, deepest + 1)}
        code = self.check(code)
        return {_level_column(k): (self.ancestor(code, k) if k in self.levels else None)
                for k in range(1, deepest + 1)}

    def clean(self, value) -> str | None:
        """Turn a raw table cell into a code of this scheme, or ``None`` for no label.

        Empty cells, NaN, ``"?"`` and the like give ``None``. Then, per scheme:

        * ``"eunis"``: an EUNIS-ESy cell as parsed by
          :func:`~habitat_helpers.eunis.esy_label` (``"R22, R23!"`` -> ``"R2"``;
          codes without a common formation -> ``None``);
        * ``"lucas-lc1"``: case and spaces are ignored (``" b11 "`` -> ``"B11"``,
          ``"BX1"`` -> ``"Bx1"``); LUCAS's spelling of a level-2 or level-1 class
          with trailing zeros gives that class (``"B10"`` -> ``"B1"``,
          ``"B00"`` -> ``"B"``) unless it is itself a code (``"C10"``);
        * ``"corine"``: dots and spaces are dropped and numbers accepted (``"2.1.1"``,
          ``211`` and ``211.0`` -> ``"211"``). The 1-44 grid values of CLC rasters
          are not accepted: they clash with the level-1 codes;
        * other schemes: the stripped text must be a code (whole numbers are
          accepted too: ``7`` -> ``"7"``).

        Raises
        ------
        ValueError
            When the value is not a code of this scheme.
        """
        text = _as_text(value)
        if text is None or text.lower() in _MISSING:
            return None
        candidate = self._cleaner(self, text) if self._cleaner else text
        return None if candidate is None else self.check(candidate)

    # --- small helpers -----------------------------------------------------------------

    def _check_level(self, level) -> None:
        if level not in self.levels:
            raise ValueError(f"{self.title} levels are {self.levels}, not {level!r}")

    def __contains__(self, code) -> bool:
        return self.is_valid(code)

    def __len__(self) -> int:
        return len(self._level)

    def __repr__(self) -> str:
        sizes = "/".join(str(len(self.codes(k))) for k in self.levels)
        return f"LabelScheme({self.name!r}, levels={self.levels}, codes={sizes})"


def _level_column(level: int) -> str:
    """Site-table column of ``level``: :data:`LEVEL_COLUMNS`, then the same pattern."""
    return LEVEL_COLUMNS.get(level, f"label_l{level}")


def _as_text(value) -> str | None:
    """A cell as stripped text; whole numbers without decimals (``211.0`` -> ``"211"``);
    ``None`` for None and NaN."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Real):
        if value != value:  # NaN
            return None
        if float(value).is_integer():
            return str(int(value))
    return str(value).strip()


# --- validating a table ------------------------------------------------------------------


def _rows(table: pd.DataFrame, mask) -> str:
    """``"line 4 ('X9'), line 7 ('Y')"`` for the rows selected by ``mask``."""
    unit = table.index.name or "row"
    picked = table[mask]
    return ", ".join(f"{unit} {i} ({c!r})" for i, c in zip(picked.index, picked["code"]))


def _normalise(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """Check the columns, strip codes and parents, reject empty, duplicate and dangling
    codes. Returns a copy with text columns."""
    missing = [c for c in ("code", "parent", "name") if c not in table.columns]
    if missing:
        raise ValueError(f"label table {name!r} lacks column(s) {missing}; "
                         "it needs code, parent, name (parent empty for roots)")
    table = table.copy()
    for column in ("code", "parent"):
        table[column] = [_as_text(v) or "" for v in table[column]]
    table["name"] = ["" if _as_text(v) is None else str(v).strip() for v in table["name"]]
    empty = table["code"] == ""
    if empty.any():
        raise ValueError(f"label table {name!r} has empty codes at {_rows(table, empty)}")
    repeated = table["code"].duplicated(keep=False)
    if repeated.any():
        raise ValueError(f"label table {name!r} repeats codes: {_rows(table, repeated)}")
    dangling = (table["parent"] != "") & ~table["parent"].isin(table["code"])
    if dangling.any():
        unit = table.index.name or "row"
        detail = ", ".join(f"{unit} {i} ({c!r} has parent {p!r})" for i, c, p in
                           table.loc[dangling, ["code", "parent"]].itertuples())
        raise ValueError(f"label table {name!r}: parents that are not codes: {detail}")
    return table


def _depths(table: pd.DataFrame, name: str) -> dict[str, int]:
    """Level (depth) of every code; ``ValueError`` on a cycle or a wrong ``level`` value."""
    parent = dict(zip(table["code"], table["parent"]))
    depth: dict[str, int] = {}
    for start in parent:
        path: list[str] = []
        node = start
        while node and node not in depth:
            if node in path:
                cycle = path[path.index(node):]
                where = _rows(table, table["code"].isin(cycle))
                raise ValueError(f"label table {name!r}: parents form a cycle "
                                 f"{' -> '.join([*cycle, node])} at {where}")
            path.append(node)
            node = parent[node]
        base = depth[node] if node else 0
        for offset, code in enumerate(reversed(path), start=1):
            depth[code] = base + offset
    if "level" in table.columns:
        given = pd.to_numeric(table["level"], errors="coerce")
        wrong = given != table["code"].map(depth)
        if wrong.any():
            raise ValueError(f"label table {name!r}: the level column disagrees with the "
                             f"depth given by the parents at {_rows(table, wrong)}")
    return depth


# --- reading schemes -----------------------------------------------------------------------


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a label CSV as text, skipping leading ``#`` comment lines; the index is
    the file's line number, so errors point at lines."""
    with path.open(encoding="utf-8") as f:
        lines = f.readlines()
    skip = 0
    while skip < len(lines) and (lines[skip].startswith("#") or not lines[skip].strip()):
        skip += 1
    table = pd.read_csv(path, skiprows=skip, dtype=str, keep_default_na=False)
    table.index = pd.RangeIndex(skip + 2, skip + 2 + len(table), name="line")
    return table


def from_csv(path: str | os.PathLike, *, name: str | None = None,
             title: str | None = None) -> LabelScheme:
    """A scheme from a CSV file with columns ``code, parent, name``.

    Parameters
    ----------
    path : str or path-like
        The CSV file. Leading lines starting with ``#`` are comments. The parent of
        a root is empty. An optional ``level`` column is checked against the depth;
        other columns are kept in :attr:`LabelScheme.table`.
    name, title : str, optional
        Default to the file's stem.

    Raises
    ------
    FileNotFoundError
        When the file is absent.
    ValueError
        When the table is not a valid hierarchy; the message names the lines.

    Example
    -------
    A file with ``code,parent,name`` rows ``A,,Open land``, ``X9,A,Dunes``
    gives ``from_csv(path).ancestor("X9", 1) == "A"``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"label table not found: {path}")
    return LabelScheme(_read_csv(path), name=name or path.stem, title=title)


def _clean_eunis(scheme: LabelScheme, text: str) -> str | None:
    return _eunis.esy_label(text)


def _clean_lucas(scheme: LabelScheme, text: str) -> str | None:
    by_upper = {code.upper(): code for code in scheme.codes()}
    key = "".join(text.split()).upper()
    if key in by_upper:
        return by_upper[key]
    # LUCAS writes a level-2 class as "B10" and a level-1 class as "B00".
    if len(key) == 3 and key.endswith("00") and key[0] in by_upper:
        return by_upper[key[0]]
    if len(key) == 3 and key.endswith("0") and key[:2] in by_upper:
        return by_upper[key[:2]]
    return text  # not a code: check() names it


def _clean_corine(scheme: LabelScheme, text: str) -> str | None:
    return "".join(ch for ch in text if ch not in ". :")


@lru_cache(maxsize=1)
def eunis() -> LabelScheme:
    """The EUNIS 2021 terrestrial habitat scheme (levels 1-3, 7 / 42 / 270 codes).

    Built from :func:`~habitat_helpers.eunis.hierarchy`; its table keeps the
    workbook's columns (``formation``, ``clc_code``, ...). :meth:`LabelScheme.clean`
    parses EUNIS-ESy cells with :func:`~habitat_helpers.eunis.esy_label`.
    """
    return LabelScheme(_eunis.hierarchy(), name="eunis",
                       title="EUNIS 2021 terrestrial habitat", cleaner=_clean_eunis)


@lru_cache(maxsize=1)
def lucas_lc1() -> LabelScheme:
    """The LUCAS land-cover (LC1) nomenclature, levels 1-3 (8 / 30 / 76 codes).

    Level 1 is the letter (``B`` cropland), level 2 the letter and a digit
    (``B1`` cereals: LUCAS writes it ``B10``), level 3 the survey's code (``B11``
    common wheat). Classes that LUCAS does not subdivide keep their ``..0`` code as
    a level-3 leaf (``C10`` -> ``C1`` -> ``C``). The 2018 photo-interpretation-only
    codes ``Bx1`` (arable land) and ``Bx2`` (permanent crops) sit under a level-2
    node ``Bx``.

    Source: Eurostat LUCAS C3 classification; d'Andrimont, R. et al. (2020),
    *Scientific Data* 7:352, doi:10.1038/s41597-020-00675-z. Table written by
    ``scripts/build_label_tables.py``.
    """
    return LabelScheme(_read_csv(paths.resource("lucas_lc1.csv")), name="lucas-lc1",
                       title="LUCAS land cover (LC1)", cleaner=_clean_lucas)


@lru_cache(maxsize=1)
def corine() -> LabelScheme:
    """The CORINE Land Cover nomenclature, levels 1-3 (5 / 15 / 44 codes).

    Codes are written without dots: ``2`` agricultural areas, ``21`` arable land,
    ``211`` non-irrigated arable land.

    Source: European Environment Agency, CLC nomenclature (Bossard et al. 2000,
    EEA Technical report 40; Kosztra et al. 2019). Table written by
    ``scripts/build_label_tables.py``.
    """
    return LabelScheme(_read_csv(paths.resource("corine_clc.csv")), name="corine",
                       title="CORINE Land Cover", cleaner=_clean_corine)


_FACTORIES = {"eunis": eunis, "lucas-lc1": lucas_lc1, "corine": corine}


def get(scheme: LabelScheme | str | os.PathLike) -> LabelScheme:
    """A label scheme from an object, a built-in name or a CSV path.

    Parameters
    ----------
    scheme : LabelScheme, str or path-like
        A :class:`LabelScheme` (returned as is), one of :data:`SCHEMES`
        (``"eunis"``, ``"lucas-lc1"``, ``"corine"``; case and ``_``/``-`` are
        ignored), or the path of a CSV file for :func:`from_csv`.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the choices.
    FileNotFoundError
        For a ``.csv`` path that does not exist.
    """
    if isinstance(scheme, LabelScheme):
        return scheme
    if isinstance(scheme, str | os.PathLike):
        text = str(scheme).strip()
        key = text.lower().replace("_", "-")
        if key in _FACTORIES:
            return _FACTORIES[key]()
        path = Path(text).expanduser()
        if path.suffix.lower() == ".csv" or path.is_file():
            return from_csv(path)
    choices = ", ".join(repr(s) for s in SCHEMES)
    raise ValueError(f"unknown label scheme {scheme!r}: use one of {choices}, or the "
                     "path of a CSV file with columns code, parent, name")


# --- crosswalks ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _eunis_corine_links() -> dict[str, tuple[str, ...]]:
    """EUNIS code -> CORINE codes linked by the EEA workbook (any relationship)."""
    clc = corine()
    return {code: tuple(clc.clean(link["clc_code"]) for link in _eunis.corine_links(code))
            for code in eunis().codes()}


def eunis_to_corine(eunis_code: str) -> list[str]:
    """CORINE Land Cover classes linked to a EUNIS code by the EEA crosswalk.

    The links come from the EUNIS 2021 workbook
    (:func:`~habitat_helpers.eunis.corine_links`, any relationship ``<``, ``=``,
    ``>`` or ``#``), with CLC codes written without dots. A level-1 or level-2 code
    gets the links of all codes below it.

    >>> eunis_to_corine("N11")
    ['331']
    """
    scheme = eunis()
    code = scheme.check(eunis_code)
    links = _eunis_corine_links()
    return sorted({clc for c in (code, *scheme.descendants(code)) for clc in links[c]})


def corine_to_eunis(clc_code) -> list[str]:
    """EUNIS codes that the EEA crosswalk links to a CORINE Land Cover class.

    ``clc_code`` may be written ``"211"``, ``"2.1.1"`` or ``211``; a level-1 or
    level-2 class collects the links of the classes below it. A missing value
    gives ``[]``. The result lists EUNIS level-3 codes, sorted.

    Raises
    ------
    ValueError
        When ``clc_code`` is not a CORINE code.
    """
    clc = corine()
    code = clc.clean(clc_code)
    if code is None:
        return []
    wanted = {code, *clc.descendants(code)}
    return sorted(e for e, links in _eunis_corine_links().items() if wanted.intersection(links))


def lucas_lc1_to_eunis_l1(code) -> str | None:
    """EUNIS 2021 level-1 formation of a LUCAS land-cover code at any level.

    Cropland ``B`` -> ``V``, woodland ``C`` -> ``T``, shrubland ``D`` -> ``S``,
    grassland ``E`` -> ``R``, bare land ``F`` -> ``U``, wetland ``H`` -> ``Q``;
    artificial land ``A``, water ``G`` and missing values -> ``None``
    (:data:`LUCAS_LC1_TO_EUNIS_L1`). The code is cleaned first, so ``"b11"`` works.

    >>> lucas_lc1_to_eunis_l1("B11")
    'V'
    """
    scheme = lucas_lc1()
    clean = scheme.clean(code)
    return None if clean is None else LUCAS_LC1_TO_EUNIS_L1[scheme.ancestor(clean, 1)]


def _lucas_to_eunis(code) -> list[str]:
    formation = lucas_lc1_to_eunis_l1(code)
    return [] if formation is None else [formation]


_CROSSWALKS = {
    ("corine", "eunis"): corine_to_eunis,
    ("eunis", "corine"): eunis_to_corine,
    ("lucas-lc1", "eunis"): _lucas_to_eunis,
}


def crosswalk(codes: Iterable, source: LabelScheme | str,
              target: LabelScheme | str) -> list[list[str]]:
    """Translate codes between schemes, one list of target codes per input code.

    Supported: ``corine -> eunis`` and ``eunis -> corine`` (EEA crosswalk) and
    ``lucas-lc1 -> eunis`` (level-1 formations only, :func:`lucas_lc1_to_eunis_l1`).
    A code without a counterpart gives ``[]``.

    >>> crosswalk(["B11", "G11"], "lucas-lc1", "eunis")
    [['V'], []]
    """
    pair = (get(source).name, get(target).name)
    if pair not in _CROSSWALKS:
        known = ", ".join(f"{a} -> {b}" for a, b in _CROSSWALKS)
        raise ValueError(f"no crosswalk {pair[0]} -> {pair[1]}; available: {known}")
    if isinstance(codes, str):
        codes = [codes]
    return [_CROSSWALKS[pair](code) for code in codes]


def current_names(table: pd.DataFrame, what: str = "the table") -> pd.DataFrame:
    """``table`` with the label columns of earlier versions (``eunis_code``, ``eunis_l1..3``,
    ``eunis_candidates``) renamed to today's (:data:`OLD_COLUMNS`), with a ``DeprecationWarning``
    naming them; unchanged (the same object) when it has none. A column whose new name is already
    there is left as it is."""
    old = {o: n for o, n in OLD_COLUMNS.items() if o in table.columns and n not in table.columns}
    if not old:
        return table
    warnings.warn(f"{what} names its labels {', '.join(old)}: these are now {', '.join(old.values())} "
                  "(the label scheme says what they mean); the old names are read until the next release",
                  DeprecationWarning, stacklevel=3)
    return table.rename(columns=old)
