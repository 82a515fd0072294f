"""The options that read a table of sites, shared by the commands that take one (``evaluate``,
``qc``): the table's columns, the image encoder, the environment rasters, and the readers that
turn them into a site table with clear errors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .. import datasets, dataspec, encoders, environment
from ..errors import UsageError, comma_list


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
    :func:`read_study`."""
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
    table.add_argument("--photo-cols", type=comma_list(str), default=[],
                       help="comma list of columns holding ground-photo files, one view per column "
                            "(paths may be relative to the table's folder)")
    table.add_argument("--satellite-col", default=None, help="column holding a satellite patch file (GeoTIFF ...)")
    table.add_argument("--sep", default=None, help="force the CSV separator (e.g. ';' or '\\t')")


def add_image_arguments(group) -> None:
    """The options of the image encoder (``evaluate``, ``qc``)."""

    group.add_argument("--image-encoder", default=encoders.OFFLINE_IMAGE_DEFAULT,
                       help=f"image encoder for photos and satellite patches (default: {encoders.OFFLINE_IMAGE_DEFAULT})")
    group.add_argument("--image-size", type=int, default=None, help="image input size in pixels (default: the encoder's)")
    group.add_argument("--batch-size", type=int, default=64, help="images per batch (default: 64)")
    group.add_argument("--num-workers", type=int, default=0, help="processes decoding images (default: 0)")


def env_rasters(specs: list[str]) -> dict:
    """``NAME=PATH[:BAND]`` options -> ``{name: Covariate}`` (files checked to exist)."""

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


def env_features(lat, lon, covariates=None, rasters=None):
    """The env modality for :func:`habitat_helpers.evaluation.cross_validate`: the covariates
    sampled at the sites (:func:`habitat_helpers.environment.features`): matrix, column names,
    sampling report."""

    covariates = environment.DEFAULT_COVARIATES if covariates is None else covariates
    return environment.features(lat, lon, list(covariates), rasters)


def read_study(args):
    """The site table, its label scheme and the extra sites (one boolean per site: the sources a data
    spec marks ``extra: true``), from a table (with the options of :func:`add_table_arguments`) or a
    data spec."""
    if Path(args.sites).suffix.lower() in (".yml", ".yaml"):
        try:
            data = dataspec.load(args.sites)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(str(err)) from None
        if args.label_scheme != "eunis" and args.label_scheme != data.label_scheme:
            raise UsageError(f"--label-scheme {args.label_scheme} differs from the data spec's label_scheme "
                             f"{data.label_scheme}: set it in the spec")
        sites = data.sites
        sites.attrs.update(columns={"data spec": str(Path(args.sites).resolve())},
                           load_report={"sources": data.report.reset_index().to_dict(orient="records")},
                           unknown_codes={})
        return sites, data.label_scheme, data.extra
    sites = datasets.read_table(args.sites, lat=args.lat_col, lon=args.lon_col, label=args.label_col,
                                site_id=args.id_col, photo_columns=args.photo_cols, satellite=args.satellite_col,
                                esy=args.esy, sep=args.sep, label_scheme=args.label_scheme)
    return sites, args.label_scheme, np.zeros(len(sites), bool)


def read_extra_sites(args):
    """The ``--extra-sites`` table, read with the same column options as ``--sites``; every row
    must be unlabelled (a labelled row belongs in ``--sites``)."""
    path = Path(args.extra_sites)
    print(f"extra sites (they only train the alignment) from {path}:", file=sys.stderr)
    try:
        extra = datasets.read_table(path, lat=args.lat_col, lon=args.lon_col, label=args.label_col,
                                    label_required=False, site_id=args.id_col, photo_columns=args.photo_cols,
                                    satellite=args.satellite_col, sep=args.sep,
                                    label_scheme=args.label_scheme)
    except ValueError as err:
        raise UsageError(f"--extra-sites: {err}") from None
    labelled = int(extra["label_l1"].notna().sum())
    if labelled:
        raise UsageError(f"--extra-sites: {labelled} rows carry a label in {extra.attrs['columns']['label']!r}; "
                         "extra sites only train the alignment: move the labelled rows to --sites")
    return extra
