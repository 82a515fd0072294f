"""Spatial positive pairs: ``radius_neighbours`` and ``neighbour_batches``."""

import numpy as np
import pytest
from scipy import sparse

import habitat_helpers as hh

KM_PER_DEG = 111.2  # km per degree of latitude (and of longitude at the equator)


def _brute_force(lat, lon, radius_km):
    """The definition itself: haversine over all pairs, ``<= radius_km``, no diagonal."""
    n = len(lat)
    i, j = np.triu_indices(n, k=1)
    close = hh.spatial.haversine_km(lat[i], lon[i], lat[j], lon[j]) <= radius_km
    dense = np.zeros((n, n), dtype=bool)
    dense[i[close], j[close]] = True
    return dense | dense.T


def _tricky_sites(seed=0):
    """About 300 sites (296) whose pairwise distances crowd around 5 km, in awkward places."""
    rng = np.random.default_rng(seed)
    spread_deg = 4.0 / KM_PER_DEG  # clusters a few km wide: many pairs near a 5 km radius
    parts = []
    # an ordinary cluster in Bavaria
    parts.append((48.0 + rng.normal(0, spread_deg, 100), 11.0 + rng.normal(0, spread_deg / 0.67, 100)))
    # a cluster across the antimeridian (Fiji): longitudes wrap from 180 to -180
    lon = 180.0 + rng.normal(0, spread_deg, 70)
    parts.append((-17.0 + rng.normal(0, spread_deg, 70), (lon + 180.0) % 360.0 - 180.0))
    # sites around the north pole, at all longitudes
    parts.append((90.0 - np.abs(rng.normal(0, spread_deg, 60)), rng.uniform(-180, 180, 60)))
    # scattered sites over the globe (mostly isolated)
    parts.append((np.rad2deg(np.arcsin(rng.uniform(-1, 1, 60))), rng.uniform(-180, 180, 60)))
    # hand-picked: both sides of the antimeridian (2.2 km apart), the pole itself twice,
    # and a duplicated site
    parts.append((np.array([0.0, 0.0, 90.0, 90.0, 48.0, 48.0]),
                  np.array([179.99, -179.99, 0.0, 123.0, 11.0, 11.0])))
    lat = np.concatenate([p[0] for p in parts])
    lon = np.concatenate([p[1] for p in parts])
    return np.clip(lat, -90, 90), lon


def test_radius_neighbours_equals_brute_force_haversine():
    lat, lon = _tricky_sites()
    n = len(lat)
    d = hh.spatial.haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    radius_km = 5.0
    near = np.abs(d[np.triu_indices(n, k=1)] - radius_km) < 0.5
    assert near.sum() > 200  # the test really probes the boundary

    for r in (radius_km, 0.0, 1.0, 25.0):
        m = hh.spatial.radius_neighbours(lat, lon, r)
        assert isinstance(m, sparse.csr_matrix) and m.shape == (n, n) and m.dtype == bool
        assert m.has_sorted_indices
        np.testing.assert_array_equal(m.toarray(), _brute_force(lat, lon, r))

    m = hh.spatial.radius_neighbours(lat, lon, radius_km)
    dense = m.toarray()
    assert (dense == dense.T).all() and not dense.diagonal().any()
    a, b = n - 6, n - 5  # lon 179.99 and -179.99 on the equator: 2.2 km apart
    assert dense[a, b]
    pole = n - 4
    assert dense[pole, n - 3]  # the pole written with two longitudes
    assert dense[pole].sum() > 10  # the sites around the pole are near it, whatever their longitude


def test_radius_neighbours_pair_exactly_on_the_radius():
    """A pair whose distance *is* the radius counts, as ``<=`` says, despite rounding."""
    lat, lon = _tricky_sites(seed=1)
    for a, b in [(0, 1), (80, 81), (150, 151)]:
        r = float(hh.spatial.haversine_km(lat[a], lon[a], lat[b], lon[b]))
        m = hh.spatial.radius_neighbours(lat, lon, r)
        assert m[a, b] and m[b, a]
        np.testing.assert_array_equal(m.toarray(), _brute_force(lat, lon, r))


def test_radius_neighbours_zero_radius_and_large_radius():
    lat = np.array([10.0, 10.0, 10.0, 10.0 + 1e-7, -30.0])
    lon = np.array([20.0, 20.0, 20.0, 20.0, 150.0])
    m = hh.spatial.radius_neighbours(lat, lon, 0.0)
    assert m.nnz == 6  # the three copies of (10, 20) pair up; 1e-7 degrees (1 cm) is not 0
    assert m[:3, :3].sum() == 6 and m[3].nnz == 0 and m[4].nnz == 0
    everything = hh.spatial.radius_neighbours(lat, lon, 30_000.0)  # more than half the circumference
    assert everything.nnz == 5 * 4
    assert hh.spatial.radius_neighbours([], [], 1.0).shape == (0, 0)
    assert hh.spatial.radius_neighbours([1.0], [2.0], 1.0).nnz == 0


