"""``python -m habitat_helpers qc``: location quality control of a table of sites
(:mod:`habitat_helpers.qc`), written to ``flags.csv``."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pandas as pd

from .. import align, embed, paths, qc, runtime
from ..errors import UsageError
from .options import _block_size, add_image_arguments, add_table_arguments, read_study


def add_arguments(parser) -> None:
    """The options of ``python -m habitat_helpers qc`` (:data:`habitat_helpers.cli.COMMANDS`): the table's options of
    :func:`~habitat_helpers.cli.options.add_table_arguments`, then the QC's (:mod:`habitat_helpers.qc`)."""
    add_table_arguments(parser)
    check = parser.add_argument_group("the location check")
    check.add_argument("--env", action="store_true",
                       help="add the environmental covariates at the stated coordinates (hh.environment) to the "
                            "label classifier's GPS embedding")
    check.add_argument("--folds", type=int, default=qc.FOLDS,
                       help=f"spatial folds: every site is scored by a model fitted on the others (default: {qc.FOLDS})")
    check.add_argument("--block-size-deg", type=_block_size, default="auto",
                       help="side of the spatial blocks in degrees, or auto: from the labels' autocorrelation "
                            "range (default: auto)")
    check.add_argument("--false-alarm", type=float, default=0.05,
                       help="flag a site when its combined p-value is below this: the share of correctly placed "
                            "sites flagged (at most; default: 0.05)")
    check.add_argument("--seed", type=int, default=0, help="random seed (folds, heads; default: 0)")
    model = parser.add_argument_group("models and embeddings")
    add_image_arguments(model)
    model.add_argument("--align-epochs", type=int, default=None,
                       help=f"most training epochs of the heads (default: {qc.ALIGN_SETTINGS['epochs']})")
    model.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto, a GPU when present)")
    model.add_argument("--cache", default=None,
                       help="embedding cache folder (default: $HABITAT_HELPERS_CACHE/embeddings)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", default="flags.csv",
                        help="one row per site: id, coordinates, fold, scores, p-values, flag (default: flags.csv)")
    output.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    """``python -m habitat_helpers qc --sites TABLE --out flags.csv``: read the table
    (:func:`~habitat_helpers.cli.options.read_study`), embed the photos and patches it names
    (:func:`habitat_helpers.embed.embed_for_evaluation`) and the stated coordinates
    (:func:`habitat_helpers.embed.gps_embeddings`), score every site out of fold
    (:func:`habitat_helpers.qc.score_out_of_fold`), write the flags and print a summary."""

    if args.folds < 2:
        raise UsageError("--folds must be at least 2")
    if not 0 < args.false_alarm < 1:
        raise UsageError(f"--false-alarm must lie strictly between 0 and 1 (got {args.false_alarm:g}), e.g. 0.05")
    if args.block_size_deg != "auto" and args.block_size_deg <= 0:
        raise UsageError("--block-size-deg must be positive")
    if args.align_epochs is not None and args.align_epochs < 1:
        raise UsageError("--align-epochs must be at least 1")
    sites, scheme, _ = read_study(args)     # the QC scores every site
    sites = sites.reset_index(drop=True)
    lat, lon = sites["lat"].to_numpy(float), sites["lon"].to_numpy(float)
    labels = pd.DataFrame(sites[list(qc._LABEL_COLUMNS)]).reset_index(drop=True)
    has = {"photo": sites["photos"].str.len() > 0 if "photos" in sites else pd.Series(False, index=sites.index),
           "satellite": sites["satellite"].notna() if "satellite" in sites else pd.Series(False, index=sites.index)}
    modalities = [m for m, asked in (("photo", args.photo_cols), ("satellite", args.satellite_col)) if asked]
    for m in modalities:
        if not has[m].any():
            raise UsageError(f"no site has a usable {m} file (see the notes above): fix the paths or drop the "
                                 f"{'--photo-cols' if m == 'photo' else '--satellite-col'} option")
    if not modalities and labels["label_l1"].isna().all():
        raise UsageError("nothing to check the coordinates against: the table has no labelled site and no "
                             "photo or satellite column (--label-col, --photo-cols, --satellite-col)")

    device = runtime.resolve_device(args.device)
    cache = Path(args.cache) if args.cache else paths.cache_dir() / "embeddings"
    progress = not args.no_progress
    embeddings = embed.embed_for_evaluation(sites, modalities, cache_dir=cache, image_encoder=args.image_encoder,
                                          image_size=args.image_size, device=device, batch_size=args.batch_size,
                                          num_workers=args.num_workers, progress=progress)

    def gps_encoder(lat, lon):
        return embed.gps_embeddings(lat, lon, cache_dir=cache, device=device, progress=progress)

    config = align.AlignConfig(**qc.ALIGN_SETTINGS, seed=args.seed)
    if args.align_epochs is not None:
        config = dataclasses.replace(config, epochs=args.align_epochs)
    try:
        table = qc.score_out_of_fold(embeddings, lat, lon, labels, folds=args.folds, block_size_deg=args.block_size_deg,
                                  align_config=config, env=args.env, scheme=scheme, gps_encoder=gps_encoder,
                                  seed=args.seed, device=device, progress=progress)
    except ValueError as err:          # e.g. fewer spatial blocks than folds
        raise UsageError(str(err)) from None

    flags = pd.DataFrame({"site_id": sites["site_id"].to_numpy(), "lat": lat, "lon": lon})
    flags = pd.concat([flags, table.reset_index(drop=True).drop(columns=["not_scored"])], axis=1)
    flags["flag"] = (flags["p_combined"] < args.false_alarm).fillna(False).astype(bool)
    flags["not_scored"] = table["not_scored"].to_numpy()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    flags.to_csv(out, index=False)
    print(qc.summary_text(flags, args.false_alarm, embeddings, labels, args.env, table.attrs["block_size_deg"]))
    print(f"\nwrote {out}", file=sys.stdout)
    return 0
