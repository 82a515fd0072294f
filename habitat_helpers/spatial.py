"""Spatial blocks: split sites by geography so that test sites are far from training sites.

Neighbouring sites share habitats (spatial autocorrelation), so a random split lets a
model "remember" the neighbourhood and overstates its accuracy (Roberts et al. 2017,
*Ecography* 40: 913-929). Here the map is cut into square blocks of ``block_size_deg``
degrees and whole blocks go to the test set.

How large should the blocks be? ``autocorrelation_range_km`` measures how far label
agreement reaches in the data (the range of an indicator variogram), ``block_size_for_range``
turns that distance into a block side in degrees, and ``buffer_mask`` finds the training
sites within a given distance of the test sites, to be left out (a buffer; Ploton et al.
2020, *Nature Communications* 11: 4540).

The same autocorrelation is useful for training: sites within a few km of each other are
treated as positive pairs in contrastive learning (``radius_neighbours``), and
``neighbour_batches`` builds batches in which such positives actually meet.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from .labels import current_names

if TYPE_CHECKING:
    import pandas as pd


def block_ids(lat, lon, block_size_deg: float) -> np.ndarray:
    """An integer id per site for the ``block_size_deg`` x ``block_size_deg`` cell it falls in."""
    if block_size_deg <= 0:
        raise ValueError("block_size_deg must be positive")
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    row = np.floor((lat + 90.0) / block_size_deg).astype(np.int64)
    col = np.floor((lon + 180.0) / block_size_deg).astype(np.int64)
    return row * 100_000 + col


def spatial_block_split(lat, lon, block_size_deg: float, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of test sites: random whole blocks until ``test_fraction`` of sites is reached."""
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must lie strictly between 0 and 1")
    blocks = block_ids(lat, lon, block_size_deg)
    unique, counts = np.unique(blocks, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(unique))
    target = test_fraction * len(blocks)
    chosen, total = [], 0
    for k in order:
        if total >= target:
            break
        chosen.append(unique[k])
        total += counts[k]
    return np.isin(blocks, chosen)


def train_val_test_split(lat, lon, block_size_deg: float, test_fraction: float, val_fraction: float,
                         seed: int) -> np.ndarray:
    """Label each site ``"train"``, ``"val"`` or ``"test"`` by whole spatial blocks.

    Test blocks are drawn first; validation blocks (for early stopping) are then drawn from
    the remaining blocks. Every notebook that splits calls this with the same arguments, so
    the alignment (notebook 03) never sees the test blocks that the classifier (notebook 04)
    is scored on.
    """
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    split = np.full(len(lat), "train", dtype=object)
    test = spatial_block_split(lat, lon, block_size_deg, test_fraction, seed)
    split[test] = "test"
    rest = np.where(~test)[0]
    val_rest = spatial_block_split(lat[rest], lon[rest], block_size_deg, val_fraction, seed + 1)
    split[rest[val_rest]] = "val"
    return split


EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in km between points given in degrees (broadcasts)."""
    lat1, lon1, lat2, lon2 = (np.deg2rad(np.asarray(v, float)) for v in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def _labelled_subsample(lat, lon, labels, max_sites: int, seed: int):
    """The coordinates and labels of the labelled sites (label a string), at most ``max_sites``
    of them drawn at random with ``seed`` (kept in their original order)."""
    labels = np.asarray(labels, dtype=object)
    keep = np.array([isinstance(v, str) for v in labels], dtype=bool)
    idx = np.where(keep)[0]
    if len(idx) > max_sites:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_sites, replace=False))
    return np.asarray(lat, float)[idx], np.asarray(lon, float)[idx], labels[idx]


def label_agreement_by_distance(lat, lon, labels, bins_km=(0, 25, 50, 100, 200, 400, 800, 1600, 3200),
                                max_sites: int = 2000, seed: int = 0):
    """How often two labelled sites share a label, by the distance between them.

    All pairs of (at most ``max_sites``, subsampled) labelled sites are binned by distance;
    ``agreement`` is the share of pairs in a bin with the same label, and ``chance`` the share
    over all pairs. Agreement far above chance at short distances is spatial autocorrelation:
    the reason a random train/test split flatters a model and blocks are needed.
    """
    import pandas as pd

    lat, lon, labels = _labelled_subsample(lat, lon, labels, max_sites, seed)
    i, j = np.triu_indices(len(labels), k=1)
    dist = haversine_km(lat[i], lon[i], lat[j], lon[j])
    same = labels[i] == labels[j]
    which = np.digitize(dist, bins_km) - 1
    rows = []
    for b in range(len(bins_km) - 1):
        sel = which == b
        rows.append({"distance_km": f"{bins_km[b]}-{bins_km[b + 1]}", "km_mid": (bins_km[b] + bins_km[b + 1]) / 2,
                     "pairs": int(sel.sum()), "agreement": float(same[sel].mean()) if sel.any() else np.nan})
    table = pd.DataFrame(rows)
    table["chance"] = float(same.mean()) if len(same) else np.nan
    return table


@dataclasses.dataclass(frozen=True)
class RangeEstimate:
    """How far label agreement reaches: what ``autocorrelation_range_km`` returns.

    - ``range_km`` (float): the distance beyond which two labelled sites share their label no
      more often than chance (see ``autocorrelation_range_km`` for the exact rule). When
      ``decayed`` is false it is only a lower bound: the largest distance looked at.
    - ``chance`` (float): the share of all pairs of labelled sites that share their label,
      whatever their distance.
    - ``table`` (DataFrame): one row per distance bin, with ``distance_km`` (text), ``lo_km``
      and ``hi_km`` (the bin holds the pairs with ``lo_km <= distance < hi_km``), ``km_mid``,
      ``pairs``, ``agreement`` (share of the bin's pairs with the same label), ``excess``
      (``agreement - chance``), ``tolerance`` (the largest excess still counted as chance),
      ``at_chance`` (``excess <= tolerance``) and ``used`` (the bin has enough pairs to take
      part in the rule).
    - ``method`` (str): the rule and its settings, in one sentence (for a caption or a report).
    - ``n_sites`` (int): labelled sites the estimate is based on (after subsampling to
      ``max_sites``).
    - ``decayed`` (bool): whether agreement fell to chance within the distances looked at.
    - ``note`` (str): empty, or a warning to read with ``range_km``: agreement never fell to
      chance, or it was at chance from the first bin on (no clear autocorrelation).
    """

    range_km: float
    chance: float
    table: pd.DataFrame
    method: str
    n_sites: int
    decayed: bool = True
    note: str = ""


def _ceil_significant(x: float, digits: int = 2) -> float:
    """``x`` rounded up to ``digits`` significant digits (137.2 -> 140): readable bin edges."""
    if x <= 0:
        return float(x)
    scale = 10.0 ** (np.floor(np.log10(x)) - digits + 1)
    return float(round(np.ceil(x / scale - 1e-9) * scale, 12))


def _distance_bins(sorted_km: np.ndarray, min_pairs: int, step: float) -> np.ndarray:
    """Bin edges for pair distances ``sorted_km`` (ascending): from 0, each bin is at least
    ``step`` times as far out as it starts and holds at least ``min_pairs`` pairs; edges are
    rounded up to two significant digits; the last bin ends just past the largest distance."""
    n = len(sorted_km)
    edges, start = [0.0], 0
    while n - start >= 2 * min_pairs:
        # the min_pairs-th pair from here must fall inside the bin, hence "just above" it
        hi = _ceil_significant(max(edges[-1] * step, np.nextafter(sorted_km[start + min_pairs - 1], np.inf)))
        end = int(np.searchsorted(sorted_km, hi, side="left"))
        if n - end < min_pairs:  # the rest would be too few for a bin: it joins this last one
            break
        edges.append(hi)
        start = end
    edges.append(_ceil_significant(np.nextafter(sorted_km[-1], np.inf)))
    return np.array(edges)


def autocorrelation_range_km(lat, lon, labels, *, max_sites: int = 2000, seed: int = 0, bins_km=None,
                             min_pairs: int = 200, step: float = 1.2, relative_tolerance: float = 0.1,
                             z: float = 2.0, persist: int = 3, min_sites: int = 20) -> RangeEstimate:
    """The distance up to which labelled sites share their label more often than chance.

    This is the range of an indicator variogram (Journel 1983): for two sites a distance
    ``h`` apart, ``1 - agreement(h)`` is the (summed) indicator semivariance, which rises
    with ``h`` and levels off at ``1 - chance``, its sill, beyond the range. Blocks of
    spatial cross-validation should be at least that wide, so that a test site's habitat
    cannot be read off its training neighbours (Roberts et al. 2017, *Ecography* 40:
    913-929); ``block_size_for_range`` converts the range into a block side in degrees.

    Parameters
    ----------
    lat, lon : array-like of float, shape (n,)
        Coordinates in degrees (WGS84).
    labels : array-like, shape (n,)
        The habitat code of each site (a string), ``None`` or NaN where unknown; only
        labelled sites are used.
    max_sites : int, default 2000
        At most this many labelled sites, drawn at random with ``seed``, are used (all pairs
        of them are compared: 2000 sites make 2 million pairs, about a second). With the
        same ``max_sites`` and ``seed``, ``label_agreement_by_distance`` draws the same sites.
    seed : int, default 0
        Seed of the subsample.
    bins_km : sequence of float, optional
        Distance bin edges in km, increasing. Default: chosen from the data (see Notes).
        Pairs beyond the last edge are left out.
    min_pairs : int, default 200
        A bin needs this many pairs to take part in the rule (fewer when the sample is
        small: at most a tenth of all pairs, at least 10, so that there are several bins).
    step : float, default 1.2
        With the default bins, each bin reaches at least ``step`` times as far as it
        starts: about 13 bins per tenfold distance, so the range is read to about 20 %.
    relative_tolerance, z : float, default 0.1 and 2.0
        The tolerance around chance, see Notes.
    persist : int, default 3
        How many following bins must stay at chance too, see Notes.
    min_sites : int, default 20
        Fewer labelled sites than this raise ``ValueError``.

    Returns
    -------
    RangeEstimate
        ``range_km``, ``chance``, the binned ``table``, ``method``, ``n_sites``, ``decayed``
        and ``note``.

    Raises
    ------
    ValueError
        With fewer than ``min_sites`` labelled sites, when all labelled sites share one label
        (agreement is then 1 at every distance and cannot fall to chance), when ``lat``,
        ``lon`` and ``labels`` differ in length, a labelled site has a bad coordinate, or
        ``bins_km`` leaves no bin with enough pairs.

    Notes
    -----
    **Bins.** All pairs of labelled sites are sorted by great-circle distance. The default
    bins start at 0 km; each next bin reaches at least ``step`` (1.2) times as far as it
    starts and holds at least ``min_pairs`` pairs (edges rounded up to two significant
    digits, e.g. 120-150 km). Near sites are few, so the first bins are as wide as needed to
    hold enough pairs; farther out they are 20 % wide: fine enough to place the range within
    about 20 %, wide enough that each bin's agreement is measured to a few per cent.

    **Rule.** ``excess = agreement - chance`` per bin. A bin is *at chance* when its excess
    is at most ``tolerance = max(relative_tolerance * excess_first, z * se)``, with
    ``excess_first`` the excess of the first bin (the nearest pairs) and ``se =
    sqrt(chance * (1 - chance) / pairs)`` the binomial standard error of the bin's agreement
    were its pairs to agree at chance. The first part is the usual "practical range" of a
    variogram: the correlation has dropped to a tenth of its value at short distance, from
    where on what is left is of no practical use to a model (10 % rather than the 5 % often
    used for continuous variables, because a share of pairs measured on a few hundred pairs
    is too noisy to resolve 5 %). The second part keeps the rule from chasing noise: an
    excess within two standard errors cannot be told from chance (pairs share sites, so the
    true error is somewhat larger). The comparison is one-sided: agreement *below* chance,
    common at long distances when habitats follow climate gradients, counts as chance.

    ``range_km`` is the start (``lo_km``) of the first bin that is at chance **together
    with the** ``persist`` **bins after it** (or all the bins left, near the end): one noisy
    bin dipping to chance does not end the range, one noisy bin rising above it afterwards
    does not extend it.

    **Edge cases**, reported rather than hidden: if agreement is already at chance in the
    first bin, ``range_km`` is that bin's upper edge (an upper bound: no autocorrelation was
    detected at the shortest distances the data resolve) and ``note`` says so; if agreement
    never settles at chance, ``range_km`` is the largest distance looked at (a lower bound),
    ``decayed`` is false and ``note`` says so.

    **Small samples.** With a few hundred labelled sites the bins hold few pairs and the
    estimate is noisy; it errs long rather than short (one bin above the tolerance by chance
    pushes the range out), which is the safe side for blocks. On the demo, 246 labelled sites
    (``tiny``) give 390 km for level 1 where 951 (``book``) give 270 km.
    """
    import pandas as pd

    labels = np.asarray(labels, dtype=object)
    if not len(np.asarray(lat)) == len(np.asarray(lon)) == len(labels):
        raise ValueError(f"lat, lon and labels must have the same length, got {len(np.asarray(lat))}, "
                         f"{len(np.asarray(lon))} and {len(labels)}")
    lat, lon, labels = _labelled_subsample(lat, lon, labels, max_sites, seed)
    n_sites = len(labels)
    if n_sites < min_sites:
        raise ValueError(f"only {n_sites} labelled sites: at least {min_sites} are needed to estimate how far "
                         "label agreement reaches")
    lat, lon = _check_coordinates(lat, lon)
    i, j = np.triu_indices(n_sites, k=1)
    dist = haversine_km(lat[i], lon[i], lat[j], lon[j])
    same = labels[i] == labels[j]
    chance = float(same.mean())
    if chance == 1.0:
        raise ValueError(f"all {n_sites} labelled sites share the label {labels[0]!r}: agreement cannot fall "
                         "to chance")
    min_pairs = max(10, min(int(min_pairs), len(dist) // 10))

    if bins_km is None:
        order = np.argsort(dist, kind="stable")
        dist, same = dist[order], same[order]
        edges = _distance_bins(dist, min_pairs, step)
    else:
        edges = np.asarray(bins_km, float)
        if edges.ndim != 1 or len(edges) < 2 or not np.all(np.diff(edges) > 0) or edges[0] < 0:
            raise ValueError(f"bins_km must be at least two increasing distances >= 0, got {bins_km!r}")
    which = np.searchsorted(edges, dist, side="right") - 1
    inside = (which >= 0) & (which < len(edges) - 1)
    pairs = np.bincount(which[inside], minlength=len(edges) - 1)
    agreeing = np.bincount(which[inside], weights=same[inside], minlength=len(edges) - 1)

    table = pd.DataFrame({
        "distance_km": [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:])],
        "lo_km": edges[:-1], "hi_km": edges[1:], "km_mid": (edges[:-1] + edges[1:]) / 2, "pairs": pairs,
    })
    with np.errstate(invalid="ignore", divide="ignore"):
        table["agreement"] = agreeing / pairs
        se = np.sqrt(chance * (1 - chance) / pairs)
    table["excess"] = table["agreement"] - chance
    table["used"] = pairs >= min_pairs
    used = np.where(table["used"])[0]
    if not len(used):
        raise ValueError(f"no distance bin holds {min_pairs} pairs of labelled sites: use fewer, wider bins_km")
    excess_first = float(table["excess"].iloc[used[0]])
    table["tolerance"] = np.maximum(relative_tolerance * excess_first, z * se)
    table["at_chance"] = table["excess"] <= table["tolerance"]

    at_chance = table["at_chance"].to_numpy()[used]
    settled = next((k for k in range(len(used)) if at_chance[k:k + persist + 1].all()), None)
    method = (f"indicator variogram of {n_sites} labelled sites, {len(used)} distance bins of at least "
              f"{min_pairs} pairs: range = start of the first bin from which agreement stays within "
              f"max({relative_tolerance:g} x the nearest bin's excess, {z:g} binomial SE) of chance for "
              f"{persist + 1} bins")
    note, decayed = "", True
    if settled is None:
        range_km, decayed = float(table["hi_km"].iloc[used[-1]]), False
        note = (f"agreement stays above chance up to the largest distance looked at ({range_km:g} km): "
                "the range is at least that")
    elif settled == 0:
        range_km = float(table["hi_km"].iloc[used[0]])
        note = (f"agreement is at chance from the first distance bin on: no autocorrelation detected beyond "
                f"{range_km:g} km (with {n_sites} labelled sites)")
    else:
        range_km = float(table["lo_km"].iloc[used[settled]])
    return RangeEstimate(range_km=range_km, chance=chance, table=table, method=method, n_sites=n_sites,
                         decayed=decayed, note=note)


KM_PER_DEGREE = np.pi * EARTH_RADIUS_KM / 180  # along a meridian, and along the equator


def block_size_for_range(range_km: float, lat, *, step_deg: float = 0.05) -> float:
    """The side in degrees of square blocks at least ``range_km`` wide where the sites are.

    A degree of latitude is 111.2 km everywhere, a degree of longitude 111.2 km x cos(latitude):
    at 60° N only 55.6 km. ``block_ids`` cuts the map into squares of equal degrees, so the
    side is set by the shorter, east-west, extent at the sites' median latitude: ``range_km /
    (111.2 x cos(median latitude))``, rounded **up** to a multiple of ``step_deg``. The
    blocks are then at least ``range_km`` wide in both directions at that latitude (taller
    than wide, and a little narrower north of it).

    Blocks as wide as the autocorrelation range keep most test sites farther than the range
    from every training site (Roberts et al. 2017); those near a block's edge still have
    training neighbours just across it, which ``buffer_mask`` can remove.

    Examples: 100 km at the equator is 0.8993° -> 0.9°; at 60° it is 1.7987° -> 1.8°.

    Raises
    ------
    ValueError
        If ``range_km`` or ``step_deg`` is not a positive number, ``lat`` is empty or holds a
        NaN or a latitude outside [-90, 90], or the median latitude is within 1° of a pole
        (blocks in degrees of longitude make no sense there).
    """
    range_km, step_deg = float(range_km), float(step_deg)
    if not (np.isfinite(range_km) and range_km > 0):
        raise ValueError(f"range_km must be a positive number, got {range_km}")
    if not (np.isfinite(step_deg) and step_deg > 0):
        raise ValueError(f"step_deg must be a positive number, got {step_deg}")
    lat = np.atleast_1d(np.asarray(lat, float))
    if not len(lat) or not np.all(np.isfinite(lat)) or np.any(np.abs(lat) > 90):
        raise ValueError("lat must hold at least one latitude, all finite and within [-90, 90]")
    middle = float(np.median(lat))
    if abs(middle) > 89:
        raise ValueError(f"the median latitude {middle:.2f}° is too close to a pole for blocks in degrees")
    degrees = range_km / (KM_PER_DEGREE * np.cos(np.deg2rad(middle)))
    return float(round(np.ceil(degrees / step_deg - 1e-9) * step_deg, 10))


def _check_coordinates(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """Return ``lat`` and ``lon`` as 1-D float arrays, or raise ``ValueError`` on bad rows.

    A NaN coordinate would silently have no neighbours (every comparison with NaN is false)
    and a latitude beyond +-90 degrees is not a place on Earth; both usually mean a broken
    input table, so we refuse them and say how many rows are affected.
    """
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    if lat.ndim != 1 or lat.shape != lon.shape:
        raise ValueError(f"lat and lon must be 1-D arrays of the same length, got shapes {lat.shape} "
                         f"and {lon.shape}")
    not_finite = ~(np.isfinite(lat) & np.isfinite(lon))
    if not_finite.any():
        raise ValueError(f"{int(not_finite.sum())} of {len(lat)} rows have a NaN or infinite coordinate")
    off_globe = np.abs(lat) > 90
    if off_globe.any():
        raise ValueError(f"{int(off_globe.sum())} of {len(lat)} rows have a latitude outside [-90, 90]")
    return lat, lon


def _unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Sites as points on the unit sphere, shape (n, 3): chord distances follow great circles."""
    phi, lam = np.deg2rad(lat), np.deg2rad(lon)
    return np.column_stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)])


