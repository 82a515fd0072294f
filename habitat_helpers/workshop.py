"""Student copies of the notebooks for a workshop: the exercises kept, their solutions removed.

The exercise convention
-----------------------
An exercise sits in the ``## Exercises`` section at the end of a notebook (after ``metrics.json`` is
written) and uses only what the notebook holds in memory at that point. It is three kinds of code
cell, tagged in the cell metadata, **in this order and next to each other**:

1. ``exercise``: the task, in comments, and a function stub whose body ends with
   ``raise NotImplementedError("Exercise 4.1: Score one fold yourself")``. The message is
   ``"Exercise <chapter>.<n>: <title>"``; the title goes into the workshop's README. The cell only
   *defines* the function, so running it never raises.
2. ``solution`` (tag ``hide-input`` too, so that the book shows it folded): one or more cells that
   define the same function again, with the answer. Definitions only; nothing to see runs here.
   Its ``def`` line ends with ``# noqa: F811`` for ``make lint``, under a comment line
   ``# replaces the exercise's stub`` (notebook code stays within 80 characters).
3. ``exercise-call``: one cell that calls the function and shows the result (a table, a plot).
   It is in both copies: in the book it runs the solution; in a student copy it runs the student's
   stub, and stops with ``NotImplementedError`` until the stub is written.

A markdown cell ``### Exercise 4.1: Score one fold yourself`` with a sentence of motivation goes
before the ``exercise`` cell (untagged; it is kept in both copies). Open questions without code stay
in a markdown list (``### More to try``). Number the exercises ``<chapter>.<n>``, unique per notebook.

Adding one, e.g. a third to notebook 04: after the last exercise (in any case after the
``hh.records.write_...`` cell), add four cells, e.g. with the ids ``exercise-4-3-title`` (markdown),
``exercise-4-3`` (tag ``exercise``), ``solution-4-3`` (tags ``solution``, ``hide-input``) and
``exercise-call-4-3`` (tag ``exercise-call``); keep the outputs stripped. ``tests/test_workshop.py``
checks the cells (``WITH_EXERCISES`` lists the notebooks that must have one); ``tests/test_notebooks.py``
checks the student copies against the test session's run of the sources (:func:`written_during_exercises`).

So the full notebook runs top to bottom under papermill (``make test``, ``make book``), and

    **student copy = source notebook minus its ``solution`` cells, with outputs cleared.**

Nothing else changes, except that ``profile=`` (``make workshop``: ``tiny``) may set the default
``PROFILE`` in the parameters cell, and the notebook metadata records what it was made from.
Running a student copy top to bottom stops at its first ``exercise-call`` cell.

:func:`make_student_copies` checks the convention first and writes nothing when a notebook breaks it
(a ``solution`` cell with no ``exercise`` cell before it, an ``exercise`` without a solution or a call,
a stub without its ``NotImplementedError`` message). It never writes into ``notebooks/``, and it does
not overwrite a student copy that was edited or run since it was made (``overwrite=True`` does).

From the command line (``make workshop``)::

    python -m habitat_helpers workshop --out build/workshop --profile tiny
    python -m habitat_helpers workshop --out build/workshop --check   # run the copies up to the first exercise
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import json
import re
import sys
from pathlib import Path

from . import notebooks, paths, profiles

EXERCISE, SOLUTION, CALL = "exercise", "solution", "exercise-call"
_ROLES = (EXERCISE, SOLUTION, CALL)
_MESSAGE = re.compile(r"""raise\s+NotImplementedError\(\s*(["'])Exercise\s+(\d+(?:\.\d+)*)\s*:\s*(.+?)\1\s*\)""")


@dataclasses.dataclass(frozen=True)
class Exercise:
    """One exercise of a notebook: its number (``"4.1"``), title and the ids of its cells."""

    notebook: str
    number: str
    title: str
    function: str
    exercise_cell: str
    call_cell: str


@dataclasses.dataclass(frozen=True)
class StudentRun:
    """Where a student copy stopped when run top to bottom (:func:`run_student_copies`)."""

    notebook: str
    cells_run: int              # code cells executed without an error
    stopped_at: str | None      # id of the cell that raised, None if none did
    error: str | None           # "NotImplementedError: Exercise 4.1: ...", None if none
    first_call: str | None      # id of the first ``exercise-call`` cell, None if the notebook has none
    seconds: float

    @property
    def ok(self) -> bool:
        """True when the copy ran cleanly up to its first exercise call and stopped there with
        ``NotImplementedError`` (or, without exercises, ran to the end)."""
        if self.first_call is None:
            return self.stopped_at is None
        return self.stopped_at == self.first_call and (self.error or "").startswith("NotImplementedError")


def _role(cell: dict, where: str) -> str | None:
    roles = [t for t in cell.get("metadata", {}).get("tags", []) if t in _ROLES]
    if len(roles) > 1:
        raise ValueError(f"{where}: a cell carries one of the tags {_ROLES}, not {roles}")
    if roles and cell["cell_type"] != "code":
        raise ValueError(f"{where}: the tag {roles[0]!r} belongs on a code cell, not a {cell['cell_type']} cell")
    return roles[0] if roles else None


def _stub(cell: dict, where: str) -> tuple[str, str, str]:
    """(number, title, function name) of an ``exercise`` cell."""
    source = "".join(cell["source"])
    found = _MESSAGE.search(source)
    if not found:
        raise ValueError(f'{where}: an exercise cell ends its stub with raise NotImplementedError("Exercise N.M: '
                         f'title")')
    functions = [node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]
    if not functions:
        raise ValueError(f"{where}: an exercise cell defines the function the student writes")
    return found.group(2), found.group(3).strip(), functions[0]


def find_exercises(nb: dict, name: str = "notebook", student: bool | None = None) -> list[Exercise]:
    """The exercises of a notebook (a dict as read from the ``.ipynb`` JSON), in order.

    Raises ``ValueError`` naming the notebook and the cell when the cells break the convention of
    this module's docstring, e.g. a ``solution`` cell with no ``exercise`` cell before it. In a
    student copy (``student=True``; by default, told by its metadata) the ``exercise-call`` cell
    follows the ``exercise`` cell directly and a ``solution`` cell is an error.
    """
    if student is None:
        student = "student_copy_of" in nb.get("metadata", {}).get("habitat_helpers", {})
    found: list[Exercise] = []
    current = None       # (number, title, function, exercise cell id) of the exercise being read
    state = None         # role of the previous cell while inside an exercise
    for i, cell in enumerate(nb["cells"]):
        where = f"{name}, cell {i} (id {cell.get('id', '?')})"
        role = _role(cell, where)
        if role == EXERCISE:
            if state is not None:
                raise ValueError(f"{where}: exercise {current[0]} before it has no {CALL!r} cell")
            current, state = (*_stub(cell, where), cell.get("id")), EXERCISE
        elif role == SOLUTION:
            if student:
                raise ValueError(f"{where}: a 'solution' cell in a student copy")
            if state not in (EXERCISE, SOLUTION):
                raise ValueError(f"{where}: a 'solution' cell without a preceding 'exercise' cell (it must follow "
                                 f"an 'exercise' cell or another 'solution' cell directly)")
            state = SOLUTION
        elif role == CALL:
            if state != (EXERCISE if student else SOLUTION):
                what = (f"exercise {current[0]} has no 'solution' cell" if state == EXERCISE and not student else
                        "an 'exercise-call' cell without a preceding 'exercise' cell")
                raise ValueError(f"{where}: {what}")
            number, title, function, exercise_id = current
            if any(e.number == number for e in found):
                raise ValueError(f"{where}: exercise number {number} is used twice")
            found.append(Exercise(name, number, title, function, exercise_id, cell.get("id")))
            current, state = None, None
        elif state is not None:
            expected = f"'solution' or '{CALL}'" if state == SOLUTION else f"'{CALL}'" if student else "'solution'"
            raise ValueError(f"{where}: exercise {current[0]} is followed by an untagged cell; expected a {expected} "
                             f"cell")
    if state is not None:
        missing = CALL if student or state == SOLUTION else "solution"
        raise ValueError(f"{name}: exercise {current[0]} has no {missing!r} cell")
    return found


def student_copy(nb: dict, name: str = "notebook", profile: str | None = None) -> dict:
    """A student copy of ``nb``: ``solution`` cells removed, outputs cleared, the rest kept.

    ``profile`` (e.g. ``"tiny"``) sets the default ``PROFILE`` in the parameters cell.
    The notebook is checked with :func:`find_exercises` first.
    """
    find_exercises(nb, name, student=False)
    out = json.loads(json.dumps(nb))                     # a deep copy
    cells = []
    for cell in out["cells"]:
        if _role(cell, name) == SOLUTION:
            continue
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
            if profile and "parameters" in cell.get("metadata", {}).get("tags", []):
                cell["source"] = _set_profile(cell["source"], profile, name)
        cells.append(cell)
    out["cells"] = cells
    out["metadata"]["habitat_helpers"] = {"student_copy_of": f"notebooks/{name}.ipynb",
                                          "cells_sha256": _cells_hash(cells)}
    return out


def _set_profile(source: list[str], profile: str, name: str) -> list[str]:
    profiles.get(profile)                                # an unknown name raises here
    text = "".join(source)
    new, count = re.subn(r"^PROFILE = .*$", f"PROFILE = {profile!r}".replace("'", '"'), text, flags=re.M)
    if count != 1:
        raise ValueError(f"{name}: the parameters cell has no line 'PROFILE = ...'")
    return new.splitlines(keepends=True)


def _cells_hash(cells: list[dict]) -> str:
    return hashlib.sha256(json.dumps(cells, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _untouched(path: Path) -> bool:
    """True when the copy at ``path`` is as :func:`student_copy` wrote it (not edited, not run)."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        return nb["metadata"]["habitat_helpers"]["cells_sha256"] == _cells_hash(nb["cells"])
    except (ValueError, KeyError, TypeError):
        return False


def _dumps(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def make_student_copies(src_dir: str | Path = notebooks.NOTEBOOK_DIR, out_dir: str | Path = "build/workshop",
                        profile: str | None = None, overwrite: bool = False) -> list[Path]:
    """Write a student copy of every numbered notebook of ``src_dir`` into ``out_dir``, and a
    ``README.md`` listing the notebooks and their exercises. Returns the notebooks' paths, in order.

    Every notebook is checked (:func:`find_exercises`) before anything is written. ``out_dir`` may
    not be ``notebooks/`` or lie inside it, nor inside ``src_dir``. A copy already in ``out_dir``
    that was edited or run since it was made (a student's work) is not overwritten: a
    ``FileExistsError`` names it, unless ``overwrite=True``.
    """
    src, out = Path(src_dir).resolve(), Path(out_dir).resolve()
    for folder in {src, notebooks.NOTEBOOK_DIR.resolve()}:
        if out == folder or folder in out.parents:
            raise ValueError(f"refusing to write student copies into {out}: it is (inside) the notebooks "
                             f"folder {folder}; choose another folder, e.g. build/workshop")
    sources = notebooks.notebook_paths(src)
    copies, exercises = {}, {}
    for path in sources:
        nb = json.loads(path.read_text(encoding="utf-8"))
        exercises[path] = find_exercises(nb, path.stem, student=False)
        copies[path] = _dumps(student_copy(nb, path.stem, profile))
    targets = {path: out / path.name for path in sources}
    edited = [t for p, t in targets.items() if t.exists() and t.read_text(encoding="utf-8") != copies[p]
              and not _untouched(t)]
    if edited and not overwrite:
        raise FileExistsError("these student copies were edited or run since they were made, and would be lost: "
                              + ", ".join(map(str, edited)) + ". Move them away, or overwrite them "
                              "(overwrite=True, or --force on the command line)")
    out.mkdir(parents=True, exist_ok=True)
    for path, target in targets.items():
        target.write_text(copies[path], encoding="utf-8")
    (out / "README.md").write_text(_readme(sources, exercises, profile), encoding="utf-8")
    return list(targets.values())


def _readme(sources: list[Path], exercises: dict[Path, list[Exercise]], profile: str | None) -> str:
    lines = [
        "# Workshop notebooks (student copies)",
        "",
        "Made by `make workshop` (`python -m habitat_helpers workshop`) from `notebooks/`: the same notebooks",
        "with the solutions of the exercises left out. Do not edit `notebooks/`; edit these copies.",
        "",
        "- Open them from the project folder with `HF_HUB_OFFLINE=1 .venv/bin/jupyter lab build/workshop` (no",
        "  model-hub lookups: everything the notebooks need is installed) and run them **in order**: notebooks",
        "  02-05 read what the earlier ones wrote into the run folder for the same `PROFILE` and `SEED`.",
        "- Run each one top to bottom (*Run → Run All Cells*). It stops at its first exercise with",
        "  `NotImplementedError`: write that function, run its cell and the one below it, and go on.",
        "- Stuck? The solution is in the book, folded under the same exercise (click to show it).",
        "",
        f"Default profile: `{profile}`." if profile else "Default profile: as in `notebooks/`.",
        "",
        "| notebook | exercises |",
        "|---|---|",
    ]
    for path in sources:
        listed = "<br>".join(f"{e.number} {e.title} (`{e.function}`)" for e in exercises[path]) or "none"
        lines.append(f"| `{path.name}` | {listed} |")
    return "\n".join(lines) + "\n"


def _first_error(nb: dict) -> tuple[int, str | None, str | None]:
    """(code cells run cleanly, id of the first cell with an error, 'Name: message') of an executed notebook."""
    run = 0
    for cell in nb["cells"]:
        if cell["cell_type"] != "code" or "papermill-error-cell-tag" in cell.get("metadata", {}).get("tags", []):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return run, cell.get("id"), f"{output.get('ename')}: {output.get('evalue')}"
        if cell.get("execution_count") is None:
            return run, cell.get("id"), "not executed"
        run += 1
    return run, None, None


def run_student_copies(folder: str | Path, profile: str, seed: int, out: str | Path,
                       progress: bool = False, extra_parameters: dict | None = None) -> list[StudentRun]:
    """Execute the student copies in ``folder`` in order with papermill, the way ``make test`` runs
    the notebooks (parameters ``PROFILE``, ``SEED``, ``OUTPUT_DIR``, plus ``extra_parameters``;
    ``out/notebooks`` as working folder; kernel ``python3``; ``HF_HUB_OFFLINE=1`` unless set; inline
    figures), and report where each stopped. A copy that stops with an exception is not an error
    here: see ``StudentRun.ok``. Each copy writes what the next one reads before its exercises, so
    the copies alone make a run.
    """
    import time

    import papermill as pm

    out = Path(out).resolve()
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    runs = []
    with notebooks._kernel_environment():
        for path in notebooks.notebook_paths(folder):
            start = time.perf_counter()
            try:
                notebooks._execute(pm, path, out, profile, seed, extra_parameters, progress)
            except pm.PapermillExecutionError:
                pass
            executed = json.loads((out / "notebooks" / path.name).read_text(encoding="utf-8"))
            calls = [c.get("id") for c in executed["cells"] if CALL in c.get("metadata", {}).get("tags", [])]
            cells_run, stopped_at, error = _first_error(executed)
            runs.append(StudentRun(path.stem, cells_run, stopped_at, error, calls[0] if calls else None,
                                   round(time.perf_counter() - start, 1)))
    return runs


def _papermill_time(stamp: str) -> float:
    """Seconds since the epoch of a papermill time stamp (ISO 8601; UTC when it names no zone)."""
    from datetime import UTC, datetime

    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def written_during_exercises(executed: str | Path, folders: list[str | Path]) -> list[Path]:
    """Files under ``folders`` that an executed *source* notebook wrote while its exercises ran.

    A student copy stops at its first exercise, so it never writes what the source notebook writes
    from its first ``exercise`` cell on; a later chapter that read such a file would fail in a
    workshop. The window is read from papermill's time stamps in ``executed`` (the start of the first
    ``exercise`` cell to the end of the run); a file counts when its modification time falls inside it.
    The executed notebooks' own folder is left out (papermill rewrites the notebook as it runs).
    An empty list means the student copies of a run like this one miss nothing the next ones read.
    """
    executed = Path(executed)
    nb = json.loads(executed.read_text(encoding="utf-8"))
    starts = [c["metadata"]["papermill"]["start_time"] for c in nb["cells"]
              if EXERCISE in c.get("metadata", {}).get("tags", []) and c["metadata"].get("papermill", {}).get("start_time")]
    if not starts:
        return []
    begin, end = _papermill_time(starts[0]), _papermill_time(nb["metadata"]["papermill"]["end_time"])
    skip = executed.parent.resolve()
    found = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and skip not in path.resolve().parents and begin <= path.stat().st_mtime <= end:
                found.append(path)
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m habitat_helpers workshop`` (:data:`habitat_helpers.cli.COMMANDS`)."""
    parser.add_argument("--src", default=str(notebooks.NOTEBOOK_DIR), help="source notebooks (default: notebooks/)")
    parser.add_argument("--out", default=str(paths.PROJECT_ROOT / "build" / "workshop"),
                        help="folder for the student copies (default: build/workshop)")
    parser.add_argument("--profile", help="default PROFILE of the copies, e.g. tiny (default: as in the sources)")
    parser.add_argument("--force", action="store_true", help="overwrite copies that were edited or run")
    parser.add_argument("--check", action="store_true",
                        help="then run the copies (tiny profile unless --profile) up to their first exercise")
    parser.add_argument("--seed", type=int, default=0, help="SEED for --check (default: 0)")


def run(args: argparse.Namespace) -> int:
    """Write the student copies and their README; with ``--check``, run them. Exit code 2 when a
    notebook breaks the exercise convention or a copy that was edited would be overwritten, 1 when
    a checked copy failed."""
    try:
        written = make_student_copies(args.src, args.out, args.profile, overwrite=args.force)
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in written:
        n = len(find_exercises(json.loads(path.read_text(encoding="utf-8")), path.stem))
        print(f"{path}: {n} exercise(s)")
    print(f"{Path(args.out) / 'README.md'}: the list of exercises")
    if not args.check:
        return 0
    runs = run_student_copies(args.out, args.profile or "tiny", args.seed, Path(args.out) / "check")
    for r in runs:
        where = f"stopped at {r.stopped_at} ({r.error})" if r.stopped_at else "ran to the end"
        print(f"{'ok  ' if r.ok else 'FAIL'} {r.notebook}: {r.cells_run} code cells ran, {where}, {r.seconds:.0f} s")
    return 0 if all(r.ok for r in runs) else 1
