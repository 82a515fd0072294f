"""Fetch real inputs for your own sites: ``python -m habitat_helpers fetch SOURCE ...``.

One module per source, each with ``add_arguments(parser)`` and ``run(args) -> int`` for the command
line and a plain function for notebooks and scripts:

- :mod:`habitat_helpers.fetch.lucas`: the LUCAS survey table and its photos from GISCO's public tree;
- :mod:`habitat_helpers.fetch.sentinel2`: a Sentinel-2 L2A patch around each site from a STAC API;
- :mod:`habitat_helpers.fetch.covariates`: bioclimatic rasters (WorldClim 2.1, CHELSA) clipped to a region.

They share :mod:`habitat_helpers.fetch.http`: a bounded pool of workers, a polite session (user agent,
rate limit, retries with backoff on 429 and 5xx), atomic writes and resumable runs. Every command
writes the layout that :mod:`habitat_helpers.datasets` and :mod:`habitat_helpers.environment` read,
and a report of what it could not fetch. Nothing here is imported by ``import habitat_helpers``.
"""

from __future__ import annotations

import argparse
import importlib

#: The sources ``fetch`` knows: name -> (one-line help, module of this package).
SOURCES: dict[str, tuple[str, str]] = {
    "lucas": ("LUCAS survey table and photos (GISCO) in the layout read_lucas reads", "lucas"),
    "sentinel2": ("a Sentinel-2 L2A patch around each site, from a STAC API, as GeoTIFFs", "sentinel2"),
    "covariates": ("bioclimatic rasters (WorldClim 2.1, CHELSA) clipped to a region, as COGs", "covariates"),
}


def __getattr__(name: str):
    """``hh.fetch.lucas`` and the like: the submodules are imported on first use."""
    if name in ("http", *(module for _, module in SOURCES.values())):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _module(name: str):
    return importlib.import_module(f"{__name__}.{SOURCES[name][1]}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One sub-command per source, each with its module's options."""
    sources = parser.add_subparsers(dest="source", required=True, metavar="SOURCE", title="sources",
                                    help="run 'python -m habitat_helpers fetch SOURCE --help'")
    for name, (help_text, _) in SOURCES.items():
        sub = sources.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:],
                                 prog=f"python -m habitat_helpers fetch {name}")
        _module(name).add_arguments(sub)


def run(args: argparse.Namespace) -> int:
    """Run the chosen source's fetch."""
    return _module(args.source).run(args)
