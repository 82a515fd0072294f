"""habitat_helpers: the small package behind the habitat-classification book.

Import it as ``import habitat_helpers as hh`` and reach each stage by its module name. The
modules stand in layers; each imports only its own layer or lower, and nothing imports the
commands (``scripts/check_layers.py``, run by ``make lint``; ``book/contributing.md``):

==================  ===========================================================
**foundations**
``hh.errors``       what a user can fix: ``UsageError``, comma-list options
``hh.cache``        artefacts kept with their settings: reused when equal, else made again
``hh.paths``        where the cache, run folders and shared data live
``hh.runtime``      device choice, seeding, hub (online/offline) checks
``hh.profiles``     the ``tiny`` / ``book`` / ``full`` run sizes
``hh.eunis``        the EUNIS 2021 habitat hierarchy (levels 1-3)
``hh.labels``       label hierarchies: EUNIS 2021, LUCAS LC1, CORINE, your own CSV
``hh.spatial``      spatial blocks, block sizes from the labels, blocked splits
``hh.metrics``      per-level metrics, retrieval recall@k, ``metrics.json``
``hh.landmask``     land or sea at a coordinate (1 km GLOBE mask, memory-mapped)
**data**
``hh.datasets``     the site table and its loaders: LUCAS, EVA, EMBAL, satellite patches, your table
``hh.demo``         the synthetic demo dataset over real European land points
``hh.dataspec``     ``DATA``: the demo or a data spec, loaded into one site table
``hh.environment``  covariates at sites: ERA5 climate, Köppen-Geiger, land, coast; any raster
``hh.fetch``        download real inputs: LUCAS photos, Sentinel-2 patches, climate rasters
**models**
``hh.encoders``     pre-trained encoders by name (GeoCLIP location, timm images)
``hh.embed``        batched, cached embedding extraction; the one GPS cache
``hh.losses``       contrastive losses (symmetric InfoNCE, learnable temperature)
``hh.align``        projection heads trained to align modalities
``hh.classify``     hierarchical EUNIS classifier and baselines
**evaluation**
``hh.evaluation``   spatial block cross-validation: aligned model vs baselines
``hh.calibration``  how much each demo input carries, beside published figures
``hh.pipeline``     a model kept for use: refitted on every site, saved without pickle, loaded
**products**
``hh.maps``         grid prediction, uncertainty, folium and static maps
``hh.report``       the results chapter's tables from the notebooks' ``metrics.json``
``hh.records``      each notebook's ``metrics.json``, written by one function per chapter
``hh.tiles``        maps of any size: tiles predicted on dask into Cloud-Optimised GeoTIFFs, resumable
``hh.qc``           location quality control: scores for sites whose coordinates look wrong
``hh.viz``          UMAP projections, image galleries, differences, scores, reliability
**commands**
``hh.cli``          ``python -m habitat_helpers``: evaluate, qc and the other commands
``hh.notebooks``    run the numbered notebooks with papermill (``make book``, tests)
``hh.workshop``     student copies of the notebooks, solutions removed (``make workshop``)
==================  ===========================================================

Submodules are imported on first use, so ``import habitat_helpers`` is cheap and has no
side effects (no downloads, no seeding, no torch import).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "errors", "cache", "paths", "runtime", "profiles", "eunis", "labels", "spatial", "metrics", "landmask",
    "datasets", "demo", "dataspec", "environment", "fetch",
    "encoders", "embed", "losses", "align", "classify",
    "evaluation", "calibration", "pipeline",
    "maps", "report", "records", "qc", "tiles", "viz",
    "cli", "notebooks", "workshop",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'habitat_helpers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])
