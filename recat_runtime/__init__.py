"""ReCaT runtime: load `.acqe` files into diffusers models and cache UNet activations across steps.

Public API (reads like diffusers)::

    from recat_runtime import load_pipeline, RecatCacheConfig, apply_recat_cache
    pipe = load_pipeline("model.acqe")                      # cuda when available, else cpu
    apply_recat_cache(pipe, RecatCacheConfig.uniform(50, 10))
    image = pipe("a red circle", num_inference_steps=50).images[0]

The names below load on first use, so torch-free parts (``recat_runtime.options``) import without torch;
a missing torch / diffusers is reported when a name that needs them is first used.
"""
from __future__ import annotations

import importlib

from recat_runtime.quiet import quiet_torchvision_fallback

quiet_torchvision_fallback()

_EXPORTS = {
    "load_acqe_state_dict": "recat_runtime.loading",
    "load_pipeline": "recat_runtime.loading",
    "load_scheduler": "recat_runtime.loading",
    "load_text_encoder": "recat_runtime.loading",
    "load_tokenizer": "recat_runtime.loading",
    "load_unet": "recat_runtime.loading",
    "load_vae": "recat_runtime.loading",
    "CacheCorrection": "recat_runtime.cache",
    "RecatCacheConfig": "recat_runtime.cache",
    "apply_recat_cache": "recat_runtime.cache",
    "disable_recat_cache": "recat_runtime.cache",
    "get_recat_hook": "recat_runtime.cache",
    "recat_cache": "recat_runtime.cache",
    "reset_recat_cache": "recat_runtime.cache",
}

__all__ = list(_EXPORTS)


def require_torch() -> None:
    """ImportError naming the extra to install when torch, diffusers or transformers is missing."""
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "recat_runtime needs torch, diffusers, transformers and accelerate: "
            "pip install 'acqe[runtime]' (pin torch for your platform)", name=exc.name
        ) from exc


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'recat_runtime' has no attribute {name!r}")
    require_torch()
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
