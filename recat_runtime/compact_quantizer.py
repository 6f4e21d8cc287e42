"""Compact weights in diffusers' quantizer terms: `AcqeQuantizationConfig` and `AcqeQuantizer`.

As diffusers describes a pre-quantized GGUF load with ``GGUFQuantizationConfig`` and ``GGUFQuantizer``, a
model whose codebook-coded weights stay compact (`recat_runtime.compact`) carries an `AcqeQuantizer` as
``model.hf_quantizer``. diffusers consults it where a quantized model differs from a dense one:

- ``save_pretrained`` asks it for the state dict to write: the rebuilt *dense* weights, so the folder is an
  ordinary diffusers model (``from_pretrained`` loads it with no `.acqe` code) — never the 403-of-684
  tensors a plain ``state_dict()`` of hook-based compact layers used to give;
- ``model.dequantize()`` turns every compact weight into a dense parameter for good.

Unlike GGUF models, a compact model is not marked ``is_quantized``: its weights move and cast like
ordinary ones (``.to(torch.float16)`` re-types the rebuild; the codebook is never rounded).
This module has no side effects; ``import recat_runtime.diffusers_integration`` registers the pair
with diffusers' quantizer tables.
"""
from __future__ import annotations

import enum

import torch
from diffusers.quantizers.base import DiffusersQuantizer
from diffusers.quantizers.quantization_config import QuantizationConfigMixin

from recat_runtime.compact import CompactTensor, compact_layers
from recat_runtime.errors import CompactWeightError

__all__ = ["AcqeQuantizationConfig", "AcqeQuantizer", "ACQE_METHOD", "attach_quantizer"]


class _Method(str, enum.Enum):
    # diffusers reads `quant_method.value` (an enum member, like its QuantizationMethod) and compares it
    # with strings; a str-valued enum is both
    ACQE = "acqe"


ACQE_METHOD = _Method.ACQE


class AcqeQuantizationConfig(QuantizationConfigMixin):
    """Load a `.acqe` file's codebook-coded layer weights compact: uint8 codes + codebook (+ row scales) on
    the device, rebuilt bit-exactly when a layer runs (about 1 byte per weight instead of 2 for fp16).

    Args:
        compute_dtype: the dtype weights are rebuilt to and the model computes in (default: the
            ``torch_dtype`` of the load, else float32). Must agree with ``torch_dtype`` when both are given.
    """

    def __init__(self, compute_dtype: torch.dtype | None = None):
        self.quant_method = ACQE_METHOD
        self.compute_dtype = compute_dtype
        self.pre_quantized = True
        self.modules_to_not_convert = None


class AcqeQuantizer(DiffusersQuantizer):
    """What diffusers asks a quantized model's quantizer, answered for compact `.acqe` weights."""

    requires_calibration = True         # weights come compact from a `.acqe` file, never quantized here
    use_keep_in_fp32_modules = False

    def validate_environment(self, *args, **kwargs):
        return None

    def update_torch_dtype(self, torch_dtype: torch.dtype | None) -> torch.dtype:
        want = self.quantization_config.compute_dtype
        if want is not None and torch_dtype is not None and want != torch_dtype:
            raise CompactWeightError(f"the compute dtype {want} of the quantization config contradicts torch_dtype "
                                     f"{torch_dtype}; give one of them")
        return want or torch_dtype or torch.float32

    def _process_model_before_weight_loading(self, model, **kwargs):
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        return model

    @property
    def is_serializable(self) -> bool:
        return True                      # as dense weights: see get_state_dict_and_metadata

    @property
    def is_trainable(self) -> bool:
        return False

    @property
    def is_compileable(self) -> bool:
        return True

    def get_state_dict_and_metadata(self, state_dict, safe_serialization=False):
        """What ``save_pretrained`` writes: every compact weight rebuilt dense (exactly the dense load's)."""
        return {k: v.dequantize() if isinstance(v, CompactTensor) else v for k, v in state_dict.items()}, {}

    def _dequantize(self, model):
        for _, module in compact_layers(model):
            module.weight = torch.nn.Parameter(module.weight.dequantize(), requires_grad=False)
        return model


def attach_quantizer(model, dtype: torch.dtype | None = None):
    """Marks a diffusers model that holds compact weights the way diffusers marks a quantized load."""
    model.hf_quantizer = AcqeQuantizer(AcqeQuantizationConfig(compute_dtype=dtype))
    return model
