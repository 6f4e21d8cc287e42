"""`.acqe` -> GGUF in the layout stable-diffusion.cpp loads for Stable Diffusion v1, streamed, written atomically.

What stable-diffusion.cpp needs (read from its model loader, `src/model.cpp`):

- one file with every component under its **LDM names** (``model.diffusion_model.*``,
  ``first_stage_model.*``, ``cond_stage_model.transformer.text_model.*``); the version is recognised from
  the names and shapes (SD v1: ``...token_embedding.weight`` 768 wide, ``middle_block.1`` present). A
  file in diffusers naming is mapped with `acqe_format.model.sd_v1.ldm_names`; no GGUF metadata key is
  required (we write ``general.*`` and ``acqe.*`` keys for people and tools);
- any tensor type it can convert: it creates convolution kernels as F16 and norms/biases as F32 and
  converts on load, so what matters is size and fidelity.

Which tensors get the requested type follows stable-diffusion.cpp's own converter
(``tensor_should_be_converted``): not biases, not ``time_embed.``/``label_emb.`` layers, not
embeddings, and for block types (Q8_0/Q5_0/Q4_0, blocks of 32 along the last dimension) only rows that
split into whole blocks. Unlike it, 1-D tensors (norms) always stay F32 (exact, a few kB), and under a
block type a kernel that cannot be blocked (3x3 convolutions) is stored F16, the type
stable-diffusion.cpp computes it in, instead of its source type. Everything kept is exact.

Values: F16/BF16 round the decoded float32 to nearest even (`AcqeReader.read(dtype=...)`, the same bits
as torch's ``.to``); block types quantize the decoded float32 with gguf-py's reference quantizers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import gguf
import numpy as np

from acqe_format import AcqeReader
from acqe_format.atomic import atomic_write
from acqe_format.model import ModelInfo, Naming
from acqe_format.model import architectures, sd_v1
from acqe_export.errors import ExportError

__all__ = ["GGUF_TYPES", "export_gguf", "gguf_plan", "read_gguf", "GgufReport"]

Q = gguf.GGMLQuantizationType
# the --type choices: name -> (the GGML type of converted tensors, GGUF general.file_type)
GGUF_TYPES: dict[str, tuple[Q, gguf.LlamaFileType]] = {
    "f32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "q5_0": (Q.Q5_0, gguf.LlamaFileType.MOSTLY_Q5_0),
    "q4_0": (Q.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
}
ARCHITECTURE = "sd1"          # general.architecture of SD v1 GGUF files in the community tools (ComfyUI-GGUF)
# general.architecture by model family, as ComfyUI-GGUF names them; other families are refused rather
# than labelled as SD v1
GGUF_ARCHITECTURES = {"sd-v1": ARCHITECTURE, "sdxl": "sdxl"}
# stable-diffusion.cpp never converts these (its converter's rules for SD v1 names)
_NEVER_CONVERTED_SUFFIXES = (".bias", ".scale")
_NEVER_CONVERTED_PARTS = ("time_embed.", "label_emb.", "embedding")
_INT_TYPES = {"int8": (Q.I8, np.int8), "int16": (Q.I16, np.int16), "int32": (Q.I32, np.int32),
              "int64": (Q.I64, np.int64), "bool": (Q.I8, np.int8), "uint8": (Q.I16, np.int16),
              "uint16": (Q.I32, np.int32), "uint32": (Q.I64, np.int64)}
_BLOCKED = {Q.Q8_0, Q.Q5_0, Q.Q4_0}       # block types: written as uint8 blocks of 32 values
_NUMPY = {Q.F32: np.float32, Q.F16: np.float16, Q.BF16: np.uint16, Q.F64: np.float64, Q.I8: np.int8,
          Q.I16: np.int16, Q.I32: np.int32, Q.I64: np.int64}


@dataclass(frozen=True)
class PlannedTensor:
    source: str                   # the name in the .acqe file
    name: str                     # the LDM name written
    shape: tuple[int, ...]        # the LDM shape (PyTorch order)
    decoded: str                  # the .acqe decoded dtype
    gtype: Q                      # the GGML type it is stored in

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.gtype]
        return int(np.prod(self.shape, dtype=np.int64)) // block * size


@dataclass
class GgufReport:
    out: str
    type: str
    tensors: int
    file_bytes: int
    types: dict[str, int] = field(default_factory=dict)    # GGML type name -> tensor count


def _kept_by_name(name: str) -> bool:
    return name.endswith(_NEVER_CONVERTED_SUFFIXES) or any(p in name for p in _NEVER_CONVERTED_PARTS)


def _converted(name: str, shape: tuple[int, ...], want: Q) -> bool:
    if len(shape) < 2 or _kept_by_name(name):
        return False
    block, _ = gguf.GGML_QUANT_SIZES[want]
    return shape[-1] % block == 0


def tensor_type(name: str, shape: tuple[int, ...], decoded: str, want: Q) -> Q:
    """The GGML type tensor ``name`` is stored in when ``want`` is asked for (see the module docstring)."""
    if decoded in _INT_TYPES:
        return _INT_TYPES[decoded][0]
    if decoded not in ("float32", "float16", "bfloat16", "float64"):
        raise ExportError(f"tensor {name!r}: dtype {decoded} has no GGUF type")
    if _converted(name, shape, want):
        return want
    if decoded == "float64":
        return Q.F64
    if want in _BLOCKED and len(shape) >= 2 and not _kept_by_name(name):
        return Q.F16               # a kernel that cannot be blocked: the type stable-diffusion.cpp computes it in
    return Q.F32


def _byte_shape(p: PlannedTensor) -> tuple[int, ...]:
    block, size = gguf.GGML_QUANT_SIZES[p.gtype]
    return (*p.shape[:-1], p.shape[-1] // block * size)


def _ldm_names(reader: AcqeReader, info: ModelInfo) -> dict[str, tuple[str, tuple[int, ...]]]:
    """source name -> (LDM name, LDM shape) for every tensor."""
    if info.naming == Naming.LDM:
        return {t.name: (t.name, tuple(t.shape)) for t in reader.tensors}
    if info.naming != Naming.DIFFUSERS:
        raise ExportError(f"GGUF export writes Stable Diffusion LDM names; this file's naming is {info.naming!r} "
                          "(not a Stable Diffusion model with LDM or diffusers names)")
    prefixes = {c: info.prefix(c) for c in ("unet", "vae", "text_encoder")}
    per: dict[str, dict[str, tuple]] = {c: {} for c in prefixes}
    rest = []
    for t in reader.tensors:
        comp = next((c for c, p in prefixes.items() if t.name.startswith(p)), None)
        if comp is None:
            rest.append(t.name)
        else:
            per[comp][t.name[len(prefixes[comp]):]] = tuple(t.shape)
    if rest:
        raise ExportError(f"{len(rest)} tensors belong to no Stable Diffusion component, e.g. {rest[0]!r}")
    try:
        mapped = sd_v1.ldm_names(per)
    except sd_v1.LayoutMappingError as exc:
        raise ExportError(f"the diffusers names do not map to SD v1 LDM names: {exc}") from None
    return {prefixes[comp] + key: (ldm, shape) for ldm, (comp, key, shape) in mapped.items()}


def gguf_plan(reader: AcqeReader, type_name: str) -> list[PlannedTensor]:
    """What `export_gguf` writes: every tensor, in file order, with its LDM name and GGML type."""
    if type_name not in GGUF_TYPES:
        raise ExportError(f"unknown GGUF type {type_name!r}; choose from {', '.join(GGUF_TYPES)}")
    want = GGUF_TYPES[type_name][0]
    info = ModelInfo.from_metadata(reader.metadata)
    names = _ldm_names(reader, info)
    plan = []
    for t in reader.tensors:
        name, shape = names[t.name]
        plan.append(PlannedTensor(t.name, name, shape, t.decoded_dtype, tensor_type(name, shape, t.decoded_dtype, want)))
    return plan


def _values(reader: AcqeReader, p: PlannedTensor, threads) -> np.ndarray:
    """The array gguf-py writes for one tensor (quantized blocks as uint8, BF16 as uint16 bits)."""
    if p.decoded in _INT_TYPES:
        return np.ascontiguousarray(reader.read(p.source, threads=threads).astype(_INT_TYPES[p.decoded][1]))
    if p.gtype in (Q.F32, Q.F16, Q.BF16):
        want = {Q.F32: "float32", Q.F16: "float16", Q.BF16: "bfloat16"}[p.gtype]
        return np.ascontiguousarray(reader.read(p.source, threads=threads, dtype=want)).reshape(p.shape)
    if p.gtype == Q.F64:
        return np.ascontiguousarray(reader.read(p.source, threads=threads)).reshape(p.shape)
    f32 = reader.read(p.source, threads=threads, dtype="float32").reshape(p.shape)
    return gguf.quants.quantize(f32, p.gtype)


class _IntoFile(gguf.GGUFWriter):
    """gguf-py's writer, streaming into a file object we opened (`atomic_write`) instead of a path it opens."""

    def __init__(self, fileobj, arch: str):
        super().__init__(path=None, arch=arch)
        self._fileobj = fileobj

    def open_output_file(self, path=None) -> None:
        if self.state is gguf.WriterState.NO_FILE:
            self.fout = [self._fileobj]
            self.state = gguf.WriterState.EMPTY


