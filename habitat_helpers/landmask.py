"""Land or sea at any coordinate, from the 1 km GLOBE land mask, without holding it in memory.

The ``global-land-mask`` package ships the NOAA GLOBE mask (21,600 x 43,200 cells of 30
arc-seconds) compressed to 2.5 MB; importing ``global_land_mask.globe`` inflates it into a
0.93 GB boolean array that stays in the process. That is a large share of a laptop's memory
and of the 2 GiB a streamed country map is allowed (``benchmarks/bench_map.py``).

:func:`is_land` gives the same answers as ``globe.is_land`` (same cell indexing; tested cell by
cell) from a bit-packed copy, 117 MB on disk, written once into the cache folder
(``$HABITAT_HELPERS_CACHE/landmask/``) by streaming the package's file row block by row block,
then memory-mapped: a lookup reads only the rows it touches (Europe: about 25 MB).
"""

from __future__ import annotations

import os
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import paths

_ROWS_PER_BLOCK = 540  # 540 x 43,200 booleans = 23 MB per block while packing


def _source() -> Path:
    return paths.package_file("global_land_mask", "globe_combined_mask_compressed.npz")


def _read_member(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    with archive.open(name) as f:
        return np.lib.format.read_array(f)


def _pack(source: Path, target: Path) -> None:
    """Stream the ocean mask out of the npz and write land bits, 8 cells per byte, row-major."""
    with zipfile.ZipFile(source) as archive, archive.open("mask.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        if fortran or dtype != np.bool_ or len(shape) != 2:
            raise ValueError(f"unexpected land mask layout in {source}: {shape}, {dtype}, fortran={fortran}")
        rows, cols = shape
        tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
        packed = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(rows, (cols + 7) // 8))
        for start in range(0, rows, _ROWS_PER_BLOCK):
            n = min(_ROWS_PER_BLOCK, rows - start)
            buf = f.read(n * cols)
            if len(buf) != n * cols:
                raise ValueError(f"{source} ends early at row {start}")
            ocean = np.frombuffer(buf, dtype=np.bool_).reshape(n, cols)
            packed[start:start + n] = np.packbits(~ocean, axis=1)
        packed.flush()
        del packed
    os.replace(tmp, target)


@lru_cache(maxsize=1)
def _mask() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    source = _source()
    folder = paths.cache_dir() / "landmask"
    folder.mkdir(parents=True, exist_ok=True)
    stat = source.stat()
    target = folder / f"globe_land_packed_{stat.st_size}_{int(stat.st_mtime)}.npy"
    if not target.exists():
        _pack(source, target)
    with zipfile.ZipFile(source) as archive:
        lat, lon = _read_member(archive, "lat.npy"), _read_member(archive, "lon.npy")
    return np.load(target, mmap_mode="r"), lat, lon


def _index(values: np.ndarray, axis: np.ndarray, name: str, limit: float) -> np.ndarray:
    if np.any(np.abs(values) > limit):
        bad = values[np.abs(values) > limit]
        raise ValueError(f"{name} must lie in [-{limit:g}, {limit:g}]: got {bad[:3].tolist()} "
                         f"({bad.size} out of range)")
    clipped = np.clip(values, axis.min(), axis.max())
    return ((clipped - axis[0]) / (axis[1] - axis[0])).astype(int)


def is_land(lat, lon) -> np.ndarray:
    """Whether each ``(lat, lon)`` (WGS84 degrees) falls on land in the 1 km GLOBE mask.

    Same answers as ``global_land_mask.globe.is_land`` (most lakes count as land), a boolean
    array of the inputs' broadcast shape. Raises ``ValueError`` for ``|lat| > 90`` or ``|lon| > 180``,
    and for NaN coordinates (they have no cell)."""
    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    lat, lon = np.broadcast_arrays(lat, lon)
    if np.isnan(lat).any() or np.isnan(lon).any():
        raise ValueError(f"{int((np.isnan(lat) | np.isnan(lon)).sum())} coordinates are NaN")
    packed, lat_axis, lon_axis = _mask()
    i = _index(lat, lat_axis, "latitude", 90)
    j = _index(lon, lon_axis, "longitude", 180)
    if i.size == 0:
        return np.zeros(i.shape, dtype=bool)
    # touch the rows in sorted order so the memory map reads each page once
    order = np.argsort(i, axis=None, kind="stable")
    flat_i, flat_j = i.ravel()[order], j.ravel()[order]
    bits = (packed[flat_i, flat_j >> 3] >> (7 - (flat_j & 7))) & 1
    out = np.empty(i.size, dtype=bool)
    out[order] = bits.astype(bool)
    return out.reshape(i.shape)
