"""Compact weights behave like ordinary modules: each call checked against the dense model loaded from the
same file — PEFT LoRA (add_adapter, load_lora_weights, set_adapters, fuse/unfuse, safe fusing),
fuse_qkv_projections, save_pretrained, model / sequential CPU offload, torch.compile, and ReCaT caching
on top of each."""
import numpy as np
import pytest
import torch

from recat_runtime.cache import RecatCacheConfig, recat_cache
from recat_runtime.compact import CompactTensor, compact_bytes, compact_layers
from recat_runtime.errors import CompactWeightError
from recat_runtime.loading import load_pipeline, load_unet
from recat_runtime.testing import tiny_pipeline
from runtime_fixtures import write_tiny_acqe

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "proj_in"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("acqe") / "tiny.acqe"
    write_tiny_acqe(path, tiny_pipeline(seed=3), codebook=True)
    return path


@pytest.fixture(scope="module")
def lora_files(tiny, tmp_path_factory):
    """Two diffusers-format LoRA files for the tiny UNet (random, non-zero B so they change outputs)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    folder = tmp_path_factory.mktemp("lora")
    unet = load_unet(tiny, device="cpu")
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False))
    sd = get_peft_model_state_dict(unet)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=sd, weight_name="one.safetensors")
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers={k: v * -0.5 for k, v in sd.items()},
                                              weight_name="two.safetensors")
    return folder


def _pipes(tiny, **kw):
    out = []
    for compact in (False, True):
        pipe = load_pipeline(tiny, device="cpu", compact=compact, **kw)
        pipe.set_progress_bar_config(disable=True)
        out.append(pipe)
    return out


def _run(pipe, cache=False, steps=6):
    g = torch.Generator().manual_seed(0)
    kwargs = dict(num_inference_steps=steps, generator=g, output_type="np", height=16, width=16)
    if not cache:
        return pipe("a red circle", **kwargs).images
    with recat_cache(pipe, RecatCacheConfig(num_inference_steps=steps, full_steps=(0, 3))) as hook:
        out = pipe("a red circle", **kwargs).images
    assert (hook.full_calls, hook.cached_calls) == (2, 4)
    return out


def _codes(pipe):
    return {n: m.weight.codes for n, m in compact_layers(pipe.unet)}


def _assert_still_compact(pipe, codes_before):
    """Every compact weight is still the same uint8 codes (never densified for good)."""
    now = {}
    for n, m in pipe.unet.named_modules():
        w = m._parameters.get("weight")
        if isinstance(w, CompactTensor):
            now[n.replace(".base_layer", "")] = w.codes
    assert set(now) == set(codes_before)
    assert all(now[n] is codes_before[n] for n in now)


def test_peft_lora_load_set_fuse_unfuse_like_dense(tiny, lora_files):
    dense, compact = _pipes(tiny)
    codes = _codes(compact)
    held_before = compact_bytes(compact.unet)[0]
    results = {}
    for name, pipe in (("dense", dense), ("compact", compact)):
        r = {"base": _run(pipe)}
        pipe.load_lora_weights(lora_files, weight_name="one.safetensors", adapter_name="one")
        r["one"] = _run(pipe)
        pipe.load_lora_weights(lora_files, weight_name="two.safetensors", adapter_name="two")
        pipe.set_adapters(["one", "two"], adapter_weights=[0.7, 0.4])
        r["mix"], r["mix_cached"] = _run(pipe), _run(pipe, cache=True)
        pipe.fuse_lora()
        r["fused"], r["fused_cached"] = _run(pipe), _run(pipe, cache=True)
        if name == "compact":
            _assert_still_compact(pipe, codes)
            assert any(m.base_layer.weight.delta is not None for _, m in pipe.unet.named_modules()
                       if hasattr(m, "base_layer"))                       # the merge is a residual on the codes
        pipe.unfuse_lora()
        r["unfused"] = _run(pipe)
        if name == "compact":
            assert compact_bytes(pipe.unet)[0] - held_before < 1e5        # the residuals are gone again
        pipe.unload_lora_weights()
        r["unloaded"] = _run(pipe)
        results[name] = r
    d, c = results["dense"], results["compact"]
    assert not np.allclose(d["one"], d["base"], atol=1e-3)               # the LoRA really changes the image
    for k in d:
        np.testing.assert_allclose(c[k], d[k], atol=1e-5, err_msg=k)
    assert np.array_equal(c["unloaded"], c["base"])                      # compact unmerges exactly
    _assert_still_compact(compact, codes)


def test_add_adapter_and_safe_fusing(tiny):
    from peft import LoraConfig

    dense, compact = _pipes(tiny)
    outs = []
    for pipe in (dense, compact):
        torch.manual_seed(0)
        pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False))
        outs.append(_run(pipe))
        pipe.fuse_lora(components=["unet"], safe_fusing=True)          # clone, add, assign .data
        outs.append(_run(pipe, cache=True))
    assert np.array_equal(outs[0], outs[2]) and np.allclose(outs[1], outs[3], atol=1e-5)
    layer = next(m for _, m in compact.unet.named_modules() if hasattr(m, "base_layer"))
    assert isinstance(layer.base_layer.weight, CompactTensor) and layer.base_layer.weight.delta is not None


def test_fuse_qkv_projections(tiny):
    dense, compact = _pipes(tiny)
    codes = _codes(compact)
    outs = []
    for pipe in (dense, compact):
        pipe.fuse_qkv_projections()
        outs += [_run(pipe), _run(pipe, cache=True)]
        pipe.unfuse_qkv_projections()
        outs.append(_run(pipe))
    assert np.array_equal(outs[0], outs[3]) and np.array_equal(outs[1], outs[4]) and np.array_equal(outs[2], outs[5])
    _assert_still_compact(compact, codes)


def test_save_pretrained_writes_the_dense_weights(tiny, tmp_path):
    from diffusers import StableDiffusionPipeline

    dense, compact = _pipes(tiny)
    compact.save_pretrained(tmp_path / "saved")
    again = StableDiffusionPipeline.from_pretrained(tmp_path / "saved")       # no .acqe code needed
    again.set_progress_bar_config(disable=True)
    want = dense.unet.state_dict()
    got = again.unet.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)   # every tensor, exact
    assert np.array_equal(_run(again), _run(dense))


def test_dequantize_for_good_is_explicit(tiny):
    unet = load_unet(tiny, device="cpu", compact=True)
    dense = load_unet(tiny, device="cpu")
    unet.dequantize()
    assert not compact_layers(unet) and not hasattr(unet, "hf_quantizer")
    assert all(torch.equal(a, b) for a, b in zip(unet.state_dict().values(), dense.state_dict().values()))


def test_writes_that_would_be_lost_are_refused(tiny):
    unet = load_unet(tiny, device="cpu", compact=True)
    _, layer = compact_layers(unet)[0]
    with pytest.raises(CompactWeightError, match="cannot write into a compact weight"):
        layer.weight.data.zero_()
    with pytest.raises(CompactWeightError, match="cannot write into a compact weight"):
        torch.nn.init.normal_(layer.weight)
    with pytest.raises(CompactWeightError, match="only another compact weight"):
        layer.weight.data = torch.zeros(layer.weight.shape)


def test_model_cpu_offload_with_caching(tiny):
    dense, compact = _pipes(tiny)
    outs = []
    for pipe in (dense, compact):
        pipe.enable_model_cpu_offload(device="cpu")
        outs += [_run(pipe), _run(pipe, cache=True)]
    assert np.array_equal(outs[0], outs[2]) and np.array_equal(outs[1], outs[3])
    assert compact_layers(compact.unet)


def test_sequential_offload_of_the_unet_with_caching(tiny):
    """What enable_sequential_cpu_offload does to each component (accelerate's cpu_offload: weights to
    `meta`, brought back per module for its forward). On a CPU-only machine diffusers' own call needs
    device="cpu", where accelerate's tied-weight bookkeeping breaks CLIP's embedding even for dense
    models; the whole-pipeline call runs in tests/test_runtime_cuda.py."""
    from accelerate import cpu_offload

    dense, compact = _pipes(tiny)
    outs = []
    for pipe in (dense, compact):
        cpu_offload(pipe.unet, execution_device=torch.device("cpu"))
        assert pipe.unet.conv_in.weight.is_meta
        outs += [_run(pipe), _run(pipe, cache=True)]
    assert isinstance(compact.unet.conv_in.weight, CompactTensor)
    assert np.array_equal(outs[0], outs[2]) and np.array_equal(outs[1], outs[3])


def test_torch_compile_with_caching(tiny):
    """torch.compile traces through the compact weights (AOTAutograd flattens the subclass); ReCaT enabled
    after the UNet already ran compiled is not ignored, the step logic stays Python and the full and the
    shallow forward are compiled graphs. Same images as the dense model run eagerly."""
    import torch._dynamo

    dense, compact = _pipes(tiny)
    want = [_run(dense), _run(dense, cache=True)]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compact.unet = torch.compile(compact.unet, backend="aot_eager")
    got = [_run(compact), _run(compact, cache=True)]                   # the cache after a compiled run
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 3  # plain, full with capture, shallow
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)
