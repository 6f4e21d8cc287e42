"""ACQ-E encoder: checkpoint sources, SD layouts + configs, histogram-guided clustering, rate allocation.

Never imports torch at module level (only `sources/` and calibration do, lazily).
"""
__version__ = "0.1.0"

import os as _os

from acqe_format.jit_cache import ensure_numba_cache

ensure_numba_cache(_os.path.dirname(__file__))      # before any kernel is defined (cache=True needs a folder)
