"""Student copies (hh.workshop): solutions removed, exercises kept, the convention checked; a copy run
with papermill up to its first exercise. The copies of the six notebooks are checked against the
session's run of the sources in tests/test_notebooks.py."""

import inspect
import json
import os
from datetime import UTC, datetime

import pytest

import habitat_helpers as hh

# Notebooks that must have at least one exercise.
WITH_EXERCISES = ("01", "02", "03", "04", "05", "06")


def _code(cid, source, tags=None):
    return {"cell_type": "code", "execution_count": None, "id": cid, "metadata": {"tags": tags} if tags else {},
            "outputs": [], "source": source}


def _markdown(cid, source):
    return {"cell_type": "markdown", "id": cid, "metadata": {}, "source": source}


STUB = 'def double(x):\n    # return twice x\n    raise NotImplementedError("Exercise 1.1: Double it")\n'


def tiny_notebook(*, solution=True, orphan=False):
    """Title, imports, parameters, a computation, one exercise (stub, solution, call), a last cell."""
    cells = [
        _markdown("title", "# 1. A tiny notebook\n"),
        _code("imports", "import habitat_helpers as hh\n"),
        _code("params", 'PROFILE = "book"\nSEED = 0\nOUTPUT_DIR = "out"\n', ["parameters"]),
        _code("compute", "value = 21\n"),
        _markdown("ex-title", "### Exercise 1.1: Double it\n"),
        _code("ex", STUB, ["exercise"]),
        _code("sol", "def double(x):\n    return 2 * x\n", ["solution", "hide-input"]),
        _code("call", "assert double(value) == 42\n", ["exercise-call"]),
        _markdown("next", "## What's next\n"),
    ]
    cells[3]["execution_count"], cells[3]["outputs"] = 3, [{"output_type": "stream", "name": "stdout", "text": "x"}]
    if orphan:
        cells.insert(4, _code("lost", "def triple(x):\n    return 3 * x\n", ["solution"]))
    if not solution:
        cells = [c for c in cells if c["id"] != "sol"]
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def write(folder, name, nb):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(nb, indent=1) + "\n")
    return path


def ids(path):
    return [c["id"] for c in json.loads(path.read_text())["cells"]]


def test_student_copy_drops_solutions_and_outputs_and_keeps_the_rest(tmp_path):
    write(tmp_path / "src", "01_tiny.ipynb", tiny_notebook())
    [copy] = hh.workshop.make_student_copies(tmp_path / "src", tmp_path / "out")
    assert copy == (tmp_path / "out" / "01_tiny.ipynb").resolve()
    nb = json.loads(copy.read_text())
    assert ids(copy) == ["title", "imports", "params", "compute", "ex-title", "ex", "call", "next"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in nb["cells"] if c["cell_type"] == "code")
    assert "".join(nb["cells"][5]["source"]) == STUB                      # the stub, unchanged
    assert nb["cells"][2]["source"] == tiny_notebook()["cells"][2]["source"]   # no profile asked: untouched
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] == 5
    [exercise] = hh.workshop.find_exercises(nb, "01_tiny")                 # a student copy is recognised
    assert (exercise.number, exercise.title, exercise.function) == ("1.1", "Double it", "double")
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "01_tiny.ipynb" in readme and "1.1 Double it" in readme


def test_profile_sets_the_default_in_the_parameters_cell(tmp_path):
    write(tmp_path / "src", "01_tiny.ipynb", tiny_notebook())
    [copy] = hh.workshop.make_student_copies(tmp_path / "src", tmp_path / "out", profile="tiny")
    params = json.loads(copy.read_text())["cells"][2]["source"]
    assert params == ['PROFILE = "tiny"\n', "SEED = 0\n", 'OUTPUT_DIR = "out"\n']
    with pytest.raises(ValueError, match="unknown profile"):
        hh.workshop.make_student_copies(tmp_path / "src", tmp_path / "out2", profile="huge")


