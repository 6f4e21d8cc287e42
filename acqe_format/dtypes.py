"""The one dtype vocabulary of the project: names, aliases, float sets, byte sizes and the float roundings.

Every package speaks these names ("float32", "float16", "bfloat16", "float64", "int64", ...): the
directory's dtype codes map to them (`acqe_format.constants.DTYPE_INFO`), the reader returns arrays of
them, the CLI's ``--dtype fp16`` and the runtime's ``torch.float16`` meet here through
:func:`canonical`. numpy has no bfloat16, so bf16 values travel as their uint16 bit patterns.

Example:
    >>> canonical("fp16"), canonical("bfloat16"), is_float("bf16"), itemsize("bf16")
    ('float16', 'bfloat16', True, 2)
    >>> bf16_bits_from_f32(np.array([1.0, 1.00390625], np.float32)).tolist()   # ties to even
    [16256, 16256]
"""
from __future__ import annotations

import numpy as np

from acqe_format import constants as C

# Canonical names: the ones the directory's dtype codes map to (spec §7).
NAMES: tuple[str, ...] = tuple(info[0] for info in C.DTYPE_INFO.values())
FLOATS = frozenset(C.DTYPE_INFO[code][0] for code in C.FLOAT_DTYPES)
# What a float tensor can be converted to on read (`AcqeReader.read(dtype=...)`): the three dtypes
# models run in. float64 is a storage type only.
CAST_TARGETS: tuple[str, ...] = ("float32", "float16", "bfloat16")

# Short spellings users type (CLI options, `generate(dtype="fp16")`), and torch's own names.
ALIASES: dict[str, str] = {
    "fp32": "float32", "f32": "float32", "float": "float32",
    "fp16": "float16", "f16": "float16", "half": "float16",
    "bf16": "bfloat16",
    "fp64": "float64", "f64": "float64", "double": "float64",
}
# The spellings the command line offers for the runtime's compute dtype and for export, shortest first.
CLI_FLOAT_CHOICES: tuple[str, ...] = ("fp32", "fp16", "bf16")


def canonical(name) -> str:
    """The canonical name of a dtype given as a name, an alias ("fp16"), a torch dtype
    (``torch.float16`` -> "float16") or a numpy dtype. Raises ``ValueError`` for anything else."""
    text = str(name)
    if text.startswith("torch."):                       # torch dtypes print as "torch.float16"
        text = text[len("torch."):]
    text = ALIASES.get(text, text)
    if text in NAMES:
        return text
    if not isinstance(name, str):
        try:
            dt = np.dtype(name)
        except TypeError:
            dt = None
        if dt is not None and dt.name in NAMES:
            return dt.name
    raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(NAMES)} "
                     f"(or {', '.join(CLI_FLOAT_CHOICES)})")


def cast_target(name) -> str:
    """:func:`canonical`, restricted to :data:`CAST_TARGETS` (the dtypes a float tensor may be read as)."""
    dt = canonical(name)
    if dt not in CAST_TARGETS:
        raise ValueError(f"dtype must be one of {', '.join(CAST_TARGETS)} (or {', '.join(CLI_FLOAT_CHOICES)}), "
                         f"not {name!r}")
    return dt


def is_float(name) -> bool:
    return canonical(name) in FLOATS


def itemsize(name) -> int:
    """Bytes per element of a canonical dtype name (or alias)."""
    return C.DTYPE_INFO[C.DTYPE_BY_NAME[canonical(name)]][1]


def storage_dtype(name) -> np.dtype:
    """The numpy dtype of a tensor's little-endian stored elements (uint16 for bfloat16, uint8 for bool)."""
    return C.DTYPE_INFO[C.DTYPE_BY_NAME[canonical(name)]][2]


def array_dtype(name) -> np.dtype:
    """The numpy dtype (native byte order) of the arrays the reader returns for this dtype."""
    if canonical(name) == "bool":
        return np.dtype(np.bool_)
    return storage_dtype(name).newbyteorder("=")


# --- float roundings (IEEE 754 round to nearest, ties to even; what every decoder computes) -------

def bf16_bits_from_f32(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, round to nearest even; NaN stays a (quiet) NaN."""
    u = np.ascontiguousarray(a, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        rounded[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def f32_from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns -> float32 values (exact)."""
    return (np.asarray(bits).astype(np.uint32) << 16).view(np.float32)


def round_f32(values_f32: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values converted to ``dtype`` ("float32", "float16", "bfloat16" as uint16 bits,
    "float64"): the last step of every codebook decode and of every ``read(dtype=...)``."""
    if dtype == "float32":
        return values_f32
    if dtype == "float16":
        return values_f32.astype(np.float16)
    if dtype == "float64":
        return values_f32.astype(np.float64)
    if dtype == "bfloat16":
        return bf16_bits_from_f32(values_f32)
    raise ValueError(f"cannot round float32 values to {dtype!r}")


def cast_float(a: np.ndarray, have: str, want: str) -> np.ndarray:
    """Decoded float values of dtype ``have`` (bf16 as uint16 bits) rounded to ``want`` exactly as
    ``torch.Tensor.to(want)`` would: to nearest, ties to even; float64 goes through float32 first, as
    torch's conversion to float16/bfloat16 does. ``have == want`` returns ``a`` itself."""
    if have == want:
        return a
    f = f32_from_bf16_bits(a) if have == "bfloat16" else a
    with np.errstate(over="ignore"):   # overflow to +-inf is the rounding rule, not an error
        # (np.ascontiguousarray makes a rank-0 array 1-d: keep the tensor's shape)
        return round_f32(np.ascontiguousarray(f, dtype=np.float32), want).reshape(np.shape(a))


__all__ = ["NAMES", "FLOATS", "CAST_TARGETS", "ALIASES", "CLI_FLOAT_CHOICES", "canonical", "cast_target",
           "is_float", "itemsize", "storage_dtype", "array_dtype", "bf16_bits_from_f32", "f32_from_bf16_bits",
           "round_f32", "cast_float"]
