"""Where things live: the cache folder, per-run folders and the read-only shared data.

One environment variable moves everything the project writes:
``HABITAT_HELPERS_CACHE`` (default ``~/.cache/habitat_helpers``). Nothing is ever written
into the git checkout except the build folders ``build/`` and ``_build/``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

CACHE_ENV = "HABITAT_HELPERS_CACHE"
SHARED_ENV = "HABITAT_HELPERS_SHARED"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """The cache root: ``$HABITAT_HELPERS_CACHE`` or ``~/.cache/habitat_helpers``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "habitat_helpers"
    return Path(root).expanduser().resolve()


def run_dir(profile: str, seed: int, data: str | None = None) -> Path:
    """Folder for one run's artefacts (demo data, embeddings, models), shared by the notebooks.

    A run is named by its profile, seed and data (``data``: the key of a data spec, see
    :class:`habitat_helpers.dataspec.Data`; ``None`` for the demo), so re-running with the same
    three reuses what is already computed, and other data never collide with it.
    """
    name = f"{profile}-seed{seed}" + (f"-{data}" if data else "")
    path = cache_dir() / "runs" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_dir() -> Path | None:
    """The read-only ``shared/`` folder beside the project (or ``$HABITAT_HELPERS_SHARED``).

    Returns ``None`` when it is absent; callers that need it must say so clearly.
    """
    candidate = Path(os.environ.get(SHARED_ENV) or PROJECT_ROOT.parent / "shared")
    return candidate if candidate.is_dir() else None


def resource(name: str) -> Path:
    """A file shipped inside the package (``habitat_helpers/resources/``)."""
    path = Path(__file__).parent / "resources" / name
    if not path.exists():
        raise FileNotFoundError(f"package resource missing: {path}")
    return path


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing the package
    (``ImportError`` if the package is absent, ``FileNotFoundError`` if the file is)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"this needs the {package!r} package (pip install {package})")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise FileNotFoundError(f"{package}'s data file is missing: {path}")
    return path
