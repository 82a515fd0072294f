"""``python -m habitat_helpers evaluate``: spatial block cross-validation of any table of sites
(:func:`habitat_helpers.evaluation.cross_validate`), written to ``results.json`` with the
fold-level scores first (see :mod:`habitat_helpers.cli`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import habitat_helpers

from .. import align, embed, environment, evaluation, labels, metrics, paths, pipeline, runtime, spatial
from ..errors import UsageError, comma_list
from .options import (
    _block_size,
    add_image_arguments,
    add_table_arguments,
    env_features,
    env_rasters,
    read_extra_sites,
    read_study,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_table_arguments(parser)
    cv = parser.add_argument_group("the evaluation")
    cv.add_argument("--modalities", type=comma_list(str, ("photo", "satellite", "gps", "env")), default=["gps"],
                    help="comma list from photo, satellite, gps, env (default: gps); with two or more the "
                         "aligned model is trained and compared with the baselines. env = environmental "
                         "covariates sampled at the sites (climate, climate zone, land, coast distance)")
    cv.add_argument("--covariates", type=comma_list(str), default=None,
                    help="built-in covariates of the env modality (default: all; see "
                         "hh.environment.describe()), e.g. t_mean_annual,p_annual,koppen_main; "
                         "--env-raster adds to them")
    cv.add_argument("--env-raster", action="append", default=[], metavar="NAME=PATH[:BAND]",
                    help="one more env covariate from your own GeoTIFF or NetCDF (any CRS, bilinear), e.g. "
                         "dem=/data/eu_dem.tif or bio1=/data/wc2.1_30s_bio_1.tif:1; repeat for several")
    cv.add_argument("--levels", type=comma_list(int, (1, 2, 3)), default=[1, 2, 3],
                    help="levels of the label scheme reported in results.json (default: 1,2,3)")
    protocol = evaluation.Protocol()          # every default below comes from here
    cv.add_argument("--folds", type=int, default=protocol.folds,
                    help=f"spatial cross-validation folds (default: {protocol.folds})")
    cv.add_argument("--block-size-deg", type=_block_size, default=protocol.block_size_deg,
                    help="side of the square spatial blocks in degrees, or auto: the distance up to which the "
                         f"labels agree more than chance (default: {protocol.block_size_deg})")
    cv.add_argument("--buffer-km", type=float, default=protocol.buffer_km,
                    help="leave out of training the sites within this distance of a test site "
                         f"(default: {protocol.buffer_km:g})")
    seeds = cv.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, help="one random seed")
    seeds.add_argument("--seeds", type=comma_list(int), default=list(protocol.seeds),
                       help="seeds, e.g. 0,1,2 (the folds are redrawn for each; default: "
                            f"{','.join(map(str, protocol.seeds))})")
    cv.add_argument("--selection-sites", type=_sites, default=protocol.selection_sites,
                    help="most labelled sites that fit, and most that score, each candidate of a model's grid "
                         "in each fold (a random sample when there are more; the chosen candidate is refitted "
                         f"on --fit-sites), or all (default: {protocol.selection_sites})")
    cv.add_argument("--fit-sites", type=_sites, default=protocol.fit_sites,
                    help="most labelled training sites the chosen candidate is refitted on in each fold "
                         f"(a random sample when there are more), or all (default: {protocol.fit_sites})")
    cv.add_argument("--label-fractions", type=comma_list(float), default=list(protocol.label_fractions),
                    help="fractions of the labelled training sites, for a label-efficiency curve (default: 1)")

    model = parser.add_argument_group("models and embeddings")
    add_image_arguments(model)
    model.add_argument("--radius-km", type=float, default=align.AlignConfig.radius_km,
                       help="alignment: sites closer than this are positives for each other "
                            f"(default: {align.AlignConfig.radius_km:g})")
    model.add_argument("--align-epochs", type=int, default=None,
                       help="alignment: most training epochs (default: hh.align.AlignConfig's)")
    model.add_argument("--align-grid", action="append", default=[], type=_align_grid_item, metavar="FIELD=V1,V2",
                       help="alignment settings to choose from on the validation blocks of every fold, an "
                            "hh.align.AlignConfig field and its values, e.g. radius_km=0,5,25, "
                            "positives=radius,site, hub=none,gps, photo_views=mean,items or "
                            "location_layers=frozen,last; repeat for several fields (each value retrains the "
                            "alignment in every fold; default: none, the settings as given)")
    model.add_argument("--align-pool", choices=tuple(evaluation.ALIGN_POOLS), default=protocol.align_pool,
                       help="sites that train the contrastive heads in each fold: "
                            + "; ".join(f"{k}: {v}" for k, v in evaluation.ALIGN_POOLS.items())
                            + f" (default: {protocol.align_pool})")
    model.add_argument("--extra-sites", default=None, metavar="TABLE",
                       help="unlabelled sites that only train the alignment (with --align-pool extra or "
                            "transductive), a table with the same columns as --sites; its labels, if any, must "
                            "be empty; never scored")
    model.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto, a GPU when present)")
    model.add_argument("--jobs", type=int, default=None,
                       help="folds run at once, each in its own process (default: the cores, at most 4, on a "
                            "CPU; 1 on a GPU); the numbers do not depend on it")
    model.add_argument("--cache", default=None,
                       help="embedding cache folder (default: $HABITAT_HELPERS_CACHE/embeddings)")

    output = parser.add_argument_group("output")
    output.add_argument("--out", default="results.json",
                        help="results file (default: results.json); the fold-level scores go beside it "
                             "(<stem>_folds.csv, and <stem>_failures.csv when a model could not be fitted)")
    output.add_argument("--save-model", default=None, metavar="DIR",
                        help="after the evaluation, refit one model on every site and save it here "
                             "(hh.pipeline: loads without pickle; the map command reads it)")
    output.add_argument("--keep", default=None, metavar="MODEL",
                        help="the model --save-model keeps (default: the best mean validation macro-F1 over "
                             "the folds, picked on validation blocks, never on the test folds)")
    output.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Read the table, embed, cross-validate, write results.json and print a summary."""
    seeds = args.seeds if args.seed is None else [args.seed]
    protocol = _check_evaluate_arguments(args, seeds)
    sites, scheme, extra = read_study(args)
    labels = pd.DataFrame(sites[["label_l1", "label_l2", "label_l3"]]).reset_index(drop=True)
    _check_sites(sites, labels, args, seeds)
    if args.align_pool == "extra" and not args.extra_sites and not extra.any():
        raise UsageError("--align-pool extra needs unlabelled extra sites: --extra-sites TABLE, or sources marked "
                         "'extra: true' in the data spec")
    if args.extra_sites:
        more = read_extra_sites(args)
        attrs = dict(sites.attrs)                   # what the report reads about the study's table
        sites = pd.concat([sites, more], ignore_index=True)
        sites.attrs.update(attrs, extra_sites={"file": str(Path(args.extra_sites).resolve()), "sites": len(more),
                                               "load_report": more.attrs.get("load_report")})
        labels = pd.DataFrame(sites[["label_l1", "label_l2", "label_l3"]]).reset_index(drop=True)
        extra = np.r_[extra, np.ones(len(more), bool)]
    lat, lon = sites["lat"].to_numpy(float), sites["lon"].to_numpy(float)

    device = runtime.resolve_device(args.device)
    cache = Path(args.cache) if args.cache else paths.cache_dir() / "embeddings"
    embeddings = embed.embed_for_evaluation(sites, [m for m in args.modalities if m != "env"], cache_dir=cache,
                                      image_encoder=args.image_encoder, image_size=args.image_size, device=device,
                                      batch_size=args.batch_size, num_workers=args.num_workers,
                                      progress=not args.no_progress)
    env_info = None
    if "env" in args.modalities:
        embeddings["env"], env_columns, env_report = env_features(lat, lon, args.covariates, args.env_rasters)
        print(env_report, file=sys.stderr)
        env_info = {"encoder": "environmental covariates (hh.environment), standardised, missing -> 0 + indicator",
                    "covariates": list(env_report.missing), "features": env_columns,
                    "missing_per_covariate": dict(env_report.missing)}

    align_settings = {"radius_km": args.radius_km}
    if args.align_epochs is not None:
        align_settings["epochs"] = args.align_epochs
    try:
        result = evaluation.cross_validate(
            lat=lat, lon=lon, labels=labels, embeddings=embeddings, modalities=tuple(args.modalities),
            protocol=protocol, align_config=align.AlignConfig(**align_settings),
            scheme=scheme, device=device, progress=not args.no_progress, extra=extra,
            n_jobs=args.jobs if args.jobs is not None else runtime.fold_jobs(device))
    except ValueError as err:            # e.g. fewer spatial blocks than folds for one of the seeds
        raise UsageError(str(err)) from None

    # What was computed is saved first, in the plainest form, so that no later step can lose it.
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = write_fold_scores(result, out, args.levels)
    try:
        report = {
            "habitat_helpers_version": habitat_helpers.__version__,
            "input": {"file": str(Path(args.sites).resolve()), "columns": sites.attrs["columns"]},
            "load_report": {**sites.attrs["load_report"], "unknown_codes": sites.attrs["unknown_codes"]},
            **({"extra_sites": sites.attrs["extra_sites"]} if "extra_sites" in sites.attrs else {}),
            "levels": list(args.levels),
            "embeddings": {m: {"encoder": "geoclip-location" if m == "gps" else args.image_encoder,
                               **(env_info if m == "env" else {}),
                               "sites_with_input": int((~np.isnan(a).any(axis=1)).sum())}
                           for m, a in embeddings.items() if m in args.modalities},
            **keep_levels(result.to_json(), args.levels),
        }
        out.write_text(json.dumps(metrics.plain(report), indent=2, allow_nan=False))
    except Exception:
        print(f"error: writing {out} failed; the fold-level scores are saved in "
              f"{', '.join(map(str, saved))}", file=sys.stderr)
        raise
    print()
    print(summary_text(result, args.levels))
    print(f"\nwrote {out}, {', '.join(map(str, saved))}")
    if result.scores.empty:
        raise UsageError("no model could be fitted in any fold (the reasons are listed above and in "
                         f"{out.name}): use larger blocks or fewer folds, or check the labels")
    if args.save_model:
        _save_model(args, result, lat, lon, labels, embeddings, scheme, align_settings, device)
    return 0


