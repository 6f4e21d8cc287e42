"""Validated ReCaT schedule selection: candidates, choice by PSNR (stub scorer and a tiny pipeline),
the stored selection record, and profiles stored before selection existed."""
import itertools
import json

import numpy as np
import pytest

from recat_runtime.cache import schedules as S
from recat_runtime.cache.select import (CANDIDATE_ORDER, TREND_CANDIDATES, VALIDATION_SEED_OFFSET, WEIGHTINGS,
                                        ValidationScorer,
                                        candidate_schedules, select_schedule, step_weights, validation_plan)
from recat_runtime.cache.store import find_schedule, with_profile
from recat_runtime.testing import tiny_pipeline
from runtime_fixtures import write_tiny_acqe


pytestmark = pytest.mark.usefixtures("one_torch_thread")


PROMPTS = ["a red circle", "a blue square", "a green triangle on white", "a yellow cross", "two pink circles"]


def _similarity(steps=12, seed=0):
    """A CKA-like matrix: similarity decays with step distance, faster early (features change most early)."""
    rng = np.random.default_rng(seed)
    pos = np.cumsum(np.linspace(2.0, 0.5, steps) + 0.2 * rng.random(steps))
    return np.exp(-0.3 * np.abs(np.subtract.outer(pos, pos)))


def _ddim():
    from diffusers import DDIMScheduler

    from recat_runtime.testing import SCHEDULER_CONFIG

    return DDIMScheduler.from_config(SCHEDULER_CONFIG)


def _weights(steps):
    return {n: step_weights(n, steps, _ddim()) for n in WEIGHTINGS}


def _trend_costs(sim):
    """A trend-residual-like ``d3[p, s, t]``: the plain distance, shrunk when the two anchors are close
    (a forecast from nearby anchors is reliable) and grown when they are far apart."""
    d = 1 - sim
    return d, d[None, :, :] * (0.3 + d[:, :, None])


def test_candidates_are_exact_dp_respect_budget_and_include_uniform():
    sim = _similarity()
    w = _weights(12)
    trend = _trend_costs(sim)
    for b in (1, 2, 4, 6):
        cands = candidate_schedules(sim, b, w, residual=1 - sim, trend=trend)
        assert [c["weighting"] for c in cands] == list(CANDIDATE_ORDER)
        assert [c["correction"] for c in cands] == ["trend" if c["weighting"] in TREND_CANDIDATES else "affine"
                                                    for c in cands]
        for c in cands:
            assert c["full_steps"][0] == 0 and len(c["full_steps"]) <= b
        for c in cands[: len(WEIGHTINGS)]:
            _, bf_cost = S.brute_force_schedule(1 - sim, b, w[c["weighting"]])
            assert c["cost"] == pytest.approx(bf_cost, abs=1e-6)
        by = {c["weighting"]: c for c in cands}
        brute = min(S.schedule_cost_trend(*trend, (0, *rest)) for k in range(b)
                    for rest in itertools.combinations(range(1, 12), k))
        assert by["trend"]["cost"] == pytest.approx(brute, abs=1e-6)
        assert tuple(cands[-1]["full_steps"]) == S.uniform_schedule(12, b)
    # the late tilts move refreshes later than plain CKA
    cands = {c["weighting"]: c["full_steps"] for c in candidate_schedules(sim, 4, w)}
    assert sum(cands["late4"]) >= sum(cands["none"]) >= sum(cands["sigma"])
    assert "residual" not in cands and "trend" not in cands


def test_weights_normalised_and_unknown_rejected():
    for n, w in _weights(10).items():
        assert w is None if n == "none" else w.mean() == pytest.approx(1.0)
    assert np.all(np.diff(step_weights("late2", 10, _ddim())) > 0)
    with pytest.raises(ValueError, match="unknown weighting"):
        step_weights("late3", 10, _ddim())


def test_late_weights_are_the_continuous_formula_and_index_based_on_ddims_50_step_grid():
    """One formula serves the exact candidates and the derived schedules: on SD's DDIM grid of 50 steps
    (t = 981, 961, ..., 1) the late tilt in t is the step-index tilt ((i + 1) / 50)^q the candidates used."""
    from recat_runtime.cache.continuous import timestep_weights

    sched = _ddim()
    for name, q in (("late1", 1.0), ("late2", 2.0), ("late4", 4.0)):
        got = step_weights(name, 50, sched)
        by_index = ((np.arange(50) + 1.0) / 50) ** q
        np.testing.assert_allclose(got, by_index / by_index.mean(), rtol=1e-12)
        np.testing.assert_array_equal(got, timestep_weights(name, sched.timesteps.numpy(), 1000))


