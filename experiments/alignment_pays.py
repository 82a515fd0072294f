"""When does alignment pay? The experiment registered in book/alignment_pays.md (issue 26).

Runs, on the synthetic demo drawn with six times the study's sites:

0. which alignment settings the validation blocks choose (positives x hub; one seed, all labels);
1. the grid: labelled fraction x alignment pool, *aligned + raw* in every cell, the models without
   alignment once, the cross-source transfer row;
2. the registered reading rule in every cell (``hh.evaluation.alignment_pays``).

Writes to ``--out`` (default ``experiments/results/alignment_pays``): ``scores.csv`` (every fold-level
score, with its pool), ``cells.csv`` (the rule in every cell), ``transfer.csv``, ``choices.csv``
(what validation chose, step 0 and the grid), ``settings.json``, ``heatmap.png`` and ``results.md``
(the tables the book page includes).

    python experiments/alignment_pays.py            # the registered run: book profile, about 40 min on 2 cores
    python experiments/alignment_pays.py --quick    # tiny profile, one seed, 2 folds: checks the script
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import habitat_helpers as hh

FRACTIONS = (0.05, 0.2, 1.0)
POOLS = tuple(hh.evaluation.ALIGN_POOLS)
#: extra sites drawn per study site: the pool with extra sites is then about ten times the labels
EXTRA_PER_STUDY_SITE = 5
#: photos per site (fewer than the book's five views and eight transect photos: the embedding of
#: 9,000 sites' photos is the run's longest step on 2 cores)
PHOTO_VIEWS = ("N", "E")
EMBAL_PHOTOS = 2
#: step 0: what a neighbour is x which pairs are contrasted
SETTINGS_GRID = {"positives": hh.losses.POSITIVES, "hub": ("none", "gps")}
TRANSFER = "transfer: aligned, photo alone"
TRANSFER_BASELINES = ("transfer: raw gps", "transfer: majority")
SUBSET_NAMES = {hh.evaluation.ALL_SITES: "all sites", hh.evaluation.PHOTO_SITES: "photo sites"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny profile, one seed, 2 folds (checks the script)")
    parser.add_argument("--out", default=None, help="output folder (default: experiments/results/alignment_pays, "
                                                    "or ..._quick with --quick)")
    parser.add_argument("--skip-settings", action="store_true", help="skip step 0 (the alignment settings)")
    parser.add_argument("--report-only", action="store_true",
                        help="only rewrite the tables, the summary and the heatmap from the saved scores")
    return parser.parse_args(argv)


def study_data(quick: bool, seed: int = 0, views: bool = False):
    """The demo drawn with (1 + EXTRA_PER_STUDY_SITE) x the profile's sites; the study sites (the
    profile's number, at random) keep their labels, the others are the extra sites. ``views``: the
    per-view photo embeddings too (``photo_per_view``, ``photo_site``)."""
    base = hh.profiles.get("tiny" if quick else "book")
    n_study = base.n_sites
    profile = dataclasses.replace(base, name=f"{base.name}-pool", n_sites=n_study * (1 + EXTRA_PER_STUDY_SITE),
                                  views=PHOTO_VIEWS, embal_photos_per_site=EMBAL_PHOTOS)
    data = hh.dataspec.load("demo", profile, seed, verbose=False)
    embeddings = hh.embed.site_embeddings(data, profile, seed)
    modalities = hh.align.available_modalities(embeddings)
    sites = data.sites.reset_index(drop=True)
    study = np.zeros(len(sites), bool)
    study[np.random.default_rng(seed).choice(len(sites), n_study, replace=False)] = True
    labels = sites[["label_l1", "label_l2", "label_l3"]].reset_index(drop=True).astype(object)
    labels.loc[~study, :] = None                   # the extra sites' labels are removed
    return {"profile": profile, "sites": sites, "labels": labels, "extra": ~study,
            "embeddings": {m: embeddings[m] for m in modalities
                           + (("photo_per_view", "photo_site") if views else ())}, "modalities": modalities,
            "scheme": hh.labels.get(data.label_scheme)}


def run(args) -> int:
    started = time.time()
    out = Path(args.out or ("experiments/results/alignment_pays" + ("_quick" if args.quick else "")))
    if args.report_only:
        report(out)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    d = study_data(args.quick)
    lat, lon = d["sites"]["lat"].to_numpy(float), d["sites"]["lon"].to_numpy(float)
    modalities = d["modalities"]
    seeds = (0,) if args.quick else (0, 1, 2)
    folds = 2 if args.quick else 3
    # the alignment defaults when this experiment was registered and run (they changed after it,
    # book/alignment_pays.md "The alignment settings"): a rerun measures the same thing
    config = dataclasses.replace(hh.align.config_for(d["profile"], 0, modalities=modalities),
                                 positives="radius", photo_views="mean")
    jobs = hh.runtime.fold_jobs("cpu")
    common = dict(modalities=modalities, align_config=config, scheme=d["scheme"], extra=d["extra"], n_jobs=jobs,
                  progress=True)          # a bar per run: each takes minutes
    models = {m.name: m for m in hh.evaluation.default_models(modalities, config)
              + hh.evaluation.transfer_models(modalities)}
    timings, choices = {}, []

    # step 0: which alignment settings validation chooses (apart from the grid)
    block = hh.spatial.resolve_block_size(lat, lon, d["labels"], "auto", 0)[0]
    if not args.skip_settings:
        t = time.time()
        step0 = hh.evaluation.cross_validate(
            lat, lon, d["labels"], d["embeddings"], models=[models[hh.evaluation.ALIGNED_AND_RAW]],
            folds=folds, block_size_deg=block, seeds=seeds[:1], align_grid=dict(SETTINGS_GRID), **common)
        timings["step 0: alignment settings"] = time.time() - t
        choices.append(step0.choices.assign(step="0: alignment settings", pool="training"))
        print(f"step 0 done in {timings['step 0: alignment settings']:.0f} s", file=sys.stderr)

    # step 1: the grid
    scores = []
    for pool in POOLS:
        t = time.time()
        names = [hh.evaluation.ALIGNED_AND_RAW, TRANSFER]
        if pool == "training":               # the models that do not depend on the pool, once
            names = list(models)
        chosen = [models[n] for n in names if n in models]
        result = hh.evaluation.cross_validate(
            lat, lon, d["labels"], d["embeddings"], models=chosen, folds=folds, block_size_deg=block, seeds=seeds,
            label_fractions=FRACTIONS, fraction_models=tuple(m.name for m in chosen), align_pool=pool, **common)
        timings[f"pool {pool}"] = time.time() - t
        scores.append(result.scores.assign(pool=pool))
        choices.append(result.choices.assign(step="1: grid", pool=pool))
        pool_sizes = result.settings["align_pool_sites_per_fold"]
        print(f"pool {pool}: {timings[f'pool {pool}']:.0f} s, heads trained on {pool_sizes} sites per fold",
              file=sys.stderr)
        (out / f"settings_{pool}.json").write_text(json.dumps(hh.metrics._plain(result.settings), indent=2))
    scores = pd.concat(scores, ignore_index=True)
    scores.to_csv(out / "scores.csv", index=False)
    pd.concat(choices, ignore_index=True).assign(params=lambda t: t["params"].map(json.dumps)).to_csv(
        out / "choices.csv", index=False)

    labelled_fit = {p: json.loads((out / f"settings_{p}.json").read_text()) for p in POOLS}
    settings = {
        "design": "book/alignment_pays.md", "rule": hh.evaluation.PAYS_RULE,
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "habitat_helpers_version": hh.__version__, "quick": args.quick, "profile": d["profile"].name,
        "n_sites_drawn": len(lat), "n_study_sites": int((~d["extra"]).sum()), "n_extra_sites": int(d["extra"].sum()),
        "n_labelled": int(d["labels"]["label_l1"].notna().sum()), "modalities": list(modalities),
        "seeds": list(seeds), "folds": folds, "block_size_deg": block, "fractions": list(FRACTIONS),
        "align_config": dataclasses.asdict(config), "settings_grid": {k: list(v) for k, v in SETTINGS_GRID.items()},
        "heads_trained_on_sites_per_fold": {p: s["align_pool_sites_per_fold"] for p, s in labelled_fit.items()},
        "seconds": {k: round(v) for k, v in timings.items()}, "total_seconds": round(time.time() - started),
    }
    (out / "settings.json").write_text(json.dumps(hh.metrics._plain(settings), indent=2))
    report(out)
    print(f"wrote {out} in {settings['total_seconds']} s", file=sys.stderr)
    return 0


def report(out: Path) -> None:
    """The cells, the transfer row, the capacity control, the tables, the summary and the heatmap,
    from the saved fold-level scores and settings (what ``--report-only`` rewrites)."""
    settings = json.loads((out / "settings.json").read_text())
    scores = pd.read_csv(out / "scores.csv")
    choices = pd.read_csv(out / "choices.csv")
    choices["params"] = choices["params"].map(json.loads)
    folds = settings["folds"]
    cells = hh.evaluation.alignment_pays(scores, folds)
    cells.to_csv(out / "cells.csv", index=False)
    transfer = hh.evaluation.alignment_pays(scores[scores["subset"] == hh.evaluation.PHOTO_SITES], folds,
                                            model=TRANSFER, baselines=TRANSFER_BASELINES)
    transfer.to_csv(out / "transfer.csv", index=False)
    capacity = capacity_control(scores, folds)
    capacity.to_csv(out / "capacity.csv", index=False)
    heatmap(cells, out / "heatmap.png", quick=settings["quick"])
    (out / "results.md").write_text(markdown(cells, transfer, capacity, choices, settings))
    (out / "summary.md").write_text(summary(cells, transfer, capacity, settings))


def capacity_control(scores: pd.DataFrame, folds: int) -> pd.DataFrame:
    """Against raw concatenated, on all labelled test sites: aligned + raw (every pool) and the
    capacity-matched MLP (no alignment), paired as the rule pairs."""
    sites = scores[scores["subset"] == hh.evaluation.ALL_SITES]
    parts = [hh.evaluation.alignment_pays(sites, folds, model=model, baselines=["raw concatenated"])
             for model in (hh.evaluation.ALIGNED_AND_RAW, hh.evaluation.MLP)]
    table = pd.concat(parts, ignore_index=True)
    table.loc[table["model"] == hh.evaluation.MLP, "pool"] = "(no alignment)"
    return table.drop(columns=["subset"])


def summary(cells, transfer, capacity, settings) -> str:
    """A few sentences, written from the numbers, for the model card and the results chapter."""
    deep = cells[cells["level"].isin([2, 3])]
    per_pool = deep.groupby("pool", sort=False)["pays"].agg(["sum", "size"])
    best = cells.loc[cells["difference"].idxmax()]
    worst = cells.loc[cells["difference"].idxmin()]
    mlp = capacity[capacity["model"] == hh.evaluation.MLP]
    lines = [
        f"On the synthetic demo ({settings['n_study_sites']} study sites, {settings['n_extra_sites']} extra unlabelled "
        f"sites, {len(settings['seeds'])} seeds x {settings['folds']} folds), *aligned + raw* beat the best model "
        f"without alignment, by the registered rule, in {int(cells['pays'].sum())} of {len(cells)} cells; at levels 2 "
        "and 3: " + ", ".join(f"{int(r['sum'])} of {int(r['size'])} with the {pool} pool"
                               for pool, r in per_pool.iterrows()) + ".",
        f"The largest mean difference was {best['difference']:+.3f} ({best['pool']} pool, "
        f"{best['fraction']:.0%} of the labels, {SUBSET_NAMES[best['subset']]}, level {best['level']}); the smallest "
        f"{worst['difference']:+.3f} ({worst['pool']} pool, {worst['fraction']:.0%}, {SUBSET_NAMES[worst['subset']]}, "
        f"level {worst['level']}).",
        f"The capacity control (the MLP as wide as the heads, without the contrastive objective) beat raw "
        f"concatenated in {int(mlp['pays'].sum())} of {len(mlp)} cells (all sites).",
        f"The cross-source transfer (photo alone, labels from sites without photos) beat the better transfer "
        f"baseline in {int(transfer['pays'].sum())} of {len(transfer)} cells.",
    ]
    return " ".join(lines) + "\n"


def heatmap(cells: pd.DataFrame, path: Path, quick: bool) -> None:
    """Paired differences (aligned + raw minus the best model without alignment) per cell, with
    the interval and the wins written in; a cell where alignment pays is framed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subsets = [s for s in SUBSET_NAMES if s in set(cells["subset"])]
    fig, axes = plt.subplots(len(subsets), 3, figsize=(15, 3.2 * len(subsets)), squeeze=False)
    span = max(0.05, float(cells["difference"].abs().max()))
    for row, subset in enumerate(subsets):
        for col, level in enumerate((1, 2, 3)):
            ax = axes[row][col]
            part = cells[(cells["subset"] == subset) & (cells["level"] == level)]
            grid = part.pivot(index="pool", columns="fraction", values="difference").reindex(POOLS)
            ax.imshow(grid.to_numpy(float), cmap="RdBu", vmin=-span, vmax=span, aspect="auto")
            for i, pool in enumerate(grid.index):
                for j, fraction in enumerate(grid.columns):
                    r = part[(part["pool"] == pool) & np.isclose(part["fraction"], fraction)]
                    if r.empty:
                        continue
                    r = r.iloc[0]
                    ax.text(j, i, f"{r['difference']:+.3f}\n[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]\n"
                            f"{r['wins']}/{r['pairs']} wins", ha="center", va="center", fontsize=7)
                    if r["pays"]:
                        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.5, ec="k"))
            ax.set_xticks(range(len(grid.columns)), [f"{f:.0%}" for f in grid.columns])
            ax.set_yticks(range(len(grid.index)), grid.index)
            ax.set(title=f"{SUBSET_NAMES[subset]}, level {level}", xlabel="labelled fraction",
                   ylabel="alignment pool" if col == 0 else "")
    fig.suptitle(("QUICK CHECK, tiny profile - " if quick else "") + "Synthetic demo: macro-F1 of aligned + raw "
                 "minus the best model without alignment (paired 95 % interval; framed: alignment pays)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(cells, transfer, capacity, choices, settings) -> str:
    """The tables the book page includes (every cell, whatever it shows)."""
    def fmt(t):
        t = t.copy()
        t["fraction"] = t["fraction"].map(lambda f: f"{f:.0%}")
        if "subset" in t:
            t["subset"] = t["subset"].map(SUBSET_NAMES)
        for c in ("model_mean", "baseline_mean"):
            t[c] = t[c].map("{:.3f}".format)
        for c in ("difference", "ci_low", "ci_high"):
            t[c] = t[c].map("{:+.3f}".format)
        t["wins"] = t["wins"].astype(str) + "/" + t["pairs"].astype(str)
        t["pays"] = t["pays"].map({True: "**yes**", False: "no"})
        if "subset" not in t:
            return t[["model", "pool", "fraction", "level", "model_mean", "baseline_mean", "difference", "ci_low",
                      "ci_high", "wins", "pays"]].rename(columns={"pays": "better"}).to_markdown(index=False)
        return t[["pool", "fraction", "subset", "level", "model_mean", "best_without_alignment", "baseline_mean",
                  "difference", "ci_low", "ci_high", "wins", "pays"]].to_markdown(index=False)

    step0 = choices[choices["step"].str.startswith("0")]
    lines = [f"Run of commit `{settings['commit'][:10]}`: {settings['n_study_sites']} study sites "
             f"({settings['n_labelled']} labelled), {settings['n_extra_sites']} extra unlabelled sites, "
             f"{settings['folds']} folds x seeds {settings['seeds']}, blocks of {settings['block_size_deg']:g} deg; "
             f"{settings['total_seconds'] / 60:.0f} min on this machine.", "",
             "Sites that trained the heads, mean per fold (the labelled pool: per labelled fraction; the others: "
             "the same heads at every fraction):", "",
             pd.DataFrame(settings["heads_trained_on_sites_per_fold"]).T.round(0).astype(object).fillna("").to_markdown(), "",
             f"Cells where alignment pays: {int(cells['pays'].sum())} of {len(cells)}.", "", fmt(cells), "",
             "The cross-source transfer row (labels from sites without photos, prediction from the photo alone):",
             "", fmt(transfer), "",
             "The capacity control, on all labelled test sites: *aligned + raw* (each pool) and the MLP as wide as "
             "the heads (no alignment), each minus raw concatenated (better: the interval above 0):", "",
             fmt(capacity), ""]
    if not step0.empty:
        counts = step0.assign(setting=step0["params"].map(
            lambda p: f"positives={p['positives']}, hub={p['hub']}")).groupby("setting").size()
        lines += ["Step 0, what the validation blocks chose for aligned + raw (folds):", "",
                  counts.rename("folds").to_frame().to_markdown(), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run(parse_args()))
