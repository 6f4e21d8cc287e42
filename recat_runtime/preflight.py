"""Before a component's tensors are decoded: does the file hold exactly what the model built from its
config needs? Names, shapes and dtypes are compared on ``meta`` placeholders (no memory), through the
same key conversion the real tensors will go through, so a tensor the model does not use (once a
2^28-element tensor under the UNet's prefix was decoded, 1.8 GB, and then dropped), a missing or
misshapen one, or an integer tensor in a float parameter's place is one line before any decoding.
"""
from __future__ import annotations

import torch

from acqe_format import dtypes
from recat_runtime.errors import RuntimeLoadError

__all__ = ["placeholders", "align_keys", "check_fit", "CONVERSION_ERRORS"]

# what a key converter raises on a state dict that is not the layout it expects
CONVERSION_ERRORS = (KeyError, IndexError, ValueError, TypeError, RuntimeError, AttributeError, AssertionError)

# stored integer buffers a model may leave out (old checkpoints carry CLIP's position_ids)
OPTIONAL_SUFFIXES = ("position_ids",)


def placeholders(infos: dict) -> dict[str, torch.Tensor]:
    """A ``meta`` tensor of each stored tensor's shape and decoded dtype (``infos``: key -> TensorInfo)."""
    out = {}
    for key, info in infos.items():
        dt = getattr(torch, dtypes.canonical(info.decoded_dtype))
        out[key] = torch.empty(tuple(info.shape), dtype=dt, device="meta")
    return out


def _root(t: torch.Tensor) -> torch.Tensor:
    while getattr(t, "_base", None) is not None:
        t = t._base
    return t


def align_keys(state: dict, expected) -> dict:
    """``state`` with the spellings a model may not share moved to its own: transformers >= 5 drops the
    ``text_model.`` level of CLIPTextModel keys (LDM keeps it); optional integer buffers the model does
    not hold (old checkpoints' ``position_ids``) are dropped."""
    state = dict(state)
    for k in [k for k in state if k not in expected and k.startswith("text_model.")]:
        if k[len("text_model."):] in expected:
            state[k[len("text_model."):]] = state.pop(k)
    for k in [k for k in state if k not in expected and k.endswith(OPTIONAL_SUFFIXES)]:
        del state[k]
    return state


def check_fit(what: str, model, stored: dict[str, torch.Tensor], converted: dict[str, torch.Tensor],
              ignore=frozenset()) -> set[str]:
    """Check ``converted`` (the placeholders after the key conversion) against ``model``'s own state dict.

    Returns the stored keys the model uses (those to decode). Raises RuntimeLoadError for a stored tensor
    the model does not use, a missing or misshapen one, or an integer/bool tensor where the model has a
    float (or the reverse). ``ignore``: expected keys that are filled otherwise (compact weights)."""
    expected = model.state_dict()
    state = align_keys(converted, expected)
    missing = sorted(set(expected) - set(state) - set(ignore))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise RuntimeLoadError(f"{what}: stored tensors do not match the stored config ({len(missing)} missing, "
                               f"e.g. {missing[:3]}; {len(extra)} unexpected, e.g. {extra[:3]})")
    for k, v in state.items():
        want = expected[k]
        if tuple(v.shape) != tuple(want.shape):
            raise RuntimeLoadError(f"{what}: {k} has shape {tuple(v.shape)}, config implies {tuple(want.shape)}")
        if v.is_floating_point() != want.is_floating_point():
            raise RuntimeLoadError(f"{what}: {k} is stored as {str(v.dtype).replace('torch.', '')}, the model "
                                   f"needs {'a float' if want.is_floating_point() else str(want.dtype).replace('torch.', '')}")
    used_ids = {id(_root(v)) for v in state.values()}
    # keys a converter read and copied (OpenCLIP's fused q/k/v): used although no output shares their storage
    read = getattr(converted, "read", frozenset())
    used_ids |= {id(stored[k]) for k in read if k in stored}
    unused = sorted(k for k, v in stored.items() if id(v) not in used_ids and not k.endswith(OPTIONAL_SUFFIXES))
    if unused:
        raise RuntimeLoadError(f"{what}: {len(unused)} stored tensor(s) that the model does not use, e.g. "
                               f"{unused[:3]} (refused before decoding)")
    return {k for k, v in stored.items() if id(v) in used_ids}
