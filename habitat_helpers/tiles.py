"""Maps of any size: a region cut into tiles, the tiles predicted on dask, each written into the
map's GeoTIFFs as it arrives, and a run that was stopped picks up where it was.

:func:`habitat_helpers.maps.predict_rasters` keeps a region's rasters in memory and predicts in one
process; that is fine for a country at 5 km. Here the map's rasters live on disk from the start:

1. the region's raster (EPSG:4326, cells of ``resolution_deg``) is cut into square tiles of
   ``tile`` cells a side;
2. each tile's land cells are predicted by ``predict`` (a kept model,
   :meth:`habitat_helpers.pipeline.Pipeline.predict_locations`) on a dask cluster: a local one by
   default (one process per worker, one thread each), or the scheduler at an address, so the same
   code runs on a laptop and on a cluster; a worker holds one tile at a time;
3. the driver writes each tile into tiled working GeoTIFFs as it arrives and records it in
   ``<stem>_progress.json``; run again after an interruption and the tiles already written are
   not computed again;
4. at the end the working files become Cloud-Optimised GeoTIFFs in the layout of
   :func:`habitat_helpers.maps.write_rasters_geotiffs` (one per level with a colour table and the
   legend in its tags and in a CSV; level 3 with ``p_top`` and ``entropy`` bands), cell for cell
   what ``predict_rasters`` gives.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import maps

#: The working files and the record of finished tiles, next to the map (removed at the end).
WORK_SUFFIX = ".work.tif"


def windows(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    """The tiles of a ``height x width`` raster, row by row: ``(row_off, col_off, rows, cols)``."""
    return [(r, c, min(tile, height - r), min(tile, width - c))
            for r in range(0, height, tile) for c in range(0, width, tile)]


def tile_cells(bbox, resolution_deg: float, window, land_only: bool = True, within=None) -> pd.DataFrame:
    """The cells of one tile (``row, col`` in the whole raster, ``lat, lon`` of their centres), with
    the filters of :func:`habitat_helpers.maps.make_grid`."""
    lon_min, _, _, lat_max = bbox
    r0, c0, h, w = window
    rows, cols = np.meshgrid(np.arange(r0, r0 + h), np.arange(c0, c0 + w), indexing="ij")
    cells = pd.DataFrame({"row": rows.ravel(), "col": cols.ravel(),
                          "lat": lat_max - resolution_deg * (rows.ravel() + 0.5),
                          "lon": lon_min + resolution_deg * (cols.ravel() + 0.5)})
    return maps._keep(cells, land_only, within)


def predict_tile(predict, classes: dict[int, list[str]], bbox, resolution_deg: float, window,
                 land_only: bool = True, within=None) -> dict[str, np.ndarray]:
    """One tile's rasters: ``level1..3`` (uint8 values of the sorted ``classes``, 0 = no data),
    ``p_l3`` and ``entropy_l3`` (float32, NaN = no data), each ``rows x cols`` of the window."""
    r0, c0, h, w = window
    out = {f"level{k}": np.zeros((h, w), np.uint8) for k in (1, 2, 3)}
    out |= {"p_l3": np.full((h, w), np.nan, np.float32), "entropy_l3": np.full((h, w), np.nan, np.float32)}
    cells = tile_cells(bbox, resolution_deg, window, land_only, within)
    if len(cells):
        pred = predict(cells)
        r, c = cells["row"].to_numpy() - r0, cells["col"].to_numpy() - c0
        for k in (1, 2, 3):
            lookup = {code: i + 1 for i, code in enumerate(sorted(set(classes.get(k, ()))))}
            out[f"level{k}"][r, c] = [lookup.get(v, 0) for v in pred[f"label_l{k}"]]
        out["p_l3"][r, c] = pred["p_l3"].to_numpy(np.float32)
        out["entropy_l3"][r, c] = pred["entropy_l3"].to_numpy(np.float32)
    return out


def _paths(folder: Path, stem: str) -> dict[str, Path]:
    out = {f"level{k}": folder / f"{stem}_level{k}.tif" for k in (1, 2, 3)}
    out["uncertainty"] = folder / f"{stem}_level3_uncertainty.tif"
    return out


def _write_atomic_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _open_work(paths: dict[str, Path], height: int, width: int, bbox, res: float, tile: int, fresh: bool):
    import rasterio
    from rasterio.transform import from_origin

    profile = {"driver": "GTiff", "height": height, "width": width, "crs": "EPSG:4326",
               "transform": from_origin(bbox[0], bbox[3], res, res), "tiled": True,
               "blockxsize": max(16, tile - tile % 16), "blockysize": max(16, tile - tile % 16)}
    out = {}
    for name, path in paths.items():
        work = path.with_name(path.name + WORK_SUFFIX)
        if fresh or not work.exists():
            if name == "uncertainty":
                rasterio.open(work, "w", count=2, dtype="float32", nodata=np.nan, **profile).close()
            else:
                rasterio.open(work, "w", count=1, dtype="uint8", nodata=0, **profile).close()
        out[name] = rasterio.open(work, "r+")
    return out


def _finish(paths: dict[str, Path], classes: dict[int, list[str]], scheme) -> dict[int, dict[str, Path]]:
    """The working files become Cloud-Optimised GeoTIFFs with their legends."""
    import rasterio
    import rasterio.shutil

    written = {}
    for k in (1, 2, 3):
        path = paths[f"level{k}"]
        work = path.with_name(path.name + WORK_SUFFIX)
        legend = maps.class_legend(classes.get(k, []), scheme)
        if len(legend) > 254:
            raise ValueError(f"{len(legend)} classes do not fit in one byte")
        with rasterio.open(work, "r+") as dst:
            maps.style_class_band(dst, legend)
        rasterio.shutil.copy(work, path, driver="COG")
        work.unlink()
        written[k] = {"classes": path, "legend": path.with_name(path.stem + "_legend.csv")}
        legend.to_csv(written[k]["legend"], index=False)
    work = paths["uncertainty"].with_name(paths["uncertainty"].name + WORK_SUFFIX)
    with rasterio.open(work, "r+") as dst:
        dst.set_band_description(1, "p_top")
        dst.set_band_description(2, "entropy")
    rasterio.shutil.copy(work, paths["uncertainty"], driver="COG")
    work.unlink()
    written[3]["uncertainty"] = paths["uncertainty"]
    return written


def map_tiles(predict, classes: dict[int, list[str]], bbox, resolution_deg: float, out_dir, *, stem: str = "habitat",
              tile: int = 128, scheduler: str | None = None, workers: int | None = None, land_only: bool = True,
              within=None, scheme="eunis", key: str = "", progress: bool = True, stop_after: int | None = None
              ) -> dict:
    """Predict a region tile by tile into Cloud-Optimised GeoTIFFs (module docstring).

    ``predict(cells)`` maps a DataFrame of cells (``lat, lon``) to predictions (``label_l1..3``,
    ``p_l3``, ``entropy_l3``), e.g. a kept model's ``predict_locations``; ``classes[level]`` lists the
    codes it can give (``classifier.level_codes()``). ``scheduler``: ``None`` for a local dask
    cluster of ``workers`` processes (default: the CPU cores), ``"synchronous"`` for this process
    only, or a dask scheduler's address (``tcp://host:8786``). ``key`` names what is mapped (e.g.
    the model's folder): a half-done map of another key, region, resolution or tile size is not
    resumed but refused. ``stop_after``: stop after writing that many tiles (to test resuming).

    Returns ``{"files": {level: paths}, "cells": predicted land cells, "tiles": n, "computed":
    tiles computed in this run, "resumed": tiles found done}``."""
    from tqdm.auto import tqdm

    bbox = maps._grid_bbox(bbox, within, resolution_deg)
    height, width = maps.grid_shape(bbox, resolution_deg)
    classes = {int(k): sorted(set(v)) for k, v in classes.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = _paths(out_dir, stem)
    record_path = out_dir / f"{stem}_progress.json"
    settings = {"bbox": [float(b) for b in bbox], "resolution_deg": float(resolution_deg), "tile": int(tile),
                "land_only": bool(land_only), "classes": {str(k): v for k, v in classes.items()}, "key": str(key)}
    done: dict[str, int] = {}
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record["settings"] != settings:
            raise ValueError(f"{record_path} records a map with other settings (region, resolution, tile, model); "
                             "remove it and the *.work.tif files beside it to start again")
        done = record["done"]
    tiles = windows(height, width, tile)
    todo = [w for w in tiles if _tile_key(w) not in done]
    work = _open_work(paths, height, width, bbox, resolution_deg, tile, fresh=not done)
    cells, computed = sum(done.values()), 0
    bar = tqdm(total=len(tiles), initial=len(tiles) - len(todo), desc="map tiles", unit="tile", disable=not progress)
    try:
        for window, result in _compute(predict, classes, bbox, resolution_deg, todo, land_only, within, scheduler,
                                       workers):
            _write_tile(work, window, result)
            n = int((result["level1"] > 0).sum())
            done[_tile_key(window)] = n
            cells += n
            computed += 1
            _write_atomic_json(record_path, {"settings": settings, "done": done})
            bar.update(1)
            if stop_after is not None and computed >= stop_after and len(done) < len(tiles):
                raise MapInterrupted(f"stopped after {computed} tiles (stop_after)")
    finally:
        bar.close()
        for f in work.values():
            f.close()
    files = _finish(paths, classes, scheme)
    record_path.unlink()
    return {"files": files, "cells": cells, "tiles": len(tiles), "computed": computed,
            "resumed": len(tiles) - len(todo), "shape": (height, width), "bbox": tuple(bbox)}


class MapInterrupted(RuntimeError):
    """A map run stopped before its last tile (what was written is kept and resumed next time)."""


def _tile_key(window) -> str:
    return f"{window[0]}_{window[1]}"


def _write_tile(work: dict, window, result: dict) -> None:
    from rasterio.windows import Window

    r0, c0, h, w = window
    win = Window(c0, r0, w, h)
    for k in (1, 2, 3):
        work[f"level{k}"].write(result[f"level{k}"], 1, window=win)
    work["uncertainty"].write(result["p_l3"], 1, window=win)
    work["uncertainty"].write(result["entropy_l3"], 2, window=win)


def _compute(predict, classes, bbox, res, todo, land_only, within, scheduler, workers):
    """Yield ``(window, result)`` for every tile of ``todo`` as it is done."""
    if scheduler == "synchronous":
        for window in todo:
            yield window, predict_tile(predict, classes, bbox, res, window, land_only, within)
        return
    from dask.distributed import Client, LocalCluster, as_completed

    if scheduler:
        client, cluster = Client(scheduler), None
    else:
        cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        remote = client.scatter(predict, broadcast=True)      # the model travels once to each worker
        futures = {client.submit(predict_tile, remote, classes, bbox, res, window, land_only, within,
                                 pure=False): window for window in todo}
        for future in as_completed(futures):
            yield futures[future], future.result()
            future.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
