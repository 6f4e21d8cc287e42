"""Loading a `.acqe` into diffusers models: exact decoded weights, dtypes, tokenizer, errors."""
import copy

import numpy as np
import pytest
import torch

from acqe_format.model.sd_v1 import diffusers_to_ldm
from recat_runtime.loading import load_pipeline, load_tokenizer, load_unet
from recat_runtime.testing import tiny_pipeline
from runtime_fixtures import write_tiny_acqe



pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pipe = tiny_pipeline(seed=3)
    path = tmp_path_factory.mktemp("acqe") / "tiny.acqe"
    written = write_tiny_acqe(path, pipe, codebook=True)
    return pipe, path, written


def _reference(module, written, which):
    """``module`` with its weights replaced by the written (decoded) arrays, mapped by the encoder's names."""
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    sentinels = {k: np.empty(s, np.float32) for k, s in shapes.items()}
    owner = {id(a): k for k, a in sentinels.items()}
    back = {}
    for lk, v in diffusers_to_ldm(**{which: sentinels}).items():
        dk = owner.get(id(v)) or owner.get(id(v.base))
        if dk is None:  # entries the LDM layout adds (CLIP position_ids)
            continue
        back[dk] = torch.from_numpy(np.asarray(written[lk]).reshape(shapes[dk]).copy())
    ref = copy.deepcopy(module)
    ref.load_state_dict(back)
    return ref


def test_unet_weights_and_outputs_equal_decoded(tiny):
    pipe, path, written = tiny
    unet = load_unet(path, device="cpu")
    ref = _reference(pipe.unet, written, "unet_sd")
    for (ka, a), (kb, b) in zip(sorted(unet.state_dict().items()), sorted(ref.state_dict().items())):
        assert ka == kb and torch.equal(a, b), ka
    x, ehs = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    with torch.no_grad():
        assert torch.equal(unet(x, 500, ehs).sample, ref(x, 500, ehs).sample)
    # codebook-coded tensors really changed the weights (the test is not vacuous)
    assert not torch.equal(unet.conv_in.weight, pipe.unet.conv_in.weight)