def test_a_solution_without_an_exercise_is_an_error_and_nothing_is_written(tmp_path):
    write(tmp_path / "src", "01_good.ipynb", tiny_notebook())
    write(tmp_path / "src", "02_bad.ipynb", tiny_notebook(orphan=True))
    with pytest.raises(ValueError, match=r"02_bad, cell 4 \(id lost\): a 'solution' cell without a preceding"):
        hh.workshop.make_student_copies(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    (lambda nb: nb["cells"].pop(6), "exercise 1.1 has no 'solution' cell"),
    (lambda nb: nb["cells"].pop(7), "expected a 'solution' or 'exercise-call' cell"),
    (lambda nb: nb["cells"].__delitem__(slice(7, None)), "exercise 1.1 has no 'exercise-call' cell"),
    (lambda nb: nb["cells"][5].update(source="def double(x):\n    raise NotImplementedError\n"),
     "NotImplementedError"),
    (lambda nb: nb["cells"][6]["metadata"]["tags"].append("exercise"), "carries one of the tags"),
    (lambda nb: nb["cells"].insert(6, _markdown("hint", "a hint\n")), "followed by an untagged cell"),
])
def test_broken_conventions_are_named(change, message):
    nb = tiny_notebook()
    change(nb)
    with pytest.raises(ValueError, match=message):
        hh.workshop.find_exercises(nb, "01_tiny")


def test_never_writes_into_the_notebooks_folder(tmp_path):
    for out in (hh.notebooks.NOTEBOOK_DIR, hh.notebooks.NOTEBOOK_DIR / "workshop"):
        with pytest.raises(ValueError, match="refusing to write"):
            hh.workshop.make_student_copies(hh.notebooks.NOTEBOOK_DIR, out)
    write(tmp_path / "src", "01_tiny.ipynb", tiny_notebook())
    with pytest.raises(ValueError, match="refusing to write"):
        hh.workshop.make_student_copies(tmp_path / "src", tmp_path / "src")


def test_a_copy_edited_or_run_since_it_was_made_is_not_overwritten(tmp_path):
    write(tmp_path / "src", "01_tiny.ipynb", tiny_notebook())
    [copy] = hh.workshop.make_student_copies(tmp_path / "src", tmp_path / "out")
    src = tiny_notebook()
    src["cells"][3]["source"] = "value = 20 + 1\n"                           # the source changed
    write(tmp_path / "src", "01_tiny.ipynb", src)
    hh.workshop.make_student_copies(tmp_path / "src", tmp_path / "out")     # untouched copy: replaced
    assert "20 + 1" in copy.read_text()
    student = json.loads(copy.read_text())
    student["cells"][5]["source"] = "def double(x):\n    return x + x\n"    # a student's work
    copy.write_text(json.dumps(student))
    with pytest.raises(FileExistsError, match="01_tiny.ipynb"):
        hh.workshop.make_student_copies(tmp_path / "src", tmp_path / "out")
    assert "x + x" in copy.read_text()
    hh.workshop.make_student_copies(tmp_path / "src", tmp_path / "out", overwrite=True)
    assert "x + x" not in copy.read_text()


