"""Checks on the repository itself: notebooks, environment files, layout."""

import ast
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_six_numbered_notebooks():
    assert [p.stem[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_", "06_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, f"{path.name} carries outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_of_literals_right_after_the_imports(path):
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    first = "".join(cells[0]["source"])
    assert "import habitat_helpers as hh" in first and tagged[0] == 1, "parameters cell follows the imports cell"
    tree = ast.parse("".join(cells[1]["source"]))
    names = []
    for node in tree.body:
        assert isinstance(node, ast.Assign), "assignments only"
        ast.literal_eval(node.value)        # raises on anything but literals (numbers, strings, lists of them)
        names.append(node.targets[0].id)
    assert {"PROFILE", "SEED", "OUTPUT_DIR"} <= set(names)
    source = "".join("".join(c["source"]) for c in cells)
    assert "sys.path" not in source and "import *" not in source


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip |= {_name(r) for r in dep["pip"] if not r.startswith("-e")}
        elif _name(dep) not in {"python", "pip"}:
            conda.add(CONDA_TO_PYPI.get(_name(dep), _name(dep)))
    assert conda | pip == wanted
    assert "-e ." in next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]


def test_pinned_versions_in_pyproject_and_constraints():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for pin in ["torch==2.14.1", "torchvision==0.29.1", "geoclip==1.3.0"]:
        assert pin in deps
    constraints = (ROOT / "constraints.txt").read_text()
    for pin in ["torch==2.14.1", "torchvision==0.29.1", "geoclip==1.3.0", "papermill==", "timm=="]:
        assert pin in constraints
    assert re.search(r"^jupyter-book==1\.", constraints, re.M)


def test_readme_opens_with_the_two_commands():
    head = (ROOT / "README.md").read_text()[:1500]
    assert "make book" in head and "make test" in head
    assert "papermill" in (ROOT / "README.md").read_text()


def test_toc_lists_every_notebook_from_the_build_folder():
    toc = (ROOT / "_toc.yml").read_text()
    for nb in NOTEBOOKS:
        assert f"build/notebooks/{nb.stem}" in toc


def test_no_working_copies_in_the_tree():
    bad = [p for p in ROOT.rglob("*") if ".venv" not in p.parts and "build" not in p.parts and "_build" not in p.parts
           and (p.suffix == ".bak" or "conflicted copy" in p.name or p.name.endswith(".nbconvert.ipynb"))]
    assert not bad


def test_import_has_no_side_effects():
    import subprocess
    import sys

    code = ("import sys, habitat_helpers as hh; "
            "assert 'torch' not in sys.modules and 'habitat_helpers.demo' not in sys.modules; "
            "hh.eunis; assert 'habitat_helpers.eunis' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
