"""Covariate sampling: ``hh.environment.sample`` of all built-in covariates at many sites.

    python benchmarks/bench_environment.py            # 500k sites over Europe
    python benchmarks/bench_environment.py --quick    # 100k sites (under a minute with a cold cache)

The sites are uniform over lon -10..30, lat 36..62 (fixed seed; sea points included, so the
missing counts are exercised). One warm-up call on 1,000 sites first builds what the first use
builds once (the packed land mask and the coast cells in the cache folder, the coast KD-tree),
then the timed call samples every built-in covariate: six ERA5 climate summaries (12 months
each, bilinear), the 1 km Köppen-Geiger class (nearest), land and the distance to the coast.
Each group of covariates is also timed on its own.

Last line: ``sites=... seconds=... sites_per_s=... climate_seconds=... koppen_seconds=...
land_seconds=... coast_seconds=... peak_rss_gib=... missing_koppen=...``
(goal: 500k sites in seconds on 2 cores).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from habitat_helpers import environment as env

CLIMATE = ["t_mean_annual", "t_seasonality", "t_warmest_month", "t_coldest_month", "p_annual", "p_seasonality"]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k sites instead of 500k")
    parser.add_argument("--sites", type=int, default=None)
    args = parser.parse_args(argv)
    n = args.sites or (100_000 if args.quick else 500_000)
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(36, 62, n), rng.uniform(-10, 30, n)

    warm, _ = timed(lambda: env.sample(lat[:1000], lon[:1000]))
    print(f"warm-up (1,000 sites, first use builds caches): {warm:.1f} s")
    seconds, (table, report) = timed(lambda: env.sample(lat, lon))
    print(report.table().to_string())
    parts = {}
    for key, names in [("climate", CLIMATE), ("koppen", ["koppen_main"]), ("land", ["land"]),
                       ("coast", ["coast_km"])]:
        parts[key], _ = timed(lambda names=names: env.sample(lat, lon, names))
        print(f"{key}: {parts[key]:.2f} s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"sites={n} seconds={seconds:.2f} sites_per_s={n / seconds:.0f} "
          + " ".join(f"{k}_seconds={v:.2f}" for k, v in parts.items())
          + f" peak_rss_gib={peak:.2f} missing_koppen={report.missing['koppen_main']}")


if __name__ == "__main__":
    main()
