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
