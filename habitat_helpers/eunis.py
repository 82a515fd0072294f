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