def _save_model(args, result, lat, lon, labels, embeddings, scheme, align_settings, device) -> None:
    """--save-model: the kept model refitted on every site (:func:`habitat_helpers.pipeline.from_cv`)."""
    env = None
    if "env" in args.modalities:          # the standardisation of the env input, for new sites
        table, _ = environment.sample(lat, lon, list(args.covariates or environment.DEFAULT_COVARIATES),
                                      args.env_rasters or None)      # as env_features, with its standardiser
        _, standardiser = environment.standardise(table, missing="indicator")
        env = pipeline.env_settings(table.columns, standardiser, args.env_rasters)
    try:
        kept = pipeline.from_cv(result, lat, lon, labels, embeddings, model=args.keep,
                                align_config=align.AlignConfig(**align_settings), scheme=scheme,
                                seed=result.settings["seeds"][0], env=env, device=device,
                                encoder_names={m: args.image_encoder for m in ("photo", "satellite")
                                               if m in args.modalities},
                                progress=not args.no_progress)
        folder = kept.save(args.save_model)
    except ValueError as err:             # e.g. a model that cannot be saved without pickle
        raise UsageError(f"--save-model: {err}") from None
    cv = kept.info["cv"]
    print(f"kept {kept.model} ({', '.join(f'{k}={v}' for k, v in kept.params.items()) or 'no setting'}; chosen "
          f"in {cv['setting_chosen_in']} of {cv['of_folds']} folds), refitted on {kept.info['n_trained']} "
          f"labelled sites: {folder}")


