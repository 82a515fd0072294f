"""How the evaluation grows with the number of sites: GPS + covariates through the book's protocol.

    python benchmarks/bench_scale.py --quick        # 300 and 1,200 sites, 3 folds (about a minute)
    python benchmarks/bench_scale.py                # 20,000, 100,000 and 500,000 sites, 5 folds
    python benchmarks/bench_scale.py --sizes 5000,20000 --folds 3

The sites are synthetic (:func:`habitat_helpers.demo.habitat_sites`: the demo's habitat model at
any size, a spatially structured three-level EUNIS hierarchy, half of the sites labelled, 8 % of the
labels wrong). Each size runs the stages of ``python -m habitat_helpers evaluate --modalities
gps,env`` in the same order, in this process:

1. ``location``: GeoCLIP's location embedding of every site (shipped weights), written into a fresh GPS
   cache and read back as a memory map, as the command does (:func:`habitat_helpers.embed.gps_embeddings`);
2. ``covariates``: the ``env`` modality, the built-in covariates sampled and standardised;
3. ``cv``: :func:`habitat_helpers.evaluation.cross_validate` with the default models (aligned,
   aligned + raw, each raw input, raw concatenated, the capacity-matched MLP, k-NN on coordinates,
   majority), every hyperparameter chosen on validation blocks inside the training folds, folds in
   parallel on the cores (:func:`habitat_helpers.runtime.fold_jobs`); inside it, the seconds of the
   alignment and of each model's selection, refit and scoring, summed over folds
   (:meth:`habitat_helpers.evaluation.CVResult.timings`);
4. ``report``: ``CVResult.to_json()`` and the summary, as ``evaluate`` writes them.

For every stage: wall seconds, the peak memory of this process and its fold workers together
(sampled every 0.1 s; the sum of resident sets, which counts the embeddings that joblib maps into
every worker once per worker, and the sum of proportional sets, which counts them once), and the
growth ratio from one size to the next against the ratio of sizes (``ratio / size ratio``: 1 is
linear growth; N log N from 100k to 500k is about 1.14). Last line: ``name=value`` pairs of the largest size and the ratios between the last two.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import threading
import time
from contextlib import contextmanager


class PeakMemory:
    """Samples the memory of this process and its children every ``interval`` seconds: the sum of
    their resident sets (``peak``; pages shared between processes, such as the embeddings joblib
    maps into every fold worker, count once per process) and the sum of their proportional sets
    (``peak_pss``; a shared page split between the processes that map it: what they use together),
    and of their anonymous parts (``peak_anonymous``: resident less file-backed pages, which the
    kernel drops when memory is short; what stays of a memory-mapped file). ``peak_main`` and
    ``peak_worker``: the largest proportional set of this process, and of any one child, to say where
    the memory went."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self.process, self.interval = psutil.Process(), interval
        self.peak = self.peak_pss = self.peak_anonymous = self.peak_main = self.peak_worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sums(self) -> tuple[int, int, int, int, int]:
        """The sums of resident, proportional and anonymous sets, this process's proportional
        set, and the largest of a child's."""
        import psutil

        rss = pss = anonymous = main = worker = 0
        for process in [self.process, *self.process.children(recursive=True)]:
            try:
                info = process.memory_full_info()
            except psutil.Error:          # a worker that just ended
                continue
            own = getattr(info, "pss", info.rss)
            rss, pss = rss + info.rss, pss + own
            anonymous += info.rss - getattr(info, "shared", 0)
            if process.pid == self.process.pid:
                main = own
            else:
                worker = max(worker, own)
        return rss, pss, anonymous, main, worker

    def _peaks(self) -> tuple[int, int, int, int, int]:
        return self.peak, self.peak_pss, self.peak_anonymous, self.peak_main, self.peak_worker

    def _run(self):
        while not self._stop.is_set():
            (self.peak, self.peak_pss, self.peak_anonymous, self.peak_main,
             self.peak_worker) = (max(a, b) for a, b in zip(self._peaks(), self._sums()))
            self._stop.wait(self.interval)

    def reset(self) -> None:
        self.peak, self.peak_pss, self.peak_anonymous, self.peak_main, self.peak_worker = self._sums()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def stage(name: str, record: dict, memory: PeakMemory):
    memory.reset()
    start = time.perf_counter()
    yield
    record[name] = {"seconds": time.perf_counter() - start, "peak_gib": memory.peak / 2**30,
                    "peak_pss_gib": memory.peak_pss / 2**30, "peak_main_gib": memory.peak_main / 2**30,
                    "peak_worker_gib": memory.peak_worker / 2**30}
    print(f"  {name:<12} {record[name]['seconds']:8.1f} s  peak {record[name]['peak_gib']:5.2f} GiB "
          f"(resident, summed)  {record[name]['peak_pss_gib']:5.2f} GiB (proportional; this process "
          f"{record[name]['peak_main_gib']:.2f}, largest worker {record[name]['peak_worker_gib']:.2f})", flush=True)