def test_selection_picks_best_psnr_dedups_and_is_deterministic():
    sim = _similarity()
    cands = candidate_schedules(sim, 4, _weights(12), residual=1 - sim)
    target = tuple(next(c for c in cands if c["weighting"] == "late2")["full_steps"])
    calls = []

    def scorer(full, kind):  # the closer to the late2 schedule, the better
        assert kind == "affine"
        calls.append(full)
        return 40.0 - sum(abs(a - b) for a, b in zip(full, target)) - 3 * abs(len(full) - len(target))

    cache = {}
    best, scored = select_schedule(cands, scorer, cache)
    assert tuple(best["full_steps"]) == target and best["psnr"] == 40.0
    assert best["psnr"] == max(c["psnr"] for c in scored)
    assert len(calls) == len({tuple(c["full_steps"]) for c in cands})  # each distinct schedule once
    again, _ = select_schedule(cands, scorer, cache)  # shared cache: no new scoring, same answer
    assert again == best and len(calls) == len(set(calls))
    best2, scored2 = select_schedule(cands, scorer)
    assert best2 == best and scored2 == scored


def test_selection_ties_go_to_lowest_plain_cost_and_uniform_can_win():
    sim = _similarity()
    cands = candidate_schedules(sim, 3, _weights(12))
    best, _ = select_schedule(cands, lambda full, kind: 30.0)
    assert best["plain_cost"] == min(c["plain_cost"] for c in cands)
    assert best["weighting"] == "none"  # the plain DP minimises the plain cost
    uni = tuple(S.uniform_schedule(12, 3))
    if any(tuple(c["full_steps"]) == uni for c in cands[:-1]):  # a DP schedule equal to uniform keeps its name
        best, _ = select_schedule(cands, lambda full, kind: 50.0 if full == uni else 20.0)
        assert best["weighting"] != "uniform" and tuple(best["full_steps"]) == uni
    cands = [c for c in cands[:-1] if tuple(c["full_steps"]) != uni] + cands[-1:]
    best, _ = select_schedule(cands, lambda full, kind: 50.0 if full == uni else 20.0)
    assert best["weighting"] == "uniform" and tuple(best["full_steps"]) == uni


def test_trend_candidate_is_scored_apart_from_the_same_schedule_with_affine_correction():
    sim = _similarity()
    cands = candidate_schedules(sim, 4, {"none": None}, trend=_trend_costs(sim))
    trend_steps = tuple(next(c for c in cands if c["weighting"] == "trend")["full_steps"])
    cands.append({**cands[0], "weighting": "residual", "full_steps": list(trend_steps)})  # same steps, affine
    calls = []

    def scorer(full, kind):
        calls.append((full, kind))
        return 35.0 if kind == "trend" else 30.0

    best, scored = select_schedule(cands, scorer)
    assert len(calls) == len(set(calls)) == len({(tuple(c["full_steps"]), c["correction"]) for c in cands})
    assert (trend_steps, "trend") in calls and (trend_steps, "affine") in calls
    assert best["correction"] == "trend" and best["psnr"] == 35.0


def test_validation_plan_is_disjoint_from_profiling_and_bench_seeds():
    from recat_runtime.cache.profile import sample_plan

    prof = sample_plan(PROMPTS, 8, seed=0)
    val = validation_plan(PROMPTS, 8, 6, seed=0)
    assert len(val) == 6 and not set(val) & set(prof)
    assert all(s >= VALIDATION_SEED_OFFSET for _, s in val) and not {s for _, s in val} & set(range(1000, 1000 + 10000))
    long = [f"p{i}" for i in range(14)]  # a longer prompt stream gives unseen prompts to validation
    assert [p for p, _ in validation_plan(long, 8, 6, 0)] == long[8:14]


def test_validation_scorer_on_tiny_pipeline():
    pipe = tiny_pipeline(seed=5)
    plan = validation_plan(PROMPTS, 8, 4, seed=0)
    sc = ValidationScorer(pipe, plan, steps=6, guidance=5.0, batch_size=4)
    full = sc(tuple(range(6)))
    assert full == pytest.approx(10 * np.log10(255.0**2 / 1e-10))  # every step full = the reference
    assert sc.runs == 2
    cached = sc((0, 3))
    assert cached < full and np.isfinite(cached)
    assert sc((0, 3)) == cached  # deterministic


@pytest.fixture(scope="module")
def acqe_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("select") / "tiny.acqe"
    write_tiny_acqe(path, tiny_pipeline(seed=5), codebook=False)
    return path


