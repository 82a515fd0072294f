"""The synthetic demo dataset, written in the real survey formats.

What is real and what is not
----------------------------
* **Real:** site coordinates are land points of Europe (1 km ``global-land-mask``, NOAA GLOBE);
  the covariates that drive the habitats are real rasters, sampled through
  :func:`habitat_helpers.environment.sample` (the very values the ``env`` input reads): Köppen-Geiger
  main classes at 1 km (Beck et al. 2018, ``koppen_main``), distance to the coast (``coast_km``)
  and latitude; habitat codes and names are EUNIS 2021.
* **Synthetic:** which habitat lies where (drawn from those covariates plus smooth random
  fields), the ground photos, the satellite patches and the survey labels' errors.

The generative story (``make_demo``, generator version 5)
----------------------------------------------------------
1. **Sites** of three data families, in their real formats and proportions (scaled down):
   LUCAS points (several ground views, a minority labelled, mostly at level 2), EVA plots
   (no photos, most labelled at levels 1-3 by EUNIS-ESy strings) and EMBAL sites (transect
   photos, a minority labelled at level 2). Every site gets a georeferenced satellite patch.
2. **Habitats.** A formation (level 1) is drawn from ``softmax(prior(covariates) + field)``:
   coastal habitats near the coast, bogs and tundra heath in cold and polar climates,
   dry grasslands in arid ones, forests and farmland in temperate ones. ``field`` is a
   smooth random field per formation (random Fourier features, ~150 km), so habitats form
   patches and neighbours share labels. Level 2 and level 3 are drawn the same way within
   their parent, with climate preferences and finer fields (~60 km, ~25 km).
3. **Ceiling.** The probabilities of step 2 are known exactly, so the best accuracy any
   model could reach from the true generating variables is computed per level
   (``manifest.json`` -> ``ceiling_accuracy``).
4. **What each modality shows.** Every habitat has a look (palette of its formation, stripe
   frequency of its group, stripe angle and a slight tint of its own). Each modality shows, per
   site and independently of the other, the look of a *perceived* habitat
   (:func:`perceived_habitat`): the site's own, or with the probabilities of
   :data:`PHOTO_CONFUSION` / :data:`SATELLITE_CONFUSION` one that differs at level 1 (drawn
   from the place's habitat distribution), 2 (the sibling group) or 3 (the sibling habitat),
   spread per site by :data:`PHOTO_JITTER` / :data:`SATELLITE_JITTER`. So every input carries
   partial information at every level; the rates are set so that single-input probes
   (:func:`habitat_helpers.calibration.input_probes`) sit near published real-data figures (:data:`habitat_helpers.calibration.PUBLISHED_FIGURES`).
5. **Appearance.** Ground photos: that look in perspective under a sky, with each view's own
   nuisance (stripe phase, horizon, exposure, colour cast, flip, occluding post, noise).
   Satellite patches: the look from above, mixed with a neighbouring habitat drawn from the
   local distribution, sometimes a cloud, as 4-band reflectance GeoTIFFs (B04, B03, B02, B08)
   in EPSG:3035 at 10 m. No nuisance is shared between photo and patch.
6. **Labels.** A survey records the wrong habitat for :data:`LABEL_ERROR_RATE` of its labelled
   sites at the level it states (:func:`survey_label`: mostly near misses, the rest from
   another branch), then EVA's ESy strings add their own forms (``'R1a'``-style groupings,
   two-habitat cells, ``'!'``). ``truth.parquet`` keeps the true habitat and the recorded label.

Files (under ``hh.paths.run_dir(profile, seed) / "demo"``)::

    lucas/lucas_harmonised.csv      LUCAS harmonised-table columns (unsigned gps_long + gps_ew,
                                    sentinels, dd/mm/yy and dd/mm/yyyy dates)
    lucas/lucas_eunis_labels.csv    point_id, year, eunis_code (the labelled minority)
    lucas/photos/{year}/{NUTS0}/{pid[0:3]}/{pid[3:6]}/{pid}{view}.jpg
    eva/eva_header.csv              EVA header export (tab-separated, 'Expert System')
    embal/embal_photos.csv          EMBAL schema of hh.datasets (one row per transect photo)
    embal/photos/*.jpg
    satellite/{lucas,eva,embal}/<id>.tif
    truth.parquet                   the true habitat of every site (exists only because synthetic),
                                    the label the survey recorded and whether it is wrong
    covariates.parquet              the generating variables and probabilities per site, and the
                                    habitat whose look the photos and the patch show
    manifest.json                   settings, counts, ceiling accuracy
    settings.json                   the settings again, read to reuse the folder (hh.cache)

``load_sites(folder)`` reads them back through :mod:`habitat_helpers.datasets`.
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

from . import cache, datasets, environment, eunis, labels, landmask, paths, profiles

GENERATOR_VERSION = 5

#: Level-3 habitats used by the demo, 6 formations x 2 groups x 2 habitats.
DEMO_HABITATS = (
    "N11", "N12", "N21", "N22",   # coastal sand beaches / shingle
    "Q11", "Q12", "Q21", "Q22",   # bogs / fens and mires
    "R11", "R12", "R21", "R22",   # dry / mesic grasslands
    "S31", "S32", "S41", "S42",   # temperate scrub / heaths
    "T11", "T12", "T31", "T32",   # broadleaved / coniferous forest
    "V11", "V12", "V31", "V32",   # arable / artificial grasslands
)
FORMATIONS = tuple(sorted({c[0] for c in DEMO_HABITATS}))
GROUPS = tuple(sorted({c[:2] for c in DEMO_HABITATS}))

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

#: Data families with their share of sites, share labelled and the level of their labels.
FAMILIES = {
    "lucas": {"share": 0.35, "labelled": 0.35, "label_levels": {2: 0.75, 3: 0.25}},
    "eva": {"share": 0.50, "labelled": 0.90, "label_levels": {3: 0.80, 2: 0.12, 1: 0.08}},
    "embal": {"share": 0.15, "labelled": 0.35, "label_levels": {2: 1.0}},
}

# Capitals (lat, lon) used to give each synthetic site a plausible NUTS0 code (nearest capital).
_CAPITALS = {
    "AT": (48.21, 16.37), "BE": (50.85, 4.35), "BG": (42.70, 23.32), "CH": (46.95, 7.45), "CZ": (50.08, 14.44),
    "DE": (52.52, 13.40), "DK": (55.68, 12.57), "EE": (59.44, 24.75), "EL": (37.98, 23.73), "ES": (40.42, -3.70),
    "FI": (60.17, 24.94), "FR": (48.86, 2.35), "HR": (45.81, 15.98), "HU": (47.50, 19.04), "IE": (53.35, -6.26),
    "IT": (41.90, 12.50), "LT": (54.69, 25.28), "LU": (49.61, 6.13), "LV": (56.95, 24.11), "NL": (52.37, 4.90),
    "NO": (59.91, 10.75), "PL": (52.23, 21.01), "PT": (38.72, -9.14), "RO": (44.43, 26.10), "SE": (59.33, 18.07),
    "SI": (46.06, 14.51), "SK": (48.15, 17.11), "UK": (51.51, -0.13), "RS": (44.79, 20.45), "BA": (43.86, 18.41),
}


def habitat_table() -> pd.DataFrame:
    """The demo habitats with their codes at each level and EUNIS names."""

    rows = []
    for code in DEMO_HABITATS:
        rows.append({"label_l3": code, "label_l2": code[:2], "label_l1": code[:1],
                     "name_l3": eunis.name(code), "name_l2": eunis.name(code[:2]),
                     "name_l1": eunis.name(code[:1])})
    return pd.DataFrame(rows)


def _in_europe(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Keep land points of Europe: drop North Africa (south of 37.5 N) and Anatolia."""

    europe = (lat >= 37.5) & ~((lon > 26.0) & (lat < 41.5))
    return europe & landmask.is_land(lat, lon)


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


