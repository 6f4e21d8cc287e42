"""ReCaT branch caching on a tiny SD-v1-shaped UNet: exactness, schedules, hook life cycle."""
import numpy as np
import pytest
import torch

from recat_runtime.cache import (
    RecatCacheConfig,
    apply_recat_cache,
    disable_recat_cache,
    get_recat_hook,
    recat_cache,
)
from recat_runtime.cache.branch import branch_plan, capture_feature, num_branches, shallow_forward
from recat_runtime.testing import tiny_pipeline, tiny_unet



pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=0)


def _run(pipe, steps=8, seed=0, prompt="a red circle"):
    g = torch.Generator().manual_seed(seed)
    return pipe(prompt, num_inference_steps=steps, generator=g, output_type="np", height=16, width=16).images


@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (1, 4, 10, 6)])
def test_shallow_forward_with_same_step_feature_is_bit_exact(shape):
    unet = tiny_unet(seed=1)
    x = torch.randn(shape)
    ehs = torch.randn(shape[0], 77, 32)
    t = torch.tensor(421)
    with torch.no_grad():
        ref = unet(x, t, ehs).sample
        for m in range(num_branches(unet)):
            plan = branch_plan(unet, m)
            out = shallow_forward(unet, plan, capture_feature(unet, plan, x, t, ehs), x, t, ehs)
            assert torch.equal(out, ref), f"branch {m}"


def test_branch_plan_sd_v1_numbering():
    from diffusers import UNet2DConditionModel
    from recat_runtime.testing import sd14_unet_config

    with torch.device("meta"):
        unet = UNet2DConditionModel(**sd14_unet_config())
    assert num_branches(unet) == 12
    p0 = branch_plan(unet, 0)
    assert (p0.up_block, p0.up_layer, p0.feature_channels) == (3, 2, 320)  # DeepCache branch 0
    p2 = branch_plan(unet, 2)
    assert (p2.down_block, p2.down_layer, p2.up_block, p2.up_layer) == (0, 1, 3, 0)
    with pytest.raises(ValueError, match="branch must be in"):
        branch_plan(unet, 12)


def test_full_budget_equals_uncached_exactly(pipe):
    ref = _run(pipe)
    with recat_cache(pipe, RecatCacheConfig.uniform(8, 8)) as hook:
        got = _run(pipe)
    assert hook.full_calls == 8 and hook.cached_calls == 0
    assert np.array_equal(ref, got)


def test_cached_run_uses_budget_and_differs(pipe):
    ref = _run(pipe)
    cfg = RecatCacheConfig(num_inference_steps=8, full_steps=(0, 3, 6))
    with recat_cache(pipe, cfg) as hook:
        a = _run(pipe)
        assert (hook.full_calls, hook.cached_calls) == (3, 5)
        b = _run(pipe)  # a second run starts a fresh cache and is identical
        assert (hook.full_calls, hook.cached_calls) == (6, 10)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, ref)
    assert np.abs(a - ref).max() < 0.5


def test_forecast_extrapolates_only_between_two_full_steps(pipe):
    """With one full step there is nothing to extrapolate from: forecast equals plain reuse exactly.
    With two or more it changes the cached steps; full budgets stay exactly uncached."""
    runs = {}
    for full in ((0,), (0, 3, 6)):
        for fc in (False, True):
            with recat_cache(pipe, RecatCacheConfig(num_inference_steps=8, full_steps=full, forecast=fc)):
                runs[full, fc] = _run(pipe)
    assert np.array_equal(runs[(0,), False], runs[(0,), True])
    assert not np.array_equal(runs[(0, 3, 6), False], runs[(0, 3, 6), True])
    assert np.isfinite(runs[(0, 3, 6), True]).all()
    ref = _run(pipe)
    with recat_cache(pipe, RecatCacheConfig.uniform(8, 8, forecast=True)):
        assert np.array_equal(_run(pipe), ref)


