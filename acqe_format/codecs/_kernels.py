"""numba kernels of the codebook codecs: index unpacking and the reconstruction formula, fused with the
conversion to the decoded dtype. Each has a numpy twin in `codebook.py` that the tests compare bit for
bit; the kernels release the GIL so ranges of one tensor can decode on several threads.
"""
from __future__ import annotations

import os

import numpy as np
from acqe_format.jit_cache import ensure_numba_cache

ensure_numba_cache(os.path.dirname(os.path.abspath(__file__)))  # before any kernel is defined: numba caches beside this module

from numba import njit  # noqa: E402

_JIT = dict(nogil=True, cache=True, error_model="numpy", boundscheck=False)

MODE_F32, MODE_F64, MODE_F16, MODE_BF16 = 0, 1, 2, 3


@njit(**_JIT)
def f32_bits_to_f16_bits(u):
    """binary32 bits -> binary16 bits, round to nearest, ties to even (IEEE 754 convertFormat)."""
    sign = (u >> np.uint32(16)) & np.uint32(0x8000)
    a = u & np.uint32(0x7FFFFFFF)
    if a >= np.uint32(0x7F800000):                       # inf / nan
        if a > np.uint32(0x7F800000):
            return np.uint16(sign | np.uint32(0x7E00) | ((a >> np.uint32(13)) & np.uint32(0x3FF)))
        return np.uint16(sign | np.uint32(0x7C00))
    if a >= np.uint32(0x477FF000):                       # >= 65520: rounds to infinity
        return np.uint16(sign | np.uint32(0x7C00))
    if a >= np.uint32(0x38800000):                       # >= 2^-14: a normal half
        a = a - np.uint32(0x38000000)                    # rebias the exponent by 127 - 15
        r = (a + np.uint32(0x0FFF) + ((a >> np.uint32(13)) & np.uint32(1))) >> np.uint32(13)
        return np.uint16(sign | r)
    if a < np.uint32(0x33000000):                        # < 2^-25: rounds to zero
        return np.uint16(sign)
    e = a >> np.uint32(23)                               # 102 .. 112: a subnormal half (or 2^-14)
    m = (a & np.uint32(0x7FFFFF)) | np.uint32(0x800000)
    s = np.uint32(126) - e                               # value / 2^-24 = m >> s
    q = m >> s
    rem = m & ((np.uint32(1) << s) - np.uint32(1))
    half = np.uint32(1) << (s - np.uint32(1))
    if rem > half or (rem == half and (q & np.uint32(1)) == np.uint32(1)):
        q += np.uint32(1)
    return np.uint16(sign | q)


@njit(**_JIT)
def f32_bits_to_bf16_bits(b):
    return np.uint16((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))


@njit(**_JIT)
def reconstruct_range(idx, cb, scales, row_length, e0, e1, mode, out32, out64, out16):
    """Elements [e0, e1) of the reconstruction; `scales` empty = no scales. Writes out32 (f32),
    out64 (f64) or out16 (u16 bits of f16/bf16) according to `mode`."""
    has_scales = scales.shape[0] > 0
    K = cb.shape[0]
    if row_length >= 4 * K and e1 > e0:
        _reconstruct_by_row_tables(idx, cb, scales, row_length, e0, e1, mode, out32, out64, out16)
        return
    block = 4096
    tmp = np.empty(block, dtype=np.float32)
    tmpu = tmp.view(np.uint32)
    r = e0 // row_length
    j = e0 - r * row_length
    s = np.float32(1.0)
    if has_scales and e1 > e0:
        s = scales[r]
    for b0 in range(e0, e1, block):
        b1 = min(e1, b0 + block)
        for e in range(b0, b1):
            v = cb[idx[e]]
            if has_scales:
                v = v * s                               # one binary32 multiply (float32 * float32)
            tmp[e - b0] = v
            j += 1
            if j == row_length:
                j = 0
                r += 1
                if has_scales and r < scales.shape[0]:
                    s = scales[r]
        n = b1 - b0
        if mode == MODE_F32:
            for k in range(n):
                out32[b0 + k] = tmp[k]
        elif mode == MODE_F64:
            for k in range(n):
                out64[b0 + k] = np.float64(tmp[k])
        elif mode == MODE_F16:
            for k in range(n):
                out16[b0 + k] = f32_bits_to_f16_bits(tmpu[k])
        else:
            for k in range(n):
                out16[b0 + k] = f32_bits_to_bf16_bits(tmpu[k])


@njit(**_JIT)
def _reconstruct_by_row_tables(idx, cb, scales, row_length, e0, e1, mode, out32, out64, out16):
    """Same values as the element loop: per row, the K possible outputs are computed once with the
    identical formula (one f32 multiply, then the conversion), then every element is a lookup."""
    K = cb.shape[0]
    has_scales = scales.shape[0] > 0
    t32 = np.empty(K, dtype=np.float32)
    tu = t32.view(np.uint32)
    t64 = np.empty(K, dtype=np.float64)
    t16 = np.empty(K, dtype=np.uint16)
    r0 = e0 // row_length
    r1 = (e1 - 1) // row_length
    for r in range(r0, r1 + 1):
        if has_scales or r == r0:
            s = scales[r] if has_scales else np.float32(1.0)
            for k in range(K):
                t32[k] = cb[k] * s if has_scales else cb[k]
            if mode == MODE_F64:
                for k in range(K):
                    t64[k] = np.float64(t32[k])
            elif mode == MODE_F16:
                for k in range(K):
                    t16[k] = f32_bits_to_f16_bits(tu[k])
            elif mode == MODE_BF16:
                for k in range(K):
                    t16[k] = f32_bits_to_bf16_bits(tu[k])
        a = max(e0, r * row_length)
        b = min(e1, (r + 1) * row_length)
        if mode == MODE_F32:
            for e in range(a, b):
                out32[e] = t32[idx[e]]
        elif mode == MODE_F64:
            for e in range(a, b):
                out64[e] = t64[idx[e]]
        else:
            for e in range(a, b):
                out16[e] = t16[idx[e]]


@njit(**_JIT)
def unpack_range(data, bits, i0, i1, out):
    """Indices [i0, i1) of an LSB-first packed stream into out (uint16); returns their maximum."""
    mask = (np.uint32(1) << np.uint32(bits)) - np.uint32(1)
    best = np.uint32(0)
    pos = np.int64(i0) * bits
    byte = pos >> 3
    acc = np.uint32(0)
    have = 0
    skip = pos & 7
    if i1 > i0:
        acc = np.uint32(data[byte]) >> np.uint32(skip)
        have = 8 - skip
        byte += 1
    for i in range(i0, i1):
        while have < bits:
            acc |= np.uint32(data[byte]) << np.uint32(have)
            have += 8
            byte += 1
        v = acc & mask
        out[i] = v
        if v > best:
            best = v
        acc >>= np.uint32(bits)
        have -= bits
    return best
