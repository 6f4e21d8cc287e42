"""The model architectures a `.acqe` file can name (metadata ``architecture``), with their conventions.

An architecture (one registry entry per layout) fixes the components, how their tensors are named in
each naming scheme, which text encoders are OpenCLIP-named in LDM checkpoints, the tokenizer each text
encoder reads (same CLIP BPE vocabulary, its own pad token), the diffusers pipeline that runs it, the
training objective (``prediction_type``) and what a runtime should assume when the file says nothing
more (the guidance scale a model was trained for, the image size). Unknown names are allowed in files
(they load when their configs and names are complete); they get the SD v1 family's defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from acqe_format.model.keys import Component, Naming

# the LDM (CompVis / Stability single-file) prefixes shared by every Stable Diffusion generation
LDM_UNET = "model.diffusion_model."
LDM_VAE = "first_stage_model."

# Tensor-name prefix of each component, per naming scheme, for the SD v1 family.
SD_V1_PREFIXES: dict[str, dict[str, str]] = {
    Naming.LDM: {Component.UNET: LDM_UNET, Component.VAE: LDM_VAE,
                 Component.TEXT_ENCODER: "cond_stage_model.transformer."},
    Naming.DIFFUSERS: {c: f"{c}." for c in (Component.UNET, Component.VAE, Component.TEXT_ENCODER)},
}
SD_V2_PREFIXES: dict[str, dict[str, str]] = {
    Naming.LDM: {Component.UNET: LDM_UNET, Component.VAE: LDM_VAE,
                 Component.TEXT_ENCODER: "cond_stage_model.model."},
    Naming.DIFFUSERS: SD_V1_PREFIXES[Naming.DIFFUSERS],
}
SDXL_BASE_PREFIXES: dict[str, dict[str, str]] = {
    Naming.LDM: {Component.UNET: LDM_UNET, Component.VAE: LDM_VAE,
                 Component.TEXT_ENCODER: "conditioner.embedders.0.transformer.",
                 Component.TEXT_ENCODER_2: "conditioner.embedders.1.model."},
    Naming.DIFFUSERS: {c: f"{c}." for c in Component.WITH_TENSORS},
}
SDXL_REFINER_PREFIXES: dict[str, dict[str, str]] = {
    Naming.LDM: {Component.UNET: LDM_UNET, Component.VAE: LDM_VAE,
                 Component.TEXT_ENCODER_2: "conditioner.embedders.0.model."},
    Naming.DIFFUSERS: {c: f"{c}." for c in (Component.UNET, Component.VAE, Component.TEXT_ENCODER_2)},
}

# pad tokens: OpenAI CLIP pads with its end token, OpenCLIP with "!" (id 0); the vocabulary is the same
CLIP_PAD = "<|endoftext|>"
OPENCLIP_PAD = "!"


@dataclass(frozen=True)
class Architecture:
    name: str
    family: str
    default_guidance: float
    description: str
    prefixes: dict[str, dict[str, str]] = field(default_factory=lambda: SD_V1_PREFIXES)
    pipeline: str = "StableDiffusionPipeline"     # the diffusers pipeline class that runs it
    img2img_pipeline: str = "StableDiffusionImg2ImgPipeline"
    # the diffusers pipelines that run it with a ControlNet, from noise and from an initial image (None: no
    # ControlNet pipeline fits it)
    controlnet_pipeline: str | None = "StableDiffusionControlNetPipeline"
    controlnet_img2img_pipeline: str | None = "StableDiffusionControlNetImg2ImgPipeline"
    prediction_type: str = "epsilon"
    # text encoders whose LDM tensors use OpenCLIP's names (resblocks, in_proj), not transformers'
    openclip: frozenset = frozenset()
    # pad token of each tokenizer the file embeds (tokenizer component -> pad token)
    pad_tokens: dict[str, str] = field(default_factory=lambda: {Component.TOKENIZER: CLIP_PAD})
    image_size: int = 512
    vae_scaling_factor: float = 0.18215
    vae_force_upcast: bool = False
    upcast_attention: bool = False
    in_channels: int = 4

    @property
    def components(self) -> tuple[str, ...]:
        """The components with tensors every file of this architecture holds."""
        return tuple(self.prefixes[Naming.LDM])


SD_V1 = Architecture("stable-diffusion-v1", "sd-v1", 7.5, "Stable Diffusion v1.x (exactly SD v1.4's shapes)")
SD_V1_FAMILY = Architecture("stable-diffusion-v1-family", "sd-v1", 7.5,
                            "an SD v1 LDM checkpoint of other sizes (configs inferred from the shapes)")
SD_V1_INPAINT = Architecture("stable-diffusion-v1-inpainting", "sd-v1", 7.5,
                             "SD v1.x inpainting (9-channel conv_in: latents, mask, masked-image latents)",
                             pipeline="StableDiffusionInpaintPipeline",
                             img2img_pipeline="StableDiffusionInpaintPipeline",
                             # its ControlNet sees the 4 latent channels, the UNet the 9 after the concatenation
                             controlnet_pipeline="StableDiffusionControlNetInpaintPipeline",
                             controlnet_img2img_pipeline="StableDiffusionControlNetInpaintPipeline", in_channels=9)
# The built-in demo model (acqe_demo): SD v1's parts scaled down, trained for guidance 4.
SHAPES_SD_V1 = Architecture("acqe-shapes-sd-v1", "sd-v1", 4.0, "the built-in shapes demo model (SD v1 layout)")
SD_V2_BASE = Architecture("stable-diffusion-2-base", "sd-v2", 7.5,
                          "Stable Diffusion 2.x 512-base (epsilon prediction, OpenCLIP-H text encoder)",
                          prefixes=SD_V2_PREFIXES, openclip=frozenset({Component.TEXT_ENCODER}),
                          pad_tokens={Component.TOKENIZER: OPENCLIP_PAD})
SD_V2_V = Architecture("stable-diffusion-2-v", "sd-v2", 7.5,
                       "Stable Diffusion 2.x 768-v (v-prediction, OpenCLIP-H text encoder, upcast attention)",
                       prefixes=SD_V2_PREFIXES, openclip=frozenset({Component.TEXT_ENCODER}),
                       pad_tokens={Component.TOKENIZER: OPENCLIP_PAD}, prediction_type="v_prediction",
                       image_size=768, upcast_attention=True)
SDXL_BASE = Architecture("stable-diffusion-xl-base", "sdxl", 5.0,
                         "SDXL base (CLIP-L + OpenCLIP-bigG with projection, size/crop conditioning)",
                         prefixes=SDXL_BASE_PREFIXES, pipeline="StableDiffusionXLPipeline",
                         img2img_pipeline="StableDiffusionXLImg2ImgPipeline",
                         controlnet_pipeline="StableDiffusionXLControlNetPipeline",
                         controlnet_img2img_pipeline="StableDiffusionXLControlNetImg2ImgPipeline",
                         openclip=frozenset({Component.TEXT_ENCODER_2}),
                         pad_tokens={Component.TOKENIZER: CLIP_PAD, Component.TOKENIZER_2: OPENCLIP_PAD},
                         image_size=1024, vae_scaling_factor=0.13025, vae_force_upcast=True)
SDXL_REFINER = Architecture("stable-diffusion-xl-refiner", "sdxl", 5.0,
                            "SDXL refiner (OpenCLIP-bigG only, aesthetic-score conditioning; image to image)",
                            prefixes=SDXL_REFINER_PREFIXES, pipeline="StableDiffusionXLImg2ImgPipeline",
                            img2img_pipeline="StableDiffusionXLImg2ImgPipeline", controlnet_pipeline=None,
                            controlnet_img2img_pipeline=None, openclip=frozenset({Component.TEXT_ENCODER_2}),
                            pad_tokens={Component.TOKENIZER_2: OPENCLIP_PAD},
                            image_size=1024, vae_scaling_factor=0.13025, vae_force_upcast=True)

# The second built-in demo model (acqe_demo, --model sdxl): SDXL base's parts and conditioning scaled down to
# 32x32 images (it reuses the v1 demo's VAE, hence that VAE's latent scale); trained for guidance 4 too.
SHAPES_SDXL = Architecture("acqe-shapes-sdxl", "sdxl", 4.0,
                           "the built-in shapes demo model (SDXL base layout: two text encoders, size/crop "
                           "conditioning)",
                           prefixes=SDXL_BASE_PREFIXES, pipeline="StableDiffusionXLPipeline",
                           img2img_pipeline="StableDiffusionXLImg2ImgPipeline",
                           controlnet_pipeline="StableDiffusionXLControlNetPipeline",
                           controlnet_img2img_pipeline="StableDiffusionXLControlNetImg2ImgPipeline",
                           openclip=frozenset({Component.TEXT_ENCODER_2}),
                           pad_tokens={Component.TOKENIZER: CLIP_PAD, Component.TOKENIZER_2: OPENCLIP_PAD},
                           image_size=32, vae_scaling_factor=0.6386)

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    SD_V1, SD_V1_FAMILY, SD_V1_INPAINT, SHAPES_SD_V1, SD_V2_BASE, SD_V2_V, SDXL_BASE, SDXL_REFINER, SHAPES_SDXL)}
DEFAULT = SD_V1

def get(name) -> Architecture | None:
    """The registered architecture called ``name``, or None."""
    return ARCHITECTURES.get(name) if isinstance(name, str) else None


def resolve(name) -> Architecture:
    """The registered architecture called ``name``, else the SD v1 family's defaults."""
    return get(name) or DEFAULT


