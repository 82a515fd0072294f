"""How far label agreement reaches, block sizes from it, and buffers around test sites."""

import numpy as np
import pytest

from habitat_helpers import spatial


def field_sites(scale_km, n=1200, seed=0, features=300):
    """Sites spread uniformly over a 1500 x 1000 km box at 45-54° N, labelled "A" or "B" by the
    sign of a smooth Gaussian random field with covariance exp(-h² / (2 scale_km²)) (random
    Fourier features).

    For such a field, two sites ``h`` apart share their label with probability 1/2 +
    arcsin(rho(h)) / pi (chance 1/2), so the excess over chance falls to a tenth of its value
    at short distance (the rule of ``autocorrelation_range_km``) at rho = sin(pi / 20), that
    is ``h = scale_km * sqrt(2 ln(1 / sin(pi / 20))) = 1.93 scale_km``: the true range.
    """
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 1500, n), rng.uniform(0, 1000, n)
    w = rng.normal(0, 1 / scale_km, (features, 2))
    b = rng.uniform(0, 2 * np.pi, features)
    value = np.cos(np.column_stack([x, y]) @ w.T + b).sum(axis=1)
    lat = 45 + y / spatial.KM_PER_DEGREE
    lon = x / (spatial.KM_PER_DEGREE * np.cos(np.deg2rad(lat)))
    return lat, lon, np.where(value > 0, "A", "B").astype(object)


def true_range_km(scale_km):
    return scale_km * np.sqrt(2 * np.log(1 / np.sin(np.pi / 20)))


def test_range_of_a_field_with_a_known_scale():
    lat, lon, labels = field_sites(100)
    estimate = spatial.autocorrelation_range_km(lat, lon, labels)
    truth = true_range_km(100)  # 193 km
    # within a factor 1.5 of the truth: the bins are 20 % wide and one realisation of the field
    # over 15 x 10 correlation lengths is only a sample of it (seeds 0-5 give 180-260 km)
    assert truth / 1.5 <= estimate.range_km <= truth * 1.5
    assert estimate.decayed and estimate.note == ""
    assert estimate.n_sites == 1200 and abs(estimate.chance - 0.5) < 0.05
    table = estimate.table
    assert {"lo_km", "hi_km", "km_mid", "pairs", "agreement", "excess", "tolerance", "at_chance"} <= set(table)
    assert (table["pairs"] >= 200).all() and table["pairs"].sum() == 1200 * 1199 // 2
    assert np.allclose(table["hi_km"].iloc[:-1], table["lo_km"].iloc[1:])
    # the range is where the rule says: the bin starting there and the three after it are at
    # chance, the bin just before is not
    start = int(np.flatnonzero(table["lo_km"] == estimate.range_km)[0])
    assert table["at_chance"].iloc[start:start + 4].all() and not table["at_chance"].iloc[start - 1]
    assert "indicator variogram" in estimate.method


def test_a_field_twice_as_coarse_has_a_longer_range():
    fine = spatial.autocorrelation_range_km(*field_sites(100))
    coarse = spatial.autocorrelation_range_km(*field_sites(200))
    assert coarse.range_km > 1.3 * fine.range_km  # 400 km against 220 km
    # (a 200 km field fills the box 7.5 x 5 times only: seeds 0-5 give 220-570 km)
    assert true_range_km(200) / 1.5 <= coarse.range_km <= true_range_km(200) * 1.5


def test_noise_labels_have_a_range_within_the_first_bin():
    lat, lon, _ = field_sites(100)
    labels = np.random.default_rng(1).choice(["A", "B", "C"], len(lat)).astype(object)
    estimate = spatial.autocorrelation_range_km(lat, lon, labels)
    assert estimate.range_km == estimate.table["hi_km"].iloc[0] < 20
    assert "no autocorrelation detected" in estimate.note


def test_unlabelled_sites_are_left_out_and_the_subsample_is_seeded():
    lat, lon, labels = field_sites(100, n=600)
    labels[::3] = None
    labels[1::7] = np.nan
    estimate = spatial.autocorrelation_range_km(lat, lon, labels, max_sites=300, seed=4)
    assert estimate.n_sites == 300
    again = spatial.autocorrelation_range_km(lat, lon, labels, max_sites=300, seed=4)
    assert again.range_km == estimate.range_km and again.table.equals(estimate.table)


def test_agreement_that_never_decays_is_reported_as_a_lower_bound():
    # two regions 200 km apart, one label each: agreement stays high up to the largest distance
    rng = np.random.default_rng(0)
    lat = np.concatenate([rng.uniform(45, 45.5, 100), rng.uniform(47.3, 47.8, 100)])
    lon = rng.uniform(5, 5.5, 200)
    labels = np.array(["A"] * 100 + ["B"] * 100, dtype=object)
    estimate = spatial.autocorrelation_range_km(lat, lon, labels, bins_km=[0, 20, 40, 60])
    assert not estimate.decayed and estimate.range_km == 60
    assert "at least" in estimate.note


def test_range_refuses_what_it_cannot_estimate():
    lat, lon, labels = field_sites(100, n=30)
    labels[:15] = None
    with pytest.raises(ValueError, match="only 15 labelled sites"):
        spatial.autocorrelation_range_km(lat, lon, labels)
    with pytest.raises(ValueError, match="share the label"):
        spatial.autocorrelation_range_km(lat, lon, np.full(30, "R", dtype=object))
    with pytest.raises(ValueError, match="same length"):
        spatial.autocorrelation_range_km(lat, lon[:-1], labels)
    with pytest.raises(ValueError, match="bins_km"):
        spatial.autocorrelation_range_km(*field_sites(100, n=100), bins_km=[0, 50, 20])


