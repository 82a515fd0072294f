"""The synthetic demo dataset: invented habitats and pictures over real European land points.

What is real and what is not
----------------------------
* **Real:** site coordinates are land points of Europe, checked against the 1 km
  ``global-land-mask`` raster (NOAA GLOBE); habitat codes and names are EUNIS 2021
  codes (:mod:`habitat_helpers.eunis`).
* **Synthetic:** which habitat lies where, the ground photos and the satellite patches.

How the data are made (``make_demo``)
--------------------------------------
1. **Habitat field.** ``4 x n_classes`` anchor points are drawn on land and each gets one of
   the 24 demo level-3 habitats (:data:`DEMO_HABITATS`). A site takes the habitat of its
   nearest anchor (a Voronoi map), or with probability ``boundary_noise`` its second nearest,
   so neighbouring sites mostly share habitats, as in real landscapes.
2. **Appearance.** Each habitat has a prototype: a palette set by its level-1 formation
   (sand for coastal, dark green for forest ...), a stripe frequency set by its level-2
   group, and an orientation and tint set by its level-3 code. Siblings therefore differ
   only in subtle details, which makes levels 2 and 3 harder than level 1.
3. **Ground photos** (``views`` per site, e.g. N/E/S/W) show sky over ground texture in
   perspective. All views of a site share the habitat and a site-specific phase and tint;
   each view adds its own nuisance: horizon height, exposure, colour cast, flip, an
   occluding post and sensor noise. Aligning views can learn to ignore the nuisance.
4. **Satellite patches** show the texture from above, blended with the habitat of the next
   anchor (mixed pixels) and sometimes covered by cloud.
5. **Labels.** ``label_fraction`` of sites carry a EUNIS code: most at level 3, some only at
   level 2 or 1 (as in survey data). Only ~80 % of sites have photos (``photo_fraction``);
   every site has GPS and a satellite patch.

Files (under ``hh.paths.run_dir(profile, seed) / "demo"``)::

    sites.parquet      GeoParquet site table (EPSG:4326), one row per site, in the schema of
                       hh.datasets (photos and photo_views as lists; paths relative to the folder)
    truth.parquet      the hidden true habitat of every site (exists only because synthetic)
    photos/<site number>_<view>.jpg
    satellite/<site number>.png
    manifest.json      profile, seed, counts, generator version

The same ``(profile, seed)`` gives byte-identical files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from . import datasets, eunis, paths, profiles

GENERATOR_VERSION = 2

#: Level-3 habitats used by the demo: 6 formations x 2 groups x 2 habitats.
DEMO_HABITATS = (
    "N11", "N12", "N21", "N22",   # coastal sand beaches / shingle
    "Q11", "Q12", "Q21", "Q22",   # bogs / fens and mires
    "R11", "R12", "R21", "R22",   # dry / mesic grasslands
    "S41", "S42", "S31", "S32",   # heaths / temperate scrub
    "T11", "T12", "T31", "T32",   # broadleaved / coniferous forest
    "V11", "V12", "V31", "V32",   # arable / artificial grasslands
)

# Base colours (RGB, 0-1) of each level-1 formation's palette: (dark, light).
_FORMATION_PALETTE = {
    "N": ((0.62, 0.56, 0.42), (0.93, 0.88, 0.72)),
    "Q": ((0.25, 0.28, 0.20), (0.55, 0.55, 0.35)),
    "R": ((0.35, 0.50, 0.20), (0.70, 0.80, 0.40)),
    "S": ((0.35, 0.25, 0.30), (0.62, 0.50, 0.52)),
    "T": ((0.08, 0.20, 0.08), (0.30, 0.45, 0.22)),
    "V": ((0.50, 0.40, 0.18), (0.85, 0.75, 0.40)),
}
_GROUP_FREQUENCY = (3.0, 7.0)  # stripe cycles across an image for the 1st / 2nd group of a formation

# Europe without North Africa and Anatolia (lon_min, lat_min, lon_max, lat_max).
DEMO_BBOX = (-10.0, 36.0, 30.0, 62.0)


def habitat_table() -> pd.DataFrame:
    """The demo habitats with their codes at each level and EUNIS names."""
    rows = []
    for code in DEMO_HABITATS:
        rows.append({"eunis_l3": code, "eunis_l2": code[:2], "eunis_l1": code[:1],
                     "name_l3": eunis.name(code), "name_l2": eunis.name(code[:2]),
                     "name_l1": eunis.name(code[:1])})
    return pd.DataFrame(rows)


def _in_europe(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Keep land points of Europe: drop North Africa (south of 37.5 N) and Anatolia."""
    from global_land_mask import globe

    europe = (lat >= 37.5) & ~((lon > 26.0) & (lat < 41.5))
    return europe & globe.is_land(lat, lon)