def _sites(text: str) -> int | None:
    """An argparse type: a number of sites, or ``all`` (``None``: no sample)."""
    if text.strip().lower() == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of sites or 'all', not {text!r}") from None


def _align_grid_item(text: str) -> tuple[str, tuple]:
    """An argparse type: ``"radius_km=0,5,25"`` -> ``("radius_km", (0.0, 5.0, 25.0))``, each value
    of the type of the :class:`habitat_helpers.align.AlignConfig` field's default."""

    name, sep, values = text.partition("=")
    name = name.strip()
    fields = {f.name: f for f in dataclasses.fields(align.AlignConfig)} if sep else {}
    if name not in fields or name in ("seed", "modalities"):
        known = ", ".join(sorted(set(f.name for f in dataclasses.fields(align.AlignConfig)) - {"seed", "modalities"}))
        raise argparse.ArgumentTypeError(f"{text!r}: expected FIELD=V1,V2 with FIELD among {known}")
    default = getattr(align.AlignConfig(), name)
    kind = type(default) if isinstance(default, (int, float, str)) and not isinstance(default, bool) else float
    parsed = comma_list(kind)(values)
    if not parsed:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one value")
    return name, tuple(parsed)


def _check_evaluate_arguments(args, seeds):
    """Problems that need no data, found before anything slow runs; returns the
    :class:`habitat_helpers.evaluation.Protocol` of the options."""

    try:
        labels.get(args.label_scheme)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(f"--label-scheme: {err}") from None
    if args.folds < 2:
        raise UsageError("--folds must be at least 2")
    if args.block_size_deg != "auto" and args.block_size_deg <= 0:
        raise UsageError("--block-size-deg must be positive")
    if args.buffer_km < 0:
        raise UsageError("--buffer-km must be 0 or more")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if any(not 0 < f <= 1 for f in args.label_fractions):
        raise UsageError("--label-fractions must lie in (0, 1], e.g. 0.1,0.5,1")
    try:
        protocol = evaluation.Protocol(folds=args.folds, block_size_deg=args.block_size_deg,
                                       buffer_km=args.buffer_km, seeds=tuple(seeds),
                                       label_fractions=tuple(args.label_fractions),
                                       align_grid=dict(args.align_grid), align_pool=args.align_pool,
                                       selection_sites=args.selection_sites, fit_sites=args.fit_sites)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.align_pool in ("extra", "transductive") and len(args.modalities) < 2:
        raise UsageError(f"--align-pool {args.align_pool}: the alignment needs two or more --modalities")
    if args.keep and not args.save_model:
        raise UsageError("--keep names the model --save-model keeps: add --save-model DIR")
    if args.extra_sites and args.align_pool not in ("extra", "transductive"):
        raise UsageError(f"--extra-sites is read only with --align-pool extra or transductive, not {args.align_pool}")
    if "photo" in args.modalities and not args.photo_cols:
        raise UsageError("--modalities photo needs --photo-cols naming the photo column(s)")
    if "satellite" in args.modalities and not args.satellite_col:
        raise UsageError("--modalities satellite needs --satellite-col naming the patch column")
    if (args.covariates or args.env_raster) and "env" not in args.modalities:
        raise UsageError("--covariates and --env-raster describe the env modality: add env to --modalities")
    args.env_rasters = env_rasters(args.env_raster)
    if args.covariates:
        unknown = [c for c in args.covariates if c not in environment.COVARIATES]
        if unknown:
            raise UsageError(f"unknown covariate(s) {', '.join(unknown)}; built-in: "
                             f"{', '.join(environment.COVARIATES)}")
    return protocol


