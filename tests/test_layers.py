"""The layer contract (scripts/check_layers.py, run by `make lint`): it holds for the package, and
it fails, naming the line, on a planted violation of each kind."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def layers():
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "scripts" / "check_layers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = module
    spec.loader.exec_module(module)
    return module


def test_the_package_keeps_the_contract(layers):
    assert layers.check(ROOT / "habitat_helpers") == []
    assert layers.main([str(ROOT / "habitat_helpers")]) == 0


@pytest.fixture()
def package(tmp_path):
    copy = tmp_path / "habitat_helpers"
    shutil.copytree(ROOT / "habitat_helpers", copy, ignore=shutil.ignore_patterns("resources", "__pycache__"))
    return copy


def _plant(path: Path, after: str, line: str) -> None:
    text = path.read_text()
    assert after in text
    path.write_text(text.replace(after, after + line, 1))


def test_a_lower_layer_importing_a_higher_one_fails(layers, package, capsys):
    _plant(package / "metrics.py", "from __future__ import annotations\n", "\nfrom . import evaluation\n")
    problems = layers.check(package)
    assert any("metrics (foundations) imports evaluation (evaluation), a higher layer" in p for p in problems)
    assert any("import circle" in p and "metrics" in p for p in problems)     # evaluation imports metrics
    assert layers.main([str(package)]) == 1
    assert "metrics.py:" in capsys.readouterr().err


def test_importing_the_commands_fails(layers, package):
    _plant(package / "maps.py", "from __future__ import annotations\n", "\nfrom .cli import main\n")
    assert any("maps (products) imports cli (commands)" in p for p in layers.check(package))


def test_an_import_inside_a_function_fails(layers, package):
    _plant(package / "report.py", "\ndef ", "_planted():\n    from . import maps\n    return maps\n\n\ndef ")
    assert any("report imports maps inside a function" in p for p in layers.check(package))


def test_a_module_in_no_layer_fails(layers, package):
    (package / "newstage.py").write_text("from . import paths\n")
    assert any("module 'newstage' is in no layer" in p for p in layers.check(package))