def sample_land_points(n: int, rng: np.random.Generator, bbox=DEMO_BBOX) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random land points of Europe (uniform in lat/lon, rejection-sampled on the land mask)."""
    lon_min, lat_min, lon_max, lat_max = bbox
    lats, lons = [], []
    have = 0
    while have < n:
        lat = rng.uniform(lat_min, lat_max, 4 * n)
        lon = rng.uniform(lon_min, lon_max, 4 * n)
        keep = _in_europe(lat, lon)
        lats.append(lat[keep])
        lons.append(lon[keep])
        have += int(keep.sum())
    return np.concatenate(lats)[:n], np.concatenate(lons)[:n]


def _local_xy(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Equirectangular coordinates in degrees-of-latitude units (good enough for nearest anchors)."""
    return np.column_stack([lat, lon * np.cos(np.deg2rad(50.0))])


def _prototypes(rng: np.random.Generator) -> dict[str, dict]:
    """Appearance parameters of each demo habitat (see the module docstring)."""
    protos = {}
    for code in DEMO_HABITATS:
        dark, light = (np.array(c) for c in _FORMATION_PALETTE[code[0]])
        group_rank = sorted({c[:2] for c in DEMO_HABITATS if c[0] == code[0]}).index(code[:2])
        leaf_rank = sorted(c for c in DEMO_HABITATS if c[:2] == code[:2]).index(code)
        tint = rng.normal(0, 0.05, 3)
        protos[code] = {
            "dark": np.clip(dark + tint, 0, 1),
            "light": np.clip(light + tint, 0, 1),
            "frequency": _GROUP_FREQUENCY[group_rank] * (1.0 + 0.25 * leaf_rank),
            "angle": (0.25 + 0.5 * leaf_rank) * np.pi / 2 + rng.normal(0, 0.1),
        }
    return protos


def _smooth_noise(rng: np.random.Generator, size: int, cells: int = 6) -> np.ndarray:
    """Smooth random field in [0, 1] (bilinear upsampling of a coarse random grid)."""
    coarse = rng.random((cells, cells))
    field = ndimage.zoom(coarse, size / cells, order=1)[:size, :size]
    return (field - field.min()) / (np.ptp(field) + 1e-9)


def _texture(proto: dict, x: np.ndarray, y: np.ndarray, phase: float, noise: np.ndarray) -> np.ndarray:
    """Ground texture (H x W x 3) of a habitat at image coordinates ``x``, ``y`` in [0, 1]."""
    a = proto["angle"]
    wave = np.sin(2 * np.pi * proto["frequency"] * (x * np.cos(a) + y * np.sin(a)) + phase)
    t = np.clip(0.5 + 0.35 * wave + 0.4 * (noise - 0.5), 0, 1)[..., None]
    return proto["dark"] * (1 - t) + proto["light"] * t


