"""ACQ-E encoder: checkpoint sources, histogram-guided clustering, rate allocation.

Needs no torch: `.ckpt` files are read by a restricted unpickler of its own (`sources/`). Only the
optional calibration (`--calibrate`) imports torch and diffusers, lazily.
"""
__version__ = "0.1.0"
