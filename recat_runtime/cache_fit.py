"""Does a cache config fit the UNet it is about to run on? Checked once the model is loaded and before the
first step, so a branch the UNet does not have (``--branch 99``) or a stored correction made for another
UNet (wrong channel count) is one line instead of a traceback from inside the denoising loop."""
from __future__ import annotations

from recat_runtime.errors import CacheSettingsError

__all__ = ["check_cache_fits"]


def check_cache_fits(unet, config) -> None:
    """Raise `CacheSettingsError` when ``config`` (a `RecatCacheConfig` or None) cannot run on ``unet``."""
    if config is None:
        return
    from recat_runtime.cache.branch import branch_plan, num_branches

    n = num_branches(unet)
    if not 0 <= config.branch < n:
        raise CacheSettingsError(f"branch {config.branch} does not exist: this UNet has branches 0..{n - 1}")
    try:
        plan = branch_plan(unet, config.branch)
    except ValueError as e:
        raise CacheSettingsError(f"cannot cache this UNet at branch {config.branch}: {e}") from None
    corr = config.correction
    if corr is None:
        return
    steps, channels = corr.scale.shape
    if channels != plan.feature_channels:
        raise CacheSettingsError(f"the stored correction has {channels} channels, but branch {config.branch} of "
                                 f"this UNet caches a feature of {plan.feature_channels}")
    if steps != config.num_inference_steps:
        raise CacheSettingsError(f"the stored correction covers {steps} steps, the schedule "
                                 f"{config.num_inference_steps}")
