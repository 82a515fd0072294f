"""Execute the book's notebooks with papermill, in order, with one profile and seed.

``make book`` calls this with the ``book`` profile and builds the HTML from the executed
copies; the tests call it with ``tiny``. From the command line::

    python -m habitat_helpers.notebooks --profile tiny --seed 0 --out build

writes ``build/notebooks/NN_*.ipynb`` (executed copies) and ``build/outputs/NN_*/metrics.json``,
and prints the time each notebook took.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from . import paths, report

NOTEBOOK_DIR = paths.PROJECT_ROOT / "notebooks"


def notebook_paths(folder: str | Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks ``01_...`` to ``05_...`` in order."""
    found = sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no numbered notebooks in {folder}")
    return found


def run_all(profile: str, seed: int, out: str | Path, notebooks: list[Path] | None = None,
            extra_parameters: dict | None = None, progress: bool = True) -> dict[str, float]:
    """Execute ``notebooks`` (default: all) into ``out/notebooks``; return seconds per notebook.

    Each notebook gets ``PROFILE``, ``SEED`` and ``OUTPUT_DIR = out/outputs/<name>``.
    Execution stops at the first failing notebook (papermill raises, naming the cell).
    """
    import papermill as pm

    out = Path(out).resolve()
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with _kernel_environment():
        for nb in notebooks or notebook_paths():
            timings[nb.stem] = _execute(pm, nb, out, profile, seed, extra_parameters, progress)
    timings["total"] = round(sum(timings.values()), 1)
    (out / "timings.json").write_text(json.dumps({"profile": profile, "seed": seed, "seconds": timings}, indent=2))
    report.write_results(out / "outputs", out / "results")   # the tables book/results.md includes
    print(f"all notebooks: {timings['total']:.1f} s ({profile} profile)", flush=True)
    return timings


@contextmanager
def _kernel_environment():
    """Environment the kernels inherit: no hub lookups unless the caller opted in, and inline
    figures (an inherited ``MPLBACKEND=Agg`` would silently drop every plot from the book)."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "MPLBACKEND")}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _execute(pm, nb: Path, out: Path, profile: str, seed: int, extra: dict | None, progress: bool) -> float:
    # OUTPUT_DIR is relative to the executed notebook (papermill runs it in out/notebooks)
    params = {"PROFILE": profile, "SEED": seed, "OUTPUT_DIR": f"../outputs/{nb.stem}", **(extra or {})}
    start = time.perf_counter()
    pm.execute_notebook(str(nb), str(out / "notebooks" / nb.name), parameters=params,
                        cwd=str(out / "notebooks"), progress_bar=progress, kernel_name="python3")
    seconds = round(time.perf_counter() - start, 1)
    print(f"{nb.name}: {seconds:.1f} s", flush=True)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="book", help="tiny, book or full (default: book)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="build", help="folder for executed notebooks and outputs")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    run_all(args.profile, args.seed, args.out, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