def test_forecast_is_the_linear_extrapolation(pipe):
    """The feature a cached step uses is f(a) + (t - a) / (a - a') (f(a) - f(a')) of the last two full steps."""
    from recat_runtime.cache import branch as B

    seen = []
    orig = B.shallow_forward

    def spy(unet, plan, feature, *args, **kw):
        seen.append(feature.clone())
        return orig(unet, plan, feature, *args, **kw)

    full = []
    cfg = RecatCacheConfig(num_inference_steps=8, full_steps=(0, 2, 5), forecast=True,
                           observer=lambda step, f: full.append((step, f.clone())))
    import recat_runtime.cache.hook as H
    H.shallow_forward, saved = spy, H.shallow_forward
    try:
        with recat_cache(pipe, cfg):
            _run(pipe)
    finally:
        H.shallow_forward = saved
    (s0, f0), (s1, f1), (s2, f2) = full
    # cached steps 1 (plain reuse of step 0), 3, 4 (from steps 0 and 2), 6, 7 (from steps 2 and 5)
    assert torch.equal(seen[0], f0)
    assert torch.allclose(seen[1], f1 + (f1 - f0) * (1 / 2)) and torch.allclose(seen[2], f1 + (f1 - f0) * (2 / 2))
    assert torch.allclose(seen[3], f2 + (f2 - f1) * (1 / 3)) and torch.allclose(seen[4], f2 + (f2 - f1) * (2 / 3))


def test_hook_life_cycle(pipe):
    apply_recat_cache(pipe, RecatCacheConfig.uniform(8, 2))
    try:
        with pytest.raises(ValueError, match="already enabled"):
            apply_recat_cache(pipe, RecatCacheConfig.uniform(8, 2))
        with pytest.raises(ValueError, match="for 8 steps but the scheduler makes 5"):
            _run(pipe, steps=5)
    finally:
        disable_recat_cache(pipe)
    assert get_recat_hook(pipe) is None
    disable_recat_cache(pipe)  # no-op


def test_a_scheduler_that_runs_a_timestep_twice_gets_the_config_stretched_over_its_calls(pipe):
    """PNDM (SD v1's own sampler) makes S + 1 UNet calls for S steps (its warm-up runs the second timestep
    twice): a config for S steps spends its full steps at the same fractions of those calls, each call with
    the correction row of the step it stands for; a scheduler without repeats keeps refusing a mismatch."""
    from diffusers import PNDMScheduler

    from recat_runtime.cache.hook import CacheCorrection

    saved = pipe.scheduler
    pipe.scheduler = PNDMScheduler.from_config(saved.config, skip_prk_steps=True)
    try:
        steps, channels = 8, branch_plan(pipe.unet, 0).feature_channels
        rows = np.arange(steps, dtype=np.float32)[:, None].repeat(channels, 1)
        corr = CacheCorrection(1 + rows / 100, rows / 1000)
        cfg = RecatCacheConfig(steps, (0, 3, 6), correction=corr)
        with recat_cache(pipe, cfg):
            _run(pipe, steps=steps)
            hook = get_recat_hook(pipe)
            assert len(pipe.scheduler.timesteps) == steps + 1
            assert hook.run_full_steps == (0, 3, 7)           # 0, 3 and 6 of 8 at 0, 3 and 6.75 of 9
            assert (hook.full_calls, hook.cached_calls) == (3, 6)
            # call c stands for config step c * 8 // 9: the last call (8) takes row 7, not a row past the end
            used = hook._run_correction.scale[:, 0]
            np.testing.assert_allclose(used, 1 + np.array([0, 0, 1, 2, 3, 4, 5, 6, 7]) / 100, rtol=1e-6)
        # a config two calls off is refused as before
        with recat_cache(pipe, RecatCacheConfig.uniform(steps - 1, 3)):
            with pytest.raises(ValueError, match="for 7 steps but the scheduler makes 9"):
                _run(pipe, steps=steps)
    finally:
        pipe.scheduler = saved