def render_photo(proto: dict, site_phase: float, site_tint: np.ndarray, size: int,
                 rng: np.random.Generator) -> np.ndarray:
    """One ground photo (uint8, size x size x 3): sky over habitat texture in perspective."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    horizon = rng.uniform(0.25, 0.5)
    depth = np.clip(yy - horizon, 1e-3, None)            # distance below the horizon line
    gx = (xx - 0.5) / (depth + 0.15)                      # ground-plane coordinates
    gy = 1.0 / (depth + 0.15)
    ground = _texture(proto, gx * 0.3, gy * 0.3, site_phase + rng.uniform(0, 0.6),
                      _smooth_noise(rng, size))
    sky_top = np.array([0.45, 0.60, 0.85]) * rng.uniform(0.8, 1.2)
    sky = sky_top + (yy[..., None] / max(horizon, 1e-3)) * 0.3
    img = np.where((yy < horizon)[..., None], sky, ground + site_tint)
    img = img * rng.uniform(0.7, 1.3) + rng.normal(0, 0.04, 3)   # exposure and colour cast
    if rng.random() < 0.3:                                        # an occluding post
        x0 = rng.integers(0, size - size // 8)
        img[:, x0:x0 + size // 10] = rng.uniform(0.05, 0.3)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = img + rng.normal(0, 0.03, img.shape)                    # sensor noise
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def render_satellite(proto: dict, neighbour: dict, site_phase: float, size: int,
                     rng: np.random.Generator) -> np.ndarray:
    """One satellite patch (uint8, size x size x 3): texture seen from above, mixed pixels, clouds."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    own = _texture(proto, xx, yy, site_phase, _smooth_noise(rng, size))
    other = _texture(neighbour, xx, yy, rng.uniform(0, 2 * np.pi), _smooth_noise(rng, size))
    share = rng.uniform(0.0, 0.4)
    img = (1 - share) * own + share * other
    img = img * rng.uniform(0.85, 1.15)
    if rng.random() < 0.25:                                        # cloud
        cloud = np.clip(_smooth_noise(rng, size, cells=4) * 1.6 - 0.6, 0, 1)[..., None]
        img = img * (1 - cloud) + 0.95 * cloud
    img = img + rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _assign_habitats(lat, lon, rng, boundary_noise: float):
    n_classes = len(DEMO_HABITATS)
    a_lat, a_lon = sample_land_points(4 * n_classes, rng)
    a_class = rng.permutation(np.repeat(np.arange(n_classes), 4))
    d = np.linalg.norm(_local_xy(lat, lon)[:, None, :] - _local_xy(a_lat, a_lon)[None, :, :], axis=2)
    order = np.argsort(d, axis=1)
    pick = np.where(rng.random(len(lat)) < boundary_noise, order[:, 1], order[:, 0])
    nearest_other = np.where(pick == order[:, 0], order[:, 1], order[:, 0])
    return a_class[pick], a_class[nearest_other]