def test_pipeline_components_equal_decoded(tiny):
    pipe, path, written = tiny
    loaded = load_pipeline(path, device="cpu")
    vae_ref = _reference(pipe.vae, written, "vae_sd")
    text_ref = _reference(pipe.text_encoder, written, "text_sd")
    for a, b in ((loaded.vae, vae_ref), (loaded.text_encoder, text_ref)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sorted(sa) == sorted(sb)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert loaded.safety_checker is None
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    assert not any(p.is_meta for p in loaded.unet.parameters())


def test_tokenizer_from_assets(tiny):
    _, path, _ = tiny
    tok = load_tokenizer(path)
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dtype_cast_is_decoded_cast(tiny, dtype):
    pipe, path, written = tiny
    unet = load_unet(path, device="cpu", torch_dtype=dtype)
    assert all(p.dtype == dtype for p in unet.parameters())
    w = written["model.diffusion_model.input_blocks.0.0.weight"]
    assert torch.equal(unet.conv_in.weight, torch.from_numpy(np.asarray(w)).to(dtype))


def test_missing_component_is_a_clear_error(tmp_path):
    from acqe_format import AcqeWriter
    from recat_runtime.errors import RuntimeLoadError

    p = tmp_path / "empty.acqe"
    with AcqeWriter(p) as w:
        w.set_metadata({"naming": "ldm", "configs": {}})
        w.add_raw("x", np.zeros(3, np.float32))
    with pytest.raises(RuntimeLoadError, match="no 'unet' config"):
        load_unet(p, device="cpu")


def test_forward_equals_model_loaded_from_acqe_export(tiny, tmp_path):
    """The acceptance check: same outputs as a model built the ordinary diffusers way from `acqe export`."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from safetensors.torch import load_file

    from acqe_cli.main import main
    from recat_runtime.testing import TINY_UNET_CONFIG

    _, path, _ = tiny
    out = tmp_path / "export.safetensors"
    assert main(["export", str(path), str(out)]) == 0
    ref = UNet2DConditionModel(**TINY_UNET_CONFIG).eval()
    ref.load_state_dict(convert_ldm_unet_checkpoint(load_file(out), TINY_UNET_CONFIG))
    unet = load_unet(path, device="cpu")
    x, ehs = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    with torch.no_grad():
        assert torch.equal(unet(x, 321, ehs).sample, ref(x, 321, ehs).sample)



def test_generate_with_too_few_trained_betas_is_one_line(tiny, tmp_path):
    """Re-seal fuzzer seed 203580: ``trained_betas = [1]`` loaded, then `acqe generate` died with
    ``IndexError: index 751 is out of bounds`` inside the scheduler. The schema now refuses it."""
    import os
    import shutil
    import subprocess
    import sys

    from acqe_format import AcqeReader
    from acqe_format.edit import replace_metadata

    _pipe, path, _ = tiny
    bad = tmp_path / "betas.acqe"
    shutil.copy(path, bad)
    with AcqeReader(bad) as r:
        meta = dict(r.metadata)
    meta["configs"] = dict(meta["configs"], scheduler=dict(meta["configs"]["scheduler"], trained_betas=[1]))
    replace_metadata(bad, meta, verify=False)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, "-m", "acqe_cli.main", "generate", str(bad), "--prompt", "a", "--steps", "4",
                        "--out", str(tmp_path / "x.png")],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=root))
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "one beta per training timestep" in lines[0], p.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("component, key, value, needle", [
    # re-seal fuzzer seeds 205720 and 209000: diffusers' "cannot be larger than train_timesteps" ValueError
    ("scheduler", "num_train_timesteps", 2, "4 steps do not fit the 2 training timesteps"),
    # seed 207300: the default size 1 latent x VAE scale 2 = 2 px; diffusers' "divisible by 8" ValueError
    ("unet", "sample_size", 1, "a 2x2 px image is not a multiple of 8"),
])
def test_generate_that_the_model_cannot_run_is_one_line(tiny, tmp_path, component, key, value, needle):
    import os
    import shutil
    import subprocess
    import sys

    from acqe_format import AcqeReader
    from acqe_format.edit import replace_metadata

    _pipe, path, _ = tiny
    bad = tmp_path / "odd.acqe"
    shutil.copy(path, bad)
    with AcqeReader(bad) as r:
        meta = dict(r.metadata)
    meta["configs"] = dict(meta["configs"], **{component: dict(meta["configs"][component], **{key: value})})
    replace_metadata(bad, meta, verify=False)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    cmd = [sys.executable, "-m", "acqe_cli.main", "generate", str(bad), "--prompt", "a", "--steps", "4",
           "--threads", "1", "--out", str(tmp_path / "x.png")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], p.stderr
    assert not (tmp_path / "x.png").exists()
    # what the model can run still runs: 2 steps, or an explicit size
    ok = ["--steps", "1"] if key == "num_train_timesteps" else ["--steps", "2", "--height", "16", "--width", "16"]
    p = subprocess.run(cmd[:7] + ok + ["--threads", "1", "--out", str(tmp_path / "y.png")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr


def test_check_run_without_a_sample_size_needs_a_size():
    """Re-seal fuzzer seed 307680: a UNet config without sample_size made `acqe generate` raise TypeError in
    the size check; without a given size it is now a one-line refusal, with one the run goes on."""
    from types import SimpleNamespace

    from recat_runtime.errors import SamplingSettingsError
    from recat_runtime.sampling import check_run

    pipe = SimpleNamespace(scheduler=SimpleNamespace(config=SimpleNamespace()),
                           unet=SimpleNamespace(config=SimpleNamespace(sample_size=None)), vae_scale_factor=8)
    with pytest.raises(SamplingSettingsError, match="no usable sample_size"):
        check_run(pipe, 4)
    check_run(pipe, 4, 64, 64)
    with pytest.raises(SamplingSettingsError, match="not a multiple of 8"):
        check_run(pipe, 4, 64, 60)
