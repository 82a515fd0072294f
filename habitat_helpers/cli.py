"""The command line: ``python -m habitat_helpers <command> ...``.

=============  ===================================================================================
command        what it does
=============  ===================================================================================
``evaluate``   spatial block cross-validation (:func:`habitat_helpers.evaluation.cross_validate`)
               of any table of sites you have: it reads the table, embeds what the chosen
               modalities need, and writes the per-level metrics of the aligned model and of the
               baselines to ``results.json``
``qc``         location quality control of a table of sites (:mod:`habitat_helpers.qc`): every
               site scored out of fold for how well its photo, satellite patch and label fit its
               stated coordinates; writes ``flags.csv`` with p-values and a flag per site
``embed``      image embeddings of a site table into sharded, resumable cache files
               (:mod:`habitat_helpers.embed`); under ``torchrun`` the ranks share the shards
``align``      trains the contrastive projection heads on cached site embeddings
               (:mod:`habitat_helpers.align`); under ``torchrun`` the ranks share every batch
``fetch``      downloads real inputs for your sites: LUCAS survey tables and photos, Sentinel-2
               patches from a STAC API, WorldClim or CHELSA climate rasters
               (:mod:`habitat_helpers.fetch`), in the layouts the loaders read
``notebooks``  executes the book's notebooks with papermill, with one profile, seed and data
               (:mod:`habitat_helpers.notebooks`; ``make book``)
``report``     writes the results chapter's tables from the notebooks' ``metrics.json``
               (:mod:`habitat_helpers.report`)
``workshop``   student copies of the notebooks, exercises kept and solutions removed
               (:mod:`habitat_helpers.workshop`; ``make workshop``)
=============  ===================================================================================

``python -m habitat_helpers COMMAND --help`` shows a command's options. The multi-process
commands run under ``torchrun`` the same way, e.g.
``torchrun --nproc_per_node=4 -m habitat_helpers embed ...``.

Why ``evaluate`` is a command: to evaluate your own plots you should not need to write Python or to
reshape your table into the book's format first. ``evaluate`` accepts a plain CSV (or GeoParquet)
with a latitude, a longitude and a EUNIS code per row, whatever the columns are called, and says
row by row what it could not use instead of quietly dropping it (the reader is
:func:`habitat_helpers.datasets.read_table`, also usable from Python).

Adding a command: in the module it belongs to, write ``add_arguments(parser)`` (its options) and
``run(args) -> int`` (the work; returns the exit code, raises :class:`UsageError` for what the
user can fix), and add one line to :data:`COMMANDS`; ``python -m habitat_helpers --help`` picks
it up. The module is imported only when its command runs.

Labels that stop at level 1 or 2 are evaluated at the levels they have: the summary and
``results.json`` say which levels no site is labelled at and which models could not be fitted in
which folds, and why (:meth:`habitat_helpers.evaluation.CVResult.failures`). The fold-level
scores are written first (``<out stem>_folds.csv``, and ``<out stem>_failures.csv`` when a fit
failed), so a failure while building the report loses nothing.

Exit codes: 0 when the command worked; 2 for a problem with what was asked (a column that is not
in the table, no labelled sites, fewer spatial blocks than folds, no model fitted in any fold ...),
with a message saying what to change. Anything else is a bug: it raises with a full traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import datasets


class UsageError(Exception):
    """Something in the command that the user can fix (exit code 2, no traceback). A problem in
    the table itself is a :class:`habitat_helpers.datasets.TableError`, reported the same way."""


# --- embeddings ---------------------------------------------------------------------------------

def embed_for_evaluation(sites, modalities, *, cache_dir, image_encoder: str | None = None,
                         image_size: int | None = None, device: str = "cpu", batch_size: int = 64,
                         num_workers: int = 0, progress: bool = True, per_view: bool = True) -> dict[str, np.ndarray]:
    """The embeddings that ``modalities`` need, one row per site (NaN rows where a site lacks
    the input), as :func:`habitat_helpers.evaluation.cross_validate` takes them.

    Only the requested modalities are embedded: a GPS-only evaluation never loads an image
    model. Image embeddings go through the resumable cache of :mod:`habitat_helpers.embed`
    (a second run with the same files reads them back); ground photos are averaged over the
    views a site has; ``per_view`` (the default) adds the views themselves (``photo_per_view`` and
    ``photo_site``, as :func:`habitat_helpers.embed.embed_sites` gives them), which photo views
    as alignment items read."""
    from . import embed, encoders

    out = {}
    if "gps" in modalities:
        out["gps"] = gps_embeddings(sites["lat"].to_numpy(float), sites["lon"].to_numpy(float),
                                    cache_dir=cache_dir, device=device, progress=progress)
    image_modalities = [m for m in modalities if m in ("photo", "satellite")]
    if image_modalities:
        encoder = encoders.get_encoder(image_encoder or encoders.OFFLINE_IMAGE_DEFAULT,
                                       image_size=image_size, device=device)
        for modality in image_modalities:
            per_item, site_row, _ = embed.embed_modality(sites, modality, encoder, cache_dir, device=device,
                                                         batch_size=batch_size, num_workers=num_workers,
                                                         progress=progress)
            out[modality] = _mean_per_site(per_item, site_row, len(sites), encoder.dim)
            if modality == "photo" and per_view:
                out["photo_per_view"], out["photo_site"] = per_item, site_row
    return out


def env_features(lat, lon, covariates=None, rasters=None):
    """The env modality for :func:`habitat_helpers.evaluation.cross_validate`: the covariates
    sampled at the sites (:func:`habitat_helpers.environment.features`): matrix, column names,
    sampling report."""
    from . import environment

    covariates = environment.DEFAULT_COVARIATES if covariates is None else covariates
    return environment.features(lat, lon, list(covariates), rasters)


def _mean_per_site(per_item: np.ndarray, site_row: np.ndarray, n_sites: int, dim: int) -> np.ndarray:
    """Average the items (photo views, patches) of each site; NaN rows for sites without any."""
    sums = np.zeros((n_sites, dim))
    np.add.at(sums, site_row, per_item)
    counts = np.bincount(site_row, minlength=n_sites)
    out = np.full((n_sites, dim), np.nan, dtype=np.float32)
    has = counts > 0
    out[has] = sums[has] / counts[has, None]
    return out


def gps_embeddings(lat, lon, *, cache_dir, device: str = "cpu", progress: bool = True,
                   chunk: int = 4096) -> np.ndarray:
    """GeoCLIP location embeddings of the coordinates, in chunks behind a progress bar, saved in
    ``cache_dir`` under a hash of the coordinates (so the same table is embedded once)."""
    from tqdm.auto import tqdm

    from . import embed, encoders

    encoder = encoders.get_encoder("geoclip-location", device=device)
    coordinates = np.round(np.column_stack([lat, lon]).astype(np.float64), 6)
    digest = hashlib.sha1(coordinates.tobytes()).hexdigest()[:12]
    path = Path(cache_dir) / encoder.cache_key / f"gps-{digest}.npz"
    if path.exists():
        with np.load(path) as data:
            return data["embeddings"]
    parts = []
    with tqdm(total=len(lat), desc="gps", unit="site", disable=not progress) as bar:
        for start in range(0, len(lat), chunk):
            parts.append(embed.embed_locations(lat[start:start + chunk], lon[start:start + chunk], encoder,
                                               device=device))
            bar.update(len(parts[-1]))
    result = np.concatenate(parts) if parts else np.empty((0, encoder.dim), np.float32)
    embed.save_npz_atomic(path, embeddings=result)
    return result


# --- results.json -------------------------------------------------------------------------------

def plain(value):
    """``value`` with NumPy and pandas numbers made plain Python, NaN and infinity made None,
    so that ``json.dumps(..., allow_nan=False)`` writes standard JSON (``NaN`` is not JSON,
    and many tools refuse to read a file that contains it)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray, pd.Index)):
        return [plain(v) for v in value]
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (pd.Timestamp, Path)):
        return str(value)
    if value is pd.NaT or value is pd.NA:
        return None
    return value


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
    from . import evaluation

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


