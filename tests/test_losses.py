import math

import pytest
import torch

import habitat_helpers as hh


def reference_info_nce(a, b, tau):
    """Plain-loop symmetric InfoNCE, written from the formula."""
    def unit(row):
        norm = math.sqrt(sum(v * v for v in row))
        return [v / norm for v in row]

    a, b = [unit(x) for x in a.tolist()], [unit(x) for x in b.tolist()]
    n = len(a)
    logit = [[sum(p * q for p, q in zip(a[i], b[j])) / tau for j in range(n)] for i in range(n)]
    rows = -sum(logit[i][i] - math.log(sum(math.exp(logit[i][j]) for j in range(n))) for i in range(n)) / n
    cols = -sum(logit[j][j] - math.log(sum(math.exp(logit[i][j]) for i in range(n))) for j in range(n)) / n
    return (rows + cols) / 2


def test_hand_computed_two_pairs():
    # orthogonal unit vectors, each paired with itself: logits = [[1, 0], [0, 1]] / tau
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tau = 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(0)))  # same for rows and columns
    assert float(hh.losses.info_nce(a, a, tau)) == pytest.approx(expected, rel=1e-6)


def test_matches_plain_loop_reference_on_random_inputs():
    gen = torch.Generator().manual_seed(0)
    for n, d, tau in [(3, 4, 0.07), (7, 5, 0.2), (12, 16, 1.0)]:
        a, b = torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen)
        assert float(hh.losses.info_nce(a, b, tau)) == pytest.approx(reference_info_nce(a, b, tau), rel=1e-5)


def test_invariances():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(9, 6, generator=gen), torch.randn(9, 6, generator=gen)
    base = float(hh.losses.info_nce(a, b, 0.1))
    perm = torch.randperm(9, generator=gen)
    assert float(hh.losses.info_nce(a[perm], b[perm], 0.1)) == pytest.approx(base, rel=1e-5)
    assert float(hh.losses.info_nce(3.0 * a, 0.5 * b, 0.1)) == pytest.approx(base, rel=1e-5)
    assert float(hh.losses.info_nce(b, a, 0.1)) == pytest.approx(base, rel=1e-5)  # symmetric


def test_matched_pairs_beat_chance_and_shuffled_pairs():
    a = torch.eye(8)
    assert float(hh.losses.info_nce(a, a, 0.07)) < 1e-3
    assert float(hh.losses.info_nce(a, a.roll(1, 0), 0.07)) > math.log(8)


def test_learnable_temperature():
    temp = hh.losses.LearnableTemperature()
    assert temp().item() == pytest.approx(0.07)
    with torch.no_grad():
        temp.log_tau.fill_(math.log(1e-4))
    assert temp().item() == pytest.approx(0.01)  # clamped
    loss = hh.losses.info_nce(torch.randn(4, 3), torch.randn(4, 3), hh.losses.LearnableTemperature()())
    loss.backward()
    with pytest.raises(ValueError):
        hh.losses.LearnableTemperature(init=5.0)


def test_shape_errors():
    with pytest.raises(ValueError):
        hh.losses.info_nce(torch.zeros(3, 2), torch.zeros(4, 2))


# --- spatial multi-positive InfoNCE -------------------------------------------------------

def _haversine(lat1, lon1, lat2, lon2):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(min(1.0, a)))


def reference_spatial(z, site, modality, lat, lon, radius, tau, scale=None, pairs=None, positives="radius"):
    """Plain loops over anchors, candidates and positives, from the docstring's formula and its
    list of what a neighbour is (``positives``)."""
    rows = [[v / math.sqrt(sum(x * x for x in r)) for v in r] for r in z.tolist()]
    n = len(rows)
    losses = []
    for i in range(n):
        cand = [j for j in range(n) if j != i and (
            modality[i] != modality[j] if pairs is None else pairs[modality[i]][modality[j]])]
        own, near = [], []
        for j in cand:
            d = _haversine(lat[i], lon[i], lat[j], lon[j])
            w = 1.0 if scale is None else math.exp(-d / scale)
            if site[i] == site[j]:
                own.append((j, 1.0 if scale is None else 1.0))
            elif radius > 0 and d <= radius:
                near.append((j, w))
        if positives == "not_negative":
            cand = [j for j in cand if j not in {k for k, _ in near}]
        if positives in ("site", "not_negative"):
            near = []
        if positives == "own_half" and own and near:
            own_total, near_total = sum(w for _, w in own), sum(w for _, w in near)
            own = [(j, 0.5 * w / own_total) for j, w in own]
            near = [(j, 0.5 * w / near_total) for j, w in near]
        pos = own + near
        if not pos:
            continue
        sim = {j: sum(p * q for p, q in zip(rows[i], rows[j])) / tau for j in cand}
        log_denom = math.log(sum(math.exp(sim[j]) for j in cand))
        total = sum(w for _, w in pos)
        losses.append(-sum(w * (sim[j] - log_denom) for j, w in pos) / total)
    return sum(losses) / len(losses)


