"""Which alignment settings do the validation blocks choose? The selection run registered in
book/alignment_pays.md ("The alignment settings"), issue 26.

On the study sites of ``alignment_pays.py`` (the synthetic demo, the training pool, all labels),
*aligned + raw* chooses on the validation blocks of each fold, 3 seeds x 3 folds:

A. what a neighbour is (``positives``) x which pairs are contrasted (``hub``), the other settings
   at their defaults;
B. photo views as items or their mean (``photo_views``) x GeoCLIP's output layer frozen or trained
   (``location_layers``), with A's defaults.

The registered reading rule (``hh.evaluation.most_chosen``): per setting, the value chosen in most folds; a tie keeps
the package's default. Writes ``choices.csv``, ``counts.csv``, ``settings.json`` and ``results.md``
to ``--out`` (default ``experiments/results/alignment_settings``).

    python experiments/alignment_settings.py            # the registered run: about 30 min on 2 cores
    python experiments/alignment_settings.py --quick    # tiny profile, one seed, 2 folds: checks the script
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from alignment_pays import study_data

import habitat_helpers as hh

#: The package's defaults when this run was registered (37ae0d5); the run starts from them and breaks
#: ties towards them, so that a rerun measures the same thing after the defaults changed.
REGISTERED_DEFAULTS = {"positives": "radius", "hub": "none", "photo_views": "mean", "location_layers": "frozen"}
STAGES = {
    "A": {"positives": hh.losses.POSITIVES, "hub": ("none", "gps")},
    "B": {"photo_views": hh.align.PHOTO_VIEWS, "location_layers": hh.align.LOCATION_LAYERS},
}


def run(args) -> int:
    started = time.time()
    out = Path(args.out or ("experiments/results/alignment_settings" + ("_quick" if args.quick else "")))
    out.mkdir(parents=True, exist_ok=True)
    d = study_data(args.quick, views=True)
    lat, lon = d["sites"]["lat"].to_numpy(float), d["sites"]["lon"].to_numpy(float)
    modalities = d["modalities"]
    seeds = (0,) if args.quick else (0, 1, 2)
    folds = 2 if args.quick else 3
    config = dataclasses.replace(hh.align.config_for(d["profile"], 0, modalities=modalities), **REGISTERED_DEFAULTS)
    model = [m for m in hh.evaluation.default_models(modalities, config)
             if m.name == hh.evaluation.ALIGNED_AND_RAW]
    block = hh.spatial.resolve_block_size(lat, lon, d["labels"], "auto", 0)[0]
    all_choices, all_counts, timings, chosen = [], [], {}, {}
    for stage, grid in STAGES.items():
        t = time.time()
        stage_config = dataclasses.replace(config, **chosen)
        result = hh.evaluation.cross_validate(
            lat, lon, d["labels"], d["embeddings"], modalities=modalities, models=model, align_config=stage_config,
            scheme=d["scheme"], extra=d["extra"], n_jobs=hh.runtime.fold_jobs("cpu"), folds=folds, seeds=seeds,
            block_size_deg=block, align_grid=dict(grid), progress=True)
        timings[f"stage {stage}"] = round(time.time() - t)
        picked, counts = hh.evaluation.most_chosen(result.choices, grid, config)
        chosen.update(picked)
        all_choices.append(result.choices.assign(stage=stage))
        all_counts.append(counts.assign(stage=stage))
        print(f"stage {stage}: {timings[f'stage {stage}']} s, chosen {picked}", file=sys.stderr)
    choices = pd.concat(all_choices, ignore_index=True)
    choices.assign(params=choices["params"].map(json.dumps)).to_csv(out / "choices.csv", index=False)
    counts = pd.concat(all_counts, ignore_index=True)
    counts.to_csv(out / "counts.csv", index=False)
    settings = {
        "design": "book/alignment_pays.md (The alignment settings)",
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "habitat_helpers_version": hh.__version__, "quick": args.quick, "profile": d["profile"].name,
        "n_study_sites": int((~d["extra"]).sum()), "seeds": list(seeds), "folds": folds, "block_size_deg": block,
        "stages": {k: {n: list(v) for n, v in g.items()} for k, g in STAGES.items()},
        "package_defaults": REGISTERED_DEFAULTS,
        "chosen": chosen, "seconds": timings, "total_seconds": round(time.time() - started),
    }
    (out / "settings.json").write_text(json.dumps(hh.metrics._plain(settings), indent=2))
    (out / "results.md").write_text(markdown(counts, settings))
    print(f"wrote {out} in {settings['total_seconds']} s", file=sys.stderr)
    return 0


def markdown(counts: pd.DataFrame, settings: dict) -> str:
    """The counts per stage and setting, and what the rule makes of them."""
    n = len(settings["seeds"]) * settings["folds"]
    lines = [f"Folds (of {n}: {len(settings['seeds'])} seeds x {settings['folds']} folds) in which the validation "
             "blocks chose each value, for *aligned + raw*:", "",
             "| stage | setting | value | folds | package default | the rule's choice |", "|---|---|---|---|---|---|"]
    for row in counts.itertuples(index=False):
        default = settings["package_defaults"][row.setting]
        lines.append(f"| {row.stage} | `{row.setting}` | `{row.value}` | {row.folds} | "
                     f"{'yes' if row.value == default else ''} | "
                     f"{'**yes**' if row.value == settings['chosen'][row.setting] else ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny profile, one seed, 2 folds (checks the script)")
    parser.add_argument("--out", default=None)
    sys.exit(run(parser.parse_args()))
