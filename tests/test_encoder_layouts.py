"""SD v1 layout: diffusers -> LDM names round-trip through diffusers' own single-file converters."""
from math import prod

import pytest

from acqe_format.model import sd_v1

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
from diffusers.loaders.single_file_utils import (  # noqa: E402
    convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint)

SMALL_UNET = dict(sd_v1.UNET_CONFIG, block_out_channels=[32, 64, 64], layers_per_block=1,
                  down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                  up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                  cross_attention_dim=32, attention_head_dim=4, sample_size=16)
SMALL_VAE = dict(sd_v1.VAE_CONFIG, block_out_channels=[32, 64], layers_per_block=1,
                 down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, sample_size=32)
SMALL_TEXT = dict(sd_v1.TEXT_ENCODER_CONFIG, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                  num_hidden_layers=2, vocab_size=1000, projection_dim=32)


def _cfg(d):
    return {k: v for k, v in d.items() if not k.startswith("_")}


def small_models(seed=0):
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(**_cfg(SMALL_UNET))
    vae = diffusers.AutoencoderKL(**_cfg(SMALL_VAE))
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**{k: v for k, v in SMALL_TEXT.items()
                                                                      if k != "architectures"}))
    return unet, vae, text


@pytest.mark.parametrize("lpb", [1, 2])
def test_diffusers_to_ldm_roundtrips_through_diffusers_converters(lpb):
    ucfg = dict(SMALL_UNET, layers_per_block=lpb)
    vcfg = dict(SMALL_VAE, layers_per_block=lpb)
    torch.manual_seed(lpb)
    unet = diffusers.UNet2DConditionModel(**_cfg(ucfg))
    vae = diffusers.AutoencoderKL(**_cfg(vcfg))
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**{k: v for k, v in SMALL_TEXT.items()
                                                                      if k != "architectures"}))
    usd, vsd, tsd = unet.state_dict(), vae.state_dict(), text.state_dict()
    ldm = sd_v1.diffusers_to_ldm(usd, vsd, tsd)
    assert ldm["cond_stage_model.transformer.text_model.embeddings.position_ids"].dtype == torch.int64
    # shapes implied by the configs equal the real models'
    assert {k: tuple(v.shape) for k, v in ldm.items()} == sd_v1.ldm_shapes(ucfg, vcfg, SMALL_TEXT)
    back_u = convert_ldm_unet_checkpoint(ldm, ucfg)
    back_v = convert_ldm_vae_checkpoint(ldm, vcfg)
    back_t = convert_ldm_clip_checkpoint(ldm)
    for orig, back in ((usd, back_u), (vsd, back_v)):
        assert set(orig) == set(back)
        for k in orig:
            assert torch.equal(orig[k], back[k]), k
    for k in tsd:
        tk = k if k.startswith("text_model.") else "text_model." + k
        assert torch.equal(tsd[k], back_t[tk]), k
    # every LDM key is within one of the component prefixes
    assert all(any(k.startswith(p) for p in sd_v1.PREFIXES.values()) for k in ldm)


def test_full_size_shapes_match_diffusers_and_param_count():
    shapes = sd_v1.ldm_shapes()
    params = sum(prod(s) for k, s in shapes.items() if not k.endswith("position_ids"))
    assert params == 1_066_235_307
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**_cfg(sd_v1.UNET_CONFIG))
        vae = diffusers.AutoencoderKL(**_cfg(sd_v1.VAE_CONFIG))
    du = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    dv = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    assert du == sd_v1.diffusers_unet_shapes()
    assert dv == sd_v1.diffusers_vae_shapes()
    det = sd_v1.detect(shapes)
    assert det.exact_sd14 and det.architecture == "stable-diffusion-v1"


def test_infer_unet_config_from_small_ldm():
    shapes = sd_v1.ldm_shapes(SMALL_UNET, SMALL_VAE, SMALL_TEXT)
    cfg = sd_v1.infer_unet_config(shapes)
    for k in ("block_out_channels", "layers_per_block", "down_block_types", "up_block_types", "cross_attention_dim"):
        assert cfg[k] == SMALL_UNET[k], k
    assert sd_v1.infer_unet_config(sd_v1.ldm_shapes())["block_out_channels"] == [320, 640, 1280, 1280]
    det = sd_v1.detect(shapes)
    assert det.naming == "ldm" and not det.exact_sd14 and det.architecture == "stable-diffusion-v1-family"


def test_unknown_key_is_refused():
    with pytest.raises(sd_v1.LayoutMappingError):
        sd_v1.diffusers_to_ldm({"down_blocks.0.resnets.0.norm1.weight": torch.zeros(1), "weird.weight": torch.zeros(1)})


def test_sdxl_scheduler_config_keeps_ddim_from_clipping():
    """Stability's SDXL scheduler config says clip_sample / set_alpha_to_one false; dropping them let DDIM
    (--sampler ddim) clip the predicted clean latents to [-1, 1] (the SDXL demo model's images went grey)."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    from acqe_format.model import architectures as A
    from acqe_format.model.layouts import scheduler_config

    for arch in (A.SDXL_BASE, A.SDXL_REFINER):
        cfg = scheduler_config(arch)
        assert cfg["_class_name"] == "EulerDiscreteScheduler"
        ddim = DDIMScheduler.from_config(cfg)
        assert ddim.config.clip_sample is False and ddim.config.set_alpha_to_one is False
        assert EulerDiscreteScheduler.from_config(cfg).config.timestep_spacing == "leading"
