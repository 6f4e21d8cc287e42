"""Compact weights: uint8 indices + codebook on the device, rebuilt per layer, identical outputs."""
import numpy as np
import pytest
import torch

from recat_runtime.cache import RecatCacheConfig, recat_cache
from recat_runtime.compact import CompactTensor, compact_bytes, compact_layers
from recat_runtime.loading import load_pipeline, load_unet
from recat_runtime.testing import tiny_pipeline
from runtime_fixtures import write_tiny_acqe


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("acqe") / "tiny.acqe"
    write_tiny_acqe(path, tiny_pipeline(seed=3), codebook=True)
    return path


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_compact_unet_rebuilds_exactly_the_loaded_weights(tiny, dtype):
    dense = load_unet(tiny, device="cpu", torch_dtype=dtype)
    compact = load_unet(tiny, device="cpu", torch_dtype=dtype, compact=True)
    layers = compact_layers(compact)
    assert len(layers) > 10                        # most layer weights really are compact
    dense_mods = dict(dense.named_modules())
    for name, m in layers:
        assert isinstance(m.weight, torch.nn.Parameter) and m.weight.codes.dtype == torch.uint8
        assert m.weight.dtype == dtype and m.weight.shape == dense_mods[name].weight.shape
        rebuilt = m.weight.dequantize()
        want = dense_mods[name].weight
        assert rebuilt.dtype == want.dtype and torch.equal(rebuilt, want), name
    x, ehs = torch.randn(2, 4, 8, 8).to(dtype), torch.randn(2, 77, 32).to(dtype)
    with torch.no_grad():
        assert torch.equal(compact(x, 500, ehs).sample, dense(x, 500, ehs).sample)
    assert all(isinstance(m.weight, CompactTensor) for _, m in layers)   # still compact after the forward
    held, full = compact_bytes(compact)
    assert 0 < held < full


def test_compact_survives_dtype_casts_of_the_model(tiny):
    """model.half() re-types the rebuild, never the stored codebook: the weights equal the fp16 load's."""
    compact = load_unet(tiny, device="cpu", torch_dtype=torch.float32, compact=True)
    dense16 = load_unet(tiny, device="cpu", torch_dtype=torch.float16)
    compact.half()
    layers = compact_layers(compact)
    assert layers and all(isinstance(m.weight, CompactTensor) and m.weight.dtype == torch.float16 for _, m in layers)
    assert all(m.weight.codebook.dtype == torch.float32 for _, m in layers)
    ref = dict(dense16.named_modules())
    assert all(torch.equal(m.weight.dequantize(), ref[n].weight) for n, m in layers)


def test_compact_pipeline_with_caching_equals_dense(tiny):
    dense = load_pipeline(tiny, device="cpu")
    compact = load_pipeline(tiny, device="cpu", compact=True)
    outs = []
    for pipe in (dense, compact):
        pipe.set_progress_bar_config(disable=True)
        with recat_cache(pipe, RecatCacheConfig(num_inference_steps=6, full_steps=(0, 3))):
            g = torch.Generator().manual_seed(0)
            outs.append(pipe("a red circle", num_inference_steps=6, generator=g, output_type="np", height=16,
                             width=16).images)
    assert np.array_equal(outs[0], outs[1])


def test_cli_generate_compact(tiny, tmp_path):
    from acqe_cli.main import main

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for out, extra in ((a, []), (b, ["--compact"])):
        assert main(["generate", str(tiny), "--prompt", "a red circle", "--steps", "3", "--device", "cpu",
                     "--height", "16", "--width", "16", "--out", str(out), *extra]) == 0
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("decoded", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scaled", [False, True])
def test_rebuild_formula_is_exact_with_and_without_row_scales(decoded, dtype, scaled):
    """The rebuild equals gather-then-round in float32, element for element (rounding a K-entry table
    first and gathering from it is the same map); values near the fp16/bf16 rounding boundaries, tiny
    and huge ones included."""
    g = torch.Generator().manual_seed(0)
    codebook = torch.cat([torch.randn(200, generator=g),
                          torch.tensor([1 + 2**-11, 1 + 3 * 2**-11, 2**-24, 3e-8, 65504.0, 7e4, -1e-40, 0.0]),
                          torch.randn(48, generator=g) * 1e3])
    rows, cols = 12, 33
    idx = torch.randint(0, 256, (rows * cols,), generator=g, dtype=torch.uint8)
    scales = torch.rand(rows, generator=g) * 3 + 0.25 if scaled else None
    from recat_runtime.compact import CompactParts

    cw = CompactTensor(CompactParts(idx, codebook, scales, (rows, cols), getattr(torch, decoded), dtype))
    want = codebook[idx.long()]
    if scaled:
        want = want.view(rows, -1) * scales.view(rows, 1)
    want = want.to(getattr(torch, decoded)).to(dtype).view(rows, cols)
    got = cw.dequantize()
    assert got.dtype == dtype and got.shape == (rows, cols)
    assert torch.equal(got.view(-1).view(torch.int8), want.view(-1).view(torch.int8))  # bits: signed zeros count
