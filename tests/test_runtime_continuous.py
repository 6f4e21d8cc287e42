"""One ReCaT profile for any setting (issue 15): the continuous schedule model, per-budget optima, its stored
form, partial runs (img2img, inpainting) and ControlNet on cached steps, on tiny models, offline."""
import json

import numpy as np
import pytest
import torch

from acqe_format.errors import MetadataError
from acqe_format.model.schema import check_metadata
from recat_runtime.cache import RecatCacheConfig, recat_cache
from recat_runtime.cache.branch import branch_plan, shallow_forward
from recat_runtime.cache.continuous import ScheduleModel
from recat_runtime.cache.profile import PairMoments
from recat_runtime.cache.store import find_model, with_profile
from recat_runtime.errors import NoScheduleError
from recat_runtime.testing import SCHEDULER_CONFIG, tiny_pipeline
from runtime_fixtures import write_tiny_acqe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _synthetic_model(p=20, c=6, seed=0, weighting="none", kind="affine") -> ScheduleModel:
    """Features that drift smoothly with t plus noise: moments and CKA of a made-up profile."""
    rng = np.random.default_rng(seed)
    base = torch.from_numpy(rng.standard_normal((16, c, 4, 4)))
    drift = torch.from_numpy(rng.standard_normal((16, c, 4, 4)))
    feats = [base + (k / p) ** 1.5 * 3 * drift + 0.05 * torch.from_numpy(rng.standard_normal((16, c, 4, 4)))
             for k in range(p)]
    m = PairMoments(p)
    m.add(feats)
    flat = np.stack([f.reshape(16, -1).numpy() for f in feats])
    flat = flat - flat.mean(1, keepdims=True)
    g = np.einsum("tik,sjk->tsij", flat, flat)
    hs = np.einsum("tsij,tsji->ts", g, g)
    sim = hs / np.sqrt(np.outer(np.diag(hs), np.diag(hs)))
    ts = np.linspace(999, 0, p, endpoint=False).round()
    return ScheduleModel(ts, sim, m, weighting, kind)


def _grid(n):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    out = {}
    for name, cls in (("ddim", DDIMScheduler), ("dpm++", DPMSolverMultistepScheduler), ("euler", EulerDiscreteScheduler)):
        s = cls.from_config(SCHEDULER_CONFIG)
        s.set_timesteps(n)
        out[name] = s.timesteps.double().numpy()
    return out


def _remapped(model, ts):
    """The model's moments as seen on the run grid ``ts`` (each run step copies its profiled step's rows):
    the reference the index-mapped fast path must equal."""
    idx = model.grid(ts)
    m = PairMoments(len(idx))
    m.count, m.s1 = model.moments.count, model.moments.s1[idx]
    m.s2, m.q = model.moments.s2[np.ix_(idx, idx)], model.moments.q[np.ix_(idx, idx)]
    return m


