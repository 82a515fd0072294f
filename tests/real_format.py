"""A data spec over real files that the demo did not make (used by tests/test_real_format.py).

``write_real_spec(folder)`` writes, into ``folder``, a data spec (YAML) naming:

* the 7 real LUCAS points of ``../shared/data/lucas_sample`` with their 32 photos in the GISCO
  layout, labelled with their LUCAS land-cover code (LC1);
* the six real BigEarthNet-S2 patches shipped in the ``bigearthnet-common`` package (band
  folders of 12 GeoTIFFs in UTM), as a table of unlabelled sites at the patches' centres (their
  labels are CORINE names, not LC1 codes);
* a seeded sample of the 14,613 real LUCAS 2015 points of ``../shared/data/lucas_points``
  (GPS only, LC1 labels): most sites have no photo and no patch, as in real survey data.

Nothing is generated: only the two small index tables are written (the patch centres and the
sample's rows, verbatim).
"""

from __future__ import annotations

import tarfile
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml


def bigearthnet_table(folder: Path) -> Path:
    """Extract the six BigEarthNet-S2 patches and write ``bigearthnet.csv`` (site, lat, lon, patch)."""
    import rasterio
    from rasterio.warp import transform

    archive = resources.files("bigearthnet_common") / "BigEarthNet-S2-Example.tar.bz2"
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    rows = []
    for patch in sorted((folder / "BigEarthNet-S2-Example").iterdir()):
        with rasterio.open(next(patch.glob("*_B04.tif"))) as src:
            x, y = (src.bounds.left + src.bounds.right) / 2, (src.bounds.bottom + src.bounds.top) / 2
            lon, lat = transform(src.crs, "EPSG:4326", [x], [y])
        rows.append({"site": patch.name, "lat": f"{lat[0]:.6f}", "lon": f"{lon[0]:.6f}",
                     "patch": str(patch.relative_to(folder)), "label": ""})
    path = folder / "bigearthnet.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_real_spec(folder, shared: Path, n_points: int = 600, seed: int = 0) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    points = pd.read_csv(shared / "data/lucas_points/lucas2015_points_west_north.csv", dtype=str,
                         keep_default_na=False)
    points.sample(n=n_points, random_state=seed).to_csv(folder / "lucas_points_sample.csv", index=False)
    bigearthnet_table(folder)
    sample = shared / "data/lucas_sample"
    spec = {
        "name": "real-formats",
        "description": "real LUCAS sample + photos, BigEarthNet patches, LUCAS 2015 points (LC1)",
        "label_scheme": "lucas-lc1",
        "sources": [
            {"kind": "lucas", "table": str(sample / "metadata_subset.csv"), "photos": str(sample),
             "label_column": "lc1"},
            {"kind": "table", "path": "bigearthnet.csv", "site_id": "site", "label": "label",
             "satellite": "patch"},
            {"kind": "table", "path": "lucas_points_sample.csv", "site_id": "point_id", "label": "lc1"},
        ],
    }
    path = folder / "real_spec.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