def _check_sites(sites, labels: pd.DataFrame, args, seeds) -> None:
    """Problems in the table itself, found before the (possibly long) embedding."""

    labelled = labels["label_l1"].notna()
    if not labelled.any():
        where = sites.attrs["columns"].get("label", sites.attrs["columns"].get("data spec"))
        raise UsageError(f"no labelled rows: none of the {len(sites)} sites kept has a known "
                         f"{args.label_scheme} code in {where!r} (see the report above)")
    if all(labels[column].nunique() < 2 for column in labels.columns):
        raise UsageError("all labelled sites share one habitat at every level: a classifier needs at least two")
    unlabelled = [level for level in args.levels if labels[f"label_l{level}"].isna().all()]
    if len(unlabelled) == len(args.levels):
        deepest = max(level for level in (1, 2, 3) if labels[f"label_l{level}"].notna().any())
        raise UsageError(f"no site is labelled at level {', '.join(map(str, unlabelled))}: the labels stop at "
                         f"level {deepest}; ask for --levels {','.join(map(str, range(1, deepest + 1)))}")
    for level in unlabelled:
        print(f"note: no site is labelled at level {level}: not evaluated", file=sys.stderr)
    has_input = {"photo": sites["photos"].str.len() > 0, "satellite": sites["satellite"].notna()}
    for modality in ("photo", "satellite"):
        if modality in args.modalities and not has_input[modality].any():
            raise UsageError(f"no site has a usable {modality} file (see the notes above): "
                             f"fix the paths or drop {modality} from --modalities")
    lat, lon = sites["lat"].to_numpy(float), sites["lon"].to_numpy(float)
    try:
        size, how = spatial.resolve_block_size(lat, lon, labels, args.block_size_deg, seeds[0])
        if args.block_size_deg == "auto":
            print(f"blocks of {size:g}° from the labels' autocorrelation range "
                  f"({how['autocorrelation_range_km']:.0f} km)", file=sys.stderr)
        for seed in seeds:
            evaluation.block_folds(lat, lon, size, args.folds, seed)
    except ValueError as err:
        raise UsageError(str(err)) from None