@pytest.mark.parametrize("kind", ["none", "affine", "trend"])
@pytest.mark.parametrize("weighting", ["none", "late2", "early05"])
def test_every_budget_is_the_models_optimum_and_cost_never_rises(kind, weighting):
    """Budget B gets exactly B refreshes, step 0 first: the exact optimum of the model's cost on the run's
    grid (remapped from the profiled steps), so that cost never rises when B grows; on a grid coarser than
    the profiled one the last refresh is where DeepCache's uniform schedule has its last. (The
    optimum over *at most* B steps may take fewer where an extra refresh costs nothing or, with a noisy CKA,
    seems to cost; the user paid for B, so the rest are added: the optimum's steps are then a subset.)"""
    from recat_runtime.cache.continuous import MIN_MODELLED_BUDGET
    from recat_runtime.cache.profile import residual_distance, trend_residual_distance
    from recat_runtime.cache.schedules import optimal_schedule, optimal_schedule_trend, uniform_schedule

    model = _synthetic_model(weighting=weighting, kind=kind)
    for steps in (7, 20, 33):
        for sampler, ts in _grid(steps).items():
            w = model.weights(ts)
            if kind == "none":
                idx = model.grid(ts)
                d = 1 - model.similarity[np.ix_(idx, idx)]
                optimum = lambda b: optimal_schedule(d, b, w)  # noqa: E731
            else:
                # the model indexes costs computed once on the profiled grid: equal to computing them on
                # moments copied out to the run's grid (up to rounding where two run steps share a profiled one)
                m, idx = _remapped(model, ts), model.grid(ts)
                first = model._affine_cost[np.ix_(idx, idx)]
                np.testing.assert_allclose(first, np.triu(residual_distance(m), 1) + np.tril(first), atol=1e-12)
                if kind == "trend":
                    pair = model._trend_cost[np.ix_(idx, idx, idx)]
                    ref = trend_residual_distance(m, ties=True)
                    # where t maps to its anchor's profiled step the remapped fit's ridge leaves ~1e-6, the
                    # profiled grid the exact 0 (a feature predicts itself)
                    upper = (ref != 0) & (idx[None, :, None] != idx[None, None, :])
                    np.testing.assert_allclose(pair[upper], ref[upper], rtol=1e-9, atol=1e-12)
                    optimum = lambda b: optimal_schedule_trend(first, pair, b, w)  # noqa: E731
                else:
                    optimum = lambda b: optimal_schedule(first, b, w)  # noqa: E731
            prev_cost = np.inf
            for b in range(1, steps + 1):
                full, corr = model.schedule(ts, b)
                assert len(full) == b and full[0] == 0 and list(full) == sorted(set(full)), (sampler, steps, b, full)
                if b < MIN_MODELLED_BUDGET:          # too few refreshes for the model to beat an even spread
                    assert full == uniform_schedule(steps, b) and corr is None
                    continue
                if b < steps and kind != "none":
                    assert corr.scale.shape[0] == steps
                    assert (corr.trend is not None) == (kind == "trend")
                if b == steps:
                    continue
                opt = model.refresh_steps(ts, b)
                if steps < len(model.timesteps):
                    # on a coarser grid than the profiled one the last refresh is where DeepCache has its last,
                    # and the others the optimum before it
                    last = uniform_schedule(steps, b)[-1]
                    assert full[-1] == last and full[:-1] == model.refresh_steps(ts[:last], b - 1), (steps, b, full)
                else:
                    assert full == opt
                best_full, best_cost = optimum(b)
                assert set(best_full) <= set(opt), (sampler, steps, b, opt, best_full)
                if len(best_full) == b:
                    assert tuple(opt) == tuple(best_full)
                assert best_cost <= prev_cost * (1 + 1e-9) + 1e-12, f"{sampler} {steps} steps: budget {b} costs more"
                prev_cost = best_cost


def test_weightings_tilt_towards_their_end_of_the_run():
    """"late" weighs the less noisy steps (small t) more, "early" the noisy ones where the content forms;
    both mean 1, and a tilt towards the front moves the optimum's refreshes earlier."""
    from acqe_format.model.schema import CONTINUOUS_WEIGHTINGS
    from recat_runtime.cache.continuous import DEFAULT_WEIGHTING, WEIGHTINGS

    assert DEFAULT_WEIGHTING in WEIGHTINGS
    # the runtime gives each name its meaning, the schema says which format may store it: the same names
    assert set(WEIGHTINGS) == set(CONTINUOUS_WEIGHTINGS[max(CONTINUOUS_WEIGHTINGS)])
    ts = _grid(30)["ddim"]                         # decreasing t: noisy first
    for name, (end, q) in WEIGHTINGS.items():
        w = _synthetic_model(weighting=name).weights(ts)
        if q == 0:
            assert w is None
            continue
        assert abs(w.mean() - 1) < 1e-12 and np.all(w > 0)
        assert np.all(np.diff(w) > 0) if end == "late" else np.all(np.diff(w) < 0), name
    flat = _synthetic_model(kind="trend").schedule(ts, 6)[0]
    early = _synthetic_model(kind="trend", weighting="early05").schedule(ts, 6)[0]
    assert sum(early) <= sum(flat), (early, flat)


