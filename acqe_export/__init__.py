"""`.acqe` -> other formats, for runtimes that do not read `.acqe` yet.

- :func:`export_safetensors`: every decoded tensor under its stored (source) name, optionally cast to
  fp16/bf16/fp32; any runtime that reads the original checkpoint layout can load it.
- :func:`export_gguf`: every tensor under its Stable Diffusion LDM name in GGUF, as F32/F16/BF16 or the
  block types Q8_0/Q5_0/Q4_0, in the layout stable-diffusion.cpp loads.

Reads with `acqe_format` alone (numpy; GGUF through gguf-py); writes atomically (`acqe_format.atomic`).
"""
from acqe_export.errors import ExportError
from acqe_export.gguf import GGUF_TYPES, export_gguf
from acqe_export.safetensors import export_safetensors

__all__ = ["export_safetensors", "export_gguf", "GGUF_TYPES", "ExportError"]
