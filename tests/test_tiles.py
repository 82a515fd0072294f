"""Maps tile by tile on dask: the same cells as the in-memory map, resumed after an interruption, and the
map command on a kept model."""

import json

import numpy as np
import pandas as pd
import pytest

import habitat_helpers as hh
from habitat_helpers import cli

BBOX = (5.0, 45.0, 6.0, 45.6)        # 12 x 20 cells of 0.05°, land and a little of Lake Geneva's shore
RES = 0.05


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """A kept model of GPS (raw GeoCLIP embedding), fitted on synthetic labels by latitude band."""
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(44.5, 46.5, 200), rng.uniform(4.5, 6.5, 200)
    gps = hh.embed.embed_locations(lat, lon, hh.encoders.get_encoder("geoclip-location"))
    l2 = np.where(lat > 45.3, "R2", "R1")
    labels = pd.DataFrame({"label_l1": "R", "label_l2": l2,
                           "label_l3": [c + ("1" if x < 5.5 else "2") for c, x in zip(l2, lon)]})
    model = hh.pipeline.fit(lat, lon, labels, {"gps": gps}, model="raw gps", params={"C": 1.0}, modalities=("gps",))
    folder = model.save(tmp_path_factory.mktemp("kept") / "model")
    return hh.pipeline.load(folder), folder


def _read(path):
    import rasterio

    with rasterio.open(path) as src:
        return src.read(), src.profile, src.tags(1)


def _in_memory(model):
    return hh.maps.predict_rasters(BBOX, RES, hh.pipeline.CellPredictor(model), model.classifier.level_codes(),
                                   progress=False)


def test_the_tiled_map_equals_the_in_memory_map_cell_for_cell(kept, tmp_path):
    model, _ = kept
    reference = _in_memory(model)
    out = hh.tiles.map_tiles(hh.pipeline.CellPredictor(model), model.classifier.level_codes(), BBOX, RES, tmp_path,
                             tile=8, scheduler="synchronous", progress=False)
    assert out["tiles"] == 6 and out["computed"] == 6 and out["cells"] == reference["cells"] > 100
    for k in (1, 2, 3):
        values, profile, tags = _read(out["files"][k]["classes"])
        np.testing.assert_array_equal(values[0], reference[f"level{k}"])
        assert profile["crs"] == "EPSG:4326" and values.dtype == np.uint8
        assert any(v.startswith(("R1", "R2", "R ")) for v in tags.values())          # the legend in the tags
    bands, _, _ = _read(out["files"][3]["uncertainty"])
    np.testing.assert_allclose(bands[0], reference["p_l3"], atol=1e-5)
    np.testing.assert_allclose(bands[1], reference["entropy_l3"], atol=1e-5)
    assert not list(tmp_path.glob("*.work.tif")) and not list(tmp_path.glob("*_progress.json"))
    legend = pd.read_csv(out["files"][2]["legend"])
    assert list(legend["code"]) == ["R1", "R2"]


class Counting:
    """A predictor that counts its tiles (in this process: the synchronous scheduler)."""

    def __init__(self, predict):
        self.predict, self.calls = predict, 0

    def __call__(self, cells):
        self.calls += 1
        return self.predict(cells)


def test_a_stopped_map_resumes_without_computing_its_tiles_again(kept, tmp_path):
    model, _ = kept
    classes = model.classifier.level_codes()
    first = Counting(hh.pipeline.CellPredictor(model))
    with pytest.raises(hh.tiles.MapInterrupted):
        hh.tiles.map_tiles(first, classes, BBOX, RES, tmp_path, tile=8, scheduler="synchronous", key="m",
                           progress=False, stop_after=2)
    record = json.loads((tmp_path / "habitat_progress.json").read_text())
    assert len(record["done"]) == 2 and first.calls == 2
    with pytest.raises(ValueError, match="other settings"):       # another resolution: not mixed in
        hh.tiles.map_tiles(first, classes, BBOX, 0.1, tmp_path, tile=8, scheduler="synchronous", key="m",
                           progress=False)
    again = Counting(hh.pipeline.CellPredictor(model))
    out = hh.tiles.map_tiles(again, classes, BBOX, RES, tmp_path, tile=8, scheduler="synchronous", key="m",
                             progress=False)
    assert again.calls == 4 and out["computed"] == 4 and out["resumed"] == 2
    reference = _in_memory(model)
    for k in (1, 2, 3):
        np.testing.assert_array_equal(_read(out["files"][k]["classes"])[0][0], reference[f"level{k}"])


def test_tiles_on_a_local_dask_cluster(kept, tmp_path):
    """Two worker processes, each holding the model once: the same map."""
    model, _ = kept
    out = hh.tiles.map_tiles(hh.pipeline.CellPredictor(model), model.classifier.level_codes(), BBOX, RES, tmp_path,
                             tile=8, workers=2, progress=False)
    reference = _in_memory(model)
    np.testing.assert_array_equal(_read(out["files"][3]["classes"])[0][0], reference["level3"])


def test_the_map_command_maps_a_kept_model(kept, tmp_path, capsys):
    _, folder = kept
    args = ["map", "--model", str(folder), "--bbox", ",".join(map(str, BBOX)), "--resolution", str(RES),
            "--out", str(tmp_path / "maps"), "--tile", "8", "--scheduler", "synchronous", "--no-progress"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "in 6 tiles (0 written before, 6 now)" in printed and "raw gps" in printed
    assert (tmp_path / "maps" / "habitat_level3_uncertainty.tif").exists()
    assert cli.main(["map", "--model", str(tmp_path / "none"), "--bbox", "5,45,6,46", "--resolution", "0.1"]) == 2
    assert "no pipeline.json" in capsys.readouterr().err
    assert cli.main([*args[:-1], "--tile", "4"]) == 2