def export_gguf(src: str, out: str, type: str = "f16", threads: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> GgufReport:
    """Write every tensor of the `.acqe` file ``src`` to the GGUF file ``out`` (see the module docstring).

    Args:
        type: ``f32``, ``f16``, ``bf16``, ``q8_0``, ``q5_0`` or ``q4_0``: the type of the converted tensors.
        progress: called as ``progress(values_done, values_total)`` after each tensor.

    Raises:
        ExportError: unknown type, a naming that is not SD LDM/diffusers, a tensor with no GGUF type.
    """
    with AcqeReader(src) as r:
        plan = gguf_plan(r, type)
        info = ModelInfo.from_metadata(r.metadata)
        family = architectures.for_file(info).family
        if family not in GGUF_ARCHITECTURES:
            raise ExportError(f"GGUF export labels SD v1 ('sd1') and SDXL ('sdxl') models; this file holds "
                              f"{info.architecture} (family {family})")
        total = sum(int(np.prod(p.shape, dtype=np.int64)) for p in plan)
        with atomic_write(out) as f:
            w = _IntoFile(f, GGUF_ARCHITECTURES[family])
            w.add_name(os.path.splitext(os.path.basename(src))[0])
            w.add_file_type(int(GGUF_TYPES[type][1]))
            if gguf.GGML_QUANT_SIZES[GGUF_TYPES[type][0]][0] > 1:
                w.add_quantization_version(gguf.GGML_QUANT_VERSION)
            w.add_string("acqe.architecture", info.architecture)
            w.add_string("acqe.source.naming", info.naming)
            w.add_string("acqe.source.file", os.path.basename(src))
            for p in plan:
                w.add_tensor_info(p.name, p.shape if p.gtype not in _BLOCKED else _byte_shape(p),
                                  np.uint8 if p.gtype in _BLOCKED else _NUMPY[p.gtype], p.nbytes,
                                  raw_dtype=p.gtype)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            done = 0
            for p in plan:
                arr = _values(r, p, threads)
                if arr.nbytes != p.nbytes:
                    raise ExportError(f"tensor {p.source!r}: {arr.nbytes} bytes encoded, {p.nbytes} planned")
                w.write_tensor_data(arr)
                done += int(np.prod(p.shape, dtype=np.int64))
                if progress is not None:
                    progress(done, total)
    types: dict[str, int] = {}
    for p in plan:
        types[p.gtype.name] = types.get(p.gtype.name, 0) + 1
    return GgufReport(out, type, len(plan), os.path.getsize(out), types)


def read_gguf(path: str):
    """(name, GGML type, values) for every tensor of a GGUF file, in file order: block types dequantized to
    float32 by gguf-py, BF16 as float32, everything in PyTorch dimension order (for checking a file)."""
    reader = gguf.GGUFReader(path)
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        qtype = Q(t.tensor_type)
        if qtype == Q.BF16:
            values = (np.asarray(t.data).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif qtype in _BLOCKED:
            values = gguf.quants.dequantize(np.asarray(t.data), qtype)
        else:
            values = np.asarray(t.data)
        yield t.name, qtype, values.reshape(shape)
