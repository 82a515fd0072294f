"""Tiled maps on dask: cells per second with 1 and 2 local workers, memory per worker, Europe extrapolated.

    python benchmarks/bench_tiles.py --quick   # 40,000 cells (200 x 200 at 0.01°), under a minute
    python benchmarks/bench_tiles.py           # 250,000 cells (500 x 500 at 0.01°)

The model is a kept one (:mod:`habitat_helpers.pipeline`): GeoCLIP's location embedding (shipped
weights) and a hierarchical classifier fitted on synthetic sites of the demo's habitat model
(:func:`habitat_helpers.demo.habitat_sites`). The same square region in the Alps and the Po plain
(sea included, so the cell count is exact) is mapped by :func:`habitat_helpers.tiles.map_tiles`
twice, on a local dask cluster of one worker and of two (one thread each), tiles of 128 cells a
side. Memory per worker is its resident set, sampled every 0.2 s (peak). Europe at 1 km: about
10⁷ land cells (EEA39 at 0.01°), divided by the two-worker rate.

Last line: ``cells=... one_worker_cells_per_s=... two_workers_cells_per_s=... speedup=...
worker_peak_gib=... europe_1km_hours_two_workers=...``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

EUROPE_1KM_LAND_CELLS = 1.0e7


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tile", type=int, default=None, help="tile side in cells (default 128; 64 with --quick)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where each worker embeds and predicts")
    args = parser.parse_args()
    import psutil

    import habitat_helpers as hh

    side = 200 if args.quick else 500
    tile = args.tile or (64 if args.quick else 128)
    res = 0.01
    bbox = (8.0, 45.0, 8.0 + side * res, 45.0 + side * res)
    sites = hh.demo.habitat_sites(2000, 0)
    labelled = sites["label_l1"].notna().to_numpy()
    lat, lon = sites["lat"].to_numpy(float)[labelled], sites["lon"].to_numpy(float)[labelled]
    gps = hh.embed.embed_locations(lat, lon, hh.encoders.get_encoder("geoclip-location"))
    kept = hh.pipeline.fit(lat, lon, sites[["label_l1", "label_l2", "label_l3"]][labelled], {"gps": gps},
                           model="raw gps", params={"C": 0.5}, modalities=("gps",))
    predictor = hh.pipeline.CellPredictor(kept, args.device)
    rates, peaks = {}, {}
    for workers in (1, 2):
        peak = {"gib": 0.0}
        stop = threading.Event()

        def sample(peak=peak, stop=stop):
            me = psutil.Process()
            while not stop.is_set():
                for child in me.children(recursive=True):
                    try:
                        peak["gib"] = max(peak["gib"], child.memory_info().rss / 2**30)
                    except psutil.Error:
                        pass
                stop.wait(0.2)

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = hh.tiles.map_tiles(predictor, kept.classifier.level_codes(), bbox, res, out, tile=tile,
                                        workers=workers, land_only=False, progress=False)
            seconds = time.perf_counter() - start
        stop.set()
        watcher.join()
        assert result["cells"] == side * side
        rates[workers], peaks[workers] = result["cells"] / seconds, peak["gib"]
        print(f"{workers} worker(s): {result['cells']:,} cells in {seconds:.1f} s ({rates[workers]:,.0f} cells/s), "
              f"peak {peak['gib']:.2f} GiB per worker process", flush=True)
    hours = EUROPE_1KM_LAND_CELLS / rates[2] / 3600
    print(f"cells={side * side} tile={tile} one_worker_cells_per_s={rates[1]:.0f} "
          f"two_workers_cells_per_s={rates[2]:.0f} speedup={rates[2] / rates[1]:.2f} "
          f"worker_peak_gib={max(peaks.values()):.2f} europe_1km_hours_two_workers={hours:.2f}")


if __name__ == "__main__":
    main()