def _chord_with_slack(radius_km: float) -> float:
    """The chord between unit vectors ``radius_km`` apart on the sphere, plus a hair of slack so
    that rounding never loses a pair at exactly ``radius_km`` (callers check with haversine)."""
    # Beyond half the circumference the chord stops growing; every pair is then within reach.
    half_angle = min(radius_km / (2 * EARTH_RADIUS_KM), np.pi / 2)
    return 2 * np.sin(half_angle) * (1 + 1e-9) + 1e-12


def radius_neighbours(lat, lon, radius_km: float) -> sparse.csr_matrix:
    """Which sites lie within ``radius_km`` of each other: the spatial positive pairs.

    Nearby sites share their habitat far more often than chance (see
    ``label_agreement_by_distance``), so a contrastive trainer may treat two sites closer than a
    few km as positives. This finds all such pairs at once, for hundreds of thousands of sites.

    Parameters
    ----------
    lat, lon : array-like of float, shape (n,)
        Coordinates in degrees (WGS84). Longitudes may use any convention (-180..180 or
        0..360): distances are computed on the sphere, so sites on either side of the
        antimeridian (lon 179.99 and -179.99) are correctly found to be close, and so are
        sites around a pole.
    radius_km : float
        Great-circle distance in km; a pair counts when its distance is ``<= radius_km``.
        ``radius_km == 0`` keeps only sites at the very same location (a haversine distance
        of exactly 0, in practice identical coordinates), which finds duplicated sites.

    Returns
    -------
    scipy.sparse.csr_matrix of bool, shape (n, n)
        Row ``i`` holds the sites ``j != i`` with ``haversine_km(i, j) <= radius_km``. The
        matrix is symmetric, its diagonal is empty and the column indices of each row are
        sorted, so ``m.indices[m.indptr[i]:m.indptr[i + 1]]`` lists the neighbours of ``i``
        in increasing order and ``m.getnnz(axis=1)`` counts them.

    Raises
    ------
    ValueError
        If a coordinate is NaN or infinite, a latitude lies outside [-90, 90] (the message
        says how many rows), or ``radius_km`` is negative.

    Notes
    -----
    **Method: a KD-tree on 3-D unit vectors.** The usual recipe is
    ``sklearn.neighbors.BallTree(metric="haversine").query_radius``. We use an exactly
    equivalent search that is much faster: each site becomes a point on the unit sphere,
    ``(cos lat cos lon, cos lat sin lon, sin lat)``, and two sites a great-circle distance
    ``d`` apart are a straight-line (chord) distance ``2 sin(d / 2R)`` apart, with ``R`` =
    ``EARTH_RADIUS_KM``. The chord grows monotonically with ``d`` (for ``d`` up to half the
    circumference), so "chord <= 2 sin(radius_km / 2R)" selects exactly the same pairs as
    "haversine <= radius_km", while plain Euclidean distance lets ``scipy.spatial.cKDTree``
    use its fast compiled pair search (``query_pairs``) rather than a ball tree that
    evaluates trigonometric distances at every step. The unit vectors also have no seam at
    the antimeridian and no crowding at the poles, which latitude/longitude grids have.

    Measured with ``benchmarks/bench_pairs.py`` on a 2-core machine, 500k sites over Europe
    (clustered survey sites and scattered ones) at 1 km: the KD-tree takes 0.35-0.45 s, the
    BallTree 7-12 s, too close to the 10 s goal; at 50k sites 0.03 s against 0.3-0.36 s. The
    BallTree also scales worse: 23-33 times the time for 10 times the sites, against 11-14
    for the KD-tree (the goal is at most 15). The BallTree has no multi-threaded query and
    returns one array per site. ``query_pairs`` runs on one core too, but the
    multi-threaded ``query_ball_point(workers=-1)`` was slower here (1.3 s), because it
    returns a Python list per site. The tree is built with ``balanced_tree=False,
    compact_nodes=False``: median splits cost a partial sort per level, and building took
    half of the time at 500k sites (0.19 s against 0.09 s) for no faster search.

    **Exactness.** Floating-point rounding could put a pair that lies exactly on the radius
    on different sides of it in the chord and the haversine formula. So the tree is asked
    for a hair more (relative 1e-9 plus a few micrometres) and the candidate pairs are then
    kept by ``haversine_km(...) <= radius_km`` itself: the result is exactly what comparing
    ``haversine_km`` over all n² pairs would give, without computing them.
    """
    lat, lon = _check_coordinates(lat, lon)
    radius_km = float(radius_km)
    if not radius_km >= 0:  # also rejects NaN
        raise ValueError(f"radius_km must be >= 0, got {radius_km}")
    n = len(lat)
    if n < 2:
        return sparse.csr_matrix((n, n), dtype=bool)

    from scipy.spatial import cKDTree

    unit = _unit_vectors(lat, lon)
    chord = _chord_with_slack(radius_km)
    # Sliding-midpoint splits (not medians) and no node shrinking: the tree builds twice as
    # fast and the pair search is as quick, which matters at 500k sites (see the notes).
    tree = cKDTree(unit, balanced_tree=False, compact_nodes=False)
    pairs = tree.query_pairs(chord, output_type="ndarray")  # each pair once, i < j
    i, j = pairs[:, 0], pairs[:, 1]
    keep = haversine_km(lat[i], lon[i], lat[j], lon[j]) <= radius_km
    i, j = i[keep], j[keep]

    rows, cols = np.concatenate([i, j]), np.concatenate([j, i])  # both directions: symmetric
    matrix = sparse.csr_matrix((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(n, n))
    matrix.sort_indices()
    return matrix


def buffer_mask(lat, lon, test_mask, buffer_km: float) -> np.ndarray:
    """The sites outside the test set that lie within ``buffer_km`` of a test site.

    Leaving them out of training puts a gap of at least ``buffer_km`` between every test site
    and the training data (a buffered split: Roberts et al. 2017; Ploton et al. 2020, *Nature
    Communications* 11: 4540). With spatial blocks, the test sites near a block's edge are
    otherwise next to training sites just across it; a buffer as wide as the autocorrelation
    range (``autocorrelation_range_km``) removes them.

    Parameters
    ----------
    lat, lon : array-like of float, shape (n,)
        Coordinates in degrees (WGS84), all sites.
    test_mask : array-like of bool, shape (n,)
        True for the test sites (for example ``folds == k`` or ``spatial_block_split(...)``).
    buffer_km : float
        Great-circle distance in km; a non-test site is in the buffer when its nearest test
        site is at most ``buffer_km`` away. ``0`` means no buffer (all False).

    Returns
    -------
    numpy.ndarray of bool, shape (n,)
        True for the non-test sites to drop from training; always False on test sites.

    Raises
    ------
    ValueError
        If a coordinate is NaN or infinite or a latitude lies outside [-90, 90],
        ``test_mask`` is not a boolean array of the same length (an array of indices would
        otherwise be misread), or ``buffer_km`` is negative or NaN.

    Notes
    -----
    Only the nearest test site of each other site is needed, so a KD-tree of the test sites
    on the unit sphere (as in ``radius_neighbours``) answers one nearest-neighbour query per
    site: no n x n matrix, and the time does not grow with ``buffer_km``. 100k sites take a
    fraction of a second. The nearest site by chord is the nearest by great circle; its
    distance is then checked with ``haversine_km`` itself, so the result is what comparing
    ``haversine_km`` over all pairs would give (up to floating-point ties at the very edge).
    """
    lat, lon = _check_coordinates(lat, lon)
    test_mask = np.asarray(test_mask)
    if test_mask.dtype != bool or test_mask.shape != lat.shape:
        raise ValueError(f"test_mask must be a boolean array of length {len(lat)}, got dtype {test_mask.dtype} "
                         f"and shape {test_mask.shape}")
    buffer_km = float(buffer_km)
    if not buffer_km >= 0:  # also rejects NaN
        raise ValueError(f"buffer_km must be >= 0, got {buffer_km}")
    in_buffer = np.zeros(len(lat), dtype=bool)
    if buffer_km == 0 or test_mask.all() or not test_mask.any():
        return in_buffer

    from scipy.spatial import cKDTree

    unit = _unit_vectors(lat, lon)
    test, rest = np.where(test_mask)[0], np.where(~test_mask)[0]
    tree = cKDTree(unit[test])
    chord, nearest = tree.query(unit[rest], k=1, distance_upper_bound=_chord_with_slack(buffer_km))
    found = np.isfinite(chord)  # no test site within reach: distance inf
    rest, nearest = rest[found], test[nearest[found]]
    in_buffer[rest] = haversine_km(lat[rest], lon[rest], lat[nearest], lon[nearest]) <= buffer_km
    return in_buffer


def neighbour_batches(neighbours, batch_size: int, *, indices=None, per_anchor: int = 3,
                      seed: int = 0) -> list[np.ndarray]:
    """One epoch of batches in which sites come together with some of their spatial neighbours.

    A contrastive loss can only use a pair of positives (two nearby sites, see
    ``radius_neighbours``) when both sites are in the same batch. With plain random batches
    of 256 out of 100k sites that almost never happens. Here each batch is built from small
    groups: an anchor site plus up to ``per_anchor`` of its neighbours.

    Parameters
    ----------
    neighbours : scipy.sparse matrix, shape (n, n)
        Non-zero ``[i, j]`` means ``j`` is a neighbour of ``i``, as returned by
        ``radius_neighbours`` (any sparse format; it is converted to CSR).
    batch_size : int
        Largest number of sites in a batch. Must be at least ``per_anchor + 1`` so that a
        whole group always fits.
    indices : array-like of int, optional
        The sites to batch, for example the training sites of a spatial split; default all
        ``n`` sites. Neighbours outside ``indices`` are never pulled in, so validation or
        test sites cannot leak into training batches.
    per_anchor : int, default 3
        How many neighbours (at most) join each anchor. ``0`` gives plain shuffled batches:
        exactly ``np.random.default_rng(seed).permutation(indices)`` cut into chunks of
        ``batch_size``.
    seed : int, default 0
        Seed of the random order and of the choice of neighbours. The same seed gives the
        same batches; use a different seed per epoch (for example the epoch number) to get
        different batches.

    Returns
    -------
    list of numpy.ndarray of int64
        The batches, in training order. Every site of ``indices`` appears exactly once in
        the epoch; no other site appears.

    Notes
    -----
    The algorithm, kept simple on purpose:

    1. Visit the sites of ``indices`` in a random order.
    2. A site already placed is skipped. Otherwise it becomes an anchor and brings along up
       to ``per_anchor`` of its neighbours that are in ``indices`` and not placed yet,
       chosen at random. Together they form a group.
    3. Groups fill the current batch in turn; when a group does not fit in what is left,
       the batch is closed (a little short of ``batch_size``) and the group starts a new
       one. Groups are never split, so each keeps its positives together.

    Isolated sites, and neighbours already taken by an earlier anchor, end up as groups of
    one, so a batch also holds sites without a positive; those still act as negatives.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if per_anchor < 0:
        raise ValueError(f"per_anchor must be >= 0, got {per_anchor}")
    if per_anchor + 1 > batch_size:
        raise ValueError(f"a group (anchor + per_anchor={per_anchor} neighbours) must fit in "
                         f"batch_size={batch_size}")
    neighbours = sparse.csr_matrix(neighbours)
    if not neighbours.has_canonical_format:  # repeated entries would repeat a site
        neighbours = neighbours.copy()
        neighbours.sum_duplicates()
    n = neighbours.shape[0]
    if neighbours.shape != (n, n):
        raise ValueError(f"neighbours must be a square matrix, got shape {neighbours.shape}")
    indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64).ravel()
    if len(indices) and (indices.min() < 0 or indices.max() >= n):
        raise ValueError(f"indices must lie in [0, {n})")
    if len(np.unique(indices)) != len(indices):
        raise ValueError("indices must not repeat a site")

    rng = np.random.default_rng(seed)
    order = rng.permutation(indices)
    allowed = np.zeros(n, dtype=bool)
    allowed[indices] = True
    placed = np.zeros(n, dtype=bool)
    columns = neighbours.indices
    indptr = neighbours.indptr.tolist()  # Python ints: fast to read one at a time in the loop

    batches, current = [], []
    for anchor in order.tolist():
        if placed[anchor]:
            continue
        placed[anchor] = True  # before the look-up, so a diagonal entry cannot add it twice
        group = [anchor]
        if per_anchor and indptr[anchor + 1] > indptr[anchor]:  # skip sites with no neighbour
            candidates = columns[indptr[anchor]:indptr[anchor + 1]]
            candidates = candidates[allowed[candidates] & ~placed[candidates]]
            if len(candidates) > per_anchor:
                candidates = rng.choice(candidates, per_anchor, replace=False)
            placed[candidates] = True
            group.extend(candidates.tolist())
        if len(current) + len(group) > batch_size:
            batches.append(np.array(current, dtype=np.int64))
            current = []
        current.extend(group)
    if current:
        batches.append(np.array(current, dtype=np.int64))
    return batches


# --- the block size of every split ------------------------------------------------------------

#: The block side when the labels cannot measure their range (fewer than 20 labelled sites, or
#: a single habitat): 2 degrees, about 150-220 km across in Europe.
FALLBACK_BLOCK_SIZE_DEG = 2.0


def resolve_block_size(lat, lon, labels: pd.DataFrame, block_size_deg=None, seed: int = 0) -> tuple[float, dict]:
    """The block side in degrees and how it was chosen: ``block_size_deg`` itself, or for
    ``"auto"`` (the default, as :attr:`habitat_helpers.evaluation.Protocol.block_size_deg`) the labels' autocorrelation range
    (level 1, ``labels["label_l1"]``) turned into degrees. Every split of the book (the
    alignment's in chapters 2, 3 and 5, the folds of chapter 4) sizes its blocks here."""
    block_size_deg = "auto" if block_size_deg is None else block_size_deg
    if block_size_deg != "auto":
        return float(block_size_deg), {"block_size_deg": float(block_size_deg), "block_size_rule": "given"}
    labels = current_names(labels, "labels")
    codes = labels["label_l1"].to_numpy(object) if "label_l1" in labels else np.full(len(lat), None, object)
    key = _range_key(lat, lon, codes, seed)
    if key not in _RANGES:           # a chapter sizes the same labels' blocks several times
        if len(_RANGES) >= 8:
            _RANGES.pop(next(iter(_RANGES)))
        _RANGES[key] = _block_size_from_range(lat, lon, codes, seed)
    size, info = _RANGES[key]
    return size, dict(info)


def stage_split(lat, lon, labels: pd.DataFrame, test_fraction: float, seed: int,
                val_fraction: float = 0.15) -> tuple[np.ndarray, float]:
    """The split of the book's single-split stages (embedding probes, alignment, map): blocks
    sized from the labels (:func:`resolve_block_size`, ``"auto"``), ``test_fraction`` of the
    sites in test blocks and ``val_fraction`` in validation blocks
    (:func:`train_val_test_split`). Returns ``split, block_size_deg``; ``split`` holds
    ``"train"``, ``"val"`` or ``"test"`` per site."""
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    block_size, _ = resolve_block_size(lat, lon, labels, seed=seed)
    return train_val_test_split(lat, lon, block_size, test_fraction, val_fraction, seed), block_size


#: Block sizes already estimated, by :func:`_range_key` (the estimate takes about a second).
_RANGES: dict = {}


def _range_key(lat, lon, codes, seed) -> str:
    digest = hashlib.sha1()
    for values in (np.asarray(lat, float), np.asarray(lon, float)):
        digest.update(np.ascontiguousarray(values).tobytes())
    digest.update("\x1f".join("" if c is None or c != c else str(c) for c in codes).encode())
    digest.update(str(seed).encode())
    return digest.hexdigest()


def _block_size_from_range(lat, lon, codes, seed) -> tuple[float, dict]:
    try:
        estimate = autocorrelation_range_km(lat, lon, codes, seed=seed)
    except ValueError as err:        # e.g. unlabelled sites (the alignment needs no labels)
        return FALLBACK_BLOCK_SIZE_DEG, {"block_size_deg": FALLBACK_BLOCK_SIZE_DEG,
                                         "block_size_rule": f"fallback: the labels cannot size the blocks ({err})"}
    size = block_size_for_range(estimate.range_km, lat)
    return size, {"block_size_deg": size, "block_size_rule": "auto: the level-1 labels' autocorrelation range",
                  "autocorrelation_range_km": float(estimate.range_km), "autocorrelation_method": estimate.method}
