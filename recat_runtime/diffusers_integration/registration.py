"""Registering `.acqe` support with diffusers and transformers, and taking it back.

diffusers has no extension point for a new single-file format: it chooses a loader by file suffix inside
``from_single_file``. So registration is small, explicit and reversible:

1. ``"acqe"`` joins diffusers' quantizer tables (``AUTO_QUANTIZER_MAPPING`` and
   ``AUTO_QUANTIZATION_CONFIG_MAPPING``), as ``"gguf"`` is there;
2. ``FromOriginalModelMixin.from_single_file`` (models) and ``FromSingleFileMixin.from_single_file``
   (pipelines) are wrapped: a `.acqe` source goes to `recat_runtime.diffusers_integration.single_file`,
   anything else to diffusers' own method, unchanged;
3. ``transformers.CLIPTextModel`` gets a ``from_single_file`` classmethod (transformers has none).

The wrappers reach into diffusers' classes, so they are only installed for the diffusers versions they
were tested with (`SUPPORTED_DIFFUSERS`); another version raises `UnsupportedDiffusersError`.
"""
from __future__ import annotations

import functools

from recat_runtime.errors import UnsupportedDiffusersError

__all__ = ["SUPPORTED_DIFFUSERS", "register", "unregister", "is_registered", "check_diffusers_version"]

SUPPORTED_DIFFUSERS = ("0.42", "0.43")     # [low, high): the releases this integration is tested against

_MISSING = object()
_installed: list[tuple[type, str, object]] = []       # (owner, attribute, what it was before) to restore


def check_diffusers_version(version: str | None = None) -> None:
    """Raises `UnsupportedDiffusersError` unless ``version`` (default: the installed diffusers) is supported."""
    from packaging.version import Version

    if version is None:
        import diffusers

        version = diffusers.__version__
    low, high = SUPPORTED_DIFFUSERS
    if not Version(low) <= Version(Version(version).base_version) < Version(high):
        raise UnsupportedDiffusersError(
            f"the .acqe integration supports diffusers >={low},<{high}; found {version} "
            f"(pip install 'diffusers>={low},<{high}', or load with recat_runtime.load_pipeline)")


def is_registered() -> bool:
    return bool(_installed)


_SOURCE_NAMES = ("pretrained_model_link_or_path_or_dict", "pretrained_model_link_or_path")   # models, pipelines


def _route(original, acqe_loader):
    """A ``from_single_file`` classmethod: `.acqe` sources to ``acqe_loader``, the rest to ``original``."""
    from recat_runtime.diffusers_integration.single_file import is_acqe_source
    from recat_runtime.errors import RuntimeLoadError

    func = original.__func__ if original is not _MISSING else None

    def from_single_file(cls, *args, **kwargs):
        source = args[0] if args else next((kwargs[k] for k in _SOURCE_NAMES if k in kwargs), None)
        if not is_acqe_source(source):
            if func is None:
                raise RuntimeLoadError(f"{cls.__name__}.from_single_file reads .acqe files only; got {source!r}")
            return func(cls, *args, **kwargs)
        if len(args) > 1:
            raise RuntimeLoadError(f"{cls.__name__}.from_single_file with a .acqe file takes its options as keywords")
        return acqe_loader(cls, source, **{k: v for k, v in kwargs.items() if k not in _SOURCE_NAMES})

    if func is not None:
        functools.update_wrapper(from_single_file, func)
    from_single_file.__doc__ = ("Also loads a `.acqe` file (see recat_runtime.diffusers_integration).\n\n"
                                + ((func.__doc__ or "") if func is not None else ""))
    return classmethod(from_single_file)


def _install(owner: type, attr: str, acqe_loader) -> None:
    before = owner.__dict__.get(attr, _MISSING)
    setattr(owner, attr, _route(before, acqe_loader))
    _installed.append((owner, attr, before))


def register() -> None:
    """Teach diffusers (and CLIPTextModel) to load `.acqe` files; idempotent."""
    if _installed:
        return
    check_diffusers_version()
    from diffusers.loaders.single_file import FromSingleFileMixin
    from diffusers.loaders.single_file_model import FromOriginalModelMixin
    from diffusers.quantizers import auto
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from recat_runtime.compact_quantizer import ACQE_METHOD, AcqeQuantizationConfig, AcqeQuantizer
    from recat_runtime.diffusers_integration import single_file as S

    auto.AUTO_QUANTIZER_MAPPING[ACQE_METHOD.value] = AcqeQuantizer
    auto.AUTO_QUANTIZATION_CONFIG_MAPPING[ACQE_METHOD.value] = AcqeQuantizationConfig
    _install(FromOriginalModelMixin, "from_single_file", S.model_from_acqe)
    _install(FromSingleFileMixin, "from_single_file", S.pipeline_from_acqe)
    _install(CLIPTextModel, "from_single_file", S.text_encoder_from_acqe)
    _install(CLIPTextModelWithProjection, "from_single_file", S.text_encoder_from_acqe)


def unregister() -> None:
    """Undo `register`: diffusers and transformers exactly as they were."""
    from diffusers.quantizers import auto

    from recat_runtime.compact_quantizer import ACQE_METHOD

    while _installed:
        owner, attr, before = _installed.pop()
        if before is _MISSING:
            delattr(owner, attr)
        else:
            setattr(owner, attr, before)
    auto.AUTO_QUANTIZER_MAPPING.pop(ACQE_METHOD.value, None)
    auto.AUTO_QUANTIZATION_CONFIG_MAPPING.pop(ACQE_METHOD.value, None)
