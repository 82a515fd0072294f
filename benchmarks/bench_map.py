"""Streamed habitat mapping: 1M grid cells predicted from location, peak memory.

    python benchmarks/bench_map.py           # 1,000,000 cells (1000 x 1000 at 0.025°, sea included)
    python benchmarks/bench_map.py --quick   # 100,000 cells

The model is the one a map from location uses: GeoCLIP's location encoder (shipped weights),
then a hierarchical classifier fitted on the `tiny` demo's labelled sites (synthetic). Cells go
through ``hh.maps.predict_rasters`` in blocks of rows, so memory holds one block plus the output
rasters. Sea cells are predicted too (``land_only=False``) so the cell count is exact.

Last line: ``cells=... seconds=... cells_per_s=... peak_rss_gib=... rss_before_gib=...
streaming_increment_gib=...`` (goal: peak_rss_gib <= 2 for 1M cells). ``rss_before_gib`` is what
the process holds before mapping (torch, the encoder, the classifier and the demo's site table; the
1 km land mask is memory-mapped by ``hh.landmask``, so only the rows looked up are resident); the
increment is what mapping adds.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np


def rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--chunk-rows", type=int, default=32)
    args = parser.parse_args()
    import habitat_helpers as hh

    side = 316 if args.quick else 1000
    res = 0.025
    bbox = (-5.0, 40.0, -5.0 + side * res, 40.0 + side * res)
    sites = hh.demo.load_sites(hh.demo.make_demo("tiny", 0, progress=False))
    encoder = hh.encoders.get_encoder("geoclip-location")
    labelled = sites["label_l1"].notna().to_numpy()
    X = hh.embed.embed_locations(sites["lat"][labelled], sites["lon"][labelled], encoder)
    clf = hh.classify.HierarchicalClassifier().fit(X, sites[["label_l1", "label_l2", "label_l3"]][labelled])
    classes = clf.level_codes()          # stopped (coarser) codes included

    def predict(cells):
        return clf.predict(hh.embed.embed_locations(cells["lat"], cells["lon"], encoder))

    before = rss_gib()
    start = time.perf_counter()
    out = hh.maps.predict_rasters(bbox, res, predict, classes, chunk_rows=args.chunk_rows, land_only=False,
                                  progress=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    assert out["cells"] == side * side and (out["level1"] > 0).all()
    print(f"cells={out['cells']} chunk_rows={args.chunk_rows} seconds={seconds:.1f} "
          f"cells_per_s={out['cells'] / seconds:.0f} peak_rss_gib={peak:.2f} rss_before_gib={before:.2f} "
          f"streaming_increment_gib={peak - before:.2f} "
          f"classes_l3={len(np.unique(out['level3']))}")


if __name__ == "__main__":
    main()
