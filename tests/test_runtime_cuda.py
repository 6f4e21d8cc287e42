"""The runtime on CUDA: exact decoded weights on the device, caching exactness, `acqe generate --device cuda`.

Skipped where no CUDA device is present (CI has none); `bench/gpu_check.py --tests` runs this file on a
lent GPU machine, so the CUDA paths are exercised for real whenever one is available.
"""
import numpy as np
import pytest
import torch

from recat_runtime import rebuild
from recat_runtime.cache import RecatCacheConfig, recat_cache
from recat_runtime.loading import load_pipeline, load_unet
from recat_runtime.testing import tiny_pipeline
from runtime_fixtures import write_tiny_acqe

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pipe = tiny_pipeline(seed=3)
    path = tmp_path_factory.mktemp("acqe") / "tiny.acqe"
    write_tiny_acqe(path, pipe, codebook=True)
    return path


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_weights_on_cuda_equal_cpu_decode(tiny, dtype):
    """Decoding straight to the device gives bit-for-bit the tensors the CPU path gives."""
    on_gpu = load_unet(tiny, device="cuda", torch_dtype=dtype)
    on_cpu = load_unet(tiny, device="cpu", torch_dtype=dtype)
    assert all(p.device.type == "cuda" for p in on_gpu.parameters())
    a, b = on_gpu.state_dict(), on_cpu.state_dict()
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k].cpu(), b[k]), k


