"""The EUNIS 2021 terrestrial habitat hierarchy, levels 1-3.

Source: European Environment Agency, *EUNIS terrestrial habitat classification 2021*
(release 2021_1, workbook "including crosswalks"). The table shipped in
``habitat_helpers/resources/eunis_hierarchy.csv`` is derived from that workbook by
``scripts/build_eunis_table.py``: 7 level-1 formations (N, Q, R, S, T, U, V),
42 level-2 groups and 270 level-3 habitats, each with its parent, English name and the
workbook's CORINE Land Cover crosswalk.

A EUNIS code spells its own path: ``R22`` lies under ``R2`` under ``R``; so the code at a
coarser level is a prefix of the finer one.
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

from . import paths

LEVELS = (1, 2, 3)


@lru_cache(maxsize=1)
def _table() -> pd.DataFrame:
    table = pd.read_csv(paths.resource("eunis_hierarchy.csv"), dtype=str, keep_default_na=False)
    table["level"] = table["level"].astype(int)
    return table.set_index("code", drop=False)


def hierarchy() -> pd.DataFrame:
    """The hierarchy table: one row per code with ``code, level, parent, level1, level2, name,
    formation, clc_relationship, clc_code, clc_name`` (a copy: edit it freely)."""
    return _table().reset_index(drop=True).copy()


def codes(level: int) -> list[str]:
    """All codes at ``level`` (1, 2 or 3), sorted."""
    if level not in LEVELS:
        raise ValueError(f"EUNIS level must be 1, 2 or 3, not {level!r}")
    t = _table()
    return sorted(t.index[t["level"] == level])


def is_valid(code: str) -> bool:
    """True when ``code`` is a level 1-3 code of the 2021 terrestrial classification."""
    return isinstance(code, str) and code in _table().index


def check(code: str) -> str:
    """Return ``code`` stripped, or raise ``ValueError`` naming the unknown code."""
    clean = code.strip() if isinstance(code, str) else code
    if not is_valid(clean):
        raise ValueError(f"unknown EUNIS 2021 code {code!r} (expected e.g. 'R', 'R2', 'R22')")
    return clean


def level_of(code: str) -> int:
    return int(_table().at[check(code), "level"])


def rollup(code: str, level: int) -> str | None:
    """The ancestor of ``code`` at ``level`` (itself if already there), or ``None`` if ``code``
    is coarser than ``level`` (a level-1 label says nothing about level 3)."""
    code = check(code)
    if level not in LEVELS:
        raise ValueError(f"EUNIS level must be 1, 2 or 3, not {level!r}")
    return code[:level] if len(code) >= level else None


def name(code: str) -> str:
    """English name of a code, e.g. ``name('T1') == 'Deciduous broadleaved forest'``."""
    return _table().at[check(code), "name"]


def children(code: str) -> list[str]:
    """Direct children of ``code`` (level 3 codes have none here)."""
    t = _table()
    return sorted(t.index[t["parent"] == check(code)])


# --- EUNIS-ESy strings (EVA "Expert System" column) -------------------------------------------

_MISSING = {"", "?", "nan", "none", "na", "n/a", "-"}


def parse_esy(value) -> list[str]:
    """Parse one EUNIS-ESy cell as found in EVA exports into valid codes.

    * several comma-separated codes: ``"R22, R23"`` -> ``["R22", "R23"]``
    * ``!``-flagged codes lose the flag: ``"R23!"`` -> ``["R23"]``
    * ESy groupings (a level-1 letter plus a lower-case letter, e.g. ``"Qa"``, ``"Sb"``) map to
      their level-1 parent: ``"Qa"`` -> ``["Q"]``
    * empty, ``?`` or NaN -> ``[]``

    Raises ``ValueError`` naming the part that is not a EUNIS 2021 code.
    """
    if value is None or (isinstance(value, float) and value != value):
        return []
    out: list[str] = []
    for part in str(value).split(","):
        token = part.strip().rstrip("!").strip()
        if token.lower() in _MISSING:
            continue
        if len(token) == 2 and token[0].isupper() and token[1].islower() and is_valid(token[0]):
            token = token[0]
        if not is_valid(token):
            raise ValueError(f"unknown EUNIS code {part.strip()!r} in {value!r}")
        if token not in out:
            out.append(token)
    return out


def common_ancestor(codes: list[str]) -> str | None:
    """Deepest code that all ``codes`` lie under (``["R22", "R23"]`` -> ``"R2"``), or ``None``
    when they share no level-1 formation or the list is empty."""
    if not codes:
        return None
    prefix = codes[0]
    for code in codes[1:]:
        n = 0
        while n < min(len(prefix), len(code)) and prefix[n] == code[n]:
            n += 1
        prefix = prefix[:n]
    return prefix or None


def esy_label(value) -> str | None:
    """One training label from an EUNIS-ESy cell: the deepest level that all its codes agree on.

    ``"R22"`` -> ``"R22"``; ``"R22, R23!"`` -> ``"R2"``; ``"R22, T11"`` -> ``None`` (no common
    formation: the plot is not labelled); ``"Sb"`` -> ``"S"``; ``"?"`` -> ``None``.
    """
    return common_ancestor(parse_esy(value))


def level_columns(code: str | None) -> dict[str, str | None]:
    """``{"label_l1", "label_l2", "label_l3"}`` for a code, ``None`` below its own level."""
    if not isinstance(code, str):  # None, NaN: no label
        return {"label_l1": None, "label_l2": None, "label_l3": None}
    code = check(code)
    return {f"label_l{k}": (code[:k] if len(code) >= k else None) for k in LEVELS}


class LevelEncoder:
    """Integer labels for one EUNIS level, keeping unknown codes out with a reported count.

    ``fit`` learns the classes present at ``level`` (codes are rolled up; coarser codes
    are ignored). ``transform`` gives ``-1`` for missing labels, codes that are not EUNIS 2021
    codes, codes coarser than the level and classes not seen in ``fit``; ``last_report``
    counts each case, so nothing is dropped silently.
    """

    def __init__(self, level: int):
        if level not in LEVELS:
            raise ValueError(f"EUNIS level must be 1, 2 or 3, not {level!r}")
        self.level = level
        self.classes_: list[str] = []
        self.last_report: dict[str, int] = {}

    def _status(self, raw) -> tuple[str, str | None]:
        """(what happened, code at this level) for one raw label."""
        if not isinstance(raw, str) or raw.strip().lower() in _MISSING:
            return "missing", None
        code = raw.strip()
        if not is_valid(code):
            return "unknown_code", None
        rolled = rollup(code, self.level)
        return ("coarser_than_level", None) if rolled is None else ("ok", rolled)

    def fit(self, codes) -> LevelEncoder:
        self.classes_ = sorted({c for status, c in map(self._status, codes) if status == "ok"})
        return self

    def transform(self, codes):
        import numpy as np

        index = {c: i for i, c in enumerate(self.classes_)}
        out = np.full(len(codes), -1, dtype=np.int64)
        report = {"encoded": 0, "missing": 0, "unknown_code": 0, "coarser_than_level": 0, "unseen_class": 0}
        for i, raw in enumerate(codes):
            status, code = self._status(raw)
            if status == "ok" and code not in index:
                status = "unseen_class"
            if status == "ok":
                out[i] = index[code]
                report["encoded"] += 1
            else:
                report[status] += 1
        self.last_report = report
        return out

    def inverse_transform(self, ids) -> list[str | None]:
        return [self.classes_[i] if i >= 0 else None for i in ids]


def corine_links(code: str) -> list[dict]:
    """The EUNIS -> CORINE Land Cover links of a level-3 code from the EEA crosswalk:
    ``[{"relationship": "<", "clc_code": "2.1.1", "clc_name": "Non-irrigated arable land"}, ...]``."""
    row = _table().loc[check(code)]
    if not row["clc_code"]:
        return []
    rels = row["clc_relationship"].split(";")
    clc_codes = row["clc_code"].split(";")
    names = row["clc_name"].split(";")
    rels += [""] * (len(clc_codes) - len(rels))
    names += [""] * (len(clc_codes) - len(names))
    return [{"relationship": r.strip(), "clc_code": c.strip(), "clc_name": n.strip()}
            for r, c, n in zip(rels, clc_codes, names)]
