"""diffusers-native loading: after `import recat_runtime.diffusers_integration`, the calls diffusers users
write (from_single_file on UNet2DConditionModel, AutoencoderKL, CLIPTextModel and SD pipelines, dense or
with AcqeQuantizationConfig) load a `.acqe` file, offline, to exactly what `recat_runtime.loading` loads."""
import numpy as np
import pytest
import torch

import recat_runtime.diffusers_integration as integration
from acqe_format import AcqeReader
from recat_runtime.compact import CompactTensor, compact_layers
from recat_runtime.compact_quantizer import AcqeQuantizer
from recat_runtime.diffusers_integration import AcqeQuantizationConfig
from recat_runtime.errors import CompactWeightError, RuntimeLoadError, UnsupportedDiffusersError
from recat_runtime.loading import load_pipeline, load_text_encoder, load_unet, load_vae
from recat_runtime.testing import tiny_pipeline
from runtime_fixtures import write_tiny_acqe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("acqe") / "tiny.acqe"
    write_tiny_acqe(path, tiny_pipeline(seed=3), codebook=True)
    return str(path)


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(
        sa[k].dtype == sb[k].dtype and torch.equal(getattr(sa[k], "dequantize", lambda: sa[k])(),
                                                    getattr(sb[k], "dequantize", lambda: sb[k])()) for k in sa)


def _unet_out(unet, dtype):
    g = torch.Generator().manual_seed(0)
    x, ehs = torch.randn(2, 4, 8, 8, generator=g).to(dtype), torch.randn(2, 77, 32, generator=g).to(dtype)
    with torch.no_grad():
        return unet(x, 500, ehs).sample


def test_registration_is_in_diffusers_tables_and_reversible():
    from diffusers.loaders.single_file_model import FromOriginalModelMixin
    from diffusers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING
    from transformers import CLIPTextModel

    assert integration.is_registered()
    assert AUTO_QUANTIZER_MAPPING["acqe"] is AcqeQuantizer
    assert AUTO_QUANTIZATION_CONFIG_MAPPING["acqe"] is AcqeQuantizationConfig
    wrapped = FromOriginalModelMixin.__dict__["from_single_file"]
    integration.unregister()
    try:
        assert "acqe" not in AUTO_QUANTIZER_MAPPING and not hasattr(CLIPTextModel, "from_single_file")
        assert FromOriginalModelMixin.__dict__["from_single_file"] is not wrapped
        assert "acqe" not in (FromOriginalModelMixin.__dict__["from_single_file"].__func__.__doc__ or "")
    finally:
        integration.register()
    assert integration.is_registered() and hasattr(CLIPTextModel, "from_single_file")
    now = FromOriginalModelMixin.__dict__["from_single_file"]
    integration.register()                                               # idempotent: no second wrapper
    assert FromOriginalModelMixin.__dict__["from_single_file"] is now


@pytest.mark.parametrize("version, ok", [("0.42.0", True), ("0.42.1", True), ("0.42.2.dev0", True),
                                         ("0.41.9", False), ("0.43.0", False), ("1.0.0", False)])
def test_diffusers_version_is_checked(version, ok):
    if ok:
        integration.check_diffusers_version(version)
    else:
        with pytest.raises(UnsupportedDiffusersError, match="supports diffusers >=0.42,<0.43"):
            integration.check_diffusers_version(version)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_unet_dense_and_compact(tiny, dtype):
    from diffusers import UNet2DConditionModel

    ref = load_unet(tiny, device="cpu", torch_dtype=dtype)
    dense = UNet2DConditionModel.from_single_file(tiny, torch_dtype=dtype)
    assert type(dense) is UNet2DConditionModel and dense.dtype == dtype and not compact_layers(dense)
    assert _same_state(dense, ref)
    compact = UNet2DConditionModel.from_single_file(tiny, quantization_config=AcqeQuantizationConfig(compute_dtype=dtype))
    assert len(compact_layers(compact)) > 10 and isinstance(compact.hf_quantizer, AcqeQuantizer)
    assert compact.dtype == dtype
    assert torch.equal(_unet_out(compact, dtype), _unet_out(ref, dtype))
    # torch_dtype alone, with the default config, is the same thing
    also = UNet2DConditionModel.from_single_file(tiny, torch_dtype=dtype, quantization_config=AcqeQuantizationConfig())
    assert torch.equal(_unet_out(also, dtype), _unet_out(ref, dtype))