def test_command_line(tmp_path, capsys):
    write(tmp_path / "src", "01_tiny.ipynb", tiny_notebook())
    assert hh.cli.main(["workshop", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 0
    assert "01_tiny.ipynb: 1 exercise(s)" in capsys.readouterr().out
    assert hh.cli.main(["workshop", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "out"),
                        "--check"]) == 0
    assert "ok   01_tiny: 5 code cells ran, stopped at call (NotImplementedError: Exercise 1.1: Double it)" in \
        capsys.readouterr().out
    write(tmp_path / "src", "02_bad.ipynb", tiny_notebook(orphan=True))
    assert hh.cli.main(["workshop", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 2
    assert "without a preceding 'exercise' cell" in capsys.readouterr().err


def test_the_student_copy_runs_up_to_the_exercise(tmp_path):
    """papermill, as for the real notebooks: the copy stops at the call; the source runs through."""
    write(tmp_path / "src", "01_tiny.ipynb", tiny_notebook())
    hh.workshop.make_student_copies(tmp_path / "src", tmp_path / "out")
    [run] = hh.workshop.run_student_copies(tmp_path / "out", "tiny", 0, tmp_path / "run")
    assert run.ok and run.stopped_at == run.first_call == "call"
    assert run.error == "NotImplementedError: Exercise 1.1: Double it"
    assert run.cells_run == 5                      # imports, parameters, injected parameters, compute, stub
    [source] = hh.workshop.run_student_copies(tmp_path / "src", "tiny", 0, tmp_path / "run-source")
    assert source.stopped_at is None and source.error is None and not source.ok  # has a call, never stopped


@pytest.mark.parametrize("path", hh.notebooks.notebook_paths(), ids=lambda p: p.stem)
def test_source_notebooks_follow_the_convention(path):
    nb = json.loads(path.read_text())
    exercises = hh.workshop.find_exercises(nb, path.stem)
    if path.stem[:2] in WITH_EXERCISES:
        assert len(exercises) >= 1, f"{path.name} has no exercise"
    cells = {c["id"]: c for c in nb["cells"]}
    for k, exercise in enumerate(exercises, 1):
        assert exercise.number == f"{int(path.stem[:2])}.{k}", "exercises are numbered <chapter>.<n>"
        # the exercise cell only defines the stub; the stub raises with its message
        namespace = {}
        exec("".join(cells[exercise.exercise_cell]["source"]), namespace)
        stub = namespace[exercise.function]
        required = [p for p in inspect.signature(stub).parameters.values() if p.default is p.empty]
        with pytest.raises(NotImplementedError, match=f"Exercise {exercise.number}: "):
            stub(*[None] * len(required))
        # exercises come after the notebook records its metrics
        order = list(cells)
        assert order.index(exercise.exercise_cell) > max(
            i for i, c in enumerate(nb["cells"]) if "hh.records.write_" in "".join(c["source"]))
    for cell in nb["cells"]:
        if "solution" in cell["metadata"].get("tags", []):
            assert "hide-input" in cell["metadata"]["tags"], "the book folds solutions"


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def _executed(cells, exercise_at=None, end=100.0):
    """An executed notebook as papermill writes it: code cell i started at t = 10 i, the run ended at
    ``end``; the cell ``exercise_at`` is tagged 'exercise'."""
    out = []
    for i, cid in enumerate(cells):
        tags = ["exercise"] if i == exercise_at else []
        out.append(_code(cid, "pass\n") | {"metadata": {"tags": tags, "papermill": {"start_time": _stamp(10 * i)}}})
    return {"cells": out, "metadata": {"papermill": {"end_time": _stamp(end)}}, "nbformat": 4, "nbformat_minor": 5}


def test_files_written_while_the_exercises_ran_are_named(tmp_path):
    """A source notebook's exercises ran from t=30 to the end at t=100 (papermill's time stamps): a file
    written then is one a student copy, stopped at its first exercise, never writes."""
    run = write(tmp_path / "run" / "notebooks", "02_x.ipynb", _executed(["a", "b", "c", "ex", "d"], 3))
    cache = tmp_path / "cache"
    for name, mtime in [("before.npz", 29.0), ("during.npz", 30.0), ("late.npz", 99.5), ("after.npz", 101.0)]:
        path = cache / "runs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        os.utime(path, (mtime, mtime))
    os.utime(run, (50.0, 50.0))                       # the notebook itself is rewritten while it runs
    found = hh.workshop.written_during_exercises(run, [cache, tmp_path / "run"])
    assert [p.name for p in found] == ["during.npz", "late.npz"]
    no_exercise = write(tmp_path / "run" / "notebooks", "01_x.ipynb", _executed(["a", "b"]))
    assert hh.workshop.written_during_exercises(no_exercise, [cache]) == []
