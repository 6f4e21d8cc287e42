"""ACQ-E encoder: checkpoint sources, histogram-guided clustering, rate allocation.

Needs no torch: `.ckpt` files are read by a restricted unpickler of its own (`sources/`). Only the
optional calibration (`--calibrate`) imports torch and diffusers, lazily.
"""
__version__ = "0.1.0"

import os as _os

from acqe_format.jit_cache import ensure_numba_cache

ensure_numba_cache(_os.path.dirname(__file__))      # before any kernel is defined (cache=True needs a folder)
