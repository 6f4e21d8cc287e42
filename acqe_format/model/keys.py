"""The names the `.acqe` metadata uses for model files, declared once (as gguf-py keeps ``Keys``).

Every package that writes or reads these keys imports them from here; spec §8 describes them.
"""
from __future__ import annotations


class Keys:
    """Top-level metadata keys (spec §8.2)."""
    ARCHITECTURE = "architecture"     # str: a name of `acqe_format.model.architectures`, or "unknown"
    NAMING = "naming"                 # str: a `Naming` value: how tensor names are spelled
    COMPONENTS = "components"         # {component: tensor-name prefix}
    CONFIGS = "configs"               # {component: diffusers / transformers config, "tokenizer": ...}
    SOURCE = "source"                 # {"file", "sha256", "format", "non_model_entries", "dropped"}
    ENCODER = "encoder"               # {"name", "version", "settings"}
    SIZES = "sizes"                   # {component: {"bytes", "values", "bits_per_value"}, "file_bytes", ...}
    INFERENCE = "inference"           # optional {"guidance": float}: the model's defaults
    RECAT = "recat"                   # optional: ReCaT cache schedules (recat_runtime.cache.store)


class Naming:
    """Values of ``Keys.NAMING``: how the tensor names of a file are spelled."""
    LDM = "ldm"                       # CompVis / Lightning single-file names: model.diffusion_model.*, ...
    DIFFUSERS = "diffusers"           # <component>.<diffusers state-dict key>: unet.*, vae.*, text_encoder.*
    FLAT = "flat"                     # any other state dict (not loadable as a pipeline)
    LOADABLE = (LDM, DIFFUSERS)


class Component:
    """Model components: keys of ``Keys.COMPONENTS`` and ``Keys.CONFIGS``."""
    UNET = "unet"
    VAE = "vae"
    TEXT_ENCODER = "text_encoder"
    TEXT_ENCODER_2 = "text_encoder_2"  # SDXL's second (OpenCLIP bigG, with projection) text encoder
    SCHEDULER = "scheduler"           # a config only (no tensors)
    TOKENIZER = "tokenizer"           # a config only: which assets hold the tokenizer files
    TOKENIZER_2 = "tokenizer_2"       # the same for text_encoder_2
    WITH_TENSORS = (UNET, VAE, TEXT_ENCODER, TEXT_ENCODER_2)
    TOKENIZERS = (TOKENIZER, TOKENIZER_2)
    # the tokenizer that feeds each text encoder
    TOKENIZER_OF = {TEXT_ENCODER: TOKENIZER, TEXT_ENCODER_2: TOKENIZER_2}


class Tokenizer:
    """Keys of the ``configs.tokenizer`` description."""
    CLASS = "class"                   # "CLIPTokenizer"
    FILES = "files"                   # {file name: asset name} or None (not embedded)
    SOURCE = "source"                 # where a runtime gets the files when they are not embedded
    ASSET_PREFIX = "tokenizer/"       # asset names of the embedded files (tokenizer_2's: "tokenizer_2/")


class Inference:
    GUIDANCE = "guidance"


__all__ = ["Keys", "Naming", "Component", "Tokenizer", "Inference"]
