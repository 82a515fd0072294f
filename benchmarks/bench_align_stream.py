"""Aligning many photos' embeddings: memory with the views in memory and read from a memory map.

    python benchmarks/bench_align_stream.py --quick    # 10,000 and 40,000 photos (under a minute)
    python benchmarks/bench_align_stream.py            # 100,000 and 400,000 photos

The embeddings are synthetic (no image is read): one latent per site that varies smoothly in
space, four views per site (LUCAS has about five), each view the latent through a fixed random
projection to 768 numbers (a SwinV2-T embedding's size) plus noise, and a 512-number location
vector per site. They are written as the embedding cache writes them (``.npz`` shards of 512 items
named by :func:`habitat_helpers.embed.plan_shards`), then read back in two ways, each in a fresh
process so that the peaks do not mix:

* ``memory``: :func:`habitat_helpers.embed.read_items` into an array, as before;
* ``mapped``: ``read_items(..., out=...)`` copies them shard by shard into a ``.npy`` file and
  returns a memory map of it; the site vectors are memory-mapped as well.

Then :func:`habitat_helpers.align.train_alignment` trains photo + location heads (photo views as
items, the default ``AlignConfig`` otherwise, ``epochs`` epochs of at most ``epoch_sites`` sites).
Reported per run: seconds, the peak resident memory (sampled every 0.05 s) and the peak of its
anonymous part (resident less file-backed pages, which the kernel drops when memory is short: what
"bounded" means for a memory map). Last line ``name=value`` pairs of the largest size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

DIM, VIEWS, SHARD = 768, 4, 512


def _items(photos: int) -> tuple[list[str], SimpleNamespace]:
    """The cache keys of ``photos`` synthetic views (``VIEWS`` per site) and the stand-in encoder
    that names their cache folder."""
    keys = [f"synthetic|{s:07d}|{v}" for s in range(photos // VIEWS) for v in range(VIEWS)]
    return keys, SimpleNamespace(cache_key="synthetic-768", dim=DIM)


def write_shards(folder: Path, photos: int, seed: int = 0) -> None:
    """Synthetic views and site vectors, the views as cache shards."""
    import numpy as np

    import habitat_helpers as hh

    rng = np.random.default_rng(seed)
    sites = photos // VIEWS
    lat, lon = rng.uniform(36, 70, sites), rng.uniform(-10, 30, sites)
    latent = np.column_stack([np.sin(lat / 3 + k) + np.cos(lon / 4 - k) for k in range(8)]).astype(np.float32)
    to_photo, to_gps = rng.normal(size=(8, DIM)).astype(np.float32), rng.normal(size=(8, 512)).astype(np.float32)
    gps = latent @ to_gps + 0.3 * rng.standard_normal((sites, 512), dtype=np.float32)
    np.save(folder / "gps.npy", gps)
    keys, encoder = _items(photos)
    for shard in hh.embed.plan_shards(keys, ["" for _ in keys], SHARD):
        owner = np.array([int(keys[i].split("|")[1]) for i in shard["items"]])
        views = latent[owner] @ to_photo + 0.5 * rng.standard_normal((len(owner), DIM), dtype=np.float32)
        (folder / encoder.cache_key).mkdir(exist_ok=True)
        np.savez(folder / encoder.cache_key / shard["name"], keys=np.array([keys[i] for i in shard["items"]]),
                 embeddings=views)
    np.savez(folder / "sites.npz", lat=lat, lon=lon)


def run_one(folder: Path, mode: str, photos: int, epochs: int) -> dict:
    """Read the views (``mode``), train the heads; in this process."""
    import numpy as np
    from bench_scale import PeakMemory  # this folder is on the path when the script runs

    import habitat_helpers as hh

    memory = PeakMemory(interval=0.05)
    start = time.perf_counter()
    sites = photos // VIEWS
    keys, encoder = _items(photos)
    out = folder / "views.npy" if mode == "mapped" else None
    views = hh.embed.read_items(keys, ["" for _ in keys], encoder, folder, SHARD, out=out)
    gps = np.load(folder / "gps.npy", mmap_mode="r" if mode == "mapped" else None)
    coords = np.load(folder / "sites.npz")
    read_s = time.perf_counter() - start
    embeddings = {"photo": np.full((sites, 1), 0.0, np.float32), "gps": gps, "photo_per_view": views,
                  "photo_site": np.repeat(np.arange(sites), VIEWS)}
    rng = np.random.default_rng(0)
    val = rng.random(sites) < 0.15
    config = hh.align.AlignConfig(modalities=("photo", "gps"), photo_views="items", epochs=epochs, patience=epochs)
    start = time.perf_counter()
    model, history = hh.align.train_alignment(embeddings, np.flatnonzero(~val), np.flatnonzero(val), config,
                                              coords["lat"], coords["lon"], progress=False)
    return {"mode": mode, "photos": photos, "read_s": read_s, "train_s": time.perf_counter() - start,
            "val_recall": float(history["val_recall"].iloc[-1]), **_peaks(memory)}


def _peaks(memory) -> dict:
    memory.close()
    return {"peak_gib": memory.peak / 2**30, "anonymous_gib": memory.peak_anonymous / 2**30}


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 and 40,000 photos, one epoch")
    parser.add_argument("--sizes", default=None, help="comma list of photo counts (default 100000,400000)")
    parser.add_argument("--epochs", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--one", nargs=3, metavar=("FOLDER", "MODE", "PHOTOS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    epochs = args.epochs or (1 if args.quick else 3)
    if args.one:
        print(json.dumps(run_one(Path(args.one[0]), args.one[1], int(args.one[2]), epochs)))
        return
    sizes = [int(s) for s in (args.sizes or ("10000,40000" if args.quick else "100000,400000")).split(",")]
    results = []
    for photos in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            write_shards(Path(tmp), photos)
            for mode in ("memory", "mapped"):
                done = subprocess.run([sys.executable, __file__, "--one", tmp, mode, str(photos), "--epochs",
                                       str(epochs)], capture_output=True, text=True, check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                results.append(row)
                print(f"{photos:>8,} photos  {mode:<7} read {row['read_s']:6.1f} s  train {row['train_s']:7.1f} s  "
                      f"peak {row['peak_gib']:5.2f} GiB  anonymous {row['anonymous_gib']:5.2f} GiB  "
                      f"recall@10 {row['val_recall']:.3f}", flush=True)
    last = {r["mode"]: r for r in results if r["photos"] == sizes[-1]}
    first = {r["mode"]: r for r in results if r["photos"] == sizes[0]}
    fields = {"photos": sizes[-1], "epochs": epochs,
              "memory_peak_gib": f"{last['memory']['peak_gib']:.2f}",
              "mapped_peak_gib": f"{last['mapped']['peak_gib']:.2f}",
              "mapped_anonymous_gib": f"{last['mapped']['anonymous_gib']:.2f}",
              "mapped_anonymous_growth": f"{last['mapped']['anonymous_gib'] / first['mapped']['anonymous_gib']:.2f}",
              "size_ratio": f"{sizes[-1] / sizes[0]:.1f}",
              "mapped_train_s": f"{last['mapped']['train_s']:.1f}", "memory_train_s": f"{last['memory']['train_s']:.1f}"}
    print(" ".join(f"{k}={v}" for k, v in fields.items()))


if __name__ == "__main__":
    main()
