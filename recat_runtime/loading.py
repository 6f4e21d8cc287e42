"""Load a `.acqe` file into diffusers / transformers models, offline, from the configs stored in it.

    from recat_runtime import load_pipeline
    pipe = load_pipeline("model.acqe")                 # cuda when available, else cpu; fp32
    pipe = load_pipeline("model.acqe", torch_dtype=torch.bfloat16, scheduler="ddim")

How weights get into the model (no extra full-size copy):

1. the model is built from its stored diffusers config with parameters on the ``meta`` device
   (``accelerate.init_empty_weights``: no memory, no random init);
2. tensors are decoded one at a time (``AcqeReader.iter_tensors``, chunks in parallel), each converted
   to the target dtype and moved to the target device at once, so at most one decoded float32 tensor
   exists besides the model's own weights;
3. names go from the file's scheme to diffusers' (``naming == "ldm"``: diffusers' own
   ``convert_ldm_unet_checkpoint`` / ``convert_ldm_vae_checkpoint``, which only rename and take views)
   and ``load_state_dict(assign=True)`` makes those very tensors the parameters.

The weights used for inference are therefore exactly the decoded weights (cast to ``torch_dtype``).
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from acqe_format import AcqeReader, dtypes
from acqe_format.constants import CodecId
from acqe_format.model import Component, Naming, architectures
from recat_runtime.devices import default_device, resolve_device
from recat_runtime import preflight
from recat_runtime.tokenizer import check_tokenizer_fits
from recat_runtime.errors import ControlNetError, RuntimeLoadError
from recat_runtime.options import SAMPLERS

__all__ = [
    "load_acqe_state_dict",
    "load_unet",
    "load_vae",
    "load_text_encoder",
    "load_tokenizer",
    "load_scheduler",
    "load_pipeline",
    "default_device",
    "torch_dtype",
    "SCHEDULERS",
]

SCHEDULERS = SAMPLERS      # sampler name -> diffusers scheduler class name (kept under its old name)


def torch_dtype(name) -> torch.dtype:
    """``torch.float16`` for "fp16", "float16" or ``torch.float16`` (any spelling `acqe_format.dtypes` knows)."""
    return getattr(torch, dtypes.canonical(name))


@contextlib.contextmanager
def _reader(path_or_reader):
    if isinstance(path_or_reader, AcqeReader):
        yield path_or_reader
        return
    r = AcqeReader(path_or_reader)
    try:
        yield r
    finally:
        r.close()


def _to_torch(arr: np.ndarray, decoded: str, dtype, device) -> torch.Tensor:
    if decoded == "bfloat16":  # the reader returns bf16 as uint16 bit patterns
        t = torch.from_numpy(np.ascontiguousarray(arr).view(np.int16).copy()).view(torch.bfloat16)
    elif arr.flags.writeable:
        t = torch.from_numpy(arr)
    else:
        t = torch.from_numpy(arr.copy())
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    return t.to(device) if device is not None else t


def load_acqe_state_dict(path_or_reader, *, component: str | None = None, torch_dtype=None, device=None,
                         strip_prefix: bool = False, threads: int | None = None,
                         compact_parts: dict | None = None, only=None) -> dict[str, torch.Tensor]:
    """Decoded tensors of a `.acqe` file, keyed by their stored (source) names.

    Args:
        component: ``"unet"``, ``"vae"`` or ``"text_encoder"`` to read only that component's tensors.
        torch_dtype: cast floating tensors to this dtype as they are decoded (None keeps the stored dtype).
        device: put each tensor there as soon as it is decoded.
        strip_prefix: drop the component prefix from the names.
        threads: decoder threads (default: all cores).
        compact_parts: when a dict, codebook matrices/kernels with uint8 indices are not decoded: their
            codebook parts go into it (by key) and the state holds a `recat_runtime.compact.CompactTensor`.
        only: decode only these keys (as returned, i.e. after ``strip_prefix``).
    """
    threads = threads or os.cpu_count() or 1
    with _reader(path_or_reader) as r:
        prefix = r.model_info.prefix(component) if component else ""
        infos = {t.name: t for t in r.tensors if t.name.startswith(prefix)
                 and (only is None or (t.name[len(prefix):] if strip_prefix else t.name) in only)}
        out: dict[str, torch.Tensor] = {}
        if compact_parts is not None:
            from recat_runtime.compact import CompactTensor, eligible

            for name in [n for n, i in infos.items() if i.codec != CodecId.RAW and len(i.shape) >= 2]:
                parts = r.read_codebook(name, threads)
                if eligible(parts):
                    key = name[len(prefix):] if strip_prefix else name
                    compact_parts[key] = parts
                    out[key] = CompactTensor.from_codebook(parts, torch_dtype or torch.float32, device)
                    del infos[name]
        # the reader rounds floats to the target dtype inside the decode kernel (same values as .to())
        want = None if torch_dtype is None else dtypes.canonical(torch_dtype)
        if want not in dtypes.CAST_TARGETS:
            want = None
        for name, arr in r.iter_tensors(threads=threads, dtype=want, names=list(infos)):
            key = name[len(prefix):] if strip_prefix else name
            decoded = infos[name].decoded_dtype
            now = want if want is not None and decoded in dtypes.FLOATS else decoded
            out[key] = _to_torch(arr, now, torch_dtype, device)
            del arr
        if component and not out:
            raise RuntimeLoadError(f"the file has no tensors for component '{component}' (prefix {prefix!r})")
        return out


def _fill(model, state: dict, what: str):
    """Makes the given tensors the model's parameters (``assign=True``); names, shapes and dtypes were
    checked on placeholders before decoding (`recat_runtime.preflight`). Compact weights
    (`recat_runtime.compact.CompactTensor`) become parameters as they are."""
    state = preflight.align_keys(state, model.state_dict())
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise RuntimeLoadError(f"{what}: parameters left unfilled: {leftover[:3]}")
    return model.eval().requires_grad_(False)


def _empty(build):
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return build()


class _ReadRecorder(dict):
    """A state dict that remembers which keys a converter read: diffusers' OpenCLIP converter copies the
    fused ``in_proj`` tensors (q/k/v slices), so the preflight cannot follow them by identity."""

    def __init__(self, *a):
        super().__init__(*a)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key in self:
            self.read.add(key)
        return super().get(key, default)


class _Converted(dict):
    read: frozenset = frozenset()


def _model_and_converter(component: str, cfg: dict, naming: str, openclip_prefix: str | None = None):
    """The component's model built on ``meta`` from its (schema-checked) config, and the function that takes
    a state dict from the file's names to the model's. ``openclip_prefix``: the text encoder's LDM tensors
    use OpenCLIP's names under it (SD 2.x, SDXL's second encoder). A config the class refuses is a
    RuntimeLoadError."""
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    convert = dict
    try:
        if component == "unet":
            from diffusers import UNet2DConditionModel
            from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

            if naming == Naming.LDM:
                convert = lambda state: convert_ldm_unet_checkpoint(state, cfg)  # noqa: E731
            model = _empty(lambda: UNet2DConditionModel(**cfg))
        elif component == "vae":
            from diffusers import AutoencoderKL
            from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

            if naming == Naming.LDM:
                convert = lambda state: convert_ldm_vae_checkpoint(state, cfg)  # noqa: E731
            model = _empty(lambda: AutoencoderKL(**cfg))
        elif component in (Component.TEXT_ENCODER, Component.TEXT_ENCODER_2):
            from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

            classes = cfg.pop("architectures", None) or []
            with_projection = component == Component.TEXT_ENCODER_2 or "CLIPTextModelWithProjection" in classes
            text_cfg = CLIPTextConfig(**cfg)
            cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
            model = _empty(lambda: cls(text_cfg))
            if naming == Naming.LDM and openclip_prefix is not None:
                from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

                def convert(state, _model=model, _prefix=openclip_prefix):
                    rec = _ReadRecorder(state)
                    out = _Converted(convert_open_clip_checkpoint(_model, rec, prefix=_prefix))
                    out.read = frozenset(rec.read)
                    return out
        else:
            raise RuntimeLoadError(f"unknown component {component!r}")
    except RuntimeLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - the libraries' own validators raise their own types (huggingface_hub's
        # StrictDataclassClassValidationError, ZeroDivisionError for heads wider than a block): all say the
        # stored config, which passed the schema, does not describe a model they can build
        raise RuntimeLoadError(f"{component}: the stored config does not build a model ({type(e).__name__}: "
                               f"{_first_line(e)})") from None
    return model, convert


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1] if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")


def _convert(convert, state: dict, component: str) -> dict:
    try:
        return convert(dict(state))
    except preflight.CONVERSION_ERRORS as e:
        raise RuntimeLoadError(f"{component}: the stored tensor names do not fit the LDM layout "
                               f"({type(e).__name__}: {_first_line(e)})") from None


def _load_component(path_or_reader, component: str, torch_dtype, device, threads, compact: bool = False):
    with _reader(path_or_reader) as r:
        info = r.model_info
        naming = info.naming
        prefix = info.prefix(component)             # a loadable naming that names the component
        cfg = info.config(component)
        device = resolve_device(device)
        openclip = naming == Naming.LDM and component in architectures.for_file(info).openclip
        strip = naming == Naming.DIFFUSERS or (component in Component.TOKENIZER_OF and not openclip)
        model, convert = _model_and_converter(component, cfg, naming, prefix if openclip else None)
        # names, shapes and dtypes against the model before anything is decoded
        stored = preflight.placeholders({(t.name[len(prefix):] if strip else t.name): t
                                         for t in r.tensors if t.name.startswith(prefix)})
        if not stored:
            raise RuntimeLoadError(f"the file has no tensors for component '{component}' (prefix {prefix!r})")
        used = preflight.check_fit(component, model, stored, _convert(convert, stored, component))
        parts = {} if compact else None
        state = load_acqe_state_dict(r, component=component, torch_dtype=torch_dtype, device=device,
                                     threads=threads, strip_prefix=strip, compact_parts=parts, only=used)
    # compact weights are CompactTensors: the converters only rename, so they pass through unchanged
    state = _convert(convert, state, component)
    model = _fill(model, state, component)
    if parts and component != Component.TEXT_ENCODER:
        from recat_runtime.compact_quantizer import attach_quantizer

        attach_quantizer(model, torch_dtype)      # save_pretrained writes dense weights, dequantize() works
    # buffers that are not stored (e.g. position_ids) were created on the CPU: move them along
    for mod in model.modules():
        for name, buf in list(mod.named_buffers(recurse=False)):
            if buf is None:
                continue
            dt = torch_dtype if (torch_dtype is not None and buf.is_floating_point()) else buf.dtype
            if buf.device != device or buf.dtype != dt:
                setattr(mod, name, buf.to(device=device, dtype=dt))
    return model


def load_unet(path_or_reader, *, torch_dtype=torch.float32, device=None, threads=None, compact: bool = False):
    """The ``UNet2DConditionModel`` of a `.acqe` file (exactly its decoded weights, cast to ``torch_dtype``).

    ``compact=True`` keeps codebook-coded layer weights as uint8 indices + codebook on the device and
    rebuilds each one just before its layer runs (`recat_runtime.compact`): same outputs, less memory,
    some rebuild work per forward."""
    return _load_component(path_or_reader, "unet", torch_dtype, device, threads, compact)


def load_vae(path_or_reader, *, torch_dtype=torch.float32, device=None, threads=None, compact: bool = False):
    """The ``AutoencoderKL`` of a `.acqe` file (``compact``: as in `load_unet`)."""
    return _load_component(path_or_reader, "vae", torch_dtype, device, threads, compact)


def load_text_encoder(path_or_reader, *, torch_dtype=torch.float32, device=None, threads=None,
                      component: str = Component.TEXT_ENCODER):
    """The ``CLIPTextModel`` of a `.acqe` file (``component="text_encoder_2"``: SDXL's second encoder, a
    ``CLIPTextModelWithProjection``)."""
    return _load_component(path_or_reader, component, torch_dtype, device, threads)


def load_tokenizer(path_or_reader, component: str = Component.TOKENIZER):
    """The ``CLIPTokenizer`` built from the tokenizer files embedded in the file (offline); ``component``:
    ``"tokenizer"`` or ``"tokenizer_2"`` (SDXL's second, OpenCLIP's pad token).

    A file that embeds no tokenizer gets SD v1's CLIP BPE from the vocabulary shipped with
    `acqe_format.model.clip_bpe` (with the architecture's pad token). Embedded files that cannot be used
    are an error (RuntimeLoadError), never silently replaced by another tokenizer.
    """
    from acqe_format.model.clip_bpe import clip_tokenizer_files
    from recat_runtime.tokenizer import build_clip_tokenizer

    with _reader(path_or_reader) as r:
        info = r.model_info
        files = info.tokenizer_files(r.assets, component)
    if files is None:
        pad = architectures.for_file(info).pad_tokens.get(component, architectures.CLIP_PAD)
        return build_clip_tokenizer(clip_tokenizer_files(pad_token=pad))
    try:
        return build_clip_tokenizer(files)
    except ValueError as exc:     # (MetadataError, UnicodeDecodeError and LZMA's errors are ValueErrors)
        raise RuntimeLoadError(f"the embedded {component} files are unusable: {str(exc).splitlines()[0]}") from None


def load_scheduler(path_or_reader, scheduler: str = "ddim"):
    """A diffusers scheduler of the given kind, configured from the file's stored scheduler config."""
    import diffusers

    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose from {sorted(SCHEDULERS)}")
    with _reader(path_or_reader) as r:
        cfg = r.model_info.configs.get(Component.SCHEDULER) or {}
    cls = getattr(diffusers, SCHEDULERS[scheduler])
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    try:
        return cls.from_config(cfg)
    except Exception as e:  # noqa: BLE001 - a value the schema allows but this sampler does not take
        raise RuntimeLoadError(f"scheduler: the stored config does not configure a {cls.__name__} "
                               f"({type(e).__name__}: {_first_line(e)})") from None


def load_pipeline(path, device=None, torch_dtype=torch.float32, scheduler: str = "ddim", threads=None,
                  compact: bool = False, img2img: bool = False, controlnet: str | None = None):
    """A ready diffusers pipeline (no safety checker) from a `.acqe` file, entirely offline: the one its
    architecture runs with (`acqe_format.model.architectures`): ``StableDiffusionPipeline`` (SD 1.x, 2.x),
    ``StableDiffusionInpaintPipeline`` (SD 1.x inpainting), ``StableDiffusionXLPipeline`` (SDXL base, both
    text encoders) or ``StableDiffusionXLImg2ImgPipeline`` (the SDXL refiner).

    Args:
        path: the `.acqe` file.
        device: ``"cuda"``, ``"cpu"``, ... (default: cuda when available, else cpu).
        torch_dtype: ``torch.float32``, ``torch.float16`` or ``torch.bfloat16``.
        scheduler: one of ``ddim``, ``pndm``, ``euler``, ``euler-a``, ``dpm++``, ``lms``.
        compact: keep the UNet's codebook-coded weights compact on the device (see `load_unet`).
        img2img: the architecture's image-to-image pipeline instead (``StableDiffusionImg2ImgPipeline``,
            ``StableDiffusionXLImg2ImgPipeline``; the inpainting and refiner pipelines take images anyway).
        controlnet: a diffusers ControlNet folder: the architecture's ControlNet pipeline instead
            (``StableDiffusionControlNetPipeline``, ``StableDiffusionXLControlNetPipeline``; with ``img2img``
            ``StableDiffusionControlNetImg2ImgPipeline``, ``StableDiffusionXLControlNetImg2ImgPipeline``;
            ``StableDiffusionControlNetInpaintPipeline`` for SD 1.x inpainting), the ControlNet checked
            against the UNet first (`recat_runtime.controlnet`).

    Raises:
        RuntimeLoadError: a component, config or tensor is missing or does not fit its config.
        ControlNetError: the ControlNet cannot be read or does not fit, or the architecture has no ControlNet
            pipeline (the SDXL refiner).
    """
    import diffusers

    device = resolve_device(device)
    with _reader(path) as r:
        info = r.model_info
        spec = architectures.for_file(info)
        control_name = spec.controlnet_img2img_pipeline if img2img else spec.controlnet_pipeline
        if controlnet is not None:       # before any tensor is decoded: the model's configs are enough
            if control_name is None:
                raise ControlNetError(f"{spec.name} takes no ControlNet (no diffusers ControlNet pipeline fits it)")
            from recat_runtime.controlnet import check_controlnet

            unet, _ = _model_and_converter(Component.UNET, info.config(Component.UNET), info.naming)
            vae, _ = _model_and_converter(Component.VAE, info.config(Component.VAE), info.naming)
            check_controlnet(controlnet, unet.config, 2 ** (len(vae.config.block_out_channels) - 1))
        parts = {"unet": load_unet(r, torch_dtype=torch_dtype, device=device, threads=threads, compact=compact),
                 "vae": load_vae(r, torch_dtype=torch_dtype, device=device, threads=threads)}
        for te, tok in Component.TOKENIZER_OF.items():
            if te in spec.components or te in info.configs:
                parts[te] = load_text_encoder(r, torch_dtype=torch_dtype, device=device, threads=threads, component=te)
                parts[tok] = load_tokenizer(r, tok)
                check_tokenizer_fits(parts[tok], parts[te].config)
            elif spec.family == "sdxl":
                parts[te], parts[tok] = None, None       # the refiner has no first text encoder
        parts["scheduler"] = load_scheduler(r, scheduler)
    if Component.TEXT_ENCODER not in parts and Component.TEXT_ENCODER_2 not in parts:
        raise RuntimeLoadError("the file has no text encoder, so no pipeline can encode a prompt")
    name = spec.img2img_pipeline if img2img else spec.pipeline
    cls = getattr(diffusers, name)
    if spec.family == "sdxl":
        extra = {"add_watermarker": False, "force_zeros_for_empty_prompt": spec is not architectures.SDXL_REFINER}
        if name == "StableDiffusionXLImg2ImgPipeline":
            extra["requires_aesthetics_score"] = spec is architectures.SDXL_REFINER
    else:
        extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    pipe = cls(**parts, **extra)
    if controlnet is None:
        return pipe
    from recat_runtime.controlnet import controlnet_pipeline, load_controlnet

    net = load_controlnet(controlnet, pipe.unet.config, pipe.vae_scale_factor, torch_dtype=torch_dtype,
                          device=device)
    return controlnet_pipeline(pipe, net, control_name)
