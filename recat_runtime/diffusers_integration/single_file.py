"""``from_single_file`` for `.acqe` files: what diffusers' single-file loaders do, from the one file.

diffusers' ``from_single_file`` reads a checkpoint, fetches the model's config from the Hub (or a
``config=`` folder) and converts the names. A `.acqe` file carries its configs and tokenizer, so these
loaders take everything from it (`recat_runtime.loading`) and never go online. They accept the
arguments diffusers users pass (``torch_dtype``, ``quantization_config``, ``device``; the download
options, which a local file does not need, are accepted and ignored) and refuse the rest with a
one-line error instead of silently ignoring it.
"""
from __future__ import annotations

import os

import torch

from acqe_format import AcqeReader
from recat_runtime.errors import CompactWeightError, RuntimeLoadError

__all__ = ["is_acqe_source", "model_from_acqe", "text_encoder_from_acqe", "pipeline_from_acqe"]

# download options of diffusers' loaders: meaningless for a local .acqe file (nothing is fetched)
HUB_OPTIONS = frozenset({"force_download", "proxies", "token", "cache_dir", "local_files_only", "revision",
                         "config_revision", "subfolder", "low_cpu_mem_usage", "disable_mmap", "resume_download",
                         "use_safetensors", "variant", "use_auth_token"})
# pipeline components a `.acqe` file never holds: accepted when they ask for nothing
ABSENT_COMPONENTS = ("safety_checker", "feature_extractor", "image_encoder")


def is_acqe_source(source) -> bool:
    """An open `AcqeReader`, or a path ending in ``.acqe`` (diffusers picks a loader by suffix, too)."""
    if isinstance(source, AcqeReader):
        return True
    return isinstance(source, (str, os.PathLike)) and os.fspath(source).lower().endswith(".acqe")


def _dtype(kwargs) -> torch.dtype | None:
    dtype = kwargs.pop("dtype", None)
    torch_dtype = kwargs.pop("torch_dtype", None)
    dtype = dtype if dtype is not None else torch_dtype
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise RuntimeLoadError(f"torch_dtype must be a torch.dtype (e.g. torch.float16), got {dtype!r}")
    return dtype


def _device(kwargs):
    device, device_map = kwargs.pop("device", None), kwargs.pop("device_map", None)
    if device_map is not None:
        if isinstance(device_map, dict) and set(device_map) == {""}:
            device_map = device_map[""]
        if not isinstance(device_map, (str, torch.device, int)) or device_map in ("auto", "balanced", "sequential"):
            raise RuntimeLoadError(f"a .acqe model loads onto one device; device_map={device_map!r} is not supported")
        if device is not None and torch.device(device) != torch.device(device_map):
            raise RuntimeLoadError(f"device={device!r} and device_map={device_map!r} disagree")
        device = device_map
    return torch.device(device) if device is not None else torch.device("cpu")


def _refuse_rest(kwargs, what: str) -> None:
    rest = sorted(k for k in kwargs if k not in HUB_OPTIONS)
    if rest:
        hint = " (the .acqe file holds its own config)" if {"config", "original_config"} & set(rest) else ""
        raise RuntimeLoadError(f"{what}.from_single_file with a .acqe file does not take {', '.join(rest)}{hint}")


def _compact_request(quantization_config, dtype):
    """(compact?, compute dtype) for a ``quantization_config``, through diffusers' own quantizer table."""
    if quantization_config is None:
        return False, dtype or torch.float32
    from diffusers.quantizers import DiffusersAutoQuantizer

    from recat_runtime.compact_quantizer import AcqeQuantizer

    try:
        quantizer = DiffusersAutoQuantizer.from_config(quantization_config)
    except ValueError as exc:     # a method diffusers does not know (the integration is not registered)
        raise CompactWeightError(f"quantization_config: {exc}") from None
    if not isinstance(quantizer, AcqeQuantizer):
        raise CompactWeightError(f"{type(quantization_config).__name__} does not apply to a .acqe file, whose weights "
                                 "are already coded; pass AcqeQuantizationConfig() to keep them compact")
    return True, quantizer.update_torch_dtype(dtype)


