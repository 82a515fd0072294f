"""hh.landmask.is_land answers like global_land_mask.globe.is_land, from a memory-mapped bit-packed copy."""

import numpy as np
import pytest

import habitat_helpers as hh


@pytest.fixture(scope="module")
def globe():
    from global_land_mask import globe

    return globe


def test_same_answers_as_the_package(globe):
    rng = np.random.default_rng(0)
    lat = np.concatenate([rng.uniform(-90, 90, 200_000), rng.uniform(34, 72, 200_000),
                          [90, -90, 0, 89.9999, -89.9999, 45.0, 45.0]])
    lon = np.concatenate([rng.uniform(-180, 180, 200_000), rng.uniform(-25, 45, 200_000),
                          [180, -180, 0, 179.9999, -179.9999, 180.0, -180.0]])
    ours = hh.landmask.is_land(lat, lon)
    assert ours.dtype == bool and ours.shape == lat.shape
    np.testing.assert_array_equal(ours, globe.is_land(lat, lon))
    assert 0.2 < ours[:200_000].mean() < 0.4  # about 29 % of the Earth's surface is land


def test_every_cell_of_a_block_matches(globe):
    # a 1 km-spaced block across a coastline (Brittany), centres and cell edges
    lat = 48.0 + np.arange(0, 600) / 120.0
    lon = -5.5 + np.arange(0, 700) / 120.0
    lat_g, lon_g = np.meshgrid(lat, lon, indexing="ij")
    ours = hh.landmask.is_land(lat_g, lon_g)
    assert ours.shape == lat_g.shape
    np.testing.assert_array_equal(ours, globe.is_land(lat_g, lon_g))
    assert 0.1 < ours.mean() < 0.9


def test_scalars_and_empty():
    assert hh.landmask.is_land(48.85, 2.35).item() is True      # Paris
    assert hh.landmask.is_land(45.0, -30.0).item() is False     # mid-Atlantic
    assert hh.landmask.is_land([], []).shape == (0,)


@pytest.mark.parametrize("lat, lon, word", [(91, 0, "latitude"), (0, -180.5, "longitude"), (np.nan, 0, "NaN")])
def test_bad_coordinates_raise(lat, lon, word):
    with pytest.raises(ValueError, match=word):
        hh.landmask.is_land([10, lat], [10, lon])