def _spatial_batch(seed, n_sites=10, modalities=3, d=5, missing=0.2):
    """Items of sites clustered in three groups a few km wide; some modalities missing."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.tensor([[45.0, 7.0], [45.05, 7.02], [50.0, -1.0]])
    group = torch.arange(n_sites) % 3
    xy = centre[group] + 0.02 * torch.randn(n_sites, 2, generator=gen)
    site, modality = [], []
    for s in range(n_sites):
        for m in range(modalities):
            if m == 0 or torch.rand(1, generator=gen).item() > missing:
                site.append(s)
                modality.append(m)
    site, modality = torch.tensor(site), torch.tensor(modality)
    z = torch.randn(len(site), d, generator=gen)
    return z, site, modality, xy[site, 0], xy[site, 1]


@pytest.mark.parametrize("radius, scale", [(0.0, None), (3.0, None), (10.0, None), (10.0, 4.0), (5000.0, None)])
def test_spatial_loss_matches_plain_loop_reference(radius, scale):
    for seed in range(3):
        z, site, mod, lat, lon = _spatial_batch(seed)
        got = hh.losses.spatial_info_nce(z, site, mod, lat, lon, radius_km=radius, temperature=0.3,
                                         soft_scale_km=scale)
        ref = reference_spatial(z, site.tolist(), mod.tolist(), lat.tolist(), lon.tolist(), radius, 0.3, scale)
        assert float(got) == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("positives", ["radius", "own_half", "site", "not_negative"])
@pytest.mark.parametrize("scale", [None, 4.0])
def test_what_a_neighbour_is_matches_the_reference(positives, scale):
    for seed in range(3):
        z, site, mod, lat, lon = _spatial_batch(seed, n_sites=12)
        got = hh.losses.spatial_info_nce(z, site, mod, lat, lon, radius_km=10.0, temperature=0.3,
                                         soft_scale_km=scale, positives=positives)
        ref = reference_spatial(z, site.tolist(), mod.tolist(), lat.tolist(), lon.tolist(), 10.0, 0.3, scale,
                                positives=positives)
        assert float(got) == pytest.approx(ref, rel=1e-5)


def test_the_four_kinds_of_neighbour_differ_and_site_equals_radius_zero():
    z, site, mod, lat, lon = _spatial_batch(2, n_sites=12)
    values = {p: float(hh.losses.spatial_info_nce(z, site, mod, lat, lon, radius_km=10.0, temperature=0.3,
                                                  positives=p)) for p in hh.losses.POSITIVES}
    assert len({round(v, 6) for v in values.values()}) == 4
    paired = float(hh.losses.spatial_info_nce(z, site, mod, lat, lon, radius_km=0.0, temperature=0.3))
    assert values["site"] == pytest.approx(paired)           # neighbours stay negatives: the paired loss
    cand, pos = hh.losses.spatial_positive_masks(site, mod, hh.losses.pairwise_haversine_km(lat, lon), 10.0,
                                                 positives="not_negative")
    near = (hh.losses.pairwise_haversine_km(lat, lon) <= 10.0) & (site[:, None] != site[None, :])
    assert not bool((cand & near).any()) and bool(near.any())   # neighbours are neither positive nor negative
    with pytest.raises(ValueError, match="positives must be one of"):
        hh.losses.spatial_info_nce(z, site, mod, lat, lon, radius_km=10.0, positives="nearby")


def test_spatial_loss_with_a_pair_table_matches_reference():
    z, site, mod, lat, lon = _spatial_batch(4)
    pairs = torch.tensor([[False, True, False], [True, False, False], [False, False, False]])  # photo-satellite only
    got = hh.losses.spatial_info_nce(z, site, mod, lat, lon, radius_km=8.0, temperature=0.2, pairs=pairs)
    ref = reference_spatial(z, site.tolist(), mod.tolist(), lat.tolist(), lon.tolist(), 8.0, 0.2,
                            pairs=pairs.tolist())
    assert float(got) == pytest.approx(ref, rel=1e-5)


def test_radius_zero_reduces_exactly_to_the_paired_loss():
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(11, 6, generator=gen), torch.randn(11, 6, generator=gen)
    z = torch.cat([a, b])
    site = torch.arange(11).repeat(2)
    modality = torch.tensor([0] * 11 + [1] * 11)
    lat, lon = torch.full((22,), 45.0), torch.full((22,), 7.0)   # all at one spot: r = 0 ignores it
    got = hh.losses.spatial_info_nce(z, site, modality, lat, lon, radius_km=0.0, temperature=0.1)
    assert float(got) == pytest.approx(float(hh.losses.info_nce(a, b, 0.1)), rel=1e-6)
    assert float(hh.losses.spatial_info_nce(z, site, modality, temperature=0.1)) == pytest.approx(float(got))


def test_spatial_loss_invariances_and_masking():
    z, site, mod, lat, lon = _spatial_batch(7, n_sites=12)
    base = float(hh.losses.spatial_info_nce(z, site, mod, lat, lon, radius_km=6.0, temperature=0.2))
    perm = torch.randperm(len(z), generator=torch.Generator().manual_seed(0))
    permuted = hh.losses.spatial_info_nce(z[perm], site[perm], mod[perm], lat[perm], lon[perm], radius_km=6.0,
                                          temperature=0.2)
    assert float(permuted) == pytest.approx(base, rel=1e-5)
    scaled = z * torch.linspace(0.5, 4.0, len(z))[:, None]           # per-row scaling before normalisation
    assert float(hh.losses.spatial_info_nce(scaled, site, mod, lat, lon, radius_km=6.0,
                                            temperature=0.2)) == pytest.approx(base, rel=1e-5)
    # a huge length scale makes soft weights uniform
    soft = hh.losses.spatial_info_nce(z, site, mod, lat, lon, radius_km=6.0, temperature=0.2, soft_scale_km=1e9)
    assert float(soft) == pytest.approx(base, rel=1e-5)
    # same-site items are never negatives: a second item of the anchor's site, far from it, is a positive
    cand, pos = hh.losses.spatial_positive_masks(site, mod, None, 0.0)
    same = (site[:, None] == site[None, :]) & cand
    assert bool((pos == same).all()) and not bool((cand & same & ~pos).any())
    per = hh.losses.spatial_info_nce(z, site, mod, lat, lon, radius_km=6.0, temperature=0.2, reduction="none")
    assert per.shape == (len(z),) and float(per[~per.isnan()].mean()) == pytest.approx(base, rel=1e-5)


def test_spatial_loss_gradients_and_errors():
    z, site, mod, lat, lon = _spatial_batch(8)
    z.requires_grad_(True)
    hh.losses.spatial_info_nce(z, site, mod, lat, lon, radius_km=5.0).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="coordinates"):
        hh.losses.spatial_info_nce(z, site, mod, radius_km=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        hh.losses.spatial_info_nce(z, site, mod, lat, lon, radius_km=-1.0)
    lonely = hh.losses.spatial_info_nce(torch.randn(3, 4, requires_grad=True), torch.arange(3),
                                        torch.zeros(3, dtype=torch.long))
    assert float(lonely.detach()) == 0.0 and lonely.requires_grad       # one modality, no candidates: no positive


def test_hub_pairs_each_modality_with_the_hub_only():
    cfg = hh.align.AlignConfig(modalities=("photo", "satellite", "gps"), hub="gps")
    assert cfg.modality_pairs() == [("photo", "gps"), ("satellite", "gps")]
    table = cfg.pair_table()
    assert not bool(table[0, 1]) and bool(table[0, 2]) and bool(table[1, 2])
    assert len(hh.align.AlignConfig().modality_pairs()) == 3                # default: every pair
    with pytest.raises(ValueError, match="hub must be"):
        hh.align.AlignConfig(modalities=("photo", "satellite"), hub="gps")
    with pytest.raises(ValueError, match="positives must be one of"):
        hh.align.AlignConfig(positives="near")
