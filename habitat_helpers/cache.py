"""Artefacts kept with the settings that made them: the one cache rule of every stage.

A stage that keeps an artefact (the demo's folder, the sites' embeddings, the trained heads) writes
the settings that made it beside it (:func:`record`). Next time it asks :func:`reusable`: when the
stored settings equal the new ones the artefact is read back; otherwise it is made again, after one
line saying what differs (or that it does not exist yet). Settings are compared as JSON, so tuples
and lists, or NumPy and Python numbers, compare equal.

Foundation layer: it knows files and JSON, nothing of the stages.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def settings_path(artefact: str | Path) -> Path:
    """Where the settings of ``artefact`` are kept: ``settings.json`` inside a folder, else
    ``<name>.settings.json`` beside the file."""
    artefact = Path(artefact)
    return artefact / "settings.json" if artefact.is_dir() or not artefact.suffix else \
        artefact.with_name(artefact.name + ".settings.json")


def _plain(settings: dict) -> dict:
    return json.loads(json.dumps(settings, default=str))


def stored(artefact: str | Path) -> dict | None:
    """The settings kept with ``artefact``, or None when it or they are missing."""
    path = settings_path(artefact)
    if not Path(artefact).exists() or not path.exists():
        return None
    return json.loads(path.read_text())


def reusable(artefact: str | Path, settings: dict, what: str, *, verbose: bool = True,
             missing: str = "not made yet") -> bool:
    """True when ``artefact`` exists with exactly ``settings``; otherwise False, after saying why
    (printed with ``verbose``, always logged): ``missing`` (where it would come from), or which
    settings differ."""
    old = stored(artefact)
    new = _plain(settings)
    if old == new:
        _say(f"{what}: read from {artefact} (made earlier with the same settings)", verbose)
        return True
    if old is None:
        _say(f"{what}: {missing}: making it now", verbose)
    else:
        differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        _say(f"{what}: {Path(artefact).name} was made with other settings ({', '.join(differ)}): making it again",
             verbose)
    return False


def record(artefact: str | Path, settings: dict) -> Path:
    """Keep ``settings`` with ``artefact`` (written atomically, after the artefact itself)."""
    path = settings_path(artefact)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_plain(settings), indent=2))
    os.replace(tmp, path)
    return path


def _say(message: str, verbose: bool) -> None:
    log.info(message)
    if verbose:
        print(message)
