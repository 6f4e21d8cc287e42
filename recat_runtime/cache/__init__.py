"""ReCaT activation caching for diffusers UNets: branch caching, schedules, CKA profiling, correction."""
from recat_runtime.cache.hook import (
    RECAT_CACHE_HOOK,
    CacheCorrection,
    RecatCacheConfig,
    RecatCacheHook,
    apply_recat_cache,
    disable_recat_cache,
    get_recat_hook,
    recat_cache,
    reset_recat_cache,
)
from recat_runtime.cache.schedules import (
    interval_schedule,
    no_cache_schedule,
    optimal_schedule,
    quadratic_schedule,
    uniform_schedule,
)

__all__ = [
    "RECAT_CACHE_HOOK",
    "CacheCorrection",
    "RecatCacheConfig",
    "RecatCacheHook",
    "apply_recat_cache",
    "disable_recat_cache",
    "get_recat_hook",
    "recat_cache",
    "reset_recat_cache",
    "interval_schedule",
    "no_cache_schedule",
    "optimal_schedule",
    "quadratic_schedule",
    "uniform_schedule",
]
