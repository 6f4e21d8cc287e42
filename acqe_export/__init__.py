"""`.acqe` -> other formats, for runtimes that do not read `.acqe` yet.

- :func:`export_safetensors`: every decoded tensor under its stored (source) name, optionally cast to
  fp16/bf16/fp32; any runtime that reads the original checkpoint layout can load it.

Reads with `acqe_format` alone (numpy); writes atomically (`acqe_format.atomic`).
"""
from acqe_export.safetensors import export_safetensors

__all__ = ["export_safetensors"]
