"""The fitted-trend correction: what a cached step computes, its least-squares fits (from profiling
moments and on the cached trajectory), the exact DP whose costs depend on the last two full steps, and
how it is stored."""
import itertools

import numpy as np
import pytest
import torch

from recat_runtime.cache import CacheCorrection, RecatCacheConfig, recat_cache
from recat_runtime.cache import schedules as S
from recat_runtime.cache.branch import branch_plan
from recat_runtime.cache.profile import (PairMoments, ProfileSettings, fit_correction_on_policy, profile_similarity,
                                         trend_correction_from_moments, trend_residual_distance)
from recat_runtime.cache.store import find_schedule, with_profile
from recat_runtime.errors import NoScheduleError
from recat_runtime.testing import tiny_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["a red circle", "a blue square", "a green triangle on white", "a yellow cross", "two pink circles"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=5)


def _run(pipe, steps=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return pipe("a red circle", num_inference_steps=steps, generator=g, output_type="np", height=16, width=16,
                guidance_scale=5.0).images


def _spy_cached_features(pipe, config):
    """The features the cached steps feed to the shallow branch, and the full steps' features."""
    import recat_runtime.cache.hook as H

    seen, full = [], []
    orig = H.shallow_forward

    def spy(unet, plan, feature, *args, **kw):
        seen.append(feature.clone())
        return orig(unet, plan, feature, *args, **kw)

    config.observer = lambda step, f: full.append(f.clone())
    H.shallow_forward = spy
    try:
        with recat_cache(pipe, config):
            _run(pipe)
    finally:
        H.shallow_forward = orig
    return seen, full


def _coefficients(channels, steps=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(m, 0.2, (steps, channels)).astype(np.float32) for m in (1.0, 0.0, 0.5)]


def test_cached_step_applies_scale_trend_and_shift(pipe):
    c = branch_plan(pipe.unet, 0).feature_channels
    scale, shift, trend = _coefficients(c)
    cfg = RecatCacheConfig(8, (0, 2, 5), correction=CacheCorrection(scale, shift, trend))
    seen, (f0, f1, f2) = _spy_cached_features(pipe, cfg)
    row = lambda m, t: torch.from_numpy(m[t]).view(1, -1, 1, 1)  # noqa: E731
    # step 1: first segment, no earlier full step: the affine part only
    assert torch.allclose(seen[0], f0 * row(scale, 1) + row(shift, 1))
    for k, (t, fa, fb) in enumerate([(3, f1, f0), (4, f1, f0), (6, f2, f1), (7, f2, f1)], start=1):
        delta = fa - fb
        detail = delta - delta.mean(dim=(2, 3), keepdim=True)  # the spatial means are not extrapolated
        want = fa * row(scale, t) + row(shift, t) + detail * row(trend, t)
        assert torch.allclose(seen[k], want, atol=1e-6), t
        assert not torch.allclose(seen[k], want + delta.mean(dim=(2, 3), keepdim=True) * row(trend, t), atol=1e-6)


def test_zero_trend_and_identity_is_plain_reuse_bit_for_bit(pipe):
    c = branch_plan(pipe.unet, 0).feature_channels
    full = (0, 2, 5)
    ident = CacheCorrection(np.ones((8, c), np.float32), np.zeros((8, c), np.float32), np.zeros((8, c), np.float32))
    with recat_cache(pipe, RecatCacheConfig(8, full, correction=ident)):
        same = _run(pipe)
    with recat_cache(pipe, RecatCacheConfig(8, full)):
        plain = _run(pipe)
    assert np.array_equal(same, plain)


def test_correction_validation_and_json_round_trip():
    scale, shift, trend = _coefficients(4)
    with pytest.raises(ValueError, match="trend"):
        CacheCorrection(scale, shift, trend[:, :3])
    bad = trend.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        CacheCorrection(scale, shift, bad)
    corr = CacheCorrection(scale, shift, trend)
    with pytest.raises(ValueError, match="forecast"):
        RecatCacheConfig(8, (0, 4), correction=corr, forecast=True)
    back = CacheCorrection.from_json(corr.to_json())
    for a, b in ((back.scale, scale), (back.shift, shift), (back.trend, trend)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert CacheCorrection.from_json(CacheCorrection(scale, shift).to_json()).trend is None


def _synthetic_moments(steps=6, channels=3, seed=0):
    """Features where step 5's is an exact per-channel function of steps 2 and 4,
    ``a x_4 + c centred(x_4 - x_2) + b``, and the others are noise: the trend fit must recover it."""
    rng = np.random.default_rng(seed)
    m = PairMoments(steps)
    truth = (rng.normal(1, 0.3, channels), rng.normal(0, 0.5, channels), rng.normal(0, 1, channels))
    for _ in range(3):
        feats = [torch.from_numpy(rng.normal(size=(4, channels, 3, 3))) for _ in range(steps)]
        a, c, b = (torch.from_numpy(v).view(1, -1, 1, 1) for v in truth)
        delta = feats[4] - feats[2]
        feats[5] = a * feats[4] + c * (delta - delta.mean(dim=(2, 3), keepdim=True)) + b
        m.add(feats)
    return m, truth


def test_trend_fit_from_moments_recovers_an_exact_relation():
    m, (a, c, b) = _synthetic_moments()
    corr, info = trend_correction_from_moments(m, (0, 2, 4))
    np.testing.assert_allclose(corr.scale[5], a, atol=1e-4)
    np.testing.assert_allclose(corr.trend[5], c, atol=1e-4)
    np.testing.assert_allclose(corr.shift[5], b, atol=1e-4)
    assert np.all(corr.trend[:3] == 0)  # first segment: no earlier full step, affine only
    assert np.all(corr.scale[[0, 2, 4]] == 1) and np.all(corr.shift[[0, 2, 4]] == 0)
    assert 0 <= info["relative_mse_after_trend"] <= info["relative_mse_after"]  # a superset of regressors
    d3 = trend_residual_distance(m)
    assert d3[2, 4, 5] < 1e-4  # only the ridge (1e-6 of the trace) keeps it from 0
    assert d3[1, 4, 5] > 1e-2 and d3[2, 3, 5] > 1e-2
    assert np.all(d3 >= 0) and np.all(np.isfinite(d3))


def test_exact_dp_with_two_anchor_costs_matches_brute_force():
    rng = np.random.default_rng(3)
    for trial in range(40):
        t_count = int(rng.integers(1, 8))
        d1, d3 = rng.random((t_count, t_count)), rng.random((t_count, t_count, t_count))
        w = rng.random(t_count) if trial % 2 else None
        for b in range(1, t_count + 2):
            steps, cost = S.optimal_schedule_trend(d1, d3, b, w)
            assert steps[0] == 0 and len(steps) <= b
            brute = min(S.schedule_cost_trend(d1, d3, (0, *rest), w) for k in range(min(b, t_count))
                        for rest in itertools.combinations(range(1, t_count), k))
            assert cost == pytest.approx(brute, abs=1e-9)
            assert S.schedule_cost_trend(d1, d3, steps, w) == pytest.approx(cost, abs=1e-9)
    with pytest.raises(ValueError, match="pair"):
        S.optimal_schedule_trend(np.zeros((4, 4)), np.zeros((4, 4)), 2)
    bad = np.zeros((4, 4, 4))
    bad[0, 1, 2] = np.inf
    with pytest.raises(ValueError, match="finite"):
        S.optimal_schedule_trend(np.zeros((4, 4)), bad, 2)


def test_cached_observer_sees_true_features_without_changing_the_run(pipe):
    full = (0, 3, 6)
    with recat_cache(pipe, RecatCacheConfig(8, full)):
        plain = _run(pipe)
    calls = []
    cfg = RecatCacheConfig(8, full, cached_observer=lambda *a: calls.append([None if x is None else x.clone()
                                                                             if torch.is_tensor(x) else x for x in a]))
    with recat_cache(pipe, cfg) as hook:
        observed = _run(pipe)
    assert np.array_equal(plain, observed)  # the extra full forward does not move the trajectory
    assert [c[0] for c in calls] == [1, 2, 4, 5, 7] and hook.cached_calls == 5
    assert calls[0][2] is None and calls[2][2] is not None  # no earlier full step in the first segment
    assert all(not torch.equal(c[1], c[3]) for c in calls)  # the true feature differs from the cached one


def test_on_policy_fit_gives_a_usable_trend_correction(pipe):
    st = ProfileSettings(steps=8, guidance=5.0, samples=8, batch_size=4)
    _, info = profile_similarity(pipe, PROMPTS, st, collect_moments=True)
    full = (0, 3, 6)
    off, _ = trend_correction_from_moments(info["moments"], full)
    corr, fit = fit_correction_on_policy(pipe, PROMPTS, st, full, off, trend=True)
    assert corr.trend is not None and fit["on_policy_samples"] == 8 and fit["relative_mse_on_policy"] >= 0
    assert np.all(corr.trend[[0, 1, 2]] == 0) and np.any(corr.trend[[4, 5, 7]] != 0)
    assert np.all(corr.scale[list(full)] == 1) and np.all(corr.shift[list(full)] == 0)
    affine, _ = fit_correction_on_policy(pipe, PROMPTS, st, full, None, trend=False)
    assert affine.trend is None
    with recat_cache(pipe, RecatCacheConfig(8, full, correction=corr)):
        assert np.isfinite(_run(pipe)).all()


def test_store_writes_format_2_for_trend_and_refuses_unknown_formats():
    scale, shift, trend = _coefficients(4, steps=6)
    prof = {"sampler": "ddim", "steps": 6, "guidance": 4.0, "branch": 0, "similarity": np.eye(6)}
    plain = {"budget": 2, "full_steps": [0, 3], "cost": 1.0, "correction": CacheCorrection(scale, shift).to_json()}
    meta = with_profile({}, prof, [plain])
    assert meta["recat"]["format"] == 1
    fitted = {"budget": 3, "full_steps": [0, 2, 4], "cost": 1.0,
              "correction": CacheCorrection(scale, shift, trend).to_json()}
    meta = with_profile(meta, prof, [fitted])
    assert meta["recat"]["format"] == 2
    _, corr, _ = find_schedule(meta, sampler="ddim", steps=6, budget=3, guidance=4.0)
    np.testing.assert_allclose(corr.trend, trend, atol=1e-6)
    assert find_schedule(meta, sampler="ddim", steps=6, budget=2, guidance=4.0)[1].trend is None
    meta["recat"]["format"] = 5                 # a format this runtime predates (3: the continuous model, 4: early05)
    with pytest.raises(NoScheduleError, match="format 5"):
        find_schedule(meta, sampler="ddim", steps=6, budget=2, guidance=4.0)


def test_pair_moments_in_chunks_equal_one_pass():
    rng = np.random.default_rng(1)
    feats = [torch.from_numpy(rng.normal(size=(5, 3, 4, 2))).to(torch.float32) for _ in range(6)]
    whole, chunked = PairMoments(6), PairMoments(6)
    whole.add(feats)
    chunked.add(feats, chunk_elements=6 * 3 * 4 * 2 * 2)  # two samples per chunk: chunks of 2, 2, 1
    assert chunked.count == whole.count == 5 * 4 * 2
    for a, b in ((chunked.s1, whole.s1), (chunked.s2, whole.s2), (chunked.q, whole.q)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_trend_runs_are_independent_of_the_previous_run(pipe):
    """The per-segment detail is recomputed for every run: a run after another one gives exactly what it
    gives on a fresh hook."""
    c = branch_plan(pipe.unet, 0).feature_channels
    corr = CacheCorrection(*_coefficients(c))
    # one trend segment (anchored at 4), so consecutive runs cache their detail under the same step
    cfg = lambda: RecatCacheConfig(8, (0, 4), correction=corr)  # noqa: E731
    with recat_cache(pipe, cfg()):
        fresh = _run(pipe, seed=1)
    with recat_cache(pipe, cfg()):
        _run(pipe, seed=0)
        after_another = _run(pipe, seed=1)
    assert np.array_equal(fresh, after_another)


def test_forecast_with_a_stored_trend_is_a_one_line_cli_error():
    from recat_runtime.api import cache_config
    from recat_runtime.errors import CacheSettingsError, ForecastConflictError

    scale, shift, trend = _coefficients(4, steps=6)
    prof = {"sampler": "ddim", "steps": 6, "guidance": 4.0, "branch": 0, "similarity": np.eye(6)}
    meta = with_profile({}, prof, [{"budget": 3, "full_steps": [0, 2, 4], "cost": 1.0,
                                    "correction": CacheCorrection(scale, shift, trend).to_json()}])
    with pytest.raises(CacheSettingsError, match="already forecasts") as err:
        cache_config("recat", steps=6, budget=3, metadata=meta, guidance=4.0, forecast=True)
    from acqe_cli._errors import format_error

    # the library names no command-line flags; the CLI adds what to type
    assert "--" not in str(err.value)
    assert format_error(err.value).endswith("; drop --forecast, or add --no-correction to use the plain forecast")
    assert isinstance(err.value, ForecastConflictError)
    plain = cache_config("recat", steps=6, budget=3, metadata=meta, guidance=4.0, forecast=True,
                         correction=False)
    assert plain.forecast and plain.correction is None
    line = format_error(CacheSettingsError("x"))
    assert line == "cache settings: x"


@pytest.mark.parametrize("damage", ["nan", "shape", "rows", "steps", "type"])
def test_damaged_stored_correction_is_a_schedule_error(damage):
    scale, shift, trend = _coefficients(4, steps=6)
    corr = CacheCorrection(scale, shift, trend).to_json()
    entry = {"budget": 3, "full_steps": [0, 2, 4], "cost": 1.0, "correction": corr}
    if damage == "nan":
        corr["trend"][3][1] = float("nan")
    elif damage == "shape":
        corr["trend"] = [row[:3] for row in corr["trend"]]
    elif damage == "rows":
        corr["scale"], corr["shift"], corr["trend"] = corr["scale"][:5], corr["shift"][:5], corr["trend"][:5]
    elif damage == "steps":
        entry["full_steps"] = [0, 2, 9]
    else:
        corr["scale"] = "oops"
    meta = {"recat": {"format": 2, "profiles": [{"sampler": "ddim", "steps": 6, "guidance": 4.0, "branch": 0,
                                                  "schedules": [entry]}]}}
    with pytest.raises(NoScheduleError, match="malformed"):
        find_schedule(meta, sampler="ddim", steps=6, budget=3, guidance=4.0)
