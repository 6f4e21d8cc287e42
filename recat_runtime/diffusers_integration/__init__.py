"""`.acqe` files in diffusers' own loading calls, after one import.

    import torch
    from recat_runtime.diffusers_integration import AcqeQuantizationConfig   # registers .acqe with diffusers
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_single_file("sd.acqe", torch_dtype=torch.float16)          # dense
    unet = UNet2DConditionModel.from_single_file(                                               # compact
        "sd.acqe", quantization_config=AcqeQuantizationConfig(compute_dtype=torch.float16), device="cuda")
    vae = AutoencoderKL.from_single_file("sd.acqe", torch_dtype=torch.float16)
    text_encoder = CLIPTextModel.from_single_file("sd.acqe", torch_dtype=torch.float16)
    pipe = StableDiffusionPipeline.from_single_file("sd.acqe", torch_dtype=torch.float16,
                                                    quantization_config=AcqeQuantizationConfig()).to("cuda")

Importing this package registers the integration (`registration.register`: the ``"acqe"`` quantizer in
diffusers' tables, and ``from_single_file`` routing `.acqe` paths here); `unregister()` takes it back.
It refuses diffusers releases it was not tested with (`SUPPORTED_DIFFUSERS`). Everything is offline:
configs and tokenizer come from the file. `recat_runtime.load_pipeline` stays the short path.
"""
from recat_runtime.compact_quantizer import AcqeQuantizationConfig, AcqeQuantizer
from recat_runtime.diffusers_integration.registration import (SUPPORTED_DIFFUSERS, check_diffusers_version,
                                                              is_registered, register, unregister)

__all__ = ["AcqeQuantizationConfig", "AcqeQuantizer", "SUPPORTED_DIFFUSERS", "check_diffusers_version",
           "is_registered", "register", "unregister"]

register()
