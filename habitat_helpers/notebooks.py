"""Execute the book's notebooks with papermill, in order, with one profile and seed.

``make book`` calls this with the ``book`` profile and builds the HTML from the executed
copies; the tests call it with ``tiny``. From the command line::

    python -m habitat_helpers notebooks --profile tiny --seed 0 --out build [--data my_spec.yml]

writes ``build/notebooks/NN_*.ipynb`` (executed copies) and ``build/outputs/NN_*/metrics.json``,
and prints the time each notebook took. ``--data`` is the notebooks' ``DATA`` parameter
(``demo`` or a data spec, see :func:`habitat_helpers.dataspec.load`).

Papermill writes the parameters it was given into a new cell under the notebook's own
``parameters`` cell; in the book that cell would repeat the parameters with other values right
under the real ones, so it is tagged ``remove-cell`` (Jupyter Book leaves it out of the page;
the executed notebook keeps it).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from . import dataspec, paths, profiles, report
from .errors import UsageError

NOTEBOOK_DIR = paths.PROJECT_ROOT / "notebooks"


def notebook_paths(folder: str | Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks (``01_...``, ``02_...``, ...) in order."""
    found = sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no numbered notebooks in {folder}")
    return found


def run_all(profile: str, seed: int, out: str | Path, notebooks: list[Path] | None = None,
            extra_parameters: dict | None = None, progress: bool = True, data: str = "demo") -> dict[str, float]:
    """Execute ``notebooks`` (default: all) into ``out/notebooks``; return seconds per notebook.

    Each notebook gets ``DATA`` (a data spec's path is made absolute), ``PROFILE``, ``SEED`` and
    ``OUTPUT_DIR = out/outputs/<name>``.
    Execution stops at the first failing notebook (papermill raises, naming the cell).
    """
    import papermill as pm

    out = Path(out).resolve()
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    if str(data).strip().lower() != "demo":
        data = str(Path(data).expanduser().resolve())   # the kernels run in out/notebooks
        if not Path(data).is_file():
            raise FileNotFoundError(f"DATA is neither 'demo' nor an existing data spec: {data}")
    extra = {"DATA": data, **(extra_parameters or {})}
    timings: dict[str, float] = {}
    with _kernel_environment():
        for nb in notebooks or notebook_paths():
            timings[nb.stem] = _execute(pm, nb, out, profile, seed, extra, progress)
    timings["total"] = round(sum(timings.values()), 1)
    (out / "timings.json").write_text(json.dumps({"profile": profile, "seed": seed, "data": data,
                                                  "seconds": timings}, indent=2))
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


def parameter_names(path: str | Path) -> list[str]:
    """The names a notebook's ``parameters`` cell assigns, in order (empty without one)."""
    import ast

    for cell in json.loads(Path(path).read_text())["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse("".join(cell["source"]))
            return [t.id for node in tree.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)]
    return []


def reads_data(path: str | Path) -> bool:
    """Whether a notebook takes the ``DATA`` parameter (chapters 1-5 do; the LUCAS case study
    reads its own points)."""
    return "DATA" in parameter_names(path)


def _execute(pm, nb: Path, out: Path, profile: str, seed: int, extra: dict | None, progress: bool) -> float:
    # OUTPUT_DIR is relative to the executed notebook (papermill runs it in out/notebooks)
    params = {"PROFILE": profile, "SEED": seed, "OUTPUT_DIR": f"../outputs/{nb.stem}", **(extra or {})}
    if not reads_data(nb):
        params.pop("DATA", None)
    start = time.perf_counter()
    executed = out / "notebooks" / nb.name
    pm.execute_notebook(str(nb), str(executed), parameters=params,
                        cwd=str(out / "notebooks"), progress_bar=progress, kernel_name="python3")
    hide_injected_parameters(executed)
    seconds = round(time.perf_counter() - start, 1)
    print(f"{nb.name}: {seconds:.1f} s", flush=True)
    return seconds


def hide_injected_parameters(path: str | Path) -> None:
    """Tag papermill's ``injected-parameters`` cell ``remove-cell`` so the book does not show it."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
            changed = True
    if changed:
        nbformat.write(nb, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m habitat_helpers notebooks`` (:data:`habitat_helpers.cli.COMMANDS`)."""
    parser.add_argument("--profile", default="book", help="tiny, book or full (default: book)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="build", help="folder for executed notebooks and outputs")
    parser.add_argument("--data", default="demo", help="DATA: 'demo' (default) or the path of a data spec (YAML)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Execute every notebook (:func:`run_all`); a failing notebook raises, naming the cell."""

    try:
        profiles.get(args.profile)
        if str(args.data).strip().lower() != "demo":
            dataspec.read_spec(args.data)          # a bad spec stops here, before any notebook runs
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None
    run_all(args.profile, args.seed, args.out, progress=not args.no_progress, data=args.data)
    return 0
