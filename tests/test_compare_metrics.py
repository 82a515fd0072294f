"""scripts/compare_metrics.py: the before/after check of a refactor finds a number that moved."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("compare_metrics", ROOT / "scripts" / "compare_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, chapter: str, metrics: dict) -> None:
    (folder / chapter).mkdir(parents=True)
    (folder / chapter / "metrics.json").write_text(json.dumps(metrics))


def test_numbers_equal_to_the_printed_precision_agree_and_a_moved_one_is_listed(tmp_path, capsys):
    compare = _script()
    before, after = tmp_path / "before", tmp_path / "after"
    _write(before, "04_classify", {"f1": {"level1": 0.51234, "level2": 0.4}, "seconds": 10, "n": [1, 2]})
    _write(after, "04_classify", {"f1": {"level1": 0.51201, "level2": 0.4}, "seconds": 99, "n": [1, 2]})
    assert compare.main([str(before), str(after)]) == 0                    # 0.512 both; timings ignored
    _write(after, "05_maps", {"cells": 3})
    (after / "04_classify" / "metrics.json").write_text(json.dumps({"f1": {"level1": 0.52, "level2": 0.4},
                                                                    "n": [1, 3]}))
    assert compare.main([str(before), str(after)]) == 1
    out = capsys.readouterr().out
    assert "04_classify/f1/level1: 0.51234 -> 0.52" in out and "04_classify/n[1]: 2 -> 3" in out
    assert "05_maps: metrics.json only after" in out and "level2" not in out
