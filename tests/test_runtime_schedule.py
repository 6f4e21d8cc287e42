"""CKA estimators against their definitions; the schedule DP against brute force; baseline schedules."""
import itertools

import numpy as np
import pytest

from recat_runtime.cache.cka import MinibatchCKA, biased_hsic, cka, debiased_hsic, gram, pairwise_debiased_hsic
from recat_runtime.cache.schedules import (
    brute_force_schedule,
    check_schedule,
    interval_schedule,
    optimal_schedule,
    quadratic_schedule,
    schedule_cost,
    uniform_schedule,
)


def _hsic_u_statistic(k, l):
    """Song et al.'s HSIC_1 by its definition: the U-statistic over ordered distinct 4-tuples."""
    n = k.shape[0]
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
        count += 1
    return total / count


@pytest.mark.parametrize("n", [4, 6, 7])
def test_debiased_hsic_equals_u_statistic(n):
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, 5)), rng.normal(size=(n, 3)) + 2.0
    k, l = x @ x.T, y @ y.T  # uncentred Grams: the estimator needs no centring
    assert debiased_hsic(k, l) == pytest.approx(_hsic_u_statistic(k, l), rel=1e-10, abs=1e-12)


def test_debiased_hsic_is_shift_invariant_and_centring_changes_nothing():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 20)), rng.normal(size=(9, 20))
    shifted = x + rng.normal(size=(1, 20)) * 10
    assert debiased_hsic(gram(x), gram(y)) == pytest.approx(debiased_hsic(x @ x.T, y @ y.T), rel=1e-9)
    assert debiased_hsic(shifted @ shifted.T, y @ y.T) == pytest.approx(debiased_hsic(x @ x.T, y @ y.T), rel=1e-8)


def test_pairwise_matches_single_pairs():
    rng = np.random.default_rng(2)
    g = np.stack([gram(rng.normal(size=(8, 30))) for _ in range(4)])
    m = pairwise_debiased_hsic(g)
    for s, t in itertools.product(range(4), repeat=2):
        assert m[s, t] == pytest.approx(_hsic_u_statistic(g[s], g[t]), rel=1e-9, abs=1e-9)


def test_minibatch_cka_is_ratio_of_mean_hsic():
    rng = np.random.default_rng(3)
    acc = MinibatchCKA(2)
    hs = []
    for _ in range(5):
        x = rng.normal(size=(6, 40))
        y = x @ rng.normal(size=(40, 40)) * 0.3 + rng.normal(size=(6, 40))
        acc.add([gram(x), gram(y)])
        hs.append((debiased_hsic(gram(x), gram(y)), debiased_hsic(gram(x), gram(x)), debiased_hsic(gram(y), gram(y))))
    hxy, hxx, hyy = np.mean(hs, axis=0)
    assert acc.matrix()[0, 1] == pytest.approx(hxy / np.sqrt(hxx * hyy), rel=1e-10)
    assert acc.matrix()[0, 0] == pytest.approx(1.0)


def test_biased_cka_is_inflated_for_few_samples_many_features():
    rng = np.random.default_rng(4)
    acc = MinibatchCKA(2)
    biased = []
    for _ in range(20):
        x, y = rng.normal(size=(16, 5000)), rng.normal(size=(16, 5000))  # independent: true CKA = 0
        acc.add([gram(x), gram(y)])
        biased.append(cka(gram(x), gram(y), debiased=False))
    assert np.mean(biased) > 0.8          # the n=16 estimator of the original ReCaT
    assert abs(acc.matrix()[0, 1]) < 0.05  # the minibatch debiased one


def test_debiased_needs_four_samples():
    with pytest.raises(ValueError, match="at least 4"):
        pairwise_debiased_hsic(np.zeros((2, 3, 3)))


@pytest.mark.parametrize("seed", range(6))
def test_dp_is_optimal_and_respects_budget(seed):
    rng = np.random.default_rng(seed)
    t_count = int(rng.integers(2, 10))
    d = rng.random((t_count, t_count)) * (1 + np.abs(np.subtract.outer(np.arange(t_count), np.arange(t_count))))
    w = rng.random(t_count) if seed % 2 else None
    for b in range(1, t_count + 1):
        steps, cost = optimal_schedule(d, b, w)
        assert steps[0] == 0 and len(steps) <= b and list(steps) == sorted(set(steps))
        assert cost == pytest.approx(schedule_cost(d, steps, w))
        _, best = brute_force_schedule(d, b, w)
        assert cost == pytest.approx(best, abs=1e-12)


def test_dp_prefers_refreshing_where_features_change():
    # features drift fast in the first half, barely in the second: refreshes go early
    t = np.arange(20.0)
    pos = np.where(t < 10, t * 3.0, 30 + (t - 10) * 0.1)
    d = np.abs(np.subtract.outer(pos, pos))
    steps, _ = optimal_schedule(d, 5)
    assert max(steps) < 12
    assert schedule_cost(d, steps) < schedule_cost(d, uniform_schedule(20, 5))


def test_baseline_schedules():
    assert uniform_schedule(50, 10) == interval_schedule(50, 5) == tuple(range(0, 50, 5))
    assert uniform_schedule(10, 10) == tuple(range(10))
    assert uniform_schedule(10, 99) == tuple(range(10))
    q = quadratic_schedule(50, 10)
    assert len(q) == 10 and q[0] == 0 and max(q) < 50
    gaps = np.diff(q)
    assert gaps.min() < 5 < gaps.max()  # denser in the middle than at the ends
    for b in range(1, 21):
        s = quadratic_schedule(20, b)
        assert len(check_schedule(s, 20)) == b


def test_residual_distance_ignores_affine_maps_and_sees_noise():
    import torch

    from recat_runtime.cache.profile import PairMoments, residual_distance

    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 4, 4, generator=g)
    scale = torch.tensor([2.0, -1.0, 0.5]).view(1, 3, 1, 1)
    m = PairMoments(3)
    m.add([x, x * scale + 1.0, torch.randn(8, 3, 4, 4, generator=g)])
    d = residual_distance(m)
    assert d[0, 1] == pytest.approx(0.0, abs=1e-9)   # per-channel affine: the correction removes it all
    assert d[0, 2] > 0.5                               # independent noise: nothing explained