def test_profile_cache_auto_stores_selection_record(acqe_path, tmp_path):
    import shutil

    import acqe_format
    from recat_runtime.api import cache_config, profile_cache

    if not hasattr(acqe_format, "replace_metadata"):
        pytest.skip("acqe_format.replace_metadata not available yet")
    path = tmp_path / "m.acqe"
    shutil.copyfile(acqe_path, path)
    kw = dict(steps=6, budgets=[2, 3], prompts=PROMPTS, samples=8, guidance=5.0, device="cpu", batch_size=4,
              on_policy_samples=8)
    rep = profile_cache(path, validation_samples=4, **kw)
    with acqe_format.AcqeReader(path) as r:
        meta = r.metadata
    json.dumps(meta, allow_nan=False)
    stored = meta["recat"]["profiles"][0]["schedules"]
    for s, b in zip(stored, (2, 3)):
        sel = s["selection"]
        assert s["budget"] == b and len(s["full_steps"]) <= b and s["full_steps"][0] == 0
        assert sel["validation_samples"] == 4 and sel["correction"] is True
        names = [c["weighting"] for c in sel["candidates"]]
        assert names == list(CANDIDATE_ORDER)  # moments were collected: the residual DP is a candidate
        assert sel["psnr"] == max(c["psnr"] for c in sel["candidates"])
        assert s["weighting"] == sel["chosen"]
        assert s["full_steps"] == next(c for c in sel["candidates"] if c["weighting"] == sel["chosen"])["full_steps"]
        assert sel["uniform_psnr"] == sel["candidates"][-1]["psnr"] <= sel["psnr"]
        assert s["correction"] is not None
        assert ("trend" in s["correction"]) == (s["weighting"] in TREND_CANDIDATES)
        cfg = cache_config("recat", steps=6, budget=b, metadata=meta, guidance=5.0)
        assert list(cfg.full_steps) == s["full_steps"] and cfg.correction is not None
        assert (cfg.correction.trend is not None) == (s["weighting"] in TREND_CANDIDATES)
    # the continuous model (stored by default) makes it format 3 (4 with the early05 weighting)
    model = meta["recat"]["profiles"][0]["continuous"]
    assert meta["recat"]["format"] == (4 if model["weighting"] == "early05" else 3) and model["timesteps"]
    assert [s["selection"] for s in rep["schedules"]] == [s["selection"] for s in stored]
    # deterministic: the same request again gives the same schedules and validation PSNRs
    rep2 = profile_cache(path, validation_samples=4, write=False, reprofile=True, **kw)
    assert [s["selection"] for s in rep2["schedules"]] == [s["selection"] for s in stored]
    # reusing the stored CKA (no moments: no residual candidate, corrections by a second pass) still selects
    rep_r = profile_cache(path, validation_samples=4, write=False, **kw)
    assert rep_r["reused_similarity"]
    for s in rep_r["schedules"]:
        assert not {"residual", "trend"} & {c["weighting"] for c in s["selection"]["candidates"]}
        assert s["selection"]["psnr"] == max(c["psnr"] for c in s["selection"]["candidates"])
    # validation off: plain CKA, no record; the old selectable weightings still work
    rep3 = profile_cache(path, validation_samples=0, write=False, **kw)
    assert [s["weighting"] for s in rep3["schedules"]] == ["none", "none"]
    assert all(s["selection"] is None for s in rep3["schedules"])
    rep4 = profile_cache(path, weighting="sigma", write=False, **kw)
    assert [s["weighting"] for s in rep4["schedules"]] == ["sigma", "sigma"]
    with pytest.raises(ValueError, match="weighting"):
        profile_cache(path, weighting="bogus", write=False, **kw)


def test_profiles_stored_before_selection_are_still_read():
    # a profile block exactly as older runtimes wrote it: no "weighting", no "selection"
    old = {"recat": {"format": 1, "profiles": [{
        "sampler": "ddim", "steps": 6, "guidance": 4.0, "branch": 0, "height": 64, "width": 64,
        "estimator": "minibatch-debiased-linear-cka", "samples": 8, "similarity": np.eye(6).tolist(),
        "schedules": [{"budget": 2, "full_steps": [0, 3], "cost": 1.0, "uniform_cost": 1.0,
                       "correction": {"scale": np.ones((6, 4)).tolist(), "shift": np.zeros((6, 4)).tolist()},
                       "correction_fit": None}]}]}}
    steps, corr, prof = find_schedule(old, sampler="ddim", steps=6, budget=2, guidance=4.0)
    assert steps == (0, 3) and corr is not None and prof["branch"] == 0
    # adding a validated budget to it keeps the old entry (same CKA matrix)
    new = with_profile(old, {k: v for k, v in old["recat"]["profiles"][0].items() if k != "schedules"},
                       [{"budget": 3, "full_steps": [0, 2, 4], "cost": 0.5, "weighting": "late2",
                         "correction": None, "selection": {"chosen": "late2", "candidates": []}}])
    got = new["recat"]["profiles"][0]["schedules"]
    assert [s["budget"] for s in got] == [2, 3] and "selection" not in got[0]
    assert find_schedule(new, sampler="ddim", steps=6, budget=2, guidance=4.0)[0] == (0, 3)
    assert find_schedule(new, sampler="ddim", steps=6, budget=3, guidance=4.0)[0] == (0, 2, 4)