@pytest.mark.parametrize("kind", ["affine", "trend"])
def test_correction_on_another_grid_equals_the_remapped_fit(kind):
    """The corrections index the profiled moments by each run step's profiled step: the same numbers as
    fitting on moments copied out to the run's grid (which costs T^2 x channels of memory)."""
    from recat_runtime.cache.profile import correction_from_moments, trend_correction_from_moments

    model = _synthetic_model(kind=kind)
    for steps in (9, 33, 57):
        ts = _grid(steps)["dpm++"]
        full, corr = model.schedule(ts, max(5, steps // 6))
        m = _remapped(model, ts)
        ref = (trend_correction_from_moments(m, full) if kind == "trend" else correction_from_moments(m, full))[0]
        np.testing.assert_array_equal(corr.scale, ref.scale)
        np.testing.assert_array_equal(corr.shift, ref.shift)
        if kind == "trend":
            np.testing.assert_array_equal(corr.trend, ref.trend)


def test_long_runs_plan_quickly_with_every_budget_used():
    """1000 steps on a 20-step profile: every run step maps to one of 20 profiled steps, so many refreshes
    cost nothing in the model; the plan still has exactly B refreshes, spread over the run, the trend
    correction, and takes O(T^2) memory (the trend DP is skipped past TREND_PLAN_MAX_STEPS)."""
    import time

    from recat_runtime.cache.continuous import TREND_PLAN_MAX_STEPS

    model = _synthetic_model(kind="trend")
    ts = _grid(1000)["ddim"]
    assert len(ts) > TREND_PLAN_MAX_STEPS
    t0 = time.perf_counter()
    for b in (5, 30, 400, 999):
        full, corr = model.schedule(ts, b)
        assert len(full) == b and full[0] == 0
        assert corr.trend is not None and corr.scale.shape == (1000, 6)
    assert time.perf_counter() - t0 < 60
    full, _ = model.schedule(ts, 30)
    assert max(np.diff(list(full) + [1000])) <= 3 * 1000 / 30       # spread out, not piled at the start


def test_partial_run_plan_starts_with_a_refresh():
    model = _synthetic_model()
    ts = _grid(20)["ddim"]
    plan = model.planner(20, 5)
    for start in (0, 1, 7, 19):
        full, corr, _ = plan(ts, start)
        assert full[0] == start and all(start <= s < 20 for s in full)
        assert len(full) == max(1, int(np.ceil(5 / 20 * (20 - start))))
        if corr is not None:
            assert corr.scale.shape[0] == 20
            np.testing.assert_array_equal(corr.scale[:start], 1.0)


@pytest.mark.parametrize("kind", ["affine", "trend"])
def test_partial_runs_follow_the_partial_run_rule(kind):
    """A tail that starts at or above PARTIAL_UNIFORM_BELOW x T is the plain-weighted optimum, one that starts
    below it refreshes evenly; both keep the model's correction for those steps. A whole run is the model's
    own schedule (its weighting), whatever the partial-run rule says."""
    from recat_runtime.cache.continuous import MIN_MODELLED_BUDGET, PARTIAL_UNIFORM_BELOW, PARTIAL_WEIGHTING
    from recat_runtime.cache.schedules import uniform_schedule

    model = _synthetic_model(p=30, kind=kind, weighting="early05")
    ts = _grid(50)["ddim"]
    starts = {"high": 10, "low": int(np.argmax(ts < PARTIAL_UNIFORM_BELOW * model.num_train_timesteps))}
    differs = False
    for budget in range(12, 40, 3):
        plan = model.planner(50, budget)
        whole, whole_corr, _ = plan(ts, 0)
        ref_whole, ref_corr = model.schedule(ts, budget)
        assert whole == ref_whole
        np.testing.assert_array_equal(whole_corr.scale, ref_corr.scale)
        for where, start in starts.items():
            tail = ts[start:]
            b = int(np.ceil(budget / 50 * len(tail) - 1e-9))
            full, corr, _ = plan(ts, start)
            rel = tuple(s - start for s in full)
            assert len(rel) == b and rel[0] == 0
            if b < MIN_MODELLED_BUDGET:
                continue
            if where == "high":
                assert rel == model.refresh_steps(tail, b, PARTIAL_WEIGHTING)
                differs |= rel != model.refresh_steps(tail, b)
            else:
                assert rel == uniform_schedule(len(tail), b)
            ref = model.correction(tail, rel)
            np.testing.assert_array_equal(corr.scale[start:], ref.scale)
            np.testing.assert_array_equal(corr.scale[:start], 1.0)
            if kind == "trend":
                np.testing.assert_array_equal(corr.trend[start:], ref.trend)
    assert differs, "the partial-run weighting changed nothing: the test does not see the rule"


@pytest.mark.parametrize("kind", ["none", "affine", "trend"])
def test_multistep_restarts_only_where_measured(kind):
    """A derived plan restarts a multistep solver at its refreshes when the plan of the run (or of an
    image-to-image tail) is modelled and corrected with fewer than RESTART_MULTISTEP_BELOW full steps; not on
    ControlNet runs, uncorrected or uniform (below MIN_MODELLED_BUDGET) plans, nor from
    RESTART_MULTISTEP_BELOW on."""
    from recat_runtime.cache.continuous import MIN_MODELLED_BUDGET, RESTART_MULTISTEP_BELOW

    model = _synthetic_model(p=30, kind=kind, weighting="early05")
    ts = _grid(50)["ddim"]
    restarted, tails = [], []
    for budget in range(1, 50):
        whole = model.planner(50, budget)(ts, 0)[2]
        assert whole == (kind != "none" and MIN_MODELLED_BUDGET <= budget < RESTART_MULTISTEP_BELOW), budget
        restarted += [budget] if whole else []
        assert not model.planner(50, budget, controlnet=True)(ts, 0)[2]
        full, corr, tail = model.planner(50, budget)(ts, 10)            # a tail of 40 steps
        assert tail == (corr is not None and MIN_MODELLED_BUDGET <= len(full) < RESTART_MULTISTEP_BELOW)
        tails += [len(full)] if tail else []
    assert kind == "none" or restarted == list(range(MIN_MODELLED_BUDGET, RESTART_MULTISTEP_BELOW))
    assert kind == "none" or set(tails) == set(range(MIN_MODELLED_BUDGET, RESTART_MULTISTEP_BELOW))


@pytest.mark.parametrize("kind", ["affine", "trend"])
def test_controlnet_runs_follow_the_controlnet_rule(kind):
    """A whole run steered by a ControlNet refreshes at the uniform steps, with the model's correction for
    them from CONTROLNET_CORRECTED_FROM full steps on and none below; `cache_config(controlnet=True)` plans
    it; without a ControlNet the model's optimum decides; a partial run keeps the partial-run rule."""
    from recat_runtime.api import cache_config
    from recat_runtime.cache.continuous import CONTROLNET_CORRECTED_FROM, MIN_MODELLED_BUDGET
    from recat_runtime.cache.schedules import uniform_schedule

    model = _synthetic_model(p=30, kind=kind, weighting="early05")
    ts = _grid(50)["ddim"]
    differs = False
    for budget in range(1, 50):
        full, corr, restart = model.planner(50, budget, controlnet=True)(ts, 0)
        assert full == uniform_schedule(50, budget)
        if budget < CONTROLNET_CORRECTED_FROM:
            assert corr is None
        else:
            ref = model.correction(ts, full)
            np.testing.assert_array_equal(corr.scale, ref.scale)
        plain = model.planner(50, budget)(ts, 0)[0]
        if budget >= MIN_MODELLED_BUDGET:
            assert plain == model.schedule(ts, budget)[0]
        differs |= plain != full
    assert differs, "the ControlNet rule changed nothing: the test does not see the rule"
    for start in (10, 25):      # img2img has no ControlNet here, but a planner must not mix the rules
        (full_c, corr_c, _), (full_p, corr_p, _) = model.planner(50, 20, controlnet=True)(ts, start), \
            model.planner(50, 20)(ts, start)
        assert full_c == full_p
        np.testing.assert_array_equal(corr_c.scale, corr_p.scale)
    meta = with_profile({}, {"sampler": "ddim", "steps": 30, "guidance": 4.0, "branch": 0,
                             "similarity": model.similarity, "continuous": model.to_json()}, [])
    for controlnet in (False, True):
        cfg = cache_config("recat", steps=50, budget=10, metadata=meta, guidance=4.0, controlnet=controlnet)
        assert cfg.planner(ts, 0)[0] == model.planner(50, 10, controlnet=controlnet)(ts, 0)[0]


def test_stored_form_round_trips_and_is_checked():
    model = _synthetic_model(kind="trend", weighting="late2")
    prof = {"sampler": "ddim", "steps": 20, "guidance": 4.0, "branch": 0, "similarity": model.similarity,
            "continuous": model.to_json()}
    meta = with_profile({}, prof, [])
    meta = json.loads(json.dumps(meta, allow_nan=False))        # what the file holds
    assert meta["recat"]["format"] == 3
    check_metadata(meta)
    back, _ = find_model(meta, guidance=4.0, branch=0)
    ts = _grid(25)["dpm++"]
    for b in (5, 6, 11):
        a, ca = model.schedule(ts, b)
        c, cb = back.schedule(ts, b)
        assert a == c
        np.testing.assert_allclose(cb.scale, ca.scale, rtol=1e-4, atol=1e-5)
    assert find_model(meta, guidance=7.5, branch=0) is None       # another guidance: not this profile

    # the early05 weighting is newer than format 3: written as format 4, and refused under format 3 (a
    # format-3 runtime would derive other schedules from it)
    early = with_profile({}, {**prof, "continuous": {**model.to_json(), "weighting": "early05"}}, [])
    early = json.loads(json.dumps(early, allow_nan=False))
    assert early["recat"]["format"] == 4
    check_metadata(early)
    assert find_model(early, guidance=4.0, branch=0)[0].weighting == "early05"
    early["recat"]["format"] = 3
    with pytest.raises(MetadataError, match="needs ReCaT format 4"):
        check_metadata(early)

    bad = json.loads(json.dumps(meta))
    bad["recat"]["profiles"][0]["continuous"]["moments"]["cross"].pop()
    with pytest.raises(MetadataError, match="moments"):
        check_metadata(bad)
    bad = json.loads(json.dumps(meta))
    bad["recat"]["format"] = 2
    with pytest.raises(MetadataError, match="format 3"):
        check_metadata(bad)
    bad = json.loads(json.dumps(meta))
    bad["recat"]["profiles"][0]["continuous"]["weighting"] = "late9"
    with pytest.raises(MetadataError, match="weighting"):
        check_metadata(bad)
    bad = json.loads(json.dumps(meta))
    bad["recat"]["profiles"][0]["continuous"]["moments"] = None
    with pytest.raises(MetadataError, match="needs moments"):
        check_metadata(bad)


# -- the runtime on tiny pipelines ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=3)


@pytest.fixture(scope="module")
def profiled(pipe, tmp_path_factory):
    """A tiny .acqe with one profile (DDIM, 10 steps, no per-budget schedules)."""
    from recat_runtime.api import profile_cache

    path = tmp_path_factory.mktemp("cont") / "tiny.acqe"
    write_tiny_acqe(path, pipe, codebook=False)
    rep = profile_cache(path, steps=10, budgets=[], samples=8, batch_size=4, validation_samples=4, device="cpu",
                        prompts=["a red circle", "a blue square", "a green cross"])
    assert rep["continuous"]["selection"]["candidates"], "the model was chosen by validation"
    names = {c["weighting"] for c in rep["continuous"]["selection"]["candidates"]}
    assert names == {"none", "early05", "late2"}
    return path


def test_unvalidated_profile_uses_the_default_weighting(pipe, tmp_path):
    """What `acqe convert --profile-cache` stores by default (no validation): the measured default."""
    from recat_runtime.api import profile_cache
    from recat_runtime.cache.continuous import DEFAULT_WEIGHTING

    path = tmp_path / "tiny.acqe"
    write_tiny_acqe(path, pipe, codebook=False)
    rep = profile_cache(path, steps=6, budgets=[], samples=4, batch_size=4, validation_samples=0, device="cpu",
                        prompts=["a red circle", "a blue square"])
    assert rep["continuous"]["weighting"] == DEFAULT_WEIGHTING and rep["continuous"]["selection"] is None
    assert rep["metadata"]["recat"]["format"] == 4              # early05 is newer than format 3
    model, _ = find_model(rep["metadata"], guidance=rep["guidance"], branch=0)
    assert model.weighting == DEFAULT_WEIGHTING


def _cli(args):
    """``(exit code, stdout + stderr)`` of the real entry point (one-line errors, exit codes)."""
    import contextlib
    import io

    from acqe_cli.main import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(args)
    return rc, out.getvalue() + err.getvalue()


def test_generate_any_steps_budget_sampler_after_one_profile(profiled, tmp_path):
    out = tmp_path / "o.png"
    for sampler, steps, b in (("ddim", 10, 3), ("ddim", 13, 1), ("dpm++", 7, 2), ("euler", 16, 5),
                              ("euler-a", 6, 6), ("lms", 9, 4), ("pndm", 8, 3), ("unipc", 9, 5)):
        code, output = _cli(["generate", str(profiled), "--prompt", "a red circle", "--steps", str(steps),
                             "--cache", "recat", "--full-steps", str(b), "--sampler", sampler, "--out", str(out),
                             "--device", "cpu", "--json"])
        assert code == 0, (sampler, steps, b, output)
        rep = json.loads(output[output.index("{"):output.rindex("}") + 1])
        assert rep["full_steps"][0] == 0
        assert len(rep["full_steps"]) == min(b, steps), rep     # pndm too: B of its S + 1 UNet calls
        assert rep["recat_schedule"] == (None if b >= steps else "derived")


def test_every_cache_mode_runs_with_pndm(profiled, tmp_path):
    # PNDM makes S + 1 UNet calls for S steps: a uniform or quadratic config for S steps used to stop the run
    # with a traceback. Each mode runs from noise and from an initial image (where PNDM executes one call
    # more than `effective_steps`) and spends exactly the budget
    out = tmp_path / "o.png"
    for cache in ("uniform", "quadratic", "recat"):
        for extra in ([], ["--init-image", str(out), "--strength", "0.6"]):
            if extra and not out.exists():
                continue
            code, output = _cli(["generate", str(profiled), "--prompt", "a red circle", "--steps", "10",
                                 "--cache", cache, "--full-steps", "4", "--sampler", "pndm", "--out", str(out),
                                 "--device", "cpu", "--json", *extra])
            assert code == 0, (cache, extra, output)
            rep = json.loads(output[output.index("{"):output.rindex("}") + 1])
            assert len(rep["full_steps"]) == 4, (cache, extra, rep)


def test_full_budget_needs_no_profile(pipe, tmp_path):
    path = tmp_path / "bare.acqe"
    write_tiny_acqe(path, pipe, codebook=False)
    code, output = _cli(["generate", str(path), "--prompt", "x", "--steps", "4", "--cache", "recat", "--full-steps",
                         "4", "--out", str(tmp_path / "a.png"), "--device", "cpu", "--json"])
    assert code == 0, output
    assert json.loads(output[output.index("{"):output.rindex("}") + 1])["full_steps"] == [0, 1, 2, 3]
    code, output = _cli(["generate", str(path), "--prompt", "x", "--steps", "4", "--cache", "recat", "--full-steps",
                         "3", "--out", str(tmp_path / "a.png"), "--device", "cpu"])
    assert code == 1 and "no ReCaT schedule" in output


def test_stored_schedule_is_an_exact_override(profiled):
    from acqe_format import AcqeReader
    from recat_runtime.api import cache_config

    with AcqeReader(profiled) as r:
        meta = r.metadata
    prof = meta["recat"]["profiles"][0]
    meta2 = with_profile(meta, {k: v for k, v in prof.items() if k != "schedules"},
                         [{"budget": 3, "full_steps": [0, 4, 8], "correction": None}])
    cfg = cache_config("recat", steps=10, budget=3, metadata=meta2, guidance=prof["guidance"])
    assert cfg.planner is None and cfg.full_steps == (0, 4, 8)
    cfg = cache_config("recat", steps=10, budget=4, metadata=meta2, guidance=prof["guidance"])
    assert cfg.planner is not None
    with pytest.raises(NoScheduleError):
        cache_config("recat", steps=10, budget=4, metadata=meta2, guidance=prof["guidance"] + 1)


def _config_for(profiled, steps, budget):
    from acqe_format import AcqeReader
    from recat_runtime.api import cache_config

    with AcqeReader(profiled) as r:
        meta = r.metadata
    return cache_config("recat", steps=steps, budget=budget, metadata=meta,
                        guidance=meta["recat"]["profiles"][0]["guidance"])


@pytest.mark.parametrize("kind", ["img2img", "inpaint"])
def test_partial_runs_refresh_first_and_follow_the_tail_schedule(pipe, profiled, kind):
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline
    from PIL import Image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    if kind == "img2img":
        p2 = StableDiffusionImg2ImgPipeline(**pipe.components)
        extra = {"image": image}
    else:
        p2 = StableDiffusionInpaintPipeline(**pipe.components)
        mask = np.zeros((64, 64), np.uint8)
        mask[16:48, 16:48] = 255
        extra = {"image": image, "mask_image": Image.fromarray(mask)}
    p2.set_progress_bar_config(disable=True)

    def run(config, strength):
        g = torch.Generator().manual_seed(0)
        if config is None:
            return p2("a red circle", num_inference_steps=10, strength=strength, generator=g, output_type="np",
                      **extra).images, None
        with recat_cache(p2, config) as hook:
            im = p2("a red circle", num_inference_steps=10, strength=strength, generator=g, output_type="np",
                    **extra).images
        return im, hook

    for strength, start in ((0.6, 4), (0.35, 7)):
        ref, _ = run(None, strength)
        # derived schedule for the tail: refresh at the first executed step, budget scaled to the tail
        im, hook = run(_config_for(profiled, 10, 4), strength)
        assert hook.run_full_steps[0] == start, hook.run_full_steps
        assert hook.full_calls == len(hook.run_full_steps) and hook.full_calls + hook.cached_calls == 10 - start
        assert np.isfinite(im).all()
        # a static schedule: the first executed step refreshes, the rest follows the schedule
        im, hook = run(RecatCacheConfig(10, (0, 5, 8)), strength)
        assert hook.run_full_steps == tuple(sorted({start} | {s for s in (5, 8) if s > start}))
        # a config for the run's own UNet calls (what `generate` builds from --full-steps): counted from the
        # first executed step, shifted into the whole schedule's numbering
        im, hook = run(RecatCacheConfig(10 - start, (0, 2)), strength)
        assert hook.run_full_steps == (start, start + 2)
        assert hook.full_calls == 2 and hook.cached_calls == 10 - start - 2
        # a derived schedule made for the run's own calls spends exactly that budget on the tail
        im, hook = run(_config_for(profiled, 10 - start, 2), strength)
        assert hook.run_full_steps[0] == start and hook.full_calls == 2, hook.run_full_steps
        # a config for neither the whole schedule nor the run is refused
        with pytest.raises(ValueError, match="scheduler makes 10"):
            run(RecatCacheConfig(10 - start + 1, (0, 2)), strength)
        # every executed step full: identical to the uncached pipeline
        im, hook = run(RecatCacheConfig.no_cache(10), strength)
        np.testing.assert_array_equal(im, ref)
        im, hook = run(_config_for(profiled, 10, 10), strength) if _config_for(profiled, 10, 10) else (ref, None)
        np.testing.assert_array_equal(im, ref)


def _controlnet_pipe(pipe):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    torch.manual_seed(11)
    cn = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(8, 16)).eval()
    with torch.no_grad():   # from_unet zero-initialises the output convs: give the residuals some effect
        for m in list(cn.controlnet_down_blocks) + [cn.controlnet_mid_block]:
            m.weight.normal_(0, 0.2)
    p = StableDiffusionControlNetPipeline(**{k: v for k, v in pipe.components.items() if k != "image_encoder"},
                                          controlnet=cn)
    p.set_progress_bar_config(disable=True)
    return p, cn


def test_cached_step_applies_controlnet_residuals_exactly(pipe):
    """Fed the true deep feature, a cached step with the ControlNet residuals equals the full UNet with them;
    without the residuals it does not (so the residuals of the shallow skips matter and are applied)."""
    _, cn = _controlnet_pipe(pipe)
    unet = pipe.unet
    torch.manual_seed(0)
    x, t, ehs = torch.randn(2, 4, 8, 8), torch.tensor(500), torch.randn(2, 77, 32)
    cond = torch.rand(2, 3, 16, 16)      # the tiny VAE downsamples by 2
    with torch.no_grad():
        down, mid = cn(x, t, encoder_hidden_states=ehs, controlnet_cond=cond, return_dict=False)
        for branch in (0, 2):
            plan = branch_plan(unet, branch)
            got = {}
            h = unet.get_submodule(plan.consumer_name).register_forward_pre_hook(
                lambda mod, args: got.__setitem__("f", args[0][:, : plan.feature_channels].clone()))
            try:
                full = unet(x, t, ehs, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
            finally:
                h.remove()
            out = shallow_forward(unet, plan, got["f"], x, t, ehs, down_block_additional_residuals=down)
            torch.testing.assert_close(out, full, rtol=0, atol=0)
            plain = shallow_forward(unet, plan, got["f"], x, t, ehs)
            assert (plain - full).abs().max() > 1e-4


def test_controlnet_pipeline_with_caching_quality(pipe):
    """ControlNet + ReCaT caching runs, and stays close to the uncached ControlNet output (tiny config)."""
    from recat_runtime.cache.select import psnr_uint8

    p, _ = _controlnet_pipe(pipe)
    cond = torch.rand(1, 3, 16, 16)

    def run(config):
        g = torch.Generator().manual_seed(0)
        if config is None:
            return p("a red circle", image=cond, num_inference_steps=10, generator=g, output_type="np").images
        with recat_cache(p, config) as hook:
            im = p("a red circle", image=cond, num_inference_steps=10, generator=g, output_type="np").images
        assert hook.cached_calls == 10 - config.budget
        return im

    ref = (run(None) * 255).round().astype(np.uint8)
    psnr = {b: float(psnr_uint8((run(RecatCacheConfig.uniform(10, b)) * 255).round().astype(np.uint8), ref)[0])
            for b in (3, 5, 10)}
    assert psnr[10] > 90                 # every step full: the uncached output
    assert psnr[5] > 20 and psnr[3] > 15, psnr


def test_t2i_adapter_residuals_are_refused(pipe):
    unet = pipe.unet
    x, t, ehs = torch.randn(1, 4, 8, 8), torch.tensor(500), torch.randn(1, 77, 32)
    with recat_cache(unet, RecatCacheConfig.uniform(4, 2)):
        with pytest.raises(ValueError, match="T2I-Adapter"):
            unet(x, t, ehs, down_intrablock_additional_residuals=[torch.zeros(1, 16, 8, 8)])


def test_bench_flags_a_budget_below_a_smaller_one():
    """bench/bench_recat.py's monotonicity flag: any budget below *some* smaller budget, on each metric."""
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(
        "bench_recat", pathlib.Path(__file__).resolve().parents[1] / "bench" / "bench_recat.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ok = {5: {"psnr": 30.0, "psnr_pooled": 25.0}, 6: {"psnr": 31.0, "psnr_pooled": 25.0},
          7: {"psnr": 35.0, "psnr_pooled": 28.0}}
    assert bench.monotone_violations(ok) == []
    bad = {5: {"psnr": 30.0, "psnr_pooled": 25.0}, 7: {"psnr": 38.0, "psnr_pooled": 29.0},
           8: {"psnr": 34.3, "psnr_pooled": 30.0}, 9: {"psnr": 36.0, "psnr_pooled": 24.0}}
    flags = bench.monotone_violations(bad)
    assert flags == ["psnr: B=8 34.30 dB < B=7 38.00 dB", "psnr: B=9 36.00 dB < B=7 38.00 dB",
                     "psnr_pooled: B=9 24.00 dB < B=8 30.00 dB"]


def test_bench_compares_with_uniform_on_the_same_images():
    """bench/bench_recat.py's ReCaT-vs-uniform verdict: paired over images, an interval entirely below 0 is
    "below", a negative point estimate whose interval holds 0 is "within noise", both >= 0 "at least"."""
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(
        "bench_recat", pathlib.Path(__file__).resolve().parents[1] / "bench" / "bench_recat.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(0)
    base = rng.uniform(5, 50, 200)

    def rows(recat, budget):
        return [{"set": 0, "kind": "uniform", "budget": budget, "mse": base[:100]},
                {"set": 1, "kind": "uniform", "budget": budget, "mse": base[100:]},
                {"set": 0, "kind": "recat", "budget": budget, "mse": recat[:100]},
                {"set": 1, "kind": "recat", "budget": budget, "mse": recat[100:]}]

    better = bench._versus_uniform(rows(base * 0.5, 5))[5]
    assert better["verdict"] == "at least uniform"
    assert abs(better["mean"] - 10 * np.log10(2)) < 1e-9 and abs(better["pooled"] - 10 * np.log10(2)) < 1e-9
    worse = bench._versus_uniform(rows(base * 1.5, 6))[6]
    assert worse["verdict"] == "below" and worse["mean_ci"][1] < 0
    one_lost = base.copy()
    one_lost[17] = 5000.0                       # one image turned to other content, the rest a bit better
    noisy = bench._versus_uniform(rows(one_lost * np.where(np.arange(200) == 17, 1.0, 0.98), 7))[7]
    assert noisy["mean"] < 0 < noisy["mean_ci"][1] or noisy["pooled"] < 0 < noisy["pooled_ci"][1]
    assert noisy["verdict"] == "below, within noise"
    with pytest.raises(ValueError, match="equal-length"):
        bench.paired_difference(base, base[:5])


def test_trend_reaches_no_further_than_its_baseline():
    """Derived trend corrections forecast step t after full steps p < s only while t - s <= s - p; further
    steps get exactly the affine fit (and no trend)."""
    from recat_runtime.cache.profile import correction_from_moments, trend_correction_from_moments

    m = _synthetic_model().moments
    full = (0, 5, 7)
    affine, _ = correction_from_moments(m, full)
    limited, _ = trend_correction_from_moments(m, full, max_reach=1.0)
    free, _ = trend_correction_from_moments(m, full)
    assert np.all(limited.trend[8:10] != 0) and np.all(limited.trend[10:] == 0)
    np.testing.assert_array_equal(limited.scale[10:], affine.scale[10:])
    np.testing.assert_array_equal(limited.shift[10:], affine.shift[10:])
    assert np.all(free.trend[10:] != 0)           # without the limit the trend reaches to the end
