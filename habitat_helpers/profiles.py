"""Run profiles: one name fixes every size in the pipeline.

=========  ====================================================================
``tiny``   tests and CI: all six notebooks together in under 3 minutes on 2 CPU cores
``book``   the published book: all six notebooks together in at most 10 minutes on 2 cores
``full``   real LUCAS / EVA / EMBAL data on a GPU server (not run here)
=========  ====================================================================

Notebooks take ``PROFILE`` as a papermill parameter and call :func:`get`. A profile sets sizes,
encoders and devices, never the data: the data are the notebooks' ``DATA`` parameter
(:func:`habitat_helpers.dataspec.load`), so any profile runs on the demo or on your own files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    """Sizes and settings for one run of the pipeline."""

    name: str
    description: str
    # the synthetic demo's size (DATA = "demo"); your own data come at their own size
    n_sites: int                  # demo sites of all sources (split into LUCAS / EVA / EMBAL)
    views: tuple[str, ...]        # ground-photo views per LUCAS site (N, E, S, W, P)
    embal_photos_per_site: int    # transect photos per EMBAL site
    photo_size: int               # pixels of a generated ground photo (square)
    satellite_size: int           # pixels of a generated satellite patch (square)
    # embedding
    image_encoder: str            # name in hh.encoders for photos and satellite patches
    location_encoder: str         # name in hh.encoders for GPS
    encoder_input_size: int       # images are resized to this before the backbone
    batch_size: int
    num_workers: int
    # alignment
    align_dim: int
    align_hidden: int
    align_epochs: int
    align_batch_size: int
    align_lr: float
    # evaluation and maps
    test_fraction: float          # share of sites held out for testing, in whole spatial blocks (their
    #                               size: hh.spatial.resolve_block_size, from the labels)
    map_bbox: tuple[float, float, float, float]  # (lon_min, lat_min, lon_max, lat_max)
    map_resolution_deg: float
    umap_max_points: int
    probe_sites: int              # sites in notebook 02's encoder comparison (k-NN probe)

    def as_dict(self) -> dict:
        return asdict(self)


EUROPE_WEST = (-10.0, 36.0, 30.0, 62.0)

PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        description="Small and fast (demo: a few hundred sites): for tests, CI and workshops.",
        n_sites=400,
        views=("N", "E"), embal_photos_per_site=4, photo_size=64, satellite_size=64,
        image_encoder="efficientnet-lite0-imagenet", location_encoder="geoclip-location",
        encoder_input_size=64, batch_size=64, num_workers=0,
        align_dim=64, align_hidden=256, align_epochs=30, align_batch_size=128, align_lr=2e-3,
        test_fraction=0.3,
        map_bbox=(-5.0, 42.0, 10.0, 52.0), map_resolution_deg=0.5, umap_max_points=400, probe_sites=200,
    ),
    "book": Profile(
        name="book",
        description="The published book's run on a 2-core laptop (demo: 1,500 sites).",
        n_sites=1500,
        views=("N", "E", "S", "W", "P"), embal_photos_per_site=8, photo_size=112, satellite_size=112,
        image_encoder="efficientnet-lite0-imagenet", location_encoder="geoclip-location",
        encoder_input_size=112, batch_size=64, num_workers=1,
        align_dim=128, align_hidden=512, align_epochs=60, align_batch_size=256, align_lr=1e-3,
        test_fraction=0.3,
        map_bbox=(-5.0, 42.0, 15.0, 55.0), map_resolution_deg=0.1, umap_max_points=3000, probe_sites=300,
    ),
    "full": Profile(
        name="full",
        description=(
            "Real data on a GPU server (e.g. ~70k LUCAS sites with 5 views each, ~75k EMBAL transect "
            "photos, ~500k EVA plots with satellite patches); SwinV2 images, large heads and batches. "
            "With DATA='demo' it generates a 20,000-site demo to size a server."
        ),
        n_sites=20_000,
        views=("N", "E", "S", "W", "P"), embal_photos_per_site=19, photo_size=224, satellite_size=120,
        image_encoder="timm:swinv2_tiny_window8_256", location_encoder="geoclip-location",
        encoder_input_size=256, batch_size=256, num_workers=8,
        align_dim=256, align_hidden=1024, align_epochs=100, align_batch_size=4096, align_lr=1e-3,
        test_fraction=0.2,
        map_bbox=EUROPE_WEST, map_resolution_deg=0.01, umap_max_points=20_000, probe_sites=20_000,
    ),
}


def get(name: str) -> Profile:
    """Return the profile called ``name`` (``tiny``, ``book`` or ``full``)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
