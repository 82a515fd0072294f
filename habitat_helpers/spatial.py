"""Spatial blocks: split sites by geography so that test sites are far from training sites.

Neighbouring sites share habitats (spatial autocorrelation), so a random split lets a
model "remember" the neighbourhood and overstates its accuracy (Roberts et al. 2017,
*Ecography* 40: 913-929). Here the map is cut into square blocks of ``block_size_deg``
degrees and whole blocks go to the test set.

The same autocorrelation is useful for training: sites within a few km of each other are
treated as positive pairs in contrastive learning (``radius_neighbours``), and
``neighbour_batches`` builds batches in which such positives actually meet.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


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


def label_agreement_by_distance(lat, lon, labels, bins_km=(0, 25, 50, 100, 200, 400, 800, 1600, 3200),
                                max_sites: int = 2000, seed: int = 0):
    """How often two labelled sites share a label, by the distance between them.

    All pairs of (at most ``max_sites``, subsampled) labelled sites are binned by distance;
    ``agreement`` is the share of pairs in a bin with the same label, and ``chance`` the share
    over all pairs. Agreement far above chance at short distances is spatial autocorrelation:
    the reason a random train/test split flatters a model and blocks are needed.
    """
    import pandas as pd

    labels = np.asarray(labels, dtype=object)
    keep = np.array([isinstance(v, str) for v in labels], dtype=bool)
    idx = np.where(keep)[0]
    if len(idx) > max_sites:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_sites, replace=False))
    lat, lon, labels = np.asarray(lat, float)[idx], np.asarray(lon, float)[idx], labels[idx]
    i, j = np.triu_indices(len(idx), k=1)
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

    phi, lam = np.deg2rad(lat), np.deg2rad(lon)
    unit = np.column_stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)])
    # Beyond half the circumference the chord stops growing; every pair is then within reach.
    half_angle = min(radius_km / (2 * EARTH_RADIUS_KM), np.pi / 2)
    chord = 2 * np.sin(half_angle) * (1 + 1e-9) + 1e-12  # slack, see "Exactness" above
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