def write_fold_scores(result, out: Path, levels) -> list[Path]:
    """Save the fold-level scores of ``levels`` as ``<out stem>_folds.csv`` and, when some fits
    failed, the failures as ``<out stem>_failures.csv`` (a stale one is removed). Returns the
    files written."""
    folds = out.with_name(f"{out.stem}_folds.csv")
    result.scores[result.scores["level"].isin(levels)].to_csv(folds, index=False)
    failures = result.failures()
    failures = failures[failures["level"].isna() | failures["level"].isin(levels)]
    path = out.with_name(f"{out.stem}_failures.csv")
    if failures.empty:
        path.unlink(missing_ok=True)
        return [folds]
    failures.to_csv(path, index=False)
    return [folds, path]


def keep_levels(value, levels):
    """Drop every ``level<k>`` entry (and every fold record of a ``level``) outside ``levels``,
    wherever it sits in the nested result, so that results.json reports only the levels asked for."""
    wanted = {f"level{k}" for k in levels}
    if isinstance(value, dict):
        return {k: keep_levels(v, levels) for k, v in value.items()
                if not (re.fullmatch(r"level\d+", str(k)) and k not in wanted)}
    if isinstance(value, list):
        return [keep_levels(v, levels) for v in value
                if not (isinstance(v, dict) and isinstance(v.get("level"), (int, np.integer)) and v["level"] not in levels)]
    return value


def summary_text(result, levels) -> str:
    """A small table: mean ± std macro-F1 over the folds, per model (rows) and level (columns),
    then the levels not evaluated (no site labelled at them) and the models that could not be
    fitted, one line per model and reason, counted over the folds."""

    not_evaluated = result.levels_not_evaluated()
    table = result.summary(evaluation.ALL_SITES)
    models = list(dict.fromkeys(table.index.get_level_values(0)))
    rows = {}
    for model in models:
        cells = {}
        for level in (lv for lv in levels if lv not in not_evaluated):
            mean = table["macro_f1"]["mean"].get((model, level), np.nan)
            std = table["macro_f1"]["std"].get((model, level), np.nan)
            cells[f"level {level}"] = "-" if np.isnan(mean) else f"{mean:.3f} ± {0.0 if np.isnan(std) else std:.3f}"
        rows[model] = cells
    text = pd.DataFrame.from_dict(rows, orient="index").rename_axis("model").to_string() if rows else \
        "no model could be scored"
    lines = [f"macro-F1 on the test blocks (mean ± std over folds and seeds):\n{text}"]
    notes = [why for level, why in not_evaluated.items() if level in levels]
    lines += [""] + notes if notes else []
    failures = result.failure_summary()
    failures = failures[failures["level"].isna() | failures["level"].isin(levels)]
    if len(failures):
        lines += ["", "could not be fitted (counted over folds and seeds):"]
        for row in failures.itertuples(index=False):
            fraction = "" if row.fraction >= 1 else f" (fraction {row.fraction:g} of the labels)"
            lines.append(f"  {row.model}{fraction}: {row.folds} of {row.of} folds: {row.reason}")
    return "\n".join(lines)
