"""ACQ-E encoder: checkpoint sources, SD layouts + configs, histogram-guided clustering, rate allocation.

Never imports torch at module level (only `sources/` and calibration do, lazily).
"""
__version__ = "0.1.0"
