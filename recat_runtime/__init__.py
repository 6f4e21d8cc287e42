"""ReCaT runtime: load `.acqe` files into diffusers models and cache UNet activations across steps.

Public API (reads like diffusers)::

    from recat_runtime import load_pipeline, RecatCacheConfig, apply_recat_cache
    pipe = load_pipeline("model.acqe")                      # cuda when available, else cpu
    apply_recat_cache(pipe, RecatCacheConfig.uniform(50, 10))
    image = pipe("a red circle", num_inference_steps=50).images[0]
"""
from __future__ import annotations

try:
    import diffusers  # noqa: F401
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "recat_runtime needs torch, diffusers, transformers and accelerate: "
        "pip install 'acqe[runtime]' (pin torch for your platform)"
    ) from exc

from recat_runtime.loading import (  # noqa: E402
    load_acqe_state_dict,
    load_pipeline,
    load_scheduler,
    load_text_encoder,
    load_tokenizer,
    load_unet,
    load_vae,
)
from recat_runtime.cache import (  # noqa: E402
    CacheCorrection,
    RecatCacheConfig,
    apply_recat_cache,
    disable_recat_cache,
    get_recat_hook,
    recat_cache,
    reset_recat_cache,
)

__all__ = [
    "load_acqe_state_dict",
    "load_pipeline",
    "load_scheduler",
    "load_text_encoder",
    "load_tokenizer",
    "load_unet",
    "load_vae",
    "CacheCorrection",
    "RecatCacheConfig",
    "apply_recat_cache",
    "disable_recat_cache",
    "get_recat_hook",
    "recat_cache",
    "reset_recat_cache",
]