#: Sites come in survey clusters (real plots are clustered; LUCAS points on a 2 km grid, EVA
#: relevés of one study area, EMBAL transects of one landscape): a cluster centre is a random
#: land point, its sites lie around it with this spread (km, per axis), and a cluster holds
#: 1 + Poisson(SITES_PER_CLUSTER - 1) sites.
SITES_PER_CLUSTER = 4.0
CLUSTER_SPREAD_KM = 2.5


def sample_clustered_points(n: int, rng: np.random.Generator, bbox=DEMO_BBOX,
                            per_cluster: float = SITES_PER_CLUSTER, spread_km: float = CLUSTER_SPREAD_KM
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` land points in survey clusters; returns ``(lat, lon, cluster)``. A member that
    falls in the sea is put back at its cluster's centre."""
    sizes = []
    while sum(sizes) < n:
        sizes.append(1 + int(rng.poisson(per_cluster - 1)))
    sizes[-1] -= sum(sizes) - n
    c_lat, c_lon = sample_land_points(len(sizes), rng, bbox)
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    dlat = rng.normal(0, spread_km / 111.2, n)
    dlon = rng.normal(0, spread_km / 111.2, n) / np.cos(np.deg2rad(c_lat[cluster]))
    lat, lon = c_lat[cluster] + dlat, c_lon[cluster] + dlon
    sea = ~_in_europe(lat, lon)
    lat[sea], lon[sea] = c_lat[cluster[sea]], c_lon[cluster[sea]]
    order = rng.permutation(n)          # clusters are not contiguous in the site table
    return lat[order], lon[order], cluster[order]


# --- covariates ------------------------------------------------------------------------------

def covariates(lat, lon) -> pd.DataFrame:
    """The real covariates that drive the demo's habitats: Köppen main class and distance to the
    coast, sampled through :func:`habitat_helpers.environment.sample` (the same values the ``env``
    input reads: one source), and latitude.

    Shore points that the Köppen raster leaves empty (missing) while the land mask calls them land
    take the class of the nearest non-empty cell within 0.1° (searched in rings)."""

    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    table, _ = environment.sample(lat, lon, ["koppen_main", "coast_km"])
    k = np.array(table["koppen_main"], dtype=float)
    for step in (0.01, 0.02, 0.05, 0.1):
        for dlat, dlon in [(step, 0), (-step, 0), (0, step), (0, -step), (step, step), (-step, -step),
                           (step, -step), (-step, step)]:
            still = np.where(np.isnan(k))[0]
            if not len(still):
                break
            ring, _ = environment.sample(np.clip(lat[still] + dlat, -90, 90), lon[still] + dlon, ["koppen_main"])
            k[still] = ring["koppen_main"].to_numpy(float)
    k = np.nan_to_num(k, nan=0.0).astype(np.int64)
    return pd.DataFrame({"koppen": k, "coast_km": table["coast_km"].to_numpy(float), "lat": lat})


# --- habitat model ---------------------------------------------------------------------------

class _Field:
    """A smooth random field on the map: random Fourier features with length scale ``scale_km``."""

    def __init__(self, rng: np.random.Generator, scale_km: float, n_features: int = 64):
        self.w = rng.normal(0, 1 / scale_km, (n_features, 2))
        self.b = rng.uniform(0, 2 * np.pi, n_features)
        self.n = n_features

    def __call__(self, xy_km: np.ndarray) -> np.ndarray:
        return np.sqrt(2 / self.n) * np.cos(xy_km @ self.w.T + self.b).sum(axis=1)


def _xy_km(lat, lon) -> np.ndarray:
    return np.column_stack([np.asarray(lat, float) * 111.2,
                            np.asarray(lon, float) * 111.2 * np.cos(np.deg2rad(50))])


def _formation_prior(cov: pd.DataFrame) -> np.ndarray:
    """Log-prior of each formation (columns in :data:`FORMATIONS` order) from the covariates."""
    k, coast, lat = cov["koppen"].to_numpy(), cov["coast_km"].to_numpy(), cov["lat"].to_numpy()
    prior = {
        "N": np.where(coast < 3, 2.5, np.where(coast < 8, 0.0, -4.0)),
        "Q": 0.8 * np.isin(k, [4, 5]) + 0.6 * (lat > 55) - 0.3,
        "R": 0.2 + 1.2 * (k == 2) + 0.3 * (k == 3),
        "S": -0.2 + 1.5 * (k == 5) + 0.4 * (k == 4) + 0.6 * (lat > 60),
        "T": 0.4 + 0.8 * (k == 4) + 0.3 * (k == 3),
        "V": 0.5 + 0.7 * ((k == 3) & (lat < 52)) + 0.5 * (k == 2),
    }
    return np.column_stack([prior[f] for f in FORMATIONS]).astype(float)


def _group_preference(cov: pd.DataFrame) -> dict[str, np.ndarray]:
    """Log-preference of each level-2 group within its formation (climate and latitude)."""
    k, coast, lat = cov["koppen"].to_numpy(), cov["coast_km"].to_numpy(), cov["lat"].to_numpy()
    cold = np.isin(k, [4, 5]).astype(float)
    pref = {
        "N1": 0.8 * (lat < 50), "N2": 0.8 * (lat >= 50),
        "Q1": 0.8 * cold, "Q2": 0.8 * (1 - cold),
        "R1": 1.0 * (k == 2), "R2": 0.8 * np.isin(k, [3, 4]),
        "S3": 0.8 * np.isin(k, [2, 3]), "S4": 0.6 * (coast < 40) + 0.6 * cold,
        "T1": 0.9 * (k == 3), "T3": 0.9 * cold,
        "V1": 0.8 * (k == 3), "V3": 0.6 * (lat > 52),
    }
    return {g: v.astype(float) for g, v in pref.items()}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


#: The softmax temperature of the habitat model (lower makes habitats more predictable from place).
#: Set so that the probe of location + environment at level 1 sits near chapter 6's score on real
#: LUCAS points (about 0.28 macro-F1): 0.6 gave 0.22-0.25 on book seeds 0-1, 0.45 gave 0.26-0.34.
HABITAT_TEMPERATURE = 0.5


def habitat_probabilities(lat, lon, cov: pd.DataFrame, rng: np.random.Generator,
                          temperature: float = HABITAT_TEMPERATURE) -> np.ndarray:
    """``P(level-3 habitat | generating variables)`` per site, ``(n, 24)`` in DEMO_HABITATS order:
    P(formation) x P(group | formation) x P(habitat | group), each a softmax of covariate
    preferences plus smooth random fields (drawn from ``rng``; the same ``rng`` state gives the
    same map) divided by ``temperature``."""
    xy = _xy_km(lat, lon)
    fields1 = {f: _Field(rng, 150.0) for f in FORMATIONS}
    fields2 = {g: _Field(rng, 60.0) for g in GROUPS}
    fields3 = {c: _Field(rng, 25.0) for c in DEMO_HABITATS}
    p1 = _softmax((_formation_prior(cov) + 1.5 * np.column_stack([fields1[f](xy) for f in FORMATIONS]))
                  / temperature)
    pref = _group_preference(cov)
    probs = np.zeros((len(xy), len(DEMO_HABITATS)))
    for fi, f in enumerate(FORMATIONS):
        groups = [g for g in GROUPS if g[0] == f]
        p2 = _softmax(np.column_stack([(pref[g] + 1.2 * fields2[g](xy)) / temperature for g in groups]))
        for gi, g in enumerate(groups):
            leaves = [c for c in DEMO_HABITATS if c[:2] == g]
            p3 = _softmax(np.column_stack([1.2 * fields3[c](xy) / temperature for c in leaves]))
            for li, leaf in enumerate(leaves):
                probs[:, DEMO_HABITATS.index(leaf)] = p1[:, fi] * p2[:, gi] * p3[:, li]
    return probs


def ceiling_accuracy(probs: np.ndarray) -> dict[str, float]:
    """Best expected accuracy per level for a model that knew the generating probabilities:
    the mean over sites of the largest class probability at that level."""
    codes = np.array(DEMO_HABITATS)
    out = {}
    for level in (1, 2, 3):
        keys = sorted({c[:level] for c in codes})
        marg = np.column_stack([probs[:, [c[:level] == k for c in codes]].sum(axis=1) for k in keys])
        out[f"level{level}"] = float(marg.max(axis=1).mean())
    return out


def cue_agreement(true_codes, photo_cues, satellite_cues, has_photo) -> dict[str, dict[str, float]]:
    """Per image input and level, the share of sites whose images show the look of a habitat that
    agrees with the true one at that level (photos: over the sites that have photos). A reader of
    the cues alone can reach about this accuracy and no more; it is the images' ceiling from the
    generating variables, as :func:`ceiling_accuracy` is location's."""
    true_codes = np.asarray(true_codes, dtype=object)
    has_photo = np.asarray(has_photo, dtype=bool)
    out = {}
    for name, cues, keep in (("photo", photo_cues, has_photo), ("satellite", satellite_cues, None)):
        cues = np.asarray(cues, dtype=object)
        if keep is not None:
            cues, truth = cues[keep], true_codes[keep]
        else:
            truth = true_codes
        out[name] = {f"level{k}": float(np.mean([c[:k] == t[:k] for c, t in zip(cues, truth)]))
                     if len(truth) else float("nan") for k in (1, 2, 3)}
    return out


# --- appearance ------------------------------------------------------------------------------

#: How often one modality shows, at one site, the cues of another habitat than the site's own, per
#: level: checked from level 1 down, the first hit replaces the formation (by a habitat of another
#: formation, drawn from the place's habitat distribution), the group (by the sibling group's
#: habitat) or the habitat (by its sibling). Drawn independently per modality and site: a photo
#: can look like the neighbouring arable field while the satellite patch shows the grassland.
#: Set from the published real-data figures (:data:`habitat_helpers.calibration.PUBLISHED_FIGURES`) before the claim was
#: re-measured: the probes (``input_probes``) of book seeds 0-2 average close to ground photos ->
#: land cover 0.89 (level 1), ground photos -> habitats 0.61-0.63 (level 2) and the low end of
#: satellite + environment -> EUNIS level 3, 0.61 (the conservative end of 0.61-0.94).
PHOTO_CONFUSION = {1: 0.05, 2: 0.17, 3: 0.20}
#: The same for satellite patches (see :data:`PHOTO_CONFUSION`).
SATELLITE_CONFUSION = {1: 0.04, 2: 0.06, 3: 0.04}
#: The per-site spread of a photo's cues around the habitat's prototype, in colour (sd, 0-1
#: scale), stripe frequency (sd of the log) and stripe angle (sd, radians).
PHOTO_JITTER = {"tint": 0.02, "frequency": 0.03, "angle": 0.05}
#: The same for satellite patches (see :data:`PHOTO_JITTER`).
SATELLITE_JITTER = {"tint": 0.02, "frequency": 0.03, "angle": 0.05}
#: The largest share of a satellite patch covered by a neighbouring habitat (mixed pixels; uniform from 0).
SATELLITE_MIX = 0.3
#: Share of survey labels (LUCAS, EVA, EMBAL) that are wrong at the level they state.
LABEL_ERROR_RATE = 0.08
#: Of the wrong labels, the share that are near misses (another habitat of the same group, or
#: another group of the same formation); the rest name a habitat of another branch.
LABEL_NEAR_MISS = 0.6


def _prototypes(rng: np.random.Generator) -> dict[str, dict]:
    """Appearance parameters of each demo habitat (level 3): palette of the formation (with a
    small tint of the habitat), stripe frequency of the group, stripe angle of the habitat."""
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


def _confuse(code: str, level: int, local: np.ndarray, rng: np.random.Generator) -> str:
    """Another habitat that agrees with ``code`` above ``level`` and differs at ``level``, drawn
    from the place's habitat distribution ``local`` (DEMO_HABITATS order) with 5 % spread evenly."""
    codes = np.array(DEMO_HABITATS)
    same_above = np.array([c[:level - 1] == code[:level - 1] for c in DEMO_HABITATS])
    other_here = np.array([c[:level] != code[:level] for c in DEMO_HABITATS])
    mask = (same_above & other_here).astype(float)
    w = np.asarray(local, float) * mask
    w = w / max(w.sum(), 1e-12) * 0.95 + 0.05 * mask / mask.sum() if w.sum() > 0 else mask / mask.sum()
    return str(codes[rng.choice(len(codes), p=w / w.sum())])


def perceived_habitat(code: str, local: np.ndarray, confusion: dict, rng: np.random.Generator) -> str:
    """The habitat whose cues one modality shows at a site whose habitat is ``code``: ``code``
    itself, or with the probabilities ``confusion[level]`` (checked from level 1 down) another
    habitat that differs at that level (drawn from the place's habitat distribution)."""
    for level in (1, 2, 3):
        if rng.random() < confusion[level]:
            return _confuse(code, level, local, rng)
    return code


def survey_label(code: str, level: int, local: np.ndarray, rng: np.random.Generator,
                 rate: float = LABEL_ERROR_RATE, near_miss: float = LABEL_NEAR_MISS) -> tuple[str, bool]:
    """The level-3 habitat a survey records for a site of habitat ``code`` labelled at ``level``
    (the caller truncates it to ``level``) and whether it is wrong there: right with probability
    ``1 - rate``; else a near miss (differs first at ``level``) with probability ``near_miss`` or
    a habitat of another branch (differs first at a level above; at level 1, always a near miss)."""
    if rng.random() >= rate:
        return code, False
    at = level if level == 1 or rng.random() < near_miss else int(rng.integers(1, level))
    return _confuse(code, at, local, rng), True


def _jittered(proto: dict, jitter: dict, rng: np.random.Generator) -> dict:
    """A site's own version of a prototype (colour, frequency and angle spread by ``jitter``)."""
    tint = rng.normal(0, jitter["tint"], 3)
    return {"dark": np.clip(proto["dark"] + tint, 0, 1), "light": np.clip(proto["light"] + tint, 0, 1),
            "frequency": proto["frequency"] * np.exp(rng.normal(0, jitter["frequency"])),
            "angle": proto["angle"] + rng.normal(0, jitter["angle"])}


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


def render_photo(proto: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ground photo (uint8, size x size x 3): sky over habitat texture in perspective, with
    the view's own nuisance (stripe phase, horizon, exposure, colour cast, flip, post, noise)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    horizon = rng.uniform(0.25, 0.5)
    depth = np.clip(yy - horizon, 1e-3, None)            # distance below the horizon line
    gx = (xx - 0.5) / (depth + 0.15)                      # ground-plane coordinates
    gy = 1.0 / (depth + 0.15)
    ground = _texture(proto, gx * 0.3, gy * 0.3, rng.uniform(0, 2 * np.pi), _smooth_noise(rng, size))
    sky_top = np.array([0.45, 0.60, 0.85]) * rng.uniform(0.8, 1.2)
    sky = sky_top + (yy[..., None] / max(horizon, 1e-3)) * 0.3
    img = np.where((yy < horizon)[..., None], sky, ground)
    img = img * rng.uniform(0.7, 1.3) + rng.normal(0, 0.04, 3)   # exposure and colour cast
    if rng.random() < 0.3:                                        # an occluding post
        x0 = rng.integers(0, size - size // 8)
        img[:, x0:x0 + size // 10] = rng.uniform(0.05, 0.3)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = img + rng.normal(0, 0.03, img.shape)                    # sensor noise
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def render_satellite(proto: dict, neighbour: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """One satellite patch (uint8, size x size x 3): texture seen from above, mixed pixels, clouds."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    own = _texture(proto, xx, yy, rng.uniform(0, 2 * np.pi), _smooth_noise(rng, size))
    other = _texture(neighbour, xx, yy, rng.uniform(0, 2 * np.pi), _smooth_noise(rng, size))
    share = rng.uniform(0.0, SATELLITE_MIX)
    img = (1 - share) * own + share * other
    img = img * rng.uniform(0.85, 1.15)
    if rng.random() < 0.25:                                        # cloud
        cloud = np.clip(_smooth_noise(rng, size, cells=4) * 1.6 - 0.6, 0, 1)[..., None]
        img = img * (1 - cloud) + 0.95 * cloud
    img = img + rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


# --- writers for the real formats ------------------------------------------------------------

def _nuts0(lat, lon) -> np.ndarray:
    names = list(_CAPITALS)
    caps = np.array([_CAPITALS[c] for c in names])
    d = np.hypot(np.asarray(lat)[:, None] - caps[None, :, 0],
                 (np.asarray(lon)[:, None] - caps[None, :, 1]) * np.cos(np.deg2rad(50)))
    return np.array(names)[d.argmin(axis=1)]


def _draw_levels(rng, n, levels: dict[int, float]) -> np.ndarray:
    return rng.choice(list(levels), size=n, p=list(levels.values()))


def _write_geotiff(path: Path, rgb: np.ndarray, x: float, y: float, rng: np.random.Generator) -> None:
    """A 4-band reflectance patch (B04, B03, B02, B08; uint16) in EPSG:3035 at 10 m, centred on
    the site's projected coordinates ``x, y``."""
    import rasterio
    from rasterio.transform import from_origin

    size = rgb.shape[0]
    refl = rgb.astype(np.float32) / 255.0 * 2700.0
    green = rgb[..., 1].astype(np.float32) / 255.0
    blue = rgb[..., 2].astype(np.float32) / 255.0
    nir = np.clip(1500 + 3000 * green - 800 * blue + rng.normal(0, 80, green.shape), 0, 10000)
    bands = np.stack([refl[..., 0], refl[..., 1], refl[..., 2], nir]).astype(np.uint16)
    transform = from_origin(x - size * 5.0, y + size * 5.0, 10.0, 10.0)
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=4, dtype="uint16",
                       crs="EPSG:3035", transform=transform) as dst:
        dst.write(bands)
        dst.descriptions = ("B04", "B03", "B02", "B08")


def _esy_string(code: str, level: int, rng: np.random.Generator) -> str:
    """How an EVA 'Expert System' cell might state ``code`` known to ``level``."""
    if level == 1:
        return code[0] if rng.random() < 0.5 else code[0] + "a"          # e.g. 'R' or grouping 'Ra'
    if level == 2:
        siblings = [c for c in DEMO_HABITATS if c[:2] == code[:2] and c != code]
        return f"{code}, {siblings[0]}" if siblings else code[:2]       # two habitats of one group
    return code + "!" if rng.random() < 0.1 else code


def make_demo(profile: str | profiles.Profile = "tiny", seed: int = 0, root: str | Path | None = None,
              overwrite: bool = False, progress: bool = True, verbose: bool = False) -> Path:
    """Write the demo dataset for ``profile`` and ``seed`` in the real formats; return its folder.

    An existing dataset with the same settings and generator version is reused unless
    ``overwrite=True`` (:mod:`habitat_helpers.cache`; ``verbose`` prints whether it was). ``root`` defaults to ``hh.paths.run_dir(profile, seed) / "demo"``.
    """
    from tqdm.auto import tqdm

    prof = profiles.get(profile) if isinstance(profile, str) else profile
    out = Path(root) if root is not None else paths.run_dir(prof.name, seed) / "demo"
    settings = {"generator_version": GENERATOR_VERSION, "profile": prof.name, "seed": seed,
                "n_sites": prof.n_sites, "views": list(prof.views), "photo_size": prof.photo_size,
                "satellite_size": prof.satellite_size, "embal_photos": prof.embal_photos_per_site,
                "families": FAMILIES, "photo_confusion": PHOTO_CONFUSION,
                "satellite_confusion": SATELLITE_CONFUSION, "photo_jitter": PHOTO_JITTER,
                "satellite_jitter": SATELLITE_JITTER, "satellite_mix": SATELLITE_MIX,
                "label_error_rate": LABEL_ERROR_RATE, "label_near_miss": LABEL_NEAR_MISS,
                "habitat_temperature": HABITAT_TEMPERATURE,
                "label_columns": list(labels.LEVEL_COLUMNS.values())}   # the truth file's columns
    manifest_path = out / "manifest.json"
    if not overwrite and manifest_path.exists() and cache.reusable(out, settings, "demo", verbose=verbose):
        return out
    if out.exists():
        shutil.rmtree(out)
    for sub in ("lucas/photos", "eva", "embal/photos", "satellite/lucas", "satellite/eva", "satellite/embal"):
        (out / sub).mkdir(parents=True)

    rng = np.random.default_rng(seed)
    n = prof.n_sites
    lat, lon, cluster = sample_clustered_points(n, rng)
    cov = covariates(lat, lon)
    probs = habitat_probabilities(lat, lon, cov, rng, HABITAT_TEMPERATURE)
    leaf = np.array([rng.choice(len(DEMO_HABITATS), p=p / p.sum()) for p in probs])
    second = np.array([rng.choice(len(DEMO_HABITATS), p=p / p.sum()) for p in probs])  # mixed pixels
    codes = np.array(DEMO_HABITATS)[leaf]
    protos = _prototypes(rng)
    family = rng.choice(list(FAMILIES), size=n, p=[f["share"] for f in FAMILIES.values()])
    labelled = rng.random(n) < np.array([FAMILIES[f]["labelled"] for f in family])
    level = np.array([_draw_levels(rng, 1, FAMILIES[f]["label_levels"])[0] for f in family])
    day = rng.integers(0, 150, n)
    native = np.empty(n, dtype=object)
    pids = rng.choice(np.arange(10_000_000, 99_999_999), size=n, replace=False)
    nuts0 = _nuts0(lat, lon)
    # what each modality shows and what the surveys record: drawn apart for every site
    look_rng = np.random.default_rng([seed, GENERATOR_VERSION])
    photo_seen = np.array([perceived_habitat(c, p, PHOTO_CONFUSION, look_rng) for c, p in zip(codes, probs)])
    sat_seen = np.array([perceived_habitat(c, p, SATELLITE_CONFUSION, look_rng) for c, p in zip(codes, probs)])
    recorded = [survey_label(c, int(k), p, look_rng) for c, k, p in zip(codes, level, probs)]
    label_code = np.array([r[0] for r in recorded])
    label_wrong = np.array([r[1] for r in recorded]) & labelled
    from pyproj import Transformer

    x3035, y3035 = Transformer.from_crs("EPSG:4326", "EPSG:3035", always_xy=True).transform(lon, lat)

    lucas_rows, lucas_labels, eva_rows, embal_rows = [], [], [], []
    for i in tqdm(range(n), desc="demo sites", unit="site", disable=not progress):
        site_rng = np.random.default_rng([seed, i])
        sat_proto = _jittered(protos[sat_seen[i]], SATELLITE_JITTER, site_rng)
        proto = _jittered(protos[photo_seen[i]], PHOTO_JITTER, site_rng) if family[i] != "eva" else None
        date = pd.Timestamp("2018-04-15") + pd.Timedelta(days=int(day[i]))
        if family[i] == "lucas":
            pid, year = str(pids[i]), 2018 if i % 2 else 2022
            native[i] = f"{pid}:{year}"
            for view in prof.views:
                path = datasets.lucas_photo_path(out / "lucas/photos", year, nuts0[i], pid, view)
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = render_photo(proto, prof.photo_size, site_rng)
                Image.fromarray(pixels).save(path, quality=90)
            sentinel = site_rng.random() < 0.03
            jitter = site_rng.normal(0, 2e-5, 2)
            lucas_rows.append({
                "point_id": pid, "year": year, "nuts0": nuts0[i],
                "th_lat": f"{lat[i]:.6f}", "th_long": f"{lon[i]:.6f}",
                "survey_date": date.replace(year=year).strftime("%d/%m/%y" if year == 2018 else "%d/%m/%Y"),
                "gps_proj": "WGS84", "gps_prec": str(int(site_rng.integers(2, 12))),
                "gps_lat": "88.888888" if sentinel else f"{lat[i] + jitter[0]:.6f}",
                "gps_ew": "West" if lon[i] < 0 else "East",
                "gps_long": "88.888888" if sentinel else f"{abs(lon[i] + jitter[1]):.6f}",
                "obs_dist": f"{site_rng.uniform(0, 50):.2f}",
                **{f"photo_{w}": ("Photo taken" if v in prof.views else "No photo")
                   for v, w in datasets._LUCAS_VIEW_WORDS.items()},
            })
            if labelled[i]:
                lucas_labels.append({"point_id": pid, "year": year, "eunis_code": label_code[i][:level[i]]})
        elif family[i] == "eva":
            native[i] = str(100_000 + i)
            esy = _esy_string(label_code[i], level[i], site_rng) if labelled[i] else ("?" if site_rng.random() < 0.3 else "")
            eva_rows.append({"PlotObservationID": native[i], "Dataset": "Synthetic demo", "Country": nuts0[i],
                             "Longitude": f"{lon[i]:.6f}", "Latitude": f"{lat[i]:.6f}",
                             "Location uncertainty (m)": str(int(site_rng.choice([10, 50, 100, 1000]))),
                             "Date of recording": date.strftime("%d.%m.%Y"), "Expert System": esy})
        else:
            native[i] = f"S{i:05d}"
            per_transect = max(1, prof.embal_photos_per_site // 2)
            for k in range(prof.embal_photos_per_site):
                rel = f"photos/{native[i]}_{k:02d}.jpg"
                pixels = render_photo(proto, prof.photo_size, site_rng)
                Image.fromarray(pixels).save(out / "embal" / rel, quality=90)
                embal_rows.append({"site": native[i], "transect": str(k // per_transect + 1),
                                   "lat": f"{lat[i]:.6f}", "lon": f"{lon[i]:.6f}", "photo": rel,
                                   "eunis_code": label_code[i][:level[i]] if labelled[i] else "",
                                   "date": date.strftime("%Y-%m-%d")})
        neighbour = _jittered(protos[DEMO_HABITATS[second[i]]], SATELLITE_JITTER, site_rng)
        sat = render_satellite(sat_proto, neighbour, prof.satellite_size, site_rng)
        name = native[i].replace(":", "_")
        _write_geotiff(out / "satellite" / family[i] / f"{name}.tif", sat, x3035[i], y3035[i], site_rng)

    pd.DataFrame(lucas_rows).to_csv(out / "lucas/lucas_harmonised.csv", index=False)
    pd.DataFrame(lucas_labels, columns=["point_id", "year", "eunis_code"]).to_csv(
        out / "lucas/lucas_eunis_labels.csv", index=False)
    pd.DataFrame(eva_rows).to_csv(out / "eva/eva_header.csv", sep="\t", index=False)
    pd.DataFrame(embal_rows).to_csv(out / "embal/embal_photos.csv", index=False)

    site_ids = [f"{f}:{nid}" for f, nid in zip(family, native)]
    truth = pd.DataFrame({"site_id": site_ids, "source": family, "label_l3": codes,
                          "label_l2": [c[:2] for c in codes], "label_l1": [c[:1] for c in codes],
                          "label": [c[:k] if lab else None for c, k, lab in zip(label_code, level, labelled)],
                          "label_wrong": label_wrong})
    truth.to_parquet(out / "truth.parquet", index=False)
    generating = cov.assign(site_id=site_ids, cluster=cluster, photo_cues=photo_seen, satellite_cues=sat_seen, koppen_name=cov["koppen"].map(environment.KOPPEN_CLASSES).fillna("none"))
    generating = pd.concat([generating, pd.DataFrame(probs, columns=[f"p_{c}" for c in DEMO_HABITATS])], axis=1)
    generating.to_parquet(out / "covariates.parquet", index=False)
    counts = {f: int((family == f).sum()) for f in FAMILIES}
    counts.update(labelled={f: int((labelled & (family == f)).sum()) for f in FAMILIES},
                  lucas_photos=len(lucas_rows) * len(prof.views), embal_photos=len(embal_rows),
                  wrong_labels=int(label_wrong.sum()))
    manifest_path.write_text(json.dumps({"settings": settings, "counts": counts, "synthetic": True,
                                         "ceiling_accuracy": ceiling_accuracy(probs),
                                         "cue_agreement": cue_agreement(codes, photo_seen, sat_seen,
                                                                        family != "eva")}, indent=2))
    cache.record(out, settings)
    return out


def load_sites(folder: str | Path, verbose: bool = False):
    """Read a demo folder back through the real-format loaders of :mod:`habitat_helpers.datasets`
    (LUCAS, EVA, EMBAL, satellite GeoTIFFs) into one site table."""
    folder = Path(folder)
    parts = [
        datasets.read_lucas(folder / "lucas/lucas_harmonised.csv", photo_root=folder / "lucas/photos",
                            labels=folder / "lucas/lucas_eunis_labels.csv", verbose=verbose),
        datasets.read_eva(folder / "eva/eva_header.csv", verbose=verbose),
        datasets.read_embal(folder / "embal/embal_photos.csv", photo_root=folder / "embal", verbose=verbose),
    ]
    parts = [datasets.read_satellite(p, folder / "satellite" / p["source"].iloc[0], verbose=verbose)
             for p in parts if len(p)]
    reports = {p["source"].iloc[0]: p.attrs.get("load_report") for p in parts}
    sites = pd.concat(parts, ignore_index=True)
    sites.attrs["load_reports"] = reports
    return sites


def load_truth(folder: str | Path) -> pd.DataFrame:
    """The true habitats (synthetic data only: real surveys have no such file)."""
    return pd.read_parquet(Path(folder) / "truth.parquet")


def true_labels(data) -> pd.DataFrame:
    """Every site's true habitat at levels 1-3 (columns ``label_l1``, ``label_l2``, ``label_l3``), row for
    row with ``data.sites`` (``data`` from ``hh.dataspec.load`` on a demo folder). Only a synthetic demo
    knows it; the recorded labels (``data.labels``) are the survey's, with their gaps and errors."""

    if not data.is_demo:
        raise ValueError(f"{data.name}: only the synthetic demo knows every site's true habitat")
    scheme = labels.get(data.label_scheme)
    truth = load_truth(data.folder).set_index("site_id")["label_l3"]
    missing = ~data.sites["site_id"].isin(truth.index)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} sites of {data.name} are not in {data.folder}/truth.parquet "
                         f"(e.g. {data.sites['site_id'][missing].iloc[0]!r})")
    true_l3 = truth.loc[data.sites["site_id"]].to_numpy(object)
    return pd.DataFrame({f"label_l{k}": [scheme.ancestor(c, k) for c in true_l3] for k in (1, 2, 3)})


def load_manifest(folder: str | Path) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text())


def habitat_sites(n: int, seed: int = 0, labelled: float = 0.5, label_error: float = LABEL_ERROR_RATE,
                  bbox=DEMO_BBOX) -> pd.DataFrame:
    """``n`` synthetic sites of the demo's habitat model, without photos or patches, at any size
    (the scale benchmark's and a large study's stand-in; no file is written).

    Steps 1, 2 and 6 of the story above: survey clusters of land points of Europe, a true level-3
    habitat drawn from :func:`habitat_probabilities` (patches at about 150, 60 and 25 km), and a
    recorded label for a random ``labelled`` share of the sites, wrong for ``label_error`` of them
    (:func:`survey_label`). Returns ``site_id, lat, lon, label_l1, label_l2, label_l3`` (the recorded
    labels, empty where unlabelled) and ``true_l3``; memory and time grow linearly with ``n``."""
    rng = np.random.default_rng([seed, 2026])
    lat, lon, _ = sample_clustered_points(n, rng, bbox)
    probs = habitat_probabilities(lat, lon, covariates(lat, lon), rng)
    cumulative = probs.cumsum(axis=1)
    leaf = (cumulative < rng.random(n)[:, None] * cumulative[:, -1:]).sum(axis=1)
    true_l3 = np.array(DEMO_HABITATS, dtype=object)[np.minimum(leaf, len(DEMO_HABITATS) - 1)]
    recorded = np.full(n, None, dtype=object)
    for i in np.flatnonzero(rng.random(n) < labelled):
        recorded[i], _ = survey_label(true_l3[i], 3, probs[i], rng, rate=label_error)
    scheme = labels.get("eunis")
    table = pd.DataFrame({"site_id": [f"S{i:07d}" for i in range(n)], "lat": lat, "lon": lon})
    for k in (1, 2, 3):
        table[f"label_l{k}"] = [None if c is None else scheme.ancestor(c, k) for c in recorded]
    table["true_l3"] = true_l3
    return table
