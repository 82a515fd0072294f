"""``python -m habitat_helpers map``: a kept model (``evaluate --save-model``) predicted over a region,
tile by tile on dask, into Cloud-Optimised GeoTIFFs (:func:`habitat_helpers.tiles.map_tiles`).

    python -m habitat_helpers map --model kept/ --region Austria --resolution 0.01 --out maps/
    python -m habitat_helpers map --model kept/ --bbox=-10,36,30,62 --resolution 0.01 --scheduler tcp://head:8786

Run it again after an interruption: the tiles already written are kept."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import maps, pipeline, runtime, tiles
from ..errors import UsageError, comma_list


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="a folder written by evaluate --save-model")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--region", metavar="NAME", help="a country by its English name, e.g. Austria")
    where.add_argument("--bbox", type=comma_list(float), metavar="W,S,E,N",
                       help="lon_min,lat_min,lon_max,lat_max in degrees; with a negative first number "
                            "write it with =, e.g. --bbox=-25,34,45,72")
    parser.add_argument("--resolution", type=float, required=True, metavar="DEG",
                        help="cell side in degrees (0.01 is about 1 km)")
    parser.add_argument("--out", default="maps", help="folder of the GeoTIFFs (default: maps)")
    parser.add_argument("--stem", default="habitat", help="file names start with it (default: habitat)")
    parser.add_argument("--tile", type=int, default=128, help="tile side in cells; a worker holds one (default: 128)")
    parser.add_argument("--workers", type=int, default=None, help="local dask workers (default: the CPU cores)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="a running dask scheduler, e.g. tcp://head:8786 (default: a local cluster); "
                             "'synchronous' runs every tile in this process")
    parser.add_argument("--sea", action="store_true", help="predict sea cells too (default: land only)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... for the encoder and the heads "
                                                        "(default: cpu; auto picks a GPU when present)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.tile < 8:
        raise UsageError("--tile must be at least 8 cells")
    if args.resolution <= 0:
        raise UsageError("--resolution must be positive")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    try:
        kept = pipeline.load(args.model)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(f"--model: {err}") from None
    device = runtime.resolve_device(args.device)
    try:
        predictor = pipeline.CellPredictor(kept, device)
    except ValueError as err:
        raise UsageError(f"--model: {err}") from None
    within, bbox = None, None
    if args.region:
        try:
            within = maps.country_shape(args.region)
        except ValueError as err:
            raise UsageError(f"--region: {err}") from None
    else:
        if len(args.bbox) != 4:
            raise UsageError("--bbox needs four numbers: lon_min,lat_min,lon_max,lat_max")
        bbox = tuple(args.bbox)
    start = time.perf_counter()
    try:
        out = tiles.map_tiles(predictor, kept.classifier.level_codes(), bbox, args.resolution, args.out,
                              stem=args.stem, tile=args.tile, scheduler=args.scheduler, workers=args.workers,
                              land_only=not args.sea, within=within, scheme=kept.scheme,
                              key=str(Path(args.model).resolve()), progress=not args.no_progress)
    except ValueError as err:
        raise UsageError(str(err)) from None
    seconds = time.perf_counter() - start
    rate = out["cells"] / seconds if out["computed"] else float("nan")
    print(f"{out['cells']:,} cells in {out['tiles']} tiles ({out['resumed']} written before, {out['computed']} now) "
          f"in {seconds:.0f} s ({rate:,.0f} cells/s); {kept.model} from {args.model}")
    for level, files in out["files"].items():
        print(f"  level {level}: {', '.join(str(p) for p in files.values())}")
    return 0
