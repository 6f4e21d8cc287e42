"""The Triton kernel behind `recat_runtime.rebuild.rebuild_triton` (imported only when it runs).

Kept apart so that importing the runtime never imports Triton. Triton's interpreter
(``TRITON_INTERPRET=1``) runs it on CPU tensors, which is how the CPU tests check it bit for bit.
"""
import triton
import triton.language as tl


@triton.jit
def bf16_rtne_bits(v):
    # float32 -> the bits of the nearest bfloat16 (ties to even) in the high half of a uint32, by integer
    # arithmetic: the same on every device and in Triton's interpreter (whose float casts to bfloat16
    # truncate and flush subnormals)
    bits = v.to(tl.uint32, bitcast=True)
    return (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000


@triton.jit
def rebuild_kernel(codes_ptr, codebook_ptr, scales_ptr, out_ptr, n, row_length,
                   HAS_SCALES: tl.constexpr, DECODED: tl.constexpr, OUT_BF16: tl.constexpr, BLOCK: tl.constexpr):
    # one program rebuilds BLOCK consecutive weights: code -> codebook entry (* row scale) -> roundings.
    # With OUT_BF16, out_ptr is the int16 view of the bfloat16 output and the bits are stored as they are.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    code = tl.load(codes_ptr + offs, mask=mask, other=0).to(tl.int32)
    v = tl.load(codebook_ptr + code, mask=mask, other=0.0)
    if HAS_SCALES:
        v = v * tl.load(scales_ptr + offs // row_length, mask=mask, other=0.0)
    if DECODED == 1:          # the file's decoded dtype rounds first (to nearest, ties to even)
        v = v.to(tl.float16).to(tl.float32)
    elif DECODED == 2:
        v = bf16_rtne_bits(v).to(tl.float32, bitcast=True)
    if OUT_BF16:
        tl.store(out_ptr + offs, (bf16_rtne_bits(v) >> 16).to(tl.int16), mask=mask)
    else:
        tl.store(out_ptr + offs, v.to(out_ptr.dtype.element_ty), mask=mask)
