"""Spatial positive pairs: ``hh.spatial.radius_neighbours`` and ``neighbour_batches`` at scale.

    python benchmarks/bench_pairs.py            # 500k and 50k sites at r = 1 km (about 25 s)
    python benchmarks/bench_pairs.py --quick    # 200k and 20k sites (about 6 s)

The sites imitate a European survey table (fixed seed): 60 % of them in survey clusters of
5-30 sites a few km wide (a LUCAS-like transect, a vegetation-plot campaign), 40 % scattered
uniformly over lon -10..30, lat 36..62. The small layout is made by the same recipe with a
tenth of the sites, so the pairs per site stay the same and the ratio shows how the search
scales.

Timed, best of ``--repeats`` runs (5; 3 with ``--quick``):

* ``radius_neighbours`` (a KD-tree on 3-D unit vectors) on the large and the small layout,
* ``neighbour_batches`` (batch 256, 3 neighbours per anchor) on the large layout,
* for reference, once each, ``sklearn.neighbors.BallTree(metric="haversine").query_radius``,
  the textbook method, which finds the same pairs (checked) but more slowly.

Last line: ``sites=... small_sites=... radius_km=... seconds_500k=... seconds_50k=...
ratio_500k_vs_50k=... pairs_500k=... batches_seconds=... balltree_seconds_500k=...
balltree_seconds_50k=... balltree_vs_kdtree_500k=...`` (goals: seconds_500k <= 10 on 2 cores,
ratio_500k_vs_50k <= 15). With ``--quick`` the keys keep their names but measure 200k and 20k
sites (see ``sites`` and ``small_sites``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import habitat_helpers as hh

KM_PER_DEG = 111.2


def european_sites(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sites over Europe: 60 % in survey clusters a few km wide, 40 % scattered."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 31, size=n)  # more clusters than needed; cut to 60 % of n below
    sizes = sizes[:np.searchsorted(np.cumsum(sizes), int(0.6 * n)) + 1]
    centre_lat = np.repeat(rng.uniform(36, 62, len(sizes)), sizes)
    centre_lon = np.repeat(rng.uniform(-10, 30, len(sizes)), sizes)
    spread_km = np.repeat(rng.uniform(0.5, 3.0, len(sizes)), sizes)  # cluster radius, km
    lat = centre_lat + rng.normal(0, 1, len(centre_lat)) * spread_km / KM_PER_DEG
    lon = centre_lon + rng.normal(0, 1, len(centre_lat)) * spread_km / (KM_PER_DEG * np.cos(np.deg2rad(centre_lat)))
    n_clustered = min(len(lat), int(0.6 * n))
    n_scattered = n - n_clustered
    lat = np.concatenate([lat[:n_clustered], rng.uniform(36, 62, n_scattered)])
    lon = np.concatenate([lon[:n_clustered], rng.uniform(-10, 30, n_scattered)])
    order = rng.permutation(n)  # sites of a cluster are not stored next to each other
    return lat[order], lon[order]


def best_of(repeats: int, fn):
    """Fastest wall time of ``repeats`` calls, and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def balltree_pairs(lat, lon, radius_km: float) -> int:
    """Number of ordered neighbour pairs (i != j) found by sklearn's haversine BallTree."""
    from sklearn.neighbors import BallTree

    points = np.deg2rad(np.column_stack([lat, lon]))
    found = BallTree(points, metric="haversine").query_radius(points, radius_km / hh.spatial.EARTH_RADIUS_KM,
                                                             count_only=True)
    return int(found.sum()) - len(lat)  # every site finds itself


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200k and 20k sites")
    parser.add_argument("--sites", type=int, default=500_000)
    parser.add_argument("--radius-km", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    large = 200_000 if args.quick else args.sites
    small = large // 10
    repeats = 3 if args.quick else args.repeats
    r = args.radius_km

    lat, lon = european_sites(large, args.seed)
    small_lat, small_lon = european_sites(small, args.seed + 1)

    seconds_large, neighbours = best_of(repeats, lambda: hh.spatial.radius_neighbours(lat, lon, r))
    seconds_small, small_neighbours = best_of(repeats, lambda: hh.spatial.radius_neighbours(small_lat, small_lon, r))
    pairs = neighbours.nnz // 2
    per_site = neighbours.getnnz(axis=1)
    print(f"radius_neighbours: {large} sites {seconds_large:.3f} s, {small} sites {seconds_small:.3f} s; "
          f"{pairs} pairs, {np.mean(per_site > 0):.0%} of sites have a neighbour within {r:g} km")

    batch_seconds, batches = best_of(repeats, lambda: hh.spatial.neighbour_batches(
        neighbours, args.batch_size, per_anchor=3, seed=args.seed))
    print(f"neighbour_batches: {len(batches)} batches of <= {args.batch_size} in {batch_seconds:.3f} s")

    start = time.perf_counter()
    ball_large = balltree_pairs(lat, lon, r)
    ball_seconds_large = time.perf_counter() - start
    start = time.perf_counter()
    ball_small = balltree_pairs(small_lat, small_lon, r)
    ball_seconds_small = time.perf_counter() - start
    if (ball_large, ball_small) != (neighbours.nnz, small_neighbours.nnz):
        raise SystemExit(f"BallTree found {ball_large} / {ball_small} ordered pairs, radius_neighbours "
                         f"{neighbours.nnz} / {small_neighbours.nnz}")
    print(f"BallTree(haversine) for reference: {ball_seconds_large:.3f} s and {ball_seconds_small:.3f} s, "
          f"same pairs")

    print(f"sites={large} small_sites={small} radius_km={r:g} seconds_500k={seconds_large:.3f} "
          f"seconds_50k={seconds_small:.3f} ratio_500k_vs_50k={seconds_large / seconds_small:.1f} "
          f"pairs_500k={pairs} batches_seconds={batch_seconds:.3f} "
          f"balltree_seconds_500k={ball_seconds_large:.3f} balltree_seconds_50k={ball_seconds_small:.3f} "
          f"balltree_vs_kdtree_500k={ball_seconds_large / seconds_large:.1f}")


if __name__ == "__main__":
    main()