def model_from_acqe(cls, source, **kwargs):
    """``UNet2DConditionModel`` / ``AutoencoderKL````.from_single_file(path.acqe, ...)``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from recat_runtime.loading import load_unet, load_vae

    loader = {UNet2DConditionModel: load_unet, AutoencoderKL: load_vae}.get(cls)
    if loader is None:
        raise RuntimeLoadError(f"{cls.__name__}.from_single_file cannot read .acqe files; they load "
                               "UNet2DConditionModel, AutoencoderKL, CLIPTextModel and Stable Diffusion pipelines")
    dtype, device = _dtype(kwargs), _device(kwargs)
    compact, dtype = _compact_request(kwargs.pop("quantization_config", None), dtype)
    _refuse_rest(kwargs, cls.__name__)
    return loader(source, torch_dtype=dtype, device=device, compact=compact)


def text_encoder_from_acqe(cls, source, **kwargs):
    """``CLIPTextModel.from_single_file(path.acqe, torch_dtype=..., device=...)`` (dense weights);
    ``CLIPTextModelWithProjection`` loads SDXL's second text encoder (``text_encoder_2``)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from acqe_format.model import Component
    from recat_runtime.loading import load_text_encoder

    component = {CLIPTextModel: Component.TEXT_ENCODER, CLIPTextModelWithProjection: Component.TEXT_ENCODER_2}.get(cls)
    if component is None:
        raise RuntimeLoadError(f"{cls.__name__}.from_single_file: .acqe files hold CLIPTextModel (text_encoder) "
                               "and CLIPTextModelWithProjection (text_encoder_2) text encoders")
    dtype, device = _dtype(kwargs), _device(kwargs)
    if kwargs.pop("quantization_config", None) is not None:
        raise CompactWeightError("compact weights are kept for the diffusers models (UNet, VAE); "
                                 "load the text encoder without quantization_config")
    _refuse_rest(kwargs, cls.__name__)
    return load_text_encoder(source, torch_dtype=dtype or torch.float32, device=device, component=component)


def _check_family(cls, source) -> None:
    """SDXL files load into SDXL pipeline classes only, and the others into the others: ``from_pipe`` would
    otherwise wire an SDXL UNet into a pipeline that cannot condition it (a crash at the first step)."""
    from acqe_format import AcqeReader
    from acqe_format.model import ModelInfo, architectures

    if isinstance(source, AcqeReader):
        metadata = source.metadata
    else:
        with AcqeReader(source) as r:
            metadata = r.metadata
    spec = architectures.for_file(ModelInfo.from_metadata(metadata))
    if (spec.family == "sdxl") != cls.__name__.startswith("StableDiffusionXL"):
        raise RuntimeLoadError(f"the file holds {spec.name}, which runs with {spec.pipeline} (or "
                               f"{spec.img2img_pipeline}), not {cls.__name__}")


def pipeline_from_acqe(cls, source, **kwargs):
    """``StableDiffusionPipeline.from_single_file(path.acqe, ...)``, or another SD pipeline class over the
    same components (``from_pipe``). Components given as arguments replace the file's, as in diffusers;
    ``quantization_config=AcqeQuantizationConfig()`` keeps the UNet's weights compact."""
    from recat_runtime.loading import load_pipeline

    dtype = _dtype(kwargs)
    compact, dtype = _compact_request(kwargs.pop("quantization_config", None), dtype)
    given = {k: kwargs.pop(k) for k in ("unet", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
                                        "scheduler") if k in kwargs}
    for k in ABSENT_COMPONENTS:
        if kwargs.pop(k, None) is not None:
            raise RuntimeLoadError(f"a .acqe file holds no {k}; pass {k}=None or leave it out")
    kwargs.pop("requires_safety_checker", None)
    _refuse_rest(kwargs, cls.__name__)
    _check_family(cls, source)
    pipe = load_pipeline(source, device="cpu", torch_dtype=dtype, compact=compact,
                         img2img="Img2Img" in cls.__name__)
    if given:
        pipe.register_modules(**given)
    if type(pipe) is cls:
        return pipe
    expected, _ = cls._get_signature_keys(cls)
    missing = sorted(set(expected) - set(pipe.components) - set(ABSENT_COMPONENTS))
    if missing:
        raise RuntimeLoadError(f"{cls.__name__} needs {', '.join(missing)}, which the .acqe file does not hold")
    return cls.from_pipe(pipe)
