"""Extraction throughput against the model's own forward pass and against a naive loop.

    python benchmarks/bench_extract.py                  # 600 demo photos of the book profile (112 px)
    python benchmarks/bench_extract.py --source lucas   # the real LUCAS sample photos (1600 x 1200 JPEG)
    python benchmarks/bench_extract.py --quick          # 192 photos (under a minute)
    python benchmarks/bench_extract.py --device cuda --num-workers 8   # on a GPU (benchmarks/gpu_check.sh)

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

``--device cuda`` runs all three on the GPU the way ``hh.embed`` does there: float16 autocast and
channels-last memory, batches copied from pinned host memory; the timings wait for the GPU
(``torch.cuda.synchronize``) before they stop.
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
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda or auto; on cuda with float16 autocast and channels-last, as hh.embed")
    parser.add_argument("--source", choices=["demo", "lucas"], default="demo",
                        help="demo photos, or the real LUCAS sample in ../shared (repeated to --images)")
    args = parser.parse_args()
    n = 192 if args.quick else args.images
    device = hh.runtime.resolve_device(args.device)      # fails at once when cuda is asked for and absent
    on_gpu = device.startswith("cuda")
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
        model = encoder.model.to(device).eval()
        if on_gpu:
            model = model.to(memory_format=torch.channels_last)

        def run(batch):
            batch = batch.to(device, non_blocking=True)
            if on_gpu:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type="cuda" if on_gpu else "cpu", dtype=torch.float16, enabled=on_gpu):
                return model(batch)

        def wait():
            if on_gpu:
                torch.cuda.synchronize()

        with torch.inference_mode():                       # warm-up (allocations, kernel choice)
            for _ in range(3 if on_gpu else 1):
                run(torch.zeros(args.batch_size, 3, size, size))
            wait()

        tensors = [encoder.transform(Image.open(f)) for f in files]
        batches = [torch.stack(tensors[i:i + args.batch_size]) for i in range(0, n, args.batch_size)]
        if on_gpu:
            batches = [b.pin_memory() for b in batches]
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                run(batch)
            wait()
        forward = n / (time.perf_counter() - start)

        start = time.perf_counter()
        hh.embed.extract(keys, files, encoder, os.path.join(tmp, "shards"), shard_size=256,
                         batch_size=args.batch_size, num_workers=args.num_workers, device=device, progress=False)
        extract = n / (time.perf_counter() - start)

        naive_n = min(n, 96)
        start = time.perf_counter()
        with torch.inference_mode():
            for f in files[:naive_n]:
                with Image.open(f) as im:
                    run(encoder.transform(im).unsqueeze(0)).float().cpu()
        naive = naive_n / (time.perf_counter() - start)

    print(f"device={device} source={args.source} images={n} size_px={size} batch={args.batch_size} workers={args.num_workers} "
          f"extract_img_s={extract:.1f} forward_img_s={forward:.1f} naive_img_s={naive:.1f} "
          f"extract_vs_forward={extract / forward:.2f} extract_vs_naive={extract / naive:.2f} "
          f"forward_vs_naive={forward / naive:.2f}")


if __name__ == "__main__":
    main()
