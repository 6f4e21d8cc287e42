"""ReCaT profiling on a tiny pipeline, schedules stored in metadata, and the two CLI commands offline."""
import json

import numpy as np
import pytest
import torch

from recat_runtime.cache import RecatCacheConfig, recat_cache
from recat_runtime.cache.profile import ProfileSettings, fit_correction, profile_similarity, recat_schedule
from recat_runtime.cache.store import find_schedule, with_profile
from recat_runtime.errors import NoScheduleError
from recat_runtime.testing import tiny_pipeline
from runtime_fixtures import write_tiny_acqe


pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["a red circle", "a blue square", "a green triangle on white", "a yellow cross", "two pink circles"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=5)


@pytest.fixture(scope="module")
def acqe_path(pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("prof") / "tiny.acqe"
    write_tiny_acqe(path, pipe, codebook=False)
    return path


def test_profile_similarity_and_schedule(pipe):
    st = ProfileSettings(steps=8, guidance=5.0, samples=16, batch_size=8)
    sim, info = profile_similarity(pipe, PROMPTS, st)
    assert sim.shape == (8, 8)
    assert np.allclose(np.diag(sim), 1.0) and np.allclose(sim, sim.T)
    assert info["samples"] == 16 and info["minibatches"] == 4  # 2 batches x 2 CFG halves
    for b in (1, 2, 3, 8):
        steps, _ = recat_schedule(sim, b)
        assert steps[0] == 0 and len(steps) <= b


def test_correction_fit_reduces_error(pipe):
    st = ProfileSettings(steps=8, guidance=5.0, samples=8, batch_size=8)
    corr, fit = fit_correction(pipe, PROMPTS, st, (0, 4))
    assert corr.scale.shape == (8, 16)
    assert np.all(corr.scale[[0, 4]] == 1) and np.all(corr.shift[[0, 4]] == 0)
    assert fit["relative_mse_after"] <= fit["relative_mse_before"]
    with recat_cache(pipe, RecatCacheConfig(8, (0, 4), correction=corr)) as hook:
        pipe("a red circle", num_inference_steps=8, guidance_scale=5.0, output_type="latent")
    assert hook.cached_calls == 6


def test_store_round_trip_and_errors():
    sim = np.eye(4)
    prof = {"sampler": "ddim", "steps": 4, "guidance": 7.5, "branch": 0, "similarity": sim}
    meta = with_profile({"naming": "ldm"}, prof, [{"budget": 2, "full_steps": [0, 2], "cost": 1.0,
                                                   "correction": None}])
    json.dumps(meta, allow_nan=False)
    steps, corr, p = find_schedule(meta, sampler="ddim", steps=4, budget=2, guidance=7.5)
    assert steps == (0, 2) and corr is None and p["branch"] == 0
    # a second budget merges into the same profile
    meta2 = with_profile(meta, prof, [{"budget": 3, "full_steps": [0, 1, 2], "cost": 0.5, "correction": None}])
    assert [s["budget"] for s in meta2["recat"]["profiles"][0]["schedules"]] == [2, 3]
    with pytest.raises(NoScheduleError, match="5 full steps.*profiled: ddim 4 steps guidance 7.5 branch 0: budgets 2"):
        find_schedule(meta, sampler="ddim", steps=4, budget=5, guidance=7.5)
    with pytest.raises(NoScheduleError, match="guidance 3"):
        find_schedule(meta, sampler="ddim", steps=4, budget=2, guidance=3.0)
    with pytest.raises(NoScheduleError, match="profiled: none"):
        find_schedule({}, sampler="ddim", steps=4, budget=2, guidance=7.5)


def _run_main(main, args):
    import contextlib
    import io

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(args)
    return rc, out.getvalue(), err.getvalue()


def test_generate_cli_offline_with_and_without_cache(acqe_path, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    outs = {}
    for cache in ("none", "uniform"):
        out = tmp_path / f"{cache}.png"
        rc, stdout, stderr = _run_main_cli(["generate", str(acqe_path), "--prompt", "a red circle", "--steps", "6",
                                            "--cache", cache, "--full-steps", "2", "--seed", "3", "--out", str(out),
                                            "--device", "cpu", "--json"])
        assert rc == 0, stderr
        rep = json.loads(stdout)
        assert rep["full_steps"] == ([0, 3] if cache == "uniform" else list(range(6)))
        outs[cache] = np.asarray(Image.open(out))
    assert outs["none"].shape == (16, 16, 3)
    assert not np.array_equal(outs["none"], outs["uniform"])
    # full budget = uncached, through the CLI too
    out = tmp_path / "full.png"
    rc, _, _ = _run_main_cli(["generate", str(acqe_path), "--prompt", "a red circle", "--steps", "6", "--cache",
                              "uniform", "--full-steps", "6", "--seed", "3", "--out", str(out), "--device", "cpu"])
    assert rc == 0 and np.array_equal(np.asarray(Image.open(out)), outs["none"])


def test_generate_recat_without_profile_is_one_line_error(acqe_path, tmp_path):
    rc, _, stderr = _run_main_cli(["generate", str(acqe_path), "--prompt", "x", "--steps", "6", "--cache", "recat",
                                   "--full-steps", "2", "--out", str(tmp_path / "x.png"), "--device", "cpu"])
    assert rc == 1
    assert stderr.startswith("Error: ") and "no ReCaT schedule" in stderr and "acqe profile-cache" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_generate_usage_errors(acqe_path, tmp_path):
    rc, _, _ = _run_main_cli(["generate", str(acqe_path), "--prompt", "x", "--cache", "uniform",
                              "--out", str(tmp_path / "x.png")])
    assert rc == 2


def test_profile_cache_cli_then_generate_recat(acqe_path, tmp_path):
    import acqe_format

    if not hasattr(acqe_format, "replace_metadata"):
        pytest.skip("acqe_format.replace_metadata not available yet")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    rc, stdout, stderr = _run_main_cli(["profile-cache", str(acqe_path), "--steps", "6", "--full-steps", "2",
                                        "--full-steps", "3", "--prompts", str(prompts), "--samples", "8",
                                        "--device", "cpu", "--json"])
    assert rc == 0, stderr
    rep = json.loads(stdout)
    assert [len(s["full_steps"]) <= s["budget"] for s in rep["schedules"]] == [True, True]
    acqe_format.AcqeReader(acqe_path).verify()
    out = tmp_path / "r.png"
    rc, stdout, stderr = _run_main_cli(["generate", str(acqe_path), "--prompt", "a red circle", "--steps", "6",
                                        "--cache", "recat", "--full-steps", "2", "--out", str(out), "--device",
                                        "cpu", "--json"])
    assert rc == 0, stderr
    assert json.loads(stdout)["full_steps"] == rep["schedules"][0]["full_steps"]
    # a different guidance than profiled is refused
    rc, _, stderr = _run_main_cli(["generate", str(acqe_path), "--prompt", "x", "--steps", "6", "--cache", "recat",
                                   "--full-steps", "2", "--guidance", "3", "--out", str(out), "--device", "cpu"])
    assert rc == 1 and "guidance 3" in stderr


def _run_main_cli(args):
    from acqe_cli.main import main

    return _run_main(main, args)


def test_correction_from_profiling_moments_equals_second_pass(pipe):
    from recat_runtime.cache.profile import correction_from_moments

    st = ProfileSettings(steps=6, guidance=5.0, samples=8, batch_size=4)
    _, info = profile_similarity(pipe, PROMPTS, st, collect_moments=True)
    full = (0, 2, 5)
    c1, f1 = correction_from_moments(info["moments"], full)
    c2, f2 = fit_correction(pipe, PROMPTS, st, full)
    np.testing.assert_allclose(c1.scale, c2.scale, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c1.shift, c2.shift, rtol=1e-4, atol=1e-5)
    assert f1["relative_mse_after"] == pytest.approx(f2["relative_mse_after"], rel=1e-6)


def test_model_defaults_for_prompts_and_guidance():
    from acqe_demo.dataset import profiling_prompts
    from recat_runtime.api import default_guidance
    from recat_runtime.cache.prompts import GENERIC_PROMPTS, default_prompts

    shapes = {"architecture": "acqe-shapes-sd-v1"}
    assert default_guidance(shapes) == 4.0
    assert default_guidance({"architecture": "stable-diffusion-v1"}) == 7.5
    assert default_guidance({"inference": {"guidance": 6}}) == 6.0
    # the demo package serves its architecture's prompts through the acqe.prompts entry point
    ps = default_prompts("acqe-shapes-sd-v1", 10)
    assert ps == profiling_prompts(10) and all("background" in p for p in ps)
    assert default_prompts("stable-diffusion-v1", 10) == default_prompts(None, 10) == list(GENERIC_PROMPTS)


def test_auto_profile_batch_grows_for_small_features_only():
    from recat_runtime.api import PROFILE_BATCH_BYTES, PROFILE_BATCH_MAX, auto_profile_batch

    demo = 819_200                                          # the shipped demo model's, measured
    assert auto_profile_batch(32, demo) == 32               # every sample in one minibatch
    assert auto_profile_batch(1000, 1) == PROFILE_BATCH_MAX
    sd_512 = 50 * 2 * 320 * 64 * 64 * 4                     # SD v1 at 512 px: 0.5 GB a sample
    assert auto_profile_batch(64, sd_512) == 8              # the fixed default, never less
    assert auto_profile_batch(3, sd_512) == 3               # never more than there are samples
    assert auto_profile_batch(64, PROFILE_BATCH_BYTES // 12) == 12


def test_profile_with_an_automatic_batch_stores_the_same_model(acqe_path, tmp_path):
    import shutil

    from acqe_format import AcqeReader
    from recat_runtime.api import profile_cache
    from recat_runtime.cache.store import find_model

    models = []
    for bs in (4, None):
        path = str(tmp_path / f"b{bs}.acqe")
        shutil.copyfile(acqe_path, path)
        profile_cache(path, steps=6, budgets=[], samples=8, device="cpu", validation_samples=0, batch_size=bs,
                      prompts=["a red circle", "a blue square"], guidance=5.0)
        with AcqeReader(path) as r:
            models.append(find_model(r.metadata, guidance=5.0, sampler="ddim", steps=6))
    (a, _), (b, _) = models
    np.testing.assert_allclose(a.moments.s2, b.moments.s2, rtol=1e-6, atol=0)
    assert [a.schedule(a.timesteps, k)[0] for k in range(1, 6)] == [b.schedule(b.timesteps, k)[0] for k in range(1, 6)]