def test_inspect_shows_stored_schedules_old_and_new():
    from acqe_cli.commands.inspect_cmd import _recat_lines

    block = {"format": 1, "profiles": [{"sampler": "ddim", "steps": 6, "guidance": 4.0, "branch": 0, "schedules": [
        {"budget": 2, "full_steps": [0, 3]},
        {"budget": 3, "full_steps": [0, 2, 4], "weighting": "late2",
         "selection": {"psnr": 31.234, "uniform_psnr": 30.5, "validation_samples": 16}}]}]}
    lines = [v for _, v in _recat_lines(block)]
    assert lines == ["ddim 6 steps guidance 4.0 branch 0: B=2 [0, 3]",
                     "ddim 6 steps guidance 4.0 branch 0: B=3 [0, 2, 4] (late2; validation PSNR 31.23 dB, "
                     "uniform 30.50 dB, 16 samples)"]
    # what `acqe convert --profile-cache` stores: a schedule model and no per-budget schedule (it showed
    # "no profiles")
    block["profiles"][0].update(schedules=[], continuous={"timesteps": [999, 500], "weighting": "early05",
                                                          "correction": "trend", "moments": {"count": 1}})
    assert [v for _, v in _recat_lines(block)] == [
        "ddim 6 steps guidance 4.0 branch 0: schedule model for any sampler, step count and budget "
        "(weighting early05, trend correction)"]
    block["profiles"][0]["continuous"]["moments"] = None      # too large to store: derived uncorrected
    assert "(weighting early05, no correction)" in _recat_lines(block)[0][1]


def test_profile_cache_cli_prints_one_line_per_budget(acqe_path, tmp_path):
    import shutil

    import acqe_format
    from test_runtime_profile import _run_main_cli

    if not hasattr(acqe_format, "replace_metadata"):
        pytest.skip("acqe_format.replace_metadata not available yet")
    path = tmp_path / "c.acqe"
    shutil.copyfile(acqe_path, path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    rc, _, stderr = _run_main_cli(["profile-cache", str(path), "--steps", "6", "--full-steps", "2", "--full-steps",
                                   "3", "--prompts", str(prompts), "--samples", "8", "--validation-samples", "4",
                                   "--device", "cpu", "-q"])
    assert rc == 0, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("B=")]
    assert len(lines) == 2
    for ln, b in zip(lines, (2, 3)):
        assert ln.startswith(f"B={b}: full steps [0") and "weighting " in ln
        assert "validation PSNR" in ln and "uniform" in ln and "4 samples" in ln
    rc, _, stderr = _run_main_cli(["profile-cache", str(path), "--steps", "6", "--full-steps", "2", "--prompts",
                                   str(prompts), "--samples", "8", "--weighting", "none", "--device", "cpu", "-q"])
    assert rc == 0, stderr
    assert "(weighting none; cost" in stderr


def test_validation_scores_the_plan_a_run_executes_with_its_solver_restart(acqe_path, tmp_path, monkeypatch):
    """The continuous model's validation scores each candidate as a run with that budget executes it: the
    planner's whole-run plan, with the multistep solver restarted where the plan says (DPM++ here), so the
    choice is made on the images users get."""
    import shutil

    from recat_runtime import api
    from recat_runtime.cache import select as SEL
    from recat_runtime.cache.continuous import MIN_MODELLED_BUDGET, RESTART_MULTISTEP_BELOW

    seen = []
    psnrs = SEL.ValidationScorer.psnrs

    def spy(self, full_steps, correction=None, restart_multistep=False):
        seen.append((len(full_steps), correction is not None, restart_multistep))
        return psnrs(self, full_steps, correction, restart_multistep=restart_multistep)

    monkeypatch.setattr(SEL.ValidationScorer, "psnrs", spy)
    path = tmp_path / "m.acqe"
    shutil.copyfile(acqe_path, path)
    budgets = [MIN_MODELLED_BUDGET, RESTART_MULTISTEP_BELOW]        # one restarted, one not
    api.profile_cache(path, steps=12, budgets=[], model_budgets=budgets, prompts=PROMPTS, samples=4,
                      guidance=5.0, device="cpu", batch_size=4, validation_samples=2, scheduler="dpm++")
    scored = [s for s in seen if s[0] in budgets]
    assert scored and {s[0] for s in scored} == set(budgets)
    assert all(restart == (n < RESTART_MULTISTEP_BELOW and corrected) for n, corrected, restart in scored)
    assert any(restart for _, _, restart in scored), "no candidate was scored with the restart"