def test_block_size_for_range_by_hand():
    # a degree is pi * 6371.0088 / 180 = 111.195 km along a meridian and the equator
    assert spatial.block_size_for_range(100, [0.0]) == 0.9  # 100 / 111.195 = 0.8993
    # at 60° a degree of longitude is half as long: 100 / 55.597 = 1.7987
    assert spatial.block_size_for_range(100, [59.0, 60.0, 61.0]) == 1.8
    assert spatial.block_size_for_range(100, [-60.0]) == 1.8
    assert spatial.block_size_for_range(111.19, 0.0) == 1.0  # 0.99995 rounds up
    assert spatial.block_size_for_range(100, [0.0], step_deg=0.25) == 1.0
    # the block is at least the range wide in both directions
    size = spatial.block_size_for_range(270, [48.4])
    assert size * spatial.KM_PER_DEGREE * np.cos(np.deg2rad(48.4)) >= 270


@pytest.mark.parametrize("args", [(0, [0.0]), (-5, [0.0]), (np.nan, [0.0]), (100, []), (100, [np.nan]),
                                  (100, [95.0]), (100, [89.5])])
def test_block_size_for_range_rejects_bad_input(args):
    with pytest.raises(ValueError):
        spatial.block_size_for_range(*args)


def brute_force_buffer(lat, lon, test, buffer_km):
    dist = spatial.haversine_km(lat[:, None], lon[:, None], lat[None, test], lon[None, test])
    return ~test & (dist <= buffer_km).any(axis=1)


@pytest.mark.parametrize("buffer_km", [5, 50, 150, 400, 30_000])
def test_buffer_mask_matches_brute_force(buffer_km):
    rng = np.random.default_rng(3)
    lat, lon = rng.uniform(35, 70, 300), rng.uniform(-10, 30, 300)
    lat[:10], lon[:10] = rng.uniform(-5, 5, 10), rng.choice([-179.9, 179.9], 10)  # across the antimeridian
    test = spatial.block_ids(lat, lon, 5.0) % 4 == 0
    expected = brute_force_buffer(lat, lon, test, buffer_km)
    mask = spatial.buffer_mask(lat, lon, test, buffer_km)
    assert mask.dtype == bool and np.array_equal(mask, expected)
    assert not mask[test].any()
    if buffer_km == 30_000:  # farther than half the circumference: every other site
        assert np.array_equal(mask, ~test)


def test_buffer_mask_edge_cases():
    lat, lon = np.array([50.0, 50.0, 50.0, 10.0]), np.array([10.0, 10.0, 11.0, 10.0])
    test = np.array([True, False, False, False])
    assert not spatial.buffer_mask(lat, lon, test, 0).any()  # no buffer, not even a duplicate site
    assert spatial.buffer_mask(lat, lon, test, 1e-9).tolist() == [False, True, False, False]
    assert spatial.buffer_mask(lat, lon, test, 100).tolist() == [False, True, True, False]
    assert not spatial.buffer_mask(lat, lon, np.zeros(4, bool), 100).any()
    assert not spatial.buffer_mask(lat, lon, np.ones(4, bool), 100).any()
    with pytest.raises(ValueError, match="buffer_km"):
        spatial.buffer_mask(lat, lon, test, -1)
    with pytest.raises(ValueError, match="buffer_km"):
        spatial.buffer_mask(lat, lon, test, np.nan)
    with pytest.raises(ValueError, match="boolean"):
        spatial.buffer_mask(lat, lon, np.array([0]), 100)  # indices, not a mask
    with pytest.raises(ValueError, match="boolean"):
        spatial.buffer_mask(lat, lon, test[:3], 100)
    with pytest.raises(ValueError, match="NaN"):
        spatial.buffer_mask([np.nan, 1.0], [0.0, 0.0], np.array([True, False]), 100)


def test_resolve_block_size_estimates_the_same_labels_once(monkeypatch):
    import pandas as pd

    lat, lon, codes = field_sites(100, n=600)
    labels = pd.DataFrame({"label_l1": codes})
    calls = []
    estimate = spatial.autocorrelation_range_km

    def counted(*args, **kwargs):
        calls.append(1)
        return estimate(*args, **kwargs)

    monkeypatch.setattr(spatial, "autocorrelation_range_km", counted)
    monkeypatch.setattr(spatial, "_RANGES", {})
    first = spatial.resolve_block_size(lat, lon, labels, "auto", seed=0)
    first[1]["block_size_deg"] = -1.0                  # the caller's copy, not the cache
    again = spatial.resolve_block_size(lat, lon, labels, "auto", seed=0)
    assert len(calls) == 1 and again[0] == first[0] and again[1]["block_size_deg"] == first[0]
    changed = labels.copy()
    changed.loc[0, "label_l1"] = "B" if codes[0] == "A" else "A"
    spatial.resolve_block_size(lat, lon, changed, "auto", seed=0)
    spatial.resolve_block_size(lat, lon, labels, "auto", seed=1)
    assert len(calls) == 3                             # other labels or another seed: estimated again