def _run(pipe, steps=8, seed=0):
    g = torch.Generator("cpu").manual_seed(seed)
    return pipe("a red circle", num_inference_steps=steps, generator=g, output_type="np", height=16,
                width=16).images


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_full_budget_equals_uncached_on_cuda(tiny, dtype):
    pipe = load_pipeline(tiny, device="cuda", torch_dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    ref = _run(pipe)
    with recat_cache(pipe, RecatCacheConfig.uniform(8, 8)) as hook:
        got = _run(pipe)
    assert hook.full_calls == 8 and hook.cached_calls == 0
    assert np.array_equal(ref, got)
    with recat_cache(pipe, RecatCacheConfig(num_inference_steps=8, full_steps=(0, 3, 6))) as hook:
        cached = _run(pipe)
    assert (hook.full_calls, hook.cached_calls) == (3, 5)
    assert np.isfinite(cached).all() and not np.array_equal(cached, ref)


def test_cli_generate_on_cuda(tiny, tmp_path):
    from PIL import Image

    from acqe_cli.main import main

    for cache in ("none", "uniform"):
        out = tmp_path / f"{cache}.png"
        rc = main(["generate", str(tiny), "--prompt", "a red circle", "--steps", "6", "--cache", cache,
                   "--full-steps", "2", "--device", "cuda", "--dtype", "fp16", "--height", "16", "--width", "16",
                   "--out", str(out)])
        assert rc == 0 and Image.open(out).size == (16, 16)


def test_compact_weights_on_cuda_equal_dense(tiny):
    from recat_runtime.compact import compact_layers

    dense = load_unet(tiny, device="cuda", torch_dtype=torch.float16)
    compact = load_unet(tiny, device="cuda", torch_dtype=torch.float16, compact=True)
    layers = compact_layers(compact)
    assert layers and all(m.weight.codes.device.type == "cuda" for _, m in layers)
    x = torch.randn(2, 4, 8, 8, device="cuda", dtype=torch.float16)
    ehs = torch.randn(2, 77, 32, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        want = dense(x, 500, ehs).sample
        for backend in ("auto", "torch", "triton", "compile"):   # auto = the fused Triton kernel on CUDA
            rebuild.set_backend(backend)
            try:
                assert torch.equal(compact(x, 500, ehs).sample, want), backend
            finally:
                rebuild.set_backend("auto")


@pytest.mark.parametrize("decoded", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scaled", [False, True])
def test_triton_rebuild_is_bit_identical_on_cuda(decoded, dtype, scaled):
    """The real (compiled) kernel: the same bits as the formula on the CPU, subnormals and ties included."""
    from test_runtime_rebuild import _bits, _parts

    for rows, cols in ((12, 33), (320, 2880)):
        codes, codebook, scales = _parts(rows, cols, scaled)
        want = rebuild.rebuild_torch(codes, codebook, scales, (rows, cols), decoded, dtype)
        got = rebuild.rebuild_triton(codes.cuda(), codebook.cuda(), None if scales is None else scales.cuda(),
                                     (rows, cols), decoded, dtype)
        assert torch.equal(_bits(got.cpu()), _bits(want)), (rows, cols)


def _pipe_images(pipe, cache=False):
    pipe.set_progress_bar_config(disable=True)
    if not cache:
        return _run(pipe, steps=6)
    with recat_cache(pipe, RecatCacheConfig(num_inference_steps=6, full_steps=(0, 3))) as hook:
        out = _run(pipe, steps=6)
    assert hook.cached_calls == 4
    return out


@pytest.mark.parametrize("offload", ["enable_model_cpu_offload", "enable_sequential_cpu_offload"])
def test_offloaded_compact_pipeline_equals_dense(tiny, offload):
    outs = []
    for compact in (False, True):
        pipe = load_pipeline(tiny, device="cpu", torch_dtype=torch.float16, compact=compact)
        getattr(pipe, offload)()
        outs += [_pipe_images(pipe), _pipe_images(pipe, cache=True)]
    assert np.array_equal(outs[0], outs[2]) and np.array_equal(outs[1], outs[3])


def test_compiled_compact_unet_equals_compiled_dense_on_cuda(tiny):
    import torch._dynamo

    outs = []
    for compact in (False, True):
        torch._dynamo.reset()
        pipe = load_pipeline(tiny, device="cuda", torch_dtype=torch.float16, compact=compact)
        pipe.unet = torch.compile(pipe.unet)
        outs += [_pipe_images(pipe), _pipe_images(pipe, cache=True)]
    assert np.array_equal(outs[0], outs[2]) and np.array_equal(outs[1], outs[3])


def test_from_single_file_compact_on_cuda(tiny):
    from diffusers import UNet2DConditionModel

    from recat_runtime.compact import compact_layers
    from recat_runtime.diffusers_integration import AcqeQuantizationConfig

    unet = UNet2DConditionModel.from_single_file(
        str(tiny), quantization_config=AcqeQuantizationConfig(compute_dtype=torch.float16), device="cuda")
    assert all(m.weight.codes.is_cuda for _, m in compact_layers(unet))
    dense = load_unet(tiny, device="cuda", torch_dtype=torch.float16)
    x = torch.randn(2, 4, 8, 8, device="cuda", dtype=torch.float16)
    ehs = torch.randn(2, 77, 32, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        assert torch.equal(unet(x, 500, ehs).sample, dense(x, 500, ehs).sample)


def test_trend_correction_on_cuda_matches_cpu(tiny):
    """The fitted-trend correction's coefficients move to the device with the features; fp32 on CUDA
    agrees with the CPU run (same schedule and coefficients) to float tolerance."""
    from recat_runtime.cache import CacheCorrection
    from recat_runtime.cache.branch import branch_plan

    runs = []
    for device in ("cpu", "cuda"):
        pipe = load_pipeline(tiny, device=device, torch_dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        c = branch_plan(pipe.unet, 0).feature_channels
        rng = np.random.default_rng(0)
        corr = CacheCorrection(*(rng.normal(m, 0.1, (8, c)).astype(np.float32) for m in (1.0, 0.0, 0.5)))
        with recat_cache(pipe, RecatCacheConfig(8, (0, 3, 6), correction=corr)) as hook:
            runs.append(_run(pipe))
        assert (hook.full_calls, hook.cached_calls) == (3, 5)
    np.testing.assert_allclose(runs[0], runs[1], atol=2e-3)
