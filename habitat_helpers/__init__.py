"""habitat_helpers: the small package behind the habitat-classification book.

Import it as ``import habitat_helpers as hh`` and reach each stage by its module name:

==================  ===========================================================
``hh.paths``        where the cache, run folders and shared data live
``hh.runtime``      device choice, seeding, hub (online/offline) checks
``hh.profiles``     the ``tiny`` / ``book`` / ``full`` run sizes
``hh.eunis``        the EUNIS 2021 habitat hierarchy (levels 1-3)
``hh.labels``       label hierarchies: EUNIS 2021, LUCAS LC1, CORINE, your own CSV
``hh.demo``         the synthetic demo dataset over real European land points
``hh.datasets``     loaders for LUCAS, EVA, EMBAL and satellite patches; the site table
``hh.encoders``     pre-trained encoders by name (GeoCLIP location, timm images)
``hh.embed``        batched, cached embedding extraction
``hh.losses``       contrastive losses (symmetric InfoNCE, learnable temperature)
``hh.align``        projection heads trained to align modalities
``hh.spatial``      spatial blocks and spatially blocked splits
``hh.classify``     hierarchical EUNIS classifier and baselines
``hh.evaluation``   spatial block cross-validation: aligned model vs baselines
``hh.qc``           location quality control: scores for sites whose coordinates look wrong
``hh.metrics``      per-level metrics, retrieval recall@k, ``metrics.json``
``hh.maps``         grid prediction, uncertainty, folium and static maps
``hh.landmask``     land or sea at a coordinate (1 km GLOBE mask, memory-mapped)
``hh.environment``  covariates at sites: ERA5 climate, Köppen-Geiger, land, coast; any raster
``hh.fetch``        download real inputs: LUCAS photos, Sentinel-2 patches, climate rasters
``hh.viz``          UMAP projections and image galleries
``hh.notebooks``    run the numbered notebooks with papermill (``make book``, tests)
``hh.report``       the results chapter's tables from the notebooks' ``metrics.json``
``hh.cli``          ``python -m habitat_helpers evaluate``: the harness on your own table
``hh.workshop``     student copies of the notebooks, solutions removed (``make workshop``)
==================  ===========================================================

Submodules are imported on first use, so ``import habitat_helpers`` is cheap and has no
side effects (no downloads, no seeding, no torch import).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "paths", "runtime", "profiles", "eunis", "labels", "demo", "encoders", "embed", "losses",
    "datasets", "align", "spatial", "classify", "evaluation", "qc", "metrics", "maps", "landmask", "environment", "fetch", "viz", "notebooks", "cli",
    "workshop", "report",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'habitat_helpers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])
