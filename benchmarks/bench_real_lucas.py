"""Real data: the project's models against classical baselines on LUCAS 2015 land cover.

    python benchmarks/bench_real_lucas.py            # 2,000 points, 3 folds x 3 seeds (about 2-3 min)
    python benchmarks/bench_real_lucas.py --quick    # 800 points, 3 folds x 1 seed (under a minute)

The points are the real LUCAS 2015 topsoil points shipped with the package
(``hh.datasets.lucas_points()``, 14,613 points; Source: Eurostat, LUCAS 2015 primary data),
labelled with their land cover LC1 in three levels (the ``"lucas-lc1"`` scheme, not EUNIS
habitats). A random subsample of ``--sites`` points (seeded by ``--seed``) gets two real
modalities: GPS through GeoCLIP's location encoder (512-d) and the environmental covariates of
``hh.environment.sample`` (standardised). ``hh.evaluation.cross_validate`` then scores, on
spatial blocks sized from the labels' range (``"auto"``), 3 folds x ``--seeds``, with every
model's hyperparameters chosen on validation blocks inside the training folds:

* the project's models: ``aligned`` (contrastive heads of the ``book`` profile, 5 km spatial
  positives), ``raw gps``, ``raw env``, ``raw concatenated``;
* the classical baselines: ``k-NN on coordinates``, ``random forest on coordinates + env``,
  ``majority``.

It prints macro-F1 (mean ± std over folds x seeds) per model and level, then per level the best
project model against the best baseline, paired over the same folds and seeds
(``CVResult.best_versus``: mean difference, 95 % corrected resampled t interval, wins).

``--quick`` takes 800 points and one seed (0) instead of 2,000 points and seeds 0, 1, 2; the
folds (3), models and grids are the same.

Last line: ``l1_project=... l1_project_model=... l1_baseline=... l1_baseline_model=...
l1_difference=... l1_ci_low=... l1_ci_high=...`` (the same for ``l2_`` and ``l3_``)
``sites=... seeds=... seconds=...``: macro-F1 to 3 decimals, model names with ``_`` for spaces,
``seconds`` the whole run (loading, embedding, sampling and cross-validation).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

PROJECT_MODELS = ("aligned", "raw gps", "raw env", "raw concatenated")
BASELINE_MODELS = ("k-NN on coordinates", "random forest on coordinates + env", "majority")


def token(name) -> str:
    """A model name as a ``name=value`` value: spaces become ``_``."""
    return str(name).replace(" ", "_")


def main(argv=None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="800 points and one seed")
    parser.add_argument("--sites", type=int, default=None, help="points in the subsample (default 2000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds of the folds (default 0 1 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsample")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="folds run at once")
    args = parser.parse_args(argv)
    n_sites = args.sites or (800 if args.quick else 2000)
    seeds = tuple(args.seeds or ((0,) if args.quick else (0, 1, 2)))
    if n_sites < 50:
        parser.error("--sites must be at least 50")
    start = time.perf_counter()

    import habitat_helpers as hh

    points = hh.datasets.lucas_points(verbose=False)
    if n_sites > len(points):
        parser.error(f"--sites {n_sites}: only {len(points)} points are shipped")
    rows = np.sort(np.random.default_rng(args.seed).choice(len(points), n_sites, replace=False))
    sites = points.iloc[rows].reset_index(drop=True)
    lat, lon = sites["lat"].to_numpy(float), sites["lon"].to_numpy(float)
    labels = sites[["label_l1", "label_l2", "label_l3"]]
    print(f"{len(sites)} of {len(points)} LUCAS 2015 points (seed {args.seed}); "
          f"{points.attrs.get('attribution', 'Source: Eurostat, LUCAS 2015 primary data')}")
    print("level-1 land cover: " + ", ".join(f"{code} {n}" for code, n in labels["label_l1"].value_counts().items()))

    t0 = time.perf_counter()
    encoder = hh.encoders.get_encoder("geoclip-location", device="cpu")
    gps = hh.embed.embed_locations(lat, lon, encoder)
    table, _ = hh.environment.sample(lat, lon)
    env, _ = hh.environment.standardise(table)
    embed_seconds = time.perf_counter() - t0
    print(f"embedded: gps {gps.shape[1]}-d, env {env.shape[1]} features, {embed_seconds:.1f} s")

    t0 = time.perf_counter()
    models = hh.evaluation.default_models(("gps", "env")) + [hh.evaluation.forest_model()]
    cv = hh.evaluation.cross_validate(
        lat, lon, labels, {"gps": gps, "env": env}, modalities=("gps", "env"), models=models,
        folds=args.folds, seeds=seeds,
        align_config=hh.align.config_for(hh.profiles.get("book"), 0, radius_km=5.0),
        scheme="lucas-lc1", n_jobs=args.jobs, progress=False)
    cv_seconds = time.perf_counter() - t0
    rule = cv.settings
    reach = rule.get("autocorrelation_range_km")
    print(f"cross-validation: {args.folds} folds x {len(seeds)} seeds, blocks of "
          f"{rule['block_size_deg']:.2f} deg ({rule['block_size_rule']}"
          + (f", {reach:.0f} km" if reach is not None else "") + f"), {cv_seconds:.1f} s")

    f1 = cv.summary()["macro_f1"]
    names = [m for m in (*PROJECT_MODELS, *BASELINE_MODELS) if m in f1.index.get_level_values(0)]
    width = max(map(len, names)) + 2
    print("\nmacro-F1, mean ± std over folds x seeds")
    print(f"{'model':<{width}}" + "".join(f"{'level ' + str(k):>16}" for k in (1, 2, 3)))
    for name in names:
        cells = []
        for level in (1, 2, 3):
            if (name, level) in f1.index:
                mean, std = f1.loc[(name, level), "mean"], f1.loc[(name, level), "std"]
                cells.append(f"{mean:.3f} ± {std:.3f}" if np.isfinite(std) else f"{mean:.3f}")
            else:
                cells.append("–")
        kind = "" if name in PROJECT_MODELS else "  (baseline)"
        print(f"{name:<{width}}" + "".join(f"{c:>16}" for c in cells) + kind)

    best = cv.best_versus(PROJECT_MODELS, BASELINE_MODELS)
    print("\nbest project model against best baseline, paired over folds x seeds")
    shown = best.assign(ci=[f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(best["ci_low"], best["ci_high"])],
                        won=[f"{w}/{p}" for w, p in zip(best["wins"], best["pairs"])])
    print(shown[["level", "model", "model_mean", "baseline", "baseline_mean", "difference", "ci", "won",
                 "verdict"]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if len(best):
        print(f"interval: {best['interval'].iloc[0]}")

    pairs = []
    for level in (1, 2, 3):
        row = best[best["level"] == level]
        if row.empty:
            pairs += [f"l{level}_project=nan", f"l{level}_baseline=nan"]
            continue
        r = row.iloc[0]
        pairs += [f"l{level}_project={r['model_mean']:.3f}", f"l{level}_project_model={token(r['model'])}",
                  f"l{level}_baseline={r['baseline_mean']:.3f}", f"l{level}_baseline_model={token(r['baseline'])}",
                  f"l{level}_difference={r['difference']:.3f}", f"l{level}_ci_low={r['ci_low']:.3f}",
                  f"l{level}_ci_high={r['ci_high']:.3f}"]
    seconds = time.perf_counter() - start
    print(f"\nembed {embed_seconds:.1f} s, cross-validation {cv_seconds:.1f} s, total {seconds:.1f} s")
    print(" ".join(pairs) + f" sites={n_sites} seeds={len(seeds)} seconds={seconds:.1f}")


if __name__ == "__main__":
    main()