# --- the evaluate command -----------------------------------------------------------------------

def _align_grid_item(text: str) -> tuple[str, tuple]:
    """An argparse type: ``"radius_km=0,5,25"`` -> ``("radius_km", (0.0, 5.0, 25.0))``, each value
    of the type of the :class:`habitat_helpers.align.AlignConfig` field's default."""
    import dataclasses

    from . import align

    name, sep, values = text.partition("=")
    name = name.strip()
    fields = {f.name: f for f in dataclasses.fields(align.AlignConfig)} if sep else {}
    if name not in fields or name in ("seed", "modalities"):
        known = ", ".join(sorted(set(f.name for f in dataclasses.fields(align.AlignConfig)) - {"seed", "modalities"}))
        raise argparse.ArgumentTypeError(f"{text!r}: expected FIELD=V1,V2 with FIELD among {known}")
    default = getattr(align.AlignConfig(), name)
    kind = type(default) if isinstance(default, (int, float, str)) and not isinstance(default, bool) else float
    parsed = _comma_list(kind)(values)
    if not parsed:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one value")
    return name, tuple(parsed)


def _comma_list(kind, allowed=None):
    """An argparse type: ``"1,2,3"`` -> ``[1, 2, 3]``, checking each item."""
    def parse(text: str):
        items = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                item = kind(part)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{part!r} is not a {kind.__name__}") from None
            if allowed is not None and item not in allowed:
                raise argparse.ArgumentTypeError(f"{part!r} is not one of {', '.join(map(str, allowed))}")
            items.append(item)
        if not items:
            raise argparse.ArgumentTypeError("give at least one value")
        return list(dict.fromkeys(items))     # drop repeats, keep the order
    return parse