def synthetic_sites(n: int, seed: int):
    """:func:`habitat_helpers.demo.habitat_sites` made in a child process: making them is not a
    stage of ``evaluate`` (a user reads a table), and the heap the generator leaves behind (about
    1 GiB at 500,000 sites, freed but kept by the allocator) would otherwise count in this process
    through every stage."""
    from concurrent.futures import ProcessPoolExecutor

    import habitat_helpers as hh

    with ProcessPoolExecutor(1) as pool:
        return pool.submit(hh.demo.habitat_sites, n, seed).result()


def run_size(n: int, folds: int, seed: int, memory: PeakMemory, cache: str, device: str = "cpu") -> dict:
    import numpy as np

    import habitat_helpers as hh

    record: dict = {}
    sites = synthetic_sites(n, seed)
    lat, lon = sites["lat"].to_numpy(float), sites["lon"].to_numpy(float)
    labels = sites[["label_l1", "label_l2", "label_l3"]]
    print(f"{n:,} synthetic sites, {int(labels['label_l1'].notna().sum()):,} labelled", flush=True)
    with stage("location", record, memory):     # as the command: into the GPS cache, read back as a memory map
        gps = hh.embed.gps_embeddings(lat, lon, cache_dir=cache, device=device, progress=False)
    with stage("covariates", record, memory):
        env, _, _ = hh.environment.features(lat, lon)
    with stage("cv", record, memory):
        cv = hh.evaluation.cross_validate(
            lat, lon, labels, {"gps": gps, "env": env}, modalities=("gps", "env"), folds=folds, seeds=(seed,),
            align_config=hh.align.AlignConfig(), device=device, n_jobs=hh.runtime.fold_jobs(device), progress=False)
    with stage("report", record, memory):
        text = json.dumps(hh.metrics.plain(cv.to_json()))
        summary = cv.summary()
    record["parts"] = {name: float(row["total"]) for name, row in cv.timings().iterrows()}
    record["results_mib"] = len(text) / 2**20
    record["aligned_macro_f1_l2"] = float(summary["macro_f1"]["mean"].get(("aligned", 2), np.nan))
    for name, seconds in record["parts"].items():
        print(f"    {name:<34} {seconds:8.1f} s (summed over folds)")
    return record


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 and 1,200 sites, 3 folds")
    parser.add_argument("--sizes", default=None, help="comma list of site counts (default 20000,100000,500000)")
    parser.add_argument("--folds", type=int, default=None, help="default 5 (3 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write every number as JSON here")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the encoder, the heads; default cpu)")
    args = parser.parse_args()
    sizes = [int(s) for s in (args.sizes or ("300,1200" if args.quick else "20000,100000,500000")).split(",")]
    folds = args.folds or (3 if args.quick else 5)
    memory = PeakMemory()
    start = time.perf_counter()
    records = {}
    for n in sizes:
        with tempfile.TemporaryDirectory() as cache:            # a fresh GPS cache: the embedding is timed
            records[n] = run_size(n, folds, args.seed, memory, cache, args.device)
        records[n]["total_seconds"] = sum(records[n][s]["seconds"] for s in ("location", "covariates", "cv",
                                                                             "report"))
    memory.close()
    pairs = list(zip(sizes, sizes[1:]))
    print("\ngrowth (time ratio / size ratio; 1 = linear):")
    for a, b in pairs:
        line = [f"{a:,} -> {b:,}:"]
        for name in ("location", "covariates", "cv", "report"):
            ratio = records[b][name]["seconds"] / max(records[a][name]["seconds"], 1e-9)
            line.append(f"{name} {ratio / (b / a):.2f}")
        print("  " + ", ".join(line))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"sizes": sizes, "folds": folds, "records": {str(k): v for k, v in records.items()}}, f,
                      indent=2)
    last = records[sizes[-1]]
    fields = {"sites": sizes[-1], "folds": folds, "seconds": f"{last['total_seconds']:.1f}"}
    fields |= {key: f"{max(last[s][key] for s in ('location', 'covariates', 'cv', 'report')):.2f}"
               for key in ("peak_gib", "peak_pss_gib", "peak_main_gib", "peak_worker_gib")}
    fields |= {f"{s}_s": f"{last[s]['seconds']:.1f}" for s in ("location", "covariates", "cv", "report")}
    if pairs:
        a, b = pairs[-1]
        for name in ("location", "covariates", "cv", "report"):
            ratio = records[b][name]["seconds"] / max(records[a][name]["seconds"], 1e-9)
            fields[f"{name}_growth"] = f"{ratio / (b / a):.2f}"
        fields["nlogn_growth"] = f"{math.log(b) / math.log(a):.2f}"
    fields["bench_seconds"] = f"{time.perf_counter() - start:.1f}"
    print(" ".join(f"{k}={v}" for k, v in fields.items()))


if __name__ == "__main__":
    main()