def test_radius_neighbours_rejects_bad_input():
    with pytest.raises(ValueError, match="1 of 3 rows"):
        hh.spatial.radius_neighbours([1.0, np.nan, 2.0], [1.0, 2.0, 3.0], 1.0)
    with pytest.raises(ValueError, match="2 of 3 rows"):
        hh.spatial.radius_neighbours([91.0, -95.0, 2.0], [1.0, 2.0, 3.0], 1.0)
    with pytest.raises(ValueError, match="radius_km"):
        hh.spatial.radius_neighbours([1.0, 2.0], [1.0, 2.0], -1.0)
    with pytest.raises(ValueError, match="same length"):
        hh.spatial.radius_neighbours([1.0, 2.0], [1.0], 1.0)


def _survey_clusters(n_clusters=500, seed=0):
    """Clusters of 2-6 sites, each within a few hundred metres, scattered over Europe."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 7, n_clusters)
    centre_lat = np.repeat(rng.uniform(36, 62, n_clusters), sizes)
    centre_lon = np.repeat(rng.uniform(-10, 30, n_clusters), sizes)
    jitter = 0.1 / KM_PER_DEG  # 100 m
    lat = centre_lat + rng.normal(0, jitter, len(centre_lat))
    lon = centre_lon + rng.normal(0, jitter, len(centre_lat)) / np.cos(np.deg2rad(centre_lat))
    return lat, lon


def _share_with_positive(neighbours, batches):
    """Share of batch items that have at least one neighbour in their own batch."""
    hits = sum(int((neighbours[b][:, b].getnnz(axis=1) > 0).sum()) for b in batches)
    return hits / sum(len(b) for b in batches)


def test_neighbour_batches_bring_positives_together():
    lat, lon = _survey_clusters()
    neighbours = hh.spatial.radius_neighbours(lat, lon, 1.0)
    n = len(lat)
    assert (neighbours.getnnz(axis=1) > 0).all()  # every site has a positive somewhere

    batches = hh.spatial.neighbour_batches(neighbours, 32, per_anchor=3, seed=0)
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(n))  # each site once
    sizes = np.array([len(b) for b in batches])
    assert (sizes <= 32).all()
    assert (sizes[:-1] >= 32 - 3).all()  # a batch closes only when a whole group (<= 4) does not fit

    plain = hh.spatial.neighbour_batches(neighbours, 32, per_anchor=0, seed=0)
    ours, random = _share_with_positive(neighbours, batches), _share_with_positive(neighbours, plain)
    assert ours > 0.8, ours
    assert random < 0.3, random


def test_neighbour_batches_seed_and_per_anchor_zero():
    lat, lon = _survey_clusters(n_clusters=200)
    neighbours = hh.spatial.radius_neighbours(lat, lon, 1.0)
    first = hh.spatial.neighbour_batches(neighbours, 16, seed=3)
    again = hh.spatial.neighbour_batches(neighbours, 16, seed=3)
    other = hh.spatial.neighbour_batches(neighbours, 16, seed=4)
    assert len(first) == len(again) and all((a == b).all() for a, b in zip(first, again))
    assert not np.array_equal(np.concatenate(first), np.concatenate(other))

    plain = hh.spatial.neighbour_batches(neighbours, 16, per_anchor=0, seed=3)
    n = len(lat)
    np.testing.assert_array_equal(np.concatenate(plain), np.random.default_rng(3).permutation(n))
    assert [len(b) for b in plain] == [16] * (n // 16) + ([n % 16] if n % 16 else [])


def test_neighbour_batches_respect_indices():
    lat, lon = _survey_clusters(n_clusters=300, seed=2)
    neighbours = hh.spatial.radius_neighbours(lat, lon, 1.0)
    train = np.where(hh.spatial.spatial_block_split(lat, lon, 2.0, 0.3, seed=0) == 0)[0]
    train = np.sort(np.random.default_rng(0).choice(train, len(train) * 3 // 4, replace=False))
    for per_anchor in (0, 3, 5):
        batches = hh.spatial.neighbour_batches(neighbours, 24, indices=train, per_anchor=per_anchor)
        np.testing.assert_array_equal(np.sort(np.concatenate(batches)), train)
    with pytest.raises(ValueError, match="batch_size"):
        hh.spatial.neighbour_batches(neighbours, 3, per_anchor=3)
    with pytest.raises(ValueError, match="repeat"):
        hh.spatial.neighbour_batches(neighbours, 8, indices=[1, 1, 2])
    with pytest.raises(ValueError, match="lie in"):
        hh.spatial.neighbour_batches(neighbours, 8, indices=[len(lat)])