@pytest.mark.parametrize("solver", ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler"])
def test_a_multistep_solver_restarts_at_the_refreshes_after_cached_steps(pipe, solver):
    """With ``restart_multistep`` DPM++ 2M (UniPC) takes a first-order step (``lower_order_nums`` 0, as at the
    run's start; UniPC also skips its corrector) at each full step that follows a cached one, and only there; a planner's third element
    decides it per run over the config's flag; a sampler without a multistep history (DDIM) is unchanged."""
    import diffusers
    from diffusers import DDIMScheduler

    saved = pipe.scheduler
    seen = []

    def record(scheduler):
        step = scheduler.step

        def spy(*args, **kwargs):
            # (order count, whether UniPC's corrector is skipped: no previous sample to correct)
            seen.append((scheduler.lower_order_nums, getattr(scheduler, "last_sample", 0) is None))
            return step(*args, **kwargs)
        scheduler.step = spy
        return scheduler

    def orders(cfg):
        seen.clear()
        with recat_cache(pipe, cfg):
            images = _run(pipe, steps=10)
        restarts = [i for i, (n, _) in enumerate(seen) if n == 0]
        if solver == "UniPCMultistepScheduler":
            assert [i for i, (_, skipped) in enumerate(seen) if skipped] == restarts
        return restarts, images

    try:
        pipe.scheduler = record(getattr(diffusers, solver).from_config(saved.config))
        full = (0, 1, 4, 7)                      # 1 follows a full step; 4 and 7 follow cached ones
        first_order, plain = orders(RecatCacheConfig(10, full))
        assert first_order == [0]
        first_order, restarted = orders(RecatCacheConfig(10, full, restart_multistep=True))
        assert first_order == [0, 4, 7]
        assert np.abs(restarted - plain).max() > 0, "the restart changed nothing: the test does not see it"
        # a planner decides per run: its third element overrides the config's flag, a two-element plan keeps it
        for planned, flag, expected in (((full, None, False), True, [0]), ((full, None, True), False, [0, 4, 7]),
                                        ((full, None), True, [0, 4, 7])):
            cfg = RecatCacheConfig(10, (0, 5), restart_multistep=flag, planner=lambda ts, start, p=planned: p)
            assert orders(cfg)[0] == expected
        pipe.scheduler = DDIMScheduler.from_config(saved.config)
        with recat_cache(pipe, RecatCacheConfig(10, full)):
            ddim = _run(pipe, steps=10)
        with recat_cache(pipe, RecatCacheConfig(10, full, restart_multistep=True)):
            np.testing.assert_array_equal(_run(pipe, steps=10), ddim)
    finally:
        pipe.scheduler = saved


def test_steps_tracked_without_reading_the_timestep(pipe):
    """In a pipeline the hook locates each step by the timestep's position in scheduler.timesteps (no
    value read, so no GPU sync); an interrupted run is detected and the next run starts afresh."""
    cfg = RecatCacheConfig(num_inference_steps=8, full_steps=(0, 3, 6))
    with recat_cache(pipe, cfg) as hook:
        ref = _run(pipe)
        assert hook._prev_t == ("position", 7.0)

        def stop_after_four(p, i, t, kw):
            p._interrupt = i >= 3
            return kw

        g = torch.Generator().manual_seed(0)
        pipe("a red circle", num_inference_steps=8, generator=g, output_type="np", height=16, width=16,
             callback_on_step_end=stop_after_four)
        assert hook.step == 3
        again = _run(pipe)
    assert np.array_equal(ref, again)
    # a UNet called directly with plain timesteps falls back to reading the value
    with recat_cache(pipe.unet, RecatCacheConfig(num_inference_steps=4, full_steps=(0,))) as hook:
        x, ehs = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
        with torch.no_grad():
            pipe.unet(x, 900, ehs)
            pipe.unet(x, 400, ehs)
            pipe.unet(x, 900, ehs)   # a later timestep than the last one: a new run
        assert hook._prev_t == ("value", -900.0) and (hook.full_calls, hook.cached_calls) == (2, 1)


def test_correction_identity_is_exact_and_affine_changes(pipe):
    from recat_runtime.cache import CacheCorrection

    plan = branch_plan(pipe.unet, 0)
    ones = np.ones((8, plan.feature_channels), np.float32)
    zeros = np.zeros_like(ones)
    with recat_cache(pipe, RecatCacheConfig(8, (0, 4))):
        base = _run(pipe)
    with recat_cache(pipe, RecatCacheConfig(8, (0, 4), correction=CacheCorrection(ones, zeros))):
        same = _run(pipe)
    with recat_cache(pipe, RecatCacheConfig(8, (0, 4), correction=CacheCorrection(ones * 1.5, zeros))):
        other = _run(pipe)
    assert np.array_equal(base, same)
    assert not np.array_equal(base, other)


def test_config_validation():
    with pytest.raises(ValueError, match="step 0"):
        RecatCacheConfig(10, (1, 5))
    with pytest.raises(ValueError, match="outside"):
        RecatCacheConfig(10, (0, 10))
    assert RecatCacheConfig(10).full_steps == tuple(range(10))
    assert RecatCacheConfig.interval(10, 3).full_steps == (0, 3, 6, 9)


def test_cache_config_passes_forecast_through():
    from recat_runtime.api import cache_config

    assert cache_config("uniform", steps=8, budget=2, forecast=True).forecast
    assert cache_config("quadratic", steps=8, budget=3, forecast=True).forecast
    assert not cache_config("uniform", steps=8, budget=2).forecast
    assert cache_config("none", steps=8, budget=None, forecast=True) is None
