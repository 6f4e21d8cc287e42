"""ReCaT / uniform caching on every layout's UNet (SD 2.x: linear projections, wider context; SDXL:
no attention in the outermost blocks, several transformer layers, size/crop conditioning; the refiner;
SD 1.x inpainting's 9-channel input), on tiny random models."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from recat_runtime.cache import RecatCacheConfig, recat_cache  # noqa: E402
from recat_runtime.cache.branch import branch_plan, capture_feature, num_branches, shallow_forward  # noqa: E402
from recat_runtime.testing import tiny_layout_configs, tiny_layout_models, tiny_layout_pipeline  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CACHED_LAYOUTS = ("stable-diffusion-2-v", "stable-diffusion-xl-base", "stable-diffusion-xl-refiner",
                  "stable-diffusion-v1-inpainting")


def _unet_inputs(architecture: str, batch: int = 2):
    cfg = tiny_layout_configs(architecture)["unet"]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(batch, cfg["in_channels"], 8, 8, generator=g)
    ehs = torch.randn(batch, 77, cfg["cross_attention_dim"], generator=g)
    kwargs = {}
    if cfg.get("addition_embed_type") == "text_time":
        n_time = (cfg["projection_class_embeddings_input_dim"] - 64) // cfg["addition_time_embed_dim"]
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, 64, generator=g),
                                       "time_ids": torch.rand(batch, n_time, generator=g) * 1024}
    return x, ehs, kwargs


@pytest.mark.parametrize("architecture", CACHED_LAYOUTS)
def test_cached_step_fed_its_own_feature_is_bit_exact_on_every_branch(architecture):
    unet = tiny_layout_models(architecture)["unet"]
    x, ehs, kwargs = _unet_inputs(architecture)
    t = torch.tensor(421)
    with torch.no_grad():
        ref = unet(x, t, ehs, **kwargs).sample
        for m in range(num_branches(unet)):
            plan = branch_plan(unet, m)
            feature = capture_feature(unet, plan, x, t, ehs, **kwargs)
            out = shallow_forward(unet, plan, feature, x, t, ehs, **kwargs)
            assert torch.equal(out, ref), f"branch {m}"


def test_full_size_sdxl_and_sd2_unets_split_at_every_skip():
    """SDXL base: three resolutions, no attention in the outermost blocks; SD 2.x: four, linear projections."""
    from diffusers import UNet2DConditionModel

    from acqe_format.model import sd_v1

    xl = dict(sd_v1.UNET_CONFIG, block_out_channels=[320, 640, 1280],
              down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
              up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
              transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20], cross_attention_dim=2048,
              use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
              projection_class_embeddings_input_dim=2816, sample_size=128)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**{k: v for k, v in xl.items() if not k.startswith("_")})
    assert num_branches(unet) == 9
    p0 = branch_plan(unet, 0)
    assert (p0.up_block, p0.up_layer, p0.feature_channels) == (2, 2, 320)
    deepest = branch_plan(unet, 8)
    assert (deepest.down_block, deepest.up_block, deepest.up_layer) == (2, 0, 0)


@pytest.mark.parametrize("architecture", ["stable-diffusion-2-v", "stable-diffusion-xl-base"])
def test_full_budget_equals_the_uncached_pipeline_and_a_cached_run_differs(architecture):
    pipe = tiny_layout_pipeline(architecture)

    def run():
        g = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            return pipe("a red circle", num_inference_steps=6, generator=g, output_type="latent", height=32,
                        width=32, guidance_scale=5.0).images

    ref = run()
    with recat_cache(pipe, RecatCacheConfig.uniform(6, 6)) as hook:
        full = run()
    assert hook.full_calls == 6 and hook.cached_calls == 0
    assert torch.equal(ref, full)
    with recat_cache(pipe, RecatCacheConfig(num_inference_steps=6, full_steps=(0, 3), branch=1)) as hook:
        cached = run()
    assert (hook.full_calls, hook.cached_calls) == (2, 4)
    assert not torch.equal(cached, ref) and torch.isfinite(cached).all()


@pytest.mark.parametrize("architecture", CACHED_LAYOUTS)
def test_profile_cache_then_generate_with_the_stored_schedule(architecture, tmp_path):
    import sys
    import os

    sys.path.insert(0, os.path.dirname(__file__))
    from layout_fixtures import write_ldm

    from acqe_encoder.encode import Settings, convert
    from acqe_format import AcqeReader
    from acqe_format.model import architectures as A
    from recat_runtime.api import generate, profile_cache

    src = str(tmp_path / "m.safetensors")
    write_ldm(src, architecture)
    out = str(tmp_path / "m.acqe")
    spec = A.get(architecture)
    convert(src, out, Settings(bits=None, lossless=True,
                               prediction_type=spec.prediction_type if spec.family == "sd-v2" else None))
    res = profile_cache(out, steps=4, budgets=[2], prompts=["a red circle", "a blue square"], samples=4,
                        batch_size=4, height=32, width=32, device="cpu", validation_samples=0, correction=False)
    assert len(res["schedules"]) == 1 and res["schedules"][0]["full_steps"][0] == 0
    assert np.isfinite(res["similarity"]).all()
    with AcqeReader(out) as r:
        assert r.metadata["recat"]["profiles"]
    from PIL import Image

    init = None
    if spec is A.SDXL_REFINER:            # profiled over the whole schedule (strength 1); refine with it
        init = Image.new("RGB", (32, 32), (120, 40, 40))
    g = generate(out, ["a red circle"], steps=4, cache="recat", budget=2, height=32, width=32, device="cpu",
                 init_image=init, strength=1.0)
    assert list(g.full_steps) == res["schedules"][0]["full_steps"] and torch.isfinite(g.latents).all()
