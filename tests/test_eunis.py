import pytest

import habitat_helpers as hh


def test_level_counts_match_eunis_2021():
    table = hh.eunis.hierarchy()
    assert table.groupby("level").size().to_dict() == {1: 7, 2: 42, 3: 270}
    assert hh.eunis.codes(1) == ["N", "Q", "R", "S", "T", "U", "V"]


def test_every_code_sits_under_its_parent():
    table = hh.eunis.hierarchy()
    codes = set(table["code"])
    for row in table.itertuples():
        if row.level == 1:
            assert row.parent == ""
        else:
            assert row.parent in codes and row.code.startswith(row.parent) and len(row.code) == row.level


def test_names_rollup_and_children():
    assert hh.eunis.name("R22") == "Low and medium altitude hay meadow"
    assert hh.eunis.name("T1") == "Deciduous broadleaved forest"
    assert hh.eunis.rollup("R22", 1) == "R"
    assert hh.eunis.rollup("R22", 2) == "R2"
    assert hh.eunis.rollup("R2", 3) is None
    assert "R22" in hh.eunis.children("R2")
    assert hh.eunis.level_of("Q1") == 2


@pytest.mark.parametrize("bad", ["X1", "R99", "", "r22", None, "E1"])
def test_unknown_codes_raise(bad):
    assert not hh.eunis.is_valid(bad)
    with pytest.raises(ValueError, match="unknown EUNIS"):
        hh.eunis.check(bad)


def test_corine_crosswalk_present_for_level3():
    table = hh.eunis.hierarchy().set_index("code")
    assert table.loc["V11", "clc_code"].startswith("2.1")
    assert (table[table["level"] == 3]["clc_code"] != "").mean() > 0.8


def test_table_is_what_the_script_builds_from_the_workbook(shared_dir):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_eunis_table", hh.paths.PROJECT_ROOT / "scripts/build_eunis_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    workbook = shared_dir / "data/eunis" / module.DEFAULT_WORKBOOK.name
    records = module.build(workbook)
    shipped = hh.eunis.hierarchy()
    assert [r["code"] for r in records] == list(shipped["code"])
    assert [r["name"] for r in records] == list(shipped["name"])
