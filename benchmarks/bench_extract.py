"""Extraction throughput against the model's own forward pass and against a naive loop.

    python benchmarks/bench_extract.py                  # 600 demo photos of the book profile (112 px)
    python benchmarks/bench_extract.py --source lucas   # the real LUCAS sample photos (1600 x 1200 JPEG)
    python benchmarks/bench_extract.py --quick          # 192 photos (under a minute)

Three timings of the same encoder on the same demo photos, in one run:

* ``forward``: the model alone on tensors already decoded and batched in memory (the ceiling),
* ``extract``: ``hh.embed.extract`` (DataLoader, batches, shards written to disk),
* ``naive``: open, transform and embed one image at a time (full-size decoding).

Last line: ``images=... extract_img_s=... forward_img_s=... naive_img_s=... extract_vs_forward=...
extract_vs_naive=... forward_vs_naive=...`` (goals: extract_vs_forward >= 0.85, extract_vs_naive >= 3).

``forward_vs_naive`` is the ceiling of ``extract_vs_naive``: extraction cannot run faster than the
model on preloaded tensors. On 2 cores with small images it is about 1.5 (batching helps a small
CNN little on a CPU, and decoding is cheap), so the 3x goal is reachable only where decoding is
expensive (real 1600 x 1200 photos) or on a GPU, where the batched forward pass is far faster than
a one-image loop.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from PIL import Image

import habitat_helpers as hh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--source", choices=["demo", "lucas"], default="demo",
                        help="demo photos, or the real LUCAS sample in ../shared (repeated to --images)")
    args = parser.parse_args()
    n = 192 if args.quick else args.images
    profile = hh.profiles.get("book")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HABITAT_HELPERS_CACHE"] = os.path.join(tmp, "cache")
        if args.source == "lucas":
            shared = hh.paths.shared_dir()
            if shared is None:
                raise SystemExit("--source lucas needs ../shared/data/lucas_sample")
            photos = sorted(str(p) for p in (shared / "data/lucas_sample").rglob("*.jpg"))
            files = [photos[i % len(photos)] for i in range(n)]
            keys = [f"lucas|{i}|x" for i in range(n)]
        else:
            sites = hh.demo.load_sites(hh.demo.make_demo("book" if not args.quick else "tiny", 0, progress=False))
            keys, files, _ = hh.embed.item_keys(sites, "photo")
            keys, files = keys[:n], files[:n]
        size = profile.encoder_input_size
        encoder = hh.encoders.get_encoder(profile.image_encoder, image_size=size)
        model = encoder.model.eval()

        with torch.inference_mode():                       # warm-up (allocations, kernel choice)
            model(torch.zeros(args.batch_size, 3, size, size))

        tensors = [encoder.transform(Image.open(f)) for f in files]
        batches = [torch.stack(tensors[i:i + args.batch_size]) for i in range(0, n, args.batch_size)]
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                model(batch)
        forward = n / (time.perf_counter() - start)

        start = time.perf_counter()
        hh.embed.extract(keys, files, encoder, os.path.join(tmp, "shards"), shard_size=256,
                         batch_size=args.batch_size, num_workers=args.num_workers, progress=False)
        extract = n / (time.perf_counter() - start)

        naive_n = min(n, 96)
        start = time.perf_counter()
        with torch.inference_mode():
            for f in files[:naive_n]:
                with Image.open(f) as im:
                    model(encoder.transform(im).unsqueeze(0))
        naive = naive_n / (time.perf_counter() - start)

    print(f"source={args.source} images={n} size_px={size} batch={args.batch_size} workers={args.num_workers} "
          f"extract_img_s={extract:.1f} forward_img_s={forward:.1f} naive_img_s={naive:.1f} "
          f"extract_vs_forward={extract / forward:.2f} extract_vs_naive={extract / naive:.2f} "
          f"forward_vs_naive={forward / naive:.2f}")


if __name__ == "__main__":
    main()
