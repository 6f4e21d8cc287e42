"""The option vocabularies of the runtime, torch-free, so a command line can offer them as choices
without importing torch (``acqe --help`` lists every command).

- :data:`SAMPLERS`: sampler name -> the diffusers scheduler class that implements it;
- :data:`CACHE_MODES`: how a generation caches the UNet's deep features;
- :data:`REBUILD_BACKENDS`: how compact weights are rebuilt before their layer runs;
- compute dtypes: `acqe_format.dtypes` (``CLI_FLOAT_CHOICES``, ``canonical``).
"""
from __future__ import annotations

SAMPLERS: dict[str, str] = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "lms": "LMSDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}

# none: every step full; uniform: B full steps spread evenly (DeepCache); quadratic: DeepCache's
# non-uniform schedule; recat: the schedule `profile_cache` stored in the file
CACHE_MODES: tuple[str, ...] = ("none", "uniform", "quadratic", "recat")

# how compact weights are rebuilt before their layer runs (recat_runtime.rebuild): auto = one Triton kernel
# on CUDA when Triton is present, else the torch formula; compile = the torch formula via torch.compile
REBUILD_BACKENDS: tuple[str, ...] = ("auto", "torch", "triton", "compile")

__all__ = ["SAMPLERS", "CACHE_MODES", "REBUILD_BACKENDS"]