def make_demo(profile: str | profiles.Profile = "tiny", seed: int = 0, root: str | Path | None = None,
              overwrite: bool = False, boundary_noise: float = 0.15, progress: bool = True) -> Path:
    """Write the demo dataset for ``profile`` and ``seed``; return its folder.

    An existing dataset with the same profile, seed and generator version is reused
    unless ``overwrite=True``. ``root`` defaults to ``hh.paths.run_dir(profile, seed) / "demo"``.
    """
    from tqdm.auto import tqdm

    prof = profiles.get(profile) if isinstance(profile, str) else profile
    if not prof.synthetic:
        raise ValueError(
            f"profile {prof.name!r} runs on real data, not the synthetic demo; "
            f"see hh.profiles.get({prof.name!r}).data_paths")
    out = Path(root) if root is not None else paths.run_dir(prof.name, seed) / "demo"
    manifest = {"generator_version": GENERATOR_VERSION, "profile": prof.name, "seed": seed,
                "n_sites": prof.n_sites, "views": list(prof.views), "boundary_noise": boundary_noise,
                "photo_size": prof.photo_size, "satellite_size": prof.satellite_size,
                "label_fraction": prof.label_fraction, "photo_fraction": prof.photo_fraction}
    manifest_path = out / "manifest.json"
    if manifest_path.exists() and not overwrite:
        if json.loads(manifest_path.read_text()).get("settings") == manifest:
            return out
    if out.exists():
        shutil.rmtree(out)
    (out / "photos").mkdir(parents=True)
    (out / "satellite").mkdir()

    rng = np.random.default_rng(seed)
    n = prof.n_sites
    lat, lon = sample_land_points(n, rng)
    cls, neighbour_cls = _assign_habitats(lat, lon, rng, boundary_noise)
    protos = _prototypes(rng)
    codes = np.array(DEMO_HABITATS)[cls]

    site_ids = [f"demo:{i:06d}" for i in range(n)]
    has_photos = rng.random(n) < prof.photo_fraction
    labelled = rng.random(n) < prof.label_fraction
    label_level = rng.choice([3, 2, 1], size=n, p=[0.7, 0.2, 0.1])
    dates = pd.Timestamp("2018-04-01") + pd.to_timedelta(rng.integers(0, 180, n), unit="D")
    phases = rng.uniform(0, 2 * np.pi, n)
    tints = rng.normal(0, 0.04, (n, 3))

    photos: list[list[str]] = [[] for _ in range(n)]
    sat_paths = []
    for i in tqdm(range(n), desc="demo sites", unit="site", disable=not progress):
        site_rng = np.random.default_rng([seed, i])
        proto = protos[codes[i]]
        if has_photos[i]:
            for view in prof.views:
                rel = f"photos/{i:06d}_{view}.jpg"
                pixels = render_photo(proto, phases[i], tints[i], prof.photo_size, site_rng)
                Image.fromarray(pixels).save(out / rel, quality=90)
                photos[i].append(rel)
        rel = f"satellite/{i:06d}.png"
        pixels = render_satellite(proto, protos[DEMO_HABITATS[neighbour_cls[i]]], phases[i],
                                  prof.satellite_size, site_rng)
        Image.fromarray(pixels).save(out / rel)
        sat_paths.append(rel)

    table = pd.DataFrame({
        "site_id": site_ids,
        "source": "demo",
        "lat": lat.round(6),
        "lon": lon.round(6),
        "coord_uncertainty_m": rng.choice([5.0, 10.0, 30.0], n),
        "coord_source": "demo",
        "date": dates,
        "eunis_code": [c[:lvl] if lab else None for c, lab, lvl in zip(codes, labelled, label_level)],
        "photos": photos,
        "photo_views": [list(prof.views) if p else [] for p in photos],
        "satellite": sat_paths,
    })
    report = datasets.LoadReport("demo", rows_read=n)
    sites = datasets.finalise(table, report, verbose=False)
    datasets.write_sites(sites, out / "sites.parquet")
    truth = pd.DataFrame({"site_id": site_ids, "eunis_l3": codes,
                          "eunis_l2": [c[:2] for c in codes], "eunis_l1": [c[:1] for c in codes]})
    truth.to_parquet(out / "truth.parquet", index=False)
    counts = {"sites": n, "with_photos": int(has_photos.sum()), "labelled": int(labelled.sum()),
              "photos": int(has_photos.sum()) * len(prof.views), "satellite_patches": n}
    manifest_path.write_text(json.dumps({"settings": manifest, "counts": counts,
                                         "synthetic": True}, indent=2))
    return out


def load_sites(folder: str | Path):
    """Read a demo folder's site table (the schema of :mod:`habitat_helpers.datasets`) with
    absolute file paths."""
    folder = Path(folder)
    sites = datasets.read_sites(folder / "sites.parquet")
    sites["photos"] = [[str(folder / p) for p in ps] for ps in sites["photos"]]
    sites["satellite"] = [str(folder / p) if isinstance(p, str) else None for p in sites["satellite"]]
    return sites


def load_truth(folder: str | Path) -> pd.DataFrame:
    """The hidden true habitats (synthetic data only: real surveys have no such file)."""
    return pd.read_parquet(Path(folder) / "truth.parquet")