def test_vae_and_text_encoder(tiny):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    ref_vae = load_vae(tiny, device="cpu")
    img = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for vae in (AutoencoderKL.from_single_file(tiny),
                AutoencoderKL.from_single_file(tiny, quantization_config=AcqeQuantizationConfig())):
        with torch.no_grad():
            a = vae.decode(vae.encode(img).latent_dist.mean).sample
            b = ref_vae.decode(ref_vae.encode(img).latent_dist.mean).sample
        assert torch.equal(a, b)
    assert compact_layers(vae)                                           # the VAE's weights were kept compact
    te = CLIPTextModel.from_single_file(tiny, torch_dtype=torch.bfloat16)
    assert _same_state(te, load_text_encoder(tiny, device="cpu", torch_dtype=torch.bfloat16))
    with pytest.raises(CompactWeightError, match="load the text encoder without quantization_config"):
        CLIPTextModel.from_single_file(tiny, quantization_config=AcqeQuantizationConfig())


def test_pipelines_dense_and_compact(tiny):
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    def run(pipe):
        pipe.set_progress_bar_config(disable=True)
        g = torch.Generator().manual_seed(0)
        return pipe("a red circle", num_inference_steps=3, generator=g, output_type="np", height=16, width=16).images

    ref = run(load_pipeline(tiny, device="cpu"))
    dense = StableDiffusionPipeline.from_single_file(tiny)
    compact = StableDiffusionPipeline.from_single_file(tiny, quantization_config=AcqeQuantizationConfig(),
                                                       safety_checker=None)
    assert not compact_layers(dense.unet) and compact_layers(compact.unet)
    assert np.array_equal(run(dense), ref) and np.array_equal(run(compact), ref)
    i2i = StableDiffusionImg2ImgPipeline.from_single_file(tiny)
    assert type(i2i) is StableDiffusionImg2ImgPipeline
    vae = load_vae(tiny, device="cpu", compact=True)
    given = StableDiffusionPipeline.from_single_file(tiny, vae=vae)       # a component given replaces the file's
    assert given.vae is vae
    with AcqeReader(tiny) as r:                                          # an open reader is a source too
        assert np.array_equal(run(StableDiffusionPipeline.from_single_file(r)), ref)


def test_other_sources_still_go_to_diffusers(tiny, tmp_path):
    """A non-.acqe file takes diffusers' own path, unchanged (here: the safetensors `acqe export` writes,
    with a local config folder)."""
    from diffusers import UNet2DConditionModel

    from acqe_export import export_safetensors

    st = tmp_path / "tiny.safetensors"
    export_safetensors(tiny, str(st))
    ref = load_unet(tiny, device="cpu")
    ref.save_config(tmp_path / "unet")
    via_diffusers = UNet2DConditionModel.from_single_file(str(st), config=str(tmp_path / "unet"))
    assert torch.equal(_unet_out(via_diffusers, torch.float32), _unet_out(ref, torch.float32))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(config="CompVis/stable-diffusion-v1-4"), RuntimeLoadError, "holds its own config"),
    (dict(original_config="v1-inference.yaml"), RuntimeLoadError, "does not take original_config"),
    (dict(upcast_attention=True), RuntimeLoadError, "does not take upcast_attention"),
    (dict(device_map="auto"), RuntimeLoadError, "loads onto one device"),
    (dict(torch_dtype="fp16"), RuntimeLoadError, "must be a torch.dtype"),
    (dict(torch_dtype=torch.float16, quantization_config=AcqeQuantizationConfig(compute_dtype=torch.bfloat16)),
     CompactWeightError, "contradicts torch_dtype"),
])
def test_bad_arguments_are_one_line_errors(tiny, kwargs, error, match):
    from diffusers import UNet2DConditionModel

    with pytest.raises(error, match=match) as info:
        UNet2DConditionModel.from_single_file(tiny, **kwargs)
    assert "\n" not in str(info.value)


def test_foreign_quantization_config_and_classes_are_refused(tiny):
    from diffusers import ControlNetModel, GGUFQuantizationConfig, UNet2DConditionModel

    with pytest.raises(CompactWeightError, match="does not apply to a .acqe file"):
        UNet2DConditionModel.from_single_file(tiny, quantization_config=GGUFQuantizationConfig())
    with pytest.raises(RuntimeLoadError, match="ControlNetModel.from_single_file cannot read .acqe files"):
        ControlNetModel.from_single_file(tiny)


def test_hub_options_are_accepted_and_nothing_is_fetched(tiny, monkeypatch):
    from diffusers import UNet2DConditionModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    unet = UNet2DConditionModel.from_single_file(tiny, local_files_only=True, token=None, cache_dir="/nonexistent",
                                                 low_cpu_mem_usage=True)
    assert isinstance(unet.conv_in.weight, (torch.nn.Parameter, CompactTensor))