def for_components(name, components: dict[str, str]) -> Architecture:
    """The registered architecture ``name``; for another name, the one its components imply (a second
    text encoder: SDXL; OpenCLIP's LDM prefix: SD 2.x), else the SD v1 family's defaults."""
    arch = get(name)
    if arch is not None:
        return arch
    if Component.TEXT_ENCODER_2 in components:
        return SDXL_BASE if Component.TEXT_ENCODER in components else SDXL_REFINER
    if components.get(Component.TEXT_ENCODER) == SD_V2_PREFIXES[Naming.LDM][Component.TEXT_ENCODER]:
        return SD_V2_BASE
    return DEFAULT


def for_file(info) -> Architecture:
    """`for_components` of a parsed file (`acqe_format.model.ModelInfo`)."""
    return for_components(info.architecture, info.components)


def prefixes(architecture, naming: str) -> dict[str, str]:
    """Component -> tensor-name prefix for ``naming`` (the SD v1 family's for unknown architectures);
    empty for a naming that is not loadable."""
    arch = resolve(architecture)
    return dict(arch.prefixes.get(naming, {}))


def component_of(name: str, components: dict[str, str]) -> str | None:
    """The component whose prefix starts tensor ``name`` (longest matching prefix), or None."""
    best = None
    for component, prefix in components.items():
        if name.startswith(prefix) and (best is None or len(prefix) > len(components[best])):
            best = component
    return best


__all__ = ["Architecture", "ARCHITECTURES", "SD_V1", "SD_V1_FAMILY", "SD_V1_INPAINT", "SHAPES_SD_V1", "SHAPES_SDXL", "SD_V2_BASE",
           "SD_V2_V", "SDXL_BASE", "SDXL_REFINER", "SD_V1_PREFIXES", "get", "resolve", "for_components", "for_file", "prefixes", "component_of"]