def _block_size(text: str):
    """``--block-size-deg``: a positive number of degrees or ``auto``."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of degrees nor auto") from None


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    """The options naming the table of sites and its columns (``evaluate``, ``qc``), read by
    :func:`read_sites`."""
    table = parser.add_argument_group("the table of sites")
    table.add_argument("--sites", required=True,
                       help="CSV/TSV (separator detected) or (Geo)Parquet of sites, or a data spec (.yml: the "
                            "notebooks' DATA, see data/example_spec.yml; the column options are then ignored)")
    table.add_argument("--lat-col", default="lat", help="latitude column (default: lat, else latitude / Latitude)")
    table.add_argument("--lon-col", default="lon", help="longitude column (default: lon, else longitude / Longitude)")
    table.add_argument("--label-col", default="eunis_code",
                       help="label column (default: eunis_code, else EUNIS or EVA's 'Expert System')")
    table.add_argument("--label-scheme", default="eunis",
                       help="the labels' hierarchy: eunis (EUNIS 2021, default), lucas-lc1 (LUCAS land cover), "
                            "corine (CORINE Land Cover) or the path of your own CSV with code,parent,name")
    table.add_argument("--id-col", default=None,
                       help="unique site id column (default: site_id, PlotObservationID or id if present, "
                            "else the line number)")
    table.add_argument("--esy", action="store_true",
                       help="labels are EVA Expert System (EUNIS-ESy) strings (detected automatically as a rule)")
    table.add_argument("--photo-cols", type=_comma_list(str), default=[],
                       help="comma list of columns holding ground-photo files, one view per column "
                            "(paths may be relative to the table's folder)")
    table.add_argument("--satellite-col", default=None, help="column holding a satellite patch file (GeoTIFF ...)")
    table.add_argument("--sep", default=None, help="force the CSV separator (e.g. ';' or '\\t')")


def add_image_arguments(group) -> None:
    """The options of the image encoder (``evaluate``, ``qc``)."""
    from . import encoders

    group.add_argument("--image-encoder", default=encoders.OFFLINE_IMAGE_DEFAULT,
                       help=f"image encoder for photos and satellite patches (default: {encoders.OFFLINE_IMAGE_DEFAULT})")
    group.add_argument("--image-size", type=int, default=None, help="image input size in pixels (default: the encoder's)")
    group.add_argument("--batch-size", type=int, default=64, help="images per batch (default: 64)")
    group.add_argument("--num-workers", type=int, default=0, help="processes decoding images (default: 0)")


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    from . import align, evaluation

    add_table_arguments(parser)
    cv = parser.add_argument_group("the evaluation")
    cv.add_argument("--modalities", type=_comma_list(str, ("photo", "satellite", "gps", "env")), default=["gps"],
                    help="comma list from photo, satellite, gps, env (default: gps); with two or more the "
                         "aligned model is trained and compared with the baselines. env = environmental "
                         "covariates sampled at the sites (climate, climate zone, land, coast distance)")
    cv.add_argument("--covariates", type=_comma_list(str), default=None,
                    help="built-in covariates of the env modality (default: all; see "
                         "hh.environment.describe()), e.g. t_mean_annual,p_annual,koppen_main; "
                         "--env-raster adds to them")
    cv.add_argument("--env-raster", action="append", default=[], metavar="NAME=PATH[:BAND]",
                    help="one more env covariate from your own GeoTIFF or NetCDF (any CRS, bilinear), e.g. "
                         "dem=/data/eu_dem.tif or bio1=/data/wc2.1_30s_bio_1.tif:1; repeat for several")
    cv.add_argument("--levels", type=_comma_list(int, (1, 2, 3)), default=[1, 2, 3],
                    help="EUNIS levels reported in results.json (default: 1,2,3)")
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
    seeds.add_argument("--seeds", type=_comma_list(int), default=list(protocol.seeds),
                       help="seeds, e.g. 0,1,2 (the folds are redrawn for each; default: "
                            f"{','.join(map(str, protocol.seeds))})")
    cv.add_argument("--label-fractions", type=_comma_list(float), default=list(protocol.label_fractions),
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
    output.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_evaluate(args: argparse.Namespace) -> int:
    """Read the table, embed, cross-validate, write results.json and print a summary."""
    import warnings

    with warnings.catch_warnings():      # restores the warning filters afterwards (in-process callers)
        # geoclip calls torch.jit.script, which warns on every run; it is not the user's concern
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*is deprecated")
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    import habitat_helpers

    from . import align, evaluation, paths, runtime

    seeds = args.seeds if args.seed is None else [args.seed]
    protocol = _check_evaluate_arguments(args, seeds)
    sites, scheme = read_sites(args)
    labels = pd.DataFrame(sites[["eunis_l1", "eunis_l2", "eunis_l3"]]).reset_index(drop=True)
    _check_sites(sites, labels, args, seeds)
    extra = np.zeros(len(sites), bool)
    if args.extra_sites:
        more = read_extra_sites(args)
        attrs = dict(sites.attrs)                   # what the report reads about the study's table
        sites = pd.concat([sites, more], ignore_index=True)
        sites.attrs.update(attrs, extra_sites={"file": str(Path(args.extra_sites).resolve()), "sites": len(more),
                                               "load_report": more.attrs.get("load_report")})
        labels = pd.DataFrame(sites[["eunis_l1", "eunis_l2", "eunis_l3"]]).reset_index(drop=True)
        extra = np.r_[extra, np.ones(len(more), bool)]
    lat, lon = sites["lat"].to_numpy(float), sites["lon"].to_numpy(float)

    device = runtime.resolve_device(args.device)
    cache = Path(args.cache) if args.cache else paths.cache_dir() / "embeddings"
    embeddings = embed_for_evaluation(sites, [m for m in args.modalities if m != "env"], cache_dir=cache,
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
        out.write_text(json.dumps(plain(report), indent=2, allow_nan=False))
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
    return 0


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


def _check_evaluate_arguments(args, seeds):
    """Problems that need no data, found before anything slow runs; returns the
    :class:`habitat_helpers.evaluation.Protocol` of the options."""
    from . import evaluation, labels

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
                                       align_grid=dict(args.align_grid), align_pool=args.align_pool)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.align_pool in ("extra", "transductive") and len(args.modalities) < 2:
        raise UsageError(f"--align-pool {args.align_pool}: the alignment needs two or more --modalities")
    if args.align_pool == "extra" and not args.extra_sites:
        raise UsageError("--align-pool extra needs --extra-sites TABLE (unlabelled sites)")
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
        from . import environment

        unknown = [c for c in args.covariates if c not in environment.COVARIATES]
        if unknown:
            raise UsageError(f"unknown covariate(s) {', '.join(unknown)}; built-in: "
                             f"{', '.join(environment.COVARIATES)}")
    return protocol


def env_rasters(specs: list[str]) -> dict:
    """``NAME=PATH[:BAND]`` options -> ``{name: Covariate}`` (files checked to exist)."""
    from . import environment

    out = {}
    for spec in specs:
        name, sep, target = spec.partition("=")
        if not sep or not name or not target:
            raise UsageError(f"--env-raster {spec!r}: expected NAME=PATH or NAME=PATH:BAND")
        path, band = target, 1
        head, colon, tail = target.rpartition(":")
        if colon and tail.isdigit():
            path, band = head, int(tail)
        if not Path(path).exists():
            raise UsageError(f"--env-raster {name}: no file {path}")
        if name in out or name in environment.COVARIATES:
            raise UsageError(f"--env-raster {name}: the name is already used")
        out[name] = environment.user_covariate(path, band=band, name=name)
    return out


def read_sites(args):
    """The site table and its label scheme, from a table (with the options of
    :func:`add_table_arguments`) or a data spec."""
    if Path(args.sites).suffix.lower() in (".yml", ".yaml"):
        try:
            data = datasets.load(args.sites)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(str(err)) from None
        if args.label_scheme != "eunis" and args.label_scheme != data.label_scheme:
            raise UsageError(f"--label-scheme {args.label_scheme} differs from the data spec's label_scheme "
                             f"{data.label_scheme}: set it in the spec")
        sites = data.sites
        sites.attrs.update(columns={"data spec": str(Path(args.sites).resolve())},
                           load_report={"sources": data.report.reset_index().to_dict(orient="records")},
                           unknown_codes={})
        return sites, data.label_scheme
    sites = datasets.read_table(args.sites, lat=args.lat_col, lon=args.lon_col, label=args.label_col,
                                site_id=args.id_col, photo_columns=args.photo_cols, satellite=args.satellite_col,
                                esy=args.esy, sep=_separator(args), label_scheme=args.label_scheme)
    return sites, args.label_scheme


def read_extra_sites(args):
    """The ``--extra-sites`` table, read with the same column options as ``--sites``; every row
    must be unlabelled (a labelled row belongs in ``--sites``)."""
    path = Path(args.extra_sites)
    print(f"extra sites (they only train the alignment) from {path}:", file=sys.stderr)
    try:
        extra = datasets.read_table(path, lat=args.lat_col, lon=args.lon_col, label=args.label_col,
                                    label_required=False, site_id=args.id_col, photo_columns=args.photo_cols,
                                    satellite=args.satellite_col, sep=_separator(args),
                                    label_scheme=args.label_scheme)
    except ValueError as err:
        raise UsageError(f"--extra-sites: {err}") from None
    labelled = int(extra["eunis_l1"].notna().sum())
    if labelled:
        raise UsageError(f"--extra-sites: {labelled} rows carry a label in {extra.attrs['columns']['label']!r}; "
                         "extra sites only train the alignment: move the labelled rows to --sites")
    return extra


def _separator(args):
    """``--sep`` as a character (``'\\t'`` typed in a shell is two characters)."""
    return {"\\t": "\t", "tab": "\t"}.get(args.sep, args.sep)


def _check_sites(sites, labels: pd.DataFrame, args, seeds) -> None:
    """Problems in the table itself, found before the (possibly long) embedding."""
    from . import evaluation

    labelled = labels["eunis_l1"].notna()
    if not labelled.any():
        where = sites.attrs["columns"].get("label", sites.attrs["columns"].get("data spec"))
        raise UsageError(f"no labelled rows: none of the {len(sites)} sites kept has a known "
                         f"{args.label_scheme} code in {where!r} (see the report above)")
    if all(labels[column].nunique() < 2 for column in labels.columns):
        raise UsageError("all labelled sites share one habitat at every level: a classifier needs at least two")
    unlabelled = [level for level in args.levels if labels[f"eunis_l{level}"].isna().all()]
    if len(unlabelled) == len(args.levels):
        deepest = max(level for level in (1, 2, 3) if labels[f"eunis_l{level}"].notna().any())
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
        size, how = evaluation.resolve_block_size(lat, lon, labels, args.block_size_deg, seeds[0])
        if args.block_size_deg == "auto":
            print(f"blocks of {size:g}° from the labels' autocorrelation range "
                  f"({how['autocorrelation_range_km']:.0f} km)", file=sys.stderr)
        for seed in seeds:
            evaluation.block_folds(lat, lon, size, args.folds, seed)
    except ValueError as err:
        raise UsageError(str(err)) from None


# --- the commands -------------------------------------------------------------------------------

class Command(NamedTuple):
    """A subcommand: its one-line help, and the module (``habitat_helpers.<module>``) with its two
    functions, ``add_arguments(parser)`` and ``run(args) -> int``, by name, so that the module is
    imported only when the command is used (``--help`` alone imports none, so no torch)."""

    help: str
    module: str
    add_arguments: str = "add_arguments"
    run: str = "run"

    def functions(self):
        """``(add_arguments, run)``, importing the module now."""
        module = importlib.import_module(f"{__package__}.{self.module}")
        return getattr(module, self.add_arguments), getattr(module, self.run)


#: Every subcommand, in the order ``python -m habitat_helpers --help`` lists them.
COMMANDS: dict[str, Command] = {
    "evaluate": Command("spatial block cross-validation of your own table of sites -> results.json",
                        "cli", "_add_evaluate_arguments", "run_evaluate"),
    "qc": Command("flag sites whose photo, satellite patch or label do not fit their coordinates -> flags.csv",
                  "qc"),
    "embed": Command("extract image embeddings of a site table into sharded files (torchrun-aware)", "embed"),
    "align": Command("train the contrastive projection heads on cached embeddings (torchrun-aware)", "align"),
    "notebooks": Command("execute the book's notebooks with papermill, in order, with one profile and seed",
                         "notebooks"),
    "fetch": Command("download real inputs for your sites: LUCAS photos, Sentinel-2 patches, climate rasters",
                     "fetch"),
    "report": Command("write the results chapter's tables from the notebooks' metrics", "report"),
    "workshop": Command("student copies of the notebooks: the exercises kept, their solutions removed",
                        "workshop"),
}


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command in :data:`COMMANDS`. With ``commands``, only those get their
    options (and have their modules imported); the others are still listed by ``--help``."""
    wanted = set(COMMANDS if commands is None else commands)
    parser = argparse.ArgumentParser(
        prog="python -m habitat_helpers",
        description="Command line of habitat_helpers (habitats from photos, satellites and GPS).")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                       title="commands", help="run 'python -m habitat_helpers COMMAND --help'")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help,
                                    description=command.help[:1].upper() + command.help[1:],
                                    prog=f"python -m habitat_helpers {name}")
        if name in wanted:
            add_arguments, run = command.functions()
            add_arguments(sub)
            sub.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (0 fine, 2 a usage problem, explained on stderr).

    Tests and notebooks can call ``main(["evaluate", "--sites", ...])`` in the same process."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # the command is the first word that is not an option (the top level has no option values)
    named = next((word for word in argv if not word.startswith("-")), None)
    parser = build_parser([named] if named in COMMANDS else [])
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:           # --help (0) or a bad option (2); argparse has printed why
        return stop.code if isinstance(stop.code, int) else 0
    try:
        return args.run(args)
    except (UsageError, datasets.TableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
