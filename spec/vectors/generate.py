"""Regenerate the ACQE v1 conformance vectors (deterministic: same bytes on every run and machine).

    python spec/vectors/generate.py [OUT_DIR]        # default: the folder of this script

Writes `valid/NNN-name.acqe` + `valid/NNN-name.json` (SHA-256 of each decoded tensor's little-endian
bytes, BF16 as its uint16 bit patterns; SHA-256 of each asset) and `invalid/NNN-name.acqe` +
`invalid/MANIFEST.json` (the error class each file must produce and a fragment of its message).

Valid files come from `acqe_format.AcqeWriter`. Invalid files, and valid files the writer cannot
produce (an unknown optional section, a future minor version), come from `Builder` below: a second,
independent implementation of the layout in spec/ACQE.md that seals whatever it is told to write with
correct checksums, so each invalid file breaks exactly one rule. Test data comes from splitmix64, not
numpy's generators, so it never changes with the numpy version.

Vectors 001-023 (valid) and 001-100 (invalid) are format 1.0; the vectors after them exercise 1.1's
compressed sections (spec §4.1), then (valid 026, invalid 117-131) the rules of the hardened 1.1 text:
64-bit wrap-around, expansion, tensor and asset names. Those hold zlib level-9 streams, so they are reproduced byte for byte
with the same zlib library version (zlib.ZLIB_RUNTIME_VERSION); a reader must accept them whatever made them.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import struct
import sys
import zlib
from dataclasses import dataclass, field

import numpy as np

from acqe_format import AcqeReader, AcqeWriter, CodebookTensor
from acqe_format.codecs.codebook import packed_payload, rans_payload

MAGIC = b"\x89ACQE\r\n\x1a"


def crc(b: bytes) -> int:
    return zlib.crc32(b) & 0xFFFFFFFF


def align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


# --- deterministic test data ---------------------------------------------------------------------

class SplitMix64:
    def __init__(self, seed: int):
        self.s = seed & (2**64 - 1)

    def next(self) -> int:
        self.s = (self.s + 0x9E3779B97F4A7C15) & (2**64 - 1)
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
        return z ^ (z >> 31)

    def uniform(self, n: int) -> np.ndarray:     # float64 in [0, 1), exact from the top 53 bits
        return np.array([(self.next() >> 11) / 2**53 for _ in range(n)])

    def ints(self, n: int, lo: int, hi: int) -> np.ndarray:   # [lo, hi)
        return np.array([lo + self.next() % (hi - lo) for _ in range(n)], dtype=np.int64)

    def normal(self, n: int) -> np.ndarray:      # Irwin-Hall approximation, centred
        u = self.uniform(4 * n).reshape(n, 4).sum(axis=1)
        return (u - 2.0) * np.sqrt(3.0)

    def skewed(self, n: int, k: int) -> np.ndarray:   # geometric-ish indices in [0, k)
        u = self.uniform(n)
        return np.minimum((-np.log1p(-u) * k / 4).astype(np.int64), k - 1)


# --- an independent builder for arbitrary (also broken) files --------------------------------------

@dataclass
class T:
    name: bytes
    shape: list
    sd: int
    dd: int
    codec: int
    payload: bytes
    checked: int | None = None       # None: the whole payload
    offset: int | None = None        # absolute override
    length: int | None = None
    crc: int | None = None
    rank: int | None = None          # override of the rank byte
    r8: int = 0
    r16: int = 0
    pad_after: bytes | None = None   # override of the padding after the payload


def zwrap(raw: bytes) -> bytes:
    """Compressed form of a section (spec §4.1): u64 raw_length, then one zlib stream."""
    return struct.pack("<Q", len(raw)) + zlib.compress(raw, 9)


@dataclass
class S:
    kind: int
    body: bytes | None = None        # None: DIRECTORY / DATA are generated
    flags: int = 1
    offset: int | None = None
    length: int | None = None
    crc: int | None = None
    reserved: int = 0
    pad_before: bytes | None = None
    store: object = None             # raw contents -> stored bytes (e.g. zwrap); None: stored as they are


def zsec(kind: int, body: bytes | None = None, store=zwrap, flags: int = 3) -> S:
    """A compressed DIRECTORY / METADATA section (flags REQUIRED | COMPRESSED)."""
    return S(kind, body, flags=flags, store=store)


@dataclass
class Builder:
    sections: list
    tensors: list = field(default_factory=list)
    alignment: int = 64
    major: int = 1
    minor: int = 0
    header_length: int = 64
    required: int = 0
    optional: int = 0
    section_count: int | None = None
    table_offset: int = 64
    file_length: int | None = None
    header_crc: int | None = None
    table_crc: int | None = None
    footer_magic: bytes = b"ACQE_END"
    footer_length: int | None = None
    sha: bytes | None = None
    trailing: bytes = b""
    dir_count: int | None = None
    dir_extra: bytes = b""

    def _dir(self, data_offset: int, rels) -> bytes:
        out = [struct.pack("<I", len(self.tensors) if self.dir_count is None else self.dir_count)]
        for t, rel in zip(self.tensors, rels):
            length = len(t.payload) if t.length is None else t.length
            checked = len(t.payload) if t.checked is None else t.checked
            pcrc = crc(t.payload[:checked]) if t.crc is None else t.crc
            out.append(struct.pack("<H", len(t.name)) + t.name)
            out.append(struct.pack("<BBBBHH", len(t.shape) if t.rank is None else t.rank, t.sd, t.dd, t.r8,
                                   t.codec, t.r16))
            out.append(struct.pack(f"<{len(t.shape)}Q", *t.shape))
            off = data_offset + rel if t.offset is None else t.offset
            out.append(struct.pack("<QQQI", off, length, checked, pcrc))
        return b"".join(out) + self.dir_extra

    def build(self) -> bytes:
        a = self.alignment if self.alignment & (self.alignment - 1) == 0 and self.alignment else 64
        rels, data, pos = [], bytearray(), 0
        for t in self.tensors:
            start = align(pos, a)
            data += (b"\0" * (start - pos)) if t is self.tensors[0] or prev.pad_after is None else prev.pad_after
            rels.append(start)
            data += t.payload
            pos = start + len(t.payload)
            prev = t
        n = len(self.sections)

        def stored(s, raw: bytes) -> bytes:
            return raw if s.store is None else s.store(raw)

        def bodies_at(data_off: int) -> list:
            return [stored(s, s.body) if s.body is not None else
                    stored(s, self._dir(data_off, rels)) if s.kind == 1 else bytes(data) for s in self.sections]

        def place(bodies) -> list:
            at, placed = self.table_offset + 32 * n, []
            for s, b in zip(self.sections, bodies):
                off = align(at, a) if s.offset is None else s.offset
                placed.append(off)
                at = off + len(b)
            return placed

        # an uncompressed directory's length does not depend on where DATA starts: one round settles it;
        # a compressed one's does, so repeat until DATA's offset is stable
        data_off = 0
        for _round in range(32):
            bodies = bodies_at(data_off)
            placed = place(bodies)
            new_off = next((o for s2, o in zip(self.sections, placed) if s2.kind == 4), 0)
            if new_off == data_off:
                break
            data_off = new_off
        else:
            raise AssertionError("compressed directory layout does not settle")
        table = b"".join(struct.pack("<IIQQII", s.kind, s.flags, off, len(b) if s.length is None else s.length,
                                     (0 if s.kind == 4 else crc(b)) if s.crc is None else s.crc, s.reserved)
                         for s, off, b in zip(self.sections, placed, bodies))
        end = max([self.table_offset + len(table)] + [o + len(b) for o, b in zip(placed, bodies)])
        flen = end + 48 if self.file_length is None else self.file_length
        body = bytearray(end)
        prev_end = self.table_offset + len(table)
        for s, off, b in zip(self.sections, placed, bodies):
            if s.pad_before is not None and off > prev_end:
                body[prev_end:off] = (s.pad_before * (off - prev_end))[:off - prev_end]
            body[off:off + len(b)] = b
            prev_end = max(prev_end, off + len(b))
        body[self.table_offset:self.table_offset + len(table)] = table
        head = struct.pack("<8sHHIQQQIIQI", MAGIC, self.major, self.minor, self.header_length, self.required,
                           self.optional, flen, self.alignment, n if self.section_count is None else self.section_count,
                           self.table_offset, crc(table) if self.table_crc is None else self.table_crc)
        head += struct.pack("<I", crc(head) if self.header_crc is None else self.header_crc)
        body[:64] = head
        sha = hashlib.sha256(bytes(body)).digest() if self.sha is None else self.sha
        footer = struct.pack("<32sQ8s", sha, flen if self.footer_length is None else self.footer_length,
                             self.footer_magic)
        return bytes(body) + footer + self.trailing


def meta_bytes(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def base(tensors, metadata=None, assets=None, **kw) -> Builder:
    secs = [S(1), S(2, meta_bytes(metadata or {}))]
    if assets is not None:
        secs.append(S(3, assets))
    secs.append(S(4))
    return Builder(secs, tensors, **kw)


def raw_t(name: str, arr: np.ndarray, code: int) -> T:
    return T(name.encode(), list(arr.shape), code, code, 1, np.ascontiguousarray(arr).tobytes())


# --- valid vectors -----------------------------------------------------------------------------

def _sha(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big"):
        a = a.byteswap().view(a.dtype.newbyteorder())
    return hashlib.sha256(a.tobytes()).hexdigest()


def valid_cases():
    """(name, description, write(path)) for every valid vector."""
    r = SplitMix64(0xACE)
    f32 = r.normal(15).astype(np.float32).reshape(3, 5)
    cases = []

    def raw(name, desc, arrays, dtype=None, **kw):
        def write(path):
            with AcqeWriter(path, **kw) as w:
                w.set_metadata({"vector": name})
                for n, a in arrays:
                    w.add_raw(n, a, dtype=dtype)
        cases.append((name, desc, write))

    raw("raw-f32", "RAW float32 3x5", [("x", f32)])
    raw("raw-f16", "RAW float16 3x5", [("x", f32.astype(np.float16))])
    raw("raw-bf16", "RAW bfloat16 3x5 (from float32, round to nearest even)", [("x", f32)], dtype="bfloat16")
    raw("raw-f64", "RAW float64 3x5", [("x", f32.astype(np.float64) / 3)])
    ints = r.ints(12, -100, 100).reshape(3, 4)
    raw("raw-ints", "RAW integer dtypes of every width, signed and unsigned",
        [("i8", ints.astype(np.int8)), ("u8", (ints + 100).astype(np.uint8)), ("i16", (ints * 300).astype(np.int16)),
         ("u16", (ints + 100).astype(np.uint16) * 600), ("i32", (ints * 20_000_000).astype(np.int32)),
         ("u32", (ints + 100).astype(np.uint32) * 21_000_000),
         ("i64", ints * 90_000_000_000_000_000 // 100), ("u64", (ints + 100).astype(np.uint64) * 90_000_000_000_000_000),
         ("position_ids", np.arange(77, dtype=np.int64)[None, :])])
    raw("raw-bool", "RAW bool (bytes 0 and 1)", [("mask", np.array([[True, False, True], [False, False, True]]))])
    raw("raw-scalar-empty", "RAW rank-0 and empty tensors",
        [("scalar_f32", np.array(-1.5, np.float32)), ("scalar_i64", np.array(7, np.int64)),
         ("empty_1d", np.zeros(0, np.float32)), ("empty_2d", np.zeros((0, 3), np.float16)),
         ("empty_3d", np.zeros((4, 0, 2), np.int32))])
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3.4028235e38, 1.17549435e-38, 1.0],
                       dtype=np.float32)
    neg_nan = np.array([np.nan], np.float32).view(np.uint32) | np.uint32(0x80000000)
    special[4] = neg_nan.view(np.float32)[0]
    cases.append(("raw-special-floats", "RAW NaN (sign bit set), +-Inf, -0.0, subnormals, max finite in f32, "
                  "f16, f64 and bf16: bit-exact", _special_writer(special)))

    K = 7
    idx = r.skewed(6 * 40, K).astype(np.uint8)
    cb = np.sort(r.normal(K)).astype(np.float32)
    scales = (0.5 + r.uniform(6)).astype(np.float32)

    def cbk(name, desc, tensors, codec, **kw):
        def write(path):
            with AcqeWriter(path) as w:
                w.set_metadata({"vector": name})
                for n, ct, src in tensors:
                    used = w.add_codebook(n, ct, source_dtype=src, codec=codec, **kw)
                    assert used.name.lower().endswith(codec), (name, used)
        cases.append((name, desc, write))

    cbk("packed-basic", "CODEBOOK_PACKED, K=7 (3-bit indices), no scales",
        [("w", CodebookTensor((6, 40), cb, idx), "float32")], "packed")
    cbk("packed-scales-f16", "CODEBOOK_PACKED with row scales, decoded to float16, source bfloat16",
        [("w", CodebookTensor((6, 40), cb, idx, scales, decoded_dtype="float16"), "bfloat16")], "packed")
    k300 = r.ints(5 * 11, 0, 300).astype(np.uint16)
    cbk("packed-k300-bf16-f64", "CODEBOOK_PACKED K=300 (9-bit), conv-shaped 5x1x11, decoded to bfloat16 and float64",
        [("conv", CodebookTensor((5, 1, 11), r.normal(300).astype(np.float32), k300, decoded_dtype="bfloat16"), "float32"),
         ("conv64", CodebookTensor((5, 1, 11), r.normal(300).astype(np.float32), k300, decoded_dtype="float64"), "float64")],
        "packed")
    cbk("packed-constant-scalar-empty", "CODEBOOK_PACKED K=1 constant tensor, rank 0, and empty",
        [("const", CodebookTensor((4, 4), np.array([0.25], np.float32), np.zeros(16, np.uint8)), "float32"),
         ("scalar", CodebookTensor((), np.array([1.0, -2.0], np.float32), np.array([1], np.uint8),
                                   np.array([3.0], np.float32)), "float32"),
         ("empty", CodebookTensor((0, 8), np.array([1.0], np.float32), np.zeros(0, np.uint8)), "float32")], "packed")
    cbk("rans-basic", "CODEBOOK_RANS, one table, one chunk, no scales",
        [("w", CodebookTensor((6, 40), cb, idx), "float32")], "rans", precision=12)
    cbk("rans-scales", "CODEBOOK_RANS with row scales, precision 14",
        [("w", CodebookTensor((6, 40), cb, idx, scales), "float16")], "rans", precision=14)
    ctx = np.array([0, 1, 2, 0, 1, 2], np.uint16)
    idx_ctx = np.concatenate([np.minimum(r.skewed(40, K) + 2 * c, K - 1) for c in ctx]).astype(np.uint8)
    cbk("rans-contexts", "CODEBOOK_RANS with row scales and 3 row contexts (3 frequency tables)",
        [("w", CodebookTensor((6, 40), cb, idx_ctx, scales, ctx), "float32")], "rans", precision=12)
    big = r.skewed(3 * 1000, 16).astype(np.uint8)
    cbk("rans-chunks", "CODEBOOK_RANS, 3000 symbols in chunks of 256 (12 chunks, the last one short), "
        "contexts that switch inside chunks, decoded to float16",
        [("w", CodebookTensor((3, 1000), r.normal(16).astype(np.float32), big, (0.1 + r.uniform(3)).astype(np.float32),
                              np.array([1, 0, 1], np.uint16), decoded_dtype="float16"), "float32")],
        "rans", precision=11, chunk_size=256)
    cbk("rans-constant", "CODEBOOK_RANS of a single distinct value: one symbol with frequency 2^P, zero words",
        [("w", CodebookTensor((8, 8), np.array([0.5, 9.0], np.float32), np.zeros(64, np.uint8)), "float32")],
        "rans", precision=12)
    cbk("rans-k1024-p16", "CODEBOOK_RANS K=1024 uint16 indices, precision 16, rank 4 conv kernel",
        [("conv", CodebookTensor((4, 3, 3, 3), r.normal(1024).astype(np.float32),
                                 r.ints(108, 0, 1024).astype(np.uint16)), "float32")], "rans", precision=16)
    cbk("rans-scalar-empty-bf16", "CODEBOOK_RANS rank 0, empty, and bfloat16 output",
        [("scalar", CodebookTensor((), np.array([3.0, 4.0], np.float32), np.array([1], np.uint8)), "float32"),
         ("empty", CodebookTensor((2, 0), np.array([1.0], np.float32), np.zeros(0, np.uint8),
                                  np.array([1.0, 2.0], np.float32)), "float32"),
         ("w", CodebookTensor((6, 40), cb, idx, scales, decoded_dtype="bfloat16"), "float32")], "rans", precision=12)

    def full(path):
        with AcqeWriter(path, alignment=16) as w:
            w.set_metadata({"architecture": "acqe-vector", "naming": "flat", "components": {"a": "a.", "b": "b."},
                            "configs": {"a": {"layers": [1, 2, 3], "nested": {"x": None, "y": True}}},
                            "encoder": {"name": "generate.py", "version": "1", "settings": {}},
                            "unicode": "π≈3.14159 ✓ \u00e9", "big": 18446744073709551615, "neg": -9223372036854775808,
                            "float": 1.5e-300})
            w.add_asset("tokenizer/vocab.json", b'{"a": 0}')
            w.add_asset("tokenizer/merges.txt", b"#version: 0.2\na b\n")
            w.add_asset("empty.bin", b"")
            w.add_raw("a.bias", f32[0])
            w.add_codebook("b.weight", CodebookTensor((6, 40), cb, idx, scales), "float32", codec="rans", precision=12)
            w.add_raw("b.\u00fcnicode name/with spaces", np.array([1, 2], np.int16))
    cases.append(("assets-metadata-align16", "ASSETS, rich metadata, alignment 16, mixed codecs, Unicode names", full))

    def align4096(path):
        with AcqeWriter(path, alignment=4096) as w:
            w.add_raw("x", f32)
            w.add_codebook("y", CodebookTensor((6, 40), cb, idx), "float32", codec="packed")
    cases.append(("align-4096", "alignment 4096, empty metadata object", align4096))

    def future(path):
        b = base([raw_t("x", f32, 1)], {"vector": "future-minor"}, minor=7, optional=1 << 40)
        b.sections.insert(2, S(0x7FFF0001, b"an optional section from the future", flags=0))
        with open(path, "wb") as f:
            f.write(b.build())
    cases.append(("future-minor-optional", "minor version 7, an unknown optional feature bit and an unknown "
                  "optional section: all must be ignored", future))

    def empty(path):
        with AcqeWriter(path):
            pass
    cases.append(("empty-no-tensors", "no tensors, metadata {} (the 368-byte file annotated in spec/ACQE.md)", empty))

    # --- format 1.1: compressed DIRECTORY / METADATA (spec §4.1) ---
    def sd_names():
        out = []
        for blk in (1, 2, 4, 5):
            pre = f"model.diffusion_model.input_blocks.{blk}.1.transformer_blocks.0."
            out += [pre + p for p in ("attn1.to_q.weight", "attn1.to_k.weight", "attn1.to_v.weight",
                                      "attn1.to_out.0.weight", "attn1.to_out.0.bias", "norm1.weight", "norm1.bias",
                                      "ff.net.0.proj.weight", "ff.net.2.weight")]
        return out

    sd_meta = {"vector": "compressed-directory-metadata", "architecture": "acqe-vector", "naming": "ldm",
               "components": {"unet": "model.diffusion_model."},
               "configs": {"unet": {"attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
                                    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                                    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
                                    "cross_attention_dim": 768, "layers_per_block": 2}}}

    def compressed_both(path):
        with AcqeWriter(path, compress_sections=True) as w:
            w.set_metadata(sd_meta)
            for i, n in enumerate(sd_names()):
                if n.endswith(".bias") or ".norm1." in n:
                    w.add_raw(n, f32[i % 3].astype(np.float16))
                else:
                    w.add_codebook(n, CodebookTensor((6, 40), cb, idx, scales), "float16",
                                   codec="rans" if i % 2 else "packed", precision=12)
        with AcqeReader(path) as rd:
            assert rd.version == (1, 1) and [s.compressed for s in rd.sections] == [True, True, False], path
    cases.append(("compressed-directory-metadata", "format 1.1: DIRECTORY and METADATA zlib-compressed "
                  "(COMPRESSED_SECTIONS); 36 tensors with long shared-prefix SD names, RAW f16, packed and rANS",
                  compressed_both))

    def compressed_meta(path):
        # the reference writer would compress this 59-byte directory too (to 54 bytes): Builder writes it
        meta = {"vector": "compressed-metadata-only", "note": "metadata " * 40, "list": list(range(0, 400, 4))}
        b = Builder([S(1), zsec(2, meta_bytes(meta)), S(4)], [raw_t("x", f32, 1)], minor=1, required=1)
        with open(path, "wb") as f:
            f.write(b.build())
        with AcqeReader(path) as rd:
            assert rd.version == (1, 1) and [s.compressed for s in rd.sections] == [False, True, False], path
    cases.append(("compressed-metadata-only", "format 1.1: only METADATA compressed, one RAW f32 tensor "
                  "(written by the generator's own layout code)", compressed_meta))

    # --- vectors of the hardened 1.1 text (spec §10.4 "Expansion and decode budgets") ---
    def expansion(path):
        with AcqeWriter(path) as w:
            w.set_metadata({"vector": "rans-expansion"})
            used = w.add_codebook("const", CodebookTensor((2, 65536), np.array([0.75], np.float32),
                                                          np.zeros(2 * 65536, np.uint8), decoded_dtype="float64"),
                                  "float32", codec="rans", chunk_size=1 << 20)
            assert used.name == "CODEBOOK_RANS"
        with AcqeReader(path) as rd:
            assert rd.tensors[0].payload_length == 32, rd.tensors[0].payload_length
    cases.append(("rans-expansion", "CODEBOOK_RANS constant tensor of 2^17 float64 elements (1 MiB) from a 32-byte "
                  "payload: valid whatever a reader's decode budget (spec §10.4)", expansion))
    return cases


def _special_writer(special):
    def write(path):
        with AcqeWriter(path) as w:
            w.set_metadata({"vector": "raw-special-floats"})
            w.add_raw("f32", special)
            with np.errstate(over="ignore"):
                w.add_raw("f16", special.astype(np.float16))
            w.add_raw("f64", special.astype(np.float64))
            w.add_raw("bf16", (special.view(np.uint32) >> 16).astype(np.uint16), dtype="bfloat16")
    return write


# --- invalid vectors -------------------------------------------------------------------------------

def _rans_parts(payload: bytes, k: int, rows: int, scales: bool, ctx: bool, n_tables: int, n_chunks: int):
    """Offsets inside a codec-2 payload: (freqs_at, chunk_table_at, words_at)."""
    pos = 16 + 4 * k + (4 * rows if scales else 0) + (2 * rows if ctx else 0)
    pos = align(pos, 4)
    freqs_at = pos
    table_at = freqs_at + 4 * n_tables * k
    return freqs_at, table_at, table_at + 8 * n_chunks


def invalid_cases(valid_dir: str):
    """(name, expected error class, message fragment, description, bytes)."""
    r = SplitMix64(0xBAD)
    x = r.normal(12).astype(np.float32).reshape(3, 4)
    good = base([raw_t("x", x, 1), raw_t("y", np.arange(3, dtype=np.int64), 9)], {"vector": "invalid-base"})
    good_bytes = good.build()
    good_reader = AcqeReader(good_bytes)
    good_reader.verify()
    out = []

    def add(name, err, frag, desc, data):
        out.append((name, err, frag, desc, data))

    def mod(**kw):
        b = copy.deepcopy(good)
        for k, v in kw.items():
            setattr(b, k, v)
        return b

    def edit(fn):
        b = copy.deepcopy(good)
        fn(b)
        return b.build()

    # framing
    add("truncated-half", "TruncatedFileError", "header says the file is", "cut in the middle", good_bytes[:len(good_bytes) // 2])
    add("truncated-magic", "TruncatedFileError", "shorter than the 8-byte magic", "5 bytes of the magic", good_bytes[:5])
    add("truncated-footer", "TruncatedFileError", "header says the file is", "last byte of the footer missing",
        good_bytes[:-1])
    add("empty-file", "TruncatedFileError", "shorter than the 8-byte magic", "zero bytes", b"")
    add("not-acqe-zip", "NotAcqeFileError", "zip archive", "a zip (PyTorch) file", b"PK\x03\x04" + b"\0" * 200)
    add("not-acqe-safetensors", "NotAcqeFileError", "safetensors", "a safetensors file",
        struct.pack("<Q", 2) + b"{}")
    add("text-mode-mangled", "NotAcqeFileError", "text-mode", "CR LF turned into LF",
        good_bytes.replace(b"\r\n", b"\n", 1))
    add("trailing-bytes", "LayoutError", "trailing bytes", "one byte after the footer", good_bytes + b"\0")
    add("bad-header-crc", "ChecksumMismatchError", "header CRC", "header CRC off by one",
        mod(header_crc=crc(good_bytes[:60]) ^ 1).build())
    add("unknown-major", "UnsupportedVersionError", "format version 2", "major version 2", mod(major=2).build())
    add("unknown-required-feature", "UnsupportedVersionError", "required feature", "required feature bit 3",
        mod(required=1 << 3).build())
    add("bad-header-length", "LayoutError", "header_length", "header_length 72", mod(header_length=72).build())
    add("bad-alignment", "LayoutError", "alignment 48", "alignment 48 (not a power of two)", mod(alignment=48).build())
    add("alignment-too-small", "LayoutError", "alignment 8", "alignment 8 (below 16)", mod(alignment=8).build())
    add("bad-table-offset", "LayoutError", "section table offset", "section table offset 72",
        mod(table_offset=72).build())
    add("huge-section-count", "LimitExceededError", "sections (limit", "section_count 2^32-1",
        mod(section_count=0xFFFFFFFF).build())
    add("section-table-past-end", "LayoutError", "section table ends", "section_count 60 (table runs into the footer)",
        mod(section_count=60).build())
    add("bad-section-table-crc", "ChecksumMismatchError", "section table CRC", "section table CRC off by one",
        mod(table_crc=1).build())
    add("bad-footer-magic", "LayoutError", "footer magic", "footer magic ACQE_EMD", mod(footer_magic=b"ACQE_EMD").build())
    add("footer-length-mismatch", "LayoutError", "footer says", "footer file_length off by 8",
        mod(footer_length=len(good_bytes) + 8).build())
    add("header-length-short", "LayoutError", "trailing bytes", "header file_length 8 short of the real size",
        mod(file_length=len(good_bytes) - 8).build())
    bad_sha = hashlib.sha256(b"not this file").digest()
    add("bad-footer-sha256", "ChecksumMismatchError", "SHA-256", "footer SHA-256 of other bytes", mod(sha=bad_sha).build())

    # sections
    def sec(i, **kw):
        def f(b):
            for k, v in kw.items():
                setattr(b.sections[i], k, v)
        return f
    add("overlapping-sections", "LayoutError", "overlaps", "METADATA starts inside DIRECTORY",
        edit(sec(1, offset=200)))
    add("section-gap", "LayoutError", "leaves a gap", "METADATA one alignment step too far", edit(sec(1, offset=448)))
    add("section-out-of-range", "LayoutError", "footer starts at", "DATA length 2^63",
        edit(sec(2, length=1 << 63)))
    add("section-nonzero-padding", "LayoutError", "non-zero padding before section", "0xAA padding before METADATA",
        edit(sec(1, pad_before=b"\xaa")))
    add("section-reserved", "LayoutError", "reserved field", "section entry reserved = 1", edit(sec(0, reserved=1)))
    add("section-unknown-flag", "LayoutError", "unknown flag bits", "section flags 3", edit(sec(1, flags=3)))
    add("known-section-not-required", "LayoutError", "must have flags 1", "METADATA flags 0", edit(sec(1, flags=0)))
    add("data-section-crc", "LayoutError", "DATA section crc32 field", "DATA crc32 field 1", edit(sec(2, crc=1)))
    add("bad-directory-crc", "ChecksumMismatchError", "DIRECTORY section CRC", "DIRECTORY CRC off by one",
        edit(sec(0, crc=1)))
    add("bad-metadata-crc", "ChecksumMismatchError", "METADATA section CRC", "METADATA CRC wrong", edit(sec(1, crc=1)))
    add("unknown-required-section", "UnsupportedVersionError", "unknown kind", "required section of kind 77",
        edit(lambda b: b.sections.insert(2, S(77, b"must understand me", flags=1))))
    add("duplicate-section", "LayoutError", "second METADATA", "two METADATA sections",
        edit(lambda b: b.sections.insert(2, S(2, b"{}"))))
    add("missing-data-section", "LayoutError", "no DATA section", "no DATA section",
        Builder([S(1), S(2, b"{}")], []).build())
    add("missing-directory-section", "LayoutError", "no DIRECTORY section", "no DIRECTORY section",
        Builder([S(2, b"{}"), S(4, b"")], []).build())

    data_len = good_reader.sections[-1].length
    add("gap-before-footer", "LayoutError", "between the last section end", "DATA section length 8 short",
        edit(sec(2, length=data_len - 8)))

    # limits on the metadata/directory sizes (declared, never allocated)
    add("directory-count-huge", "LimitExceededError", "tensors (limit", "tensor_count 2^32-1",
        mod(dir_count=0xFFFFFFFF).build())
    add("directory-count-lies", "LayoutError", "declares 65536 tensors", "tensor_count 65536 in a tiny directory",
        mod(dir_count=65536).build())
    add("directory-trailing", "LayoutError", "trailing bytes after the last directory entry",
        "4 extra bytes after the last entry", mod(dir_extra=b"\0\0\0\0").build())

    def t0(**kw):
        def f(b):
            for k, v in kw.items():
                setattr(b.tensors[0], k, v)
        return f
    add("rank-9", "LimitExceededError", "rank 9", "rank 9 tensor",
        edit(t0(shape=[1] * 9)))
    add("huge-dim", "LimitExceededError", "exceeds the limit", "dimension 2^63",
        edit(t0(shape=[1 << 63, 4])))
    add("huge-numel", "LimitExceededError", "more than", "2^30 x 2^30 elements",
        edit(t0(shape=[1 << 30, 1 << 30])))
    add("huge-shape-with-zero", "LimitExceededError", "more than", "shape [0, 2^40, 2^40]: empty but absurd",
        edit(t0(shape=[0, 1 << 40, 1 << 40], payload=b"")))
    add("name-too-long", "LimitExceededError", "name of 2000 bytes", "2000-byte tensor name",
        edit(t0(name=b"n" * 2000)))
    add("name-empty", "LayoutError", "empty name", "empty tensor name", edit(t0(name=b"")))
    add("name-not-utf8", "LayoutError", "not valid UTF-8", "tensor name with byte 0xff", edit(t0(name=b"x\xff")))
    add("duplicate-names", "LayoutError", "duplicate tensor name", "two tensors named x",
        edit(lambda b: setattr(b.tensors[1], "name", b"x")))
    add("unknown-codec", "UnsupportedVersionError", "unknown codec id 99", "codec id 99", edit(t0(codec=99)))
    add("unknown-dtype", "UnsupportedVersionError", "unknown dtype code 42", "dtype code 42", edit(t0(sd=42, dd=42)))
    add("dir-reserved", "LayoutError", "reserved directory fields", "reserved u16 = 5", edit(t0(r16=5)))
    add("raw-length-mismatch", "LayoutError", "RAW payload is", "RAW float32 3x4 with a 44-byte payload",
        edit(t0(payload=x.tobytes()[:44])))
    add("raw-dtype-mismatch", "LayoutError", "stored dtype", "RAW with stored f32, decoded f16", edit(t0(dd=2)))
    add("payload-overlap", "LayoutError", "overlaps the previous payload", "second payload starts inside the first",
        edit(lambda b: setattr(b.tensors[1], "offset", good_reader.tensors[0].payload_offset + 8)))
    add("payload-out-of-range", "LayoutError", "DATA section ends", "payload length 2^40",
        edit(lambda b: setattr(b.tensors[1], "length", 1 << 40)))
    add("payload-gap", "LayoutError", "is not where the layout puts it", "second payload one alignment step late",
        edit(lambda b: setattr(b.tensors[1], "offset", good_reader.tensors[1].payload_offset + 64)))
    add("payload-nonzero-padding", "LayoutError", "non-zero padding after its payload", "0x01 padding after x",
        edit(t0(pad_after=b"\x01" * 16)))
    add("bad-payload-crc", "ChecksumMismatchError", "payload CRC", "RAW payload CRC off by one",
        edit(t0(crc=crc(x.tobytes()) ^ 1)))
    add("raw-bool-value-2", "CodecError", "must be 0 or 1", "bool byte 2",
        base([T(b"m", [3], 10, 10, 1, b"\x01\x02\x00")]).build())
    add("checked-length-too-big", "LayoutError", "checked_length", "checked_length > payload_length",
        edit(t0(checked=100, crc=0)))

    # metadata
    def meta(m: bytes):
        return edit(lambda b: setattr(b.sections[1], "body", m))
    add("metadata-bad-json", "MetadataError", "not valid JSON", "metadata {\"a\": }", meta(b'{"a": }'))
    add("metadata-duplicate-key", "MetadataError", "duplicate JSON key", "{\"a\":1,\"a\":2}", meta(b'{"a":1,"a":2}'))
    add("metadata-nan", "MetadataError", "NaN", "NaN literal", meta(b'{"a":NaN}'))
    add("metadata-overflow", "MetadataError", "overflows", "1e999", meta(b'{"a":1e999}'))
    add("metadata-not-object", "MetadataError", "JSON object", "top-level array", meta(b"[]"))
    add("metadata-too-deep", "MetadataError", "nesting deeper",
        "64 nested arrays inside the top-level object: nesting depth 65 (the object counts)",
        meta(b'{"a":' + b"[" * 64 + b"]" * 64 + b"}"))
    add("metadata-not-utf8", "MetadataError", "not UTF-8", "byte 0xff", meta(b'{"a":"\xff"}'))
    add("metadata-bom", "MetadataError", "BOM", "UTF-8 BOM", meta(b'\xef\xbb\xbf{}'))
    add("metadata-lone-surrogate", "MetadataError", "lone surrogate", "\\ud800 escape", meta(b'{"a":"\\ud800"}'))
    add("metadata-int-range", "MetadataError", "outside", "integer 2^64", meta(b'{"a":18446744073709551616}'))
    add("metadata-trailing", "MetadataError", "not valid JSON", "{} {}", meta(b"{} {}"))

    # assets
    def assets(body: bytes):
        return base([raw_t("x", x, 1)], {}, body).build()
    add("asset-path-traversal", "LayoutError", "safe relative path", "asset named ../evil",
        assets(struct.pack("<IH", 1, 7) + b"../evil" + struct.pack("<Q", 1) + b"x"))
    add("asset-past-end", "LayoutError", "runs past the end", "asset of length 2^40",
        assets(struct.pack("<IH", 1, 1) + b"a" + struct.pack("<Q", 1 << 40) + b"x"))
    add("asset-duplicate", "LayoutError", "duplicate asset name", "two assets named a",
        assets(struct.pack("<I", 2) + (struct.pack("<H", 1) + b"a" + struct.pack("<Q", 0)) * 2))
    add("asset-count-huge", "LimitExceededError", "assets (limit", "asset count 2^32-1",
        assets(struct.pack("<I", 0xFFFFFFFF)))

    # codebook codecs
    K, rows, rl = 5, 4, 6
    cb = np.array([-1.0, -0.25, 0.0, 0.5, 2.0], np.float32)
    idx = r.ints(rows * rl, 0, K).astype(np.uint8)
    sc = (1 + r.uniform(rows)).astype(np.float32)
    ct = CodebookTensor((rows, rl), cb, idx, sc)
    packed = packed_payload(ct)                       # head 8, codebook 20, scales 16, 9 bytes of 3-bit indices

    def cbt(payload, codec=3, checked=None, shape=(rows, rl)):
        return base([T(b"w", list(shape), 1, 1, codec, payload, checked)]).build()
    pk = bytearray(packed)
    pk[8 + 20 + 16] |= 0x07                           # first index := 7 >= K
    add("packed-index-outside-codebook", "CodecError", "outside the codebook", "3-bit index 7 with K=5", cbt(bytes(pk)))
    ct25 = CodebookTensor((5, 5), cb, r.ints(25, 0, K).astype(np.uint8))
    p25 = bytearray(packed_payload(ct25))             # 75 bits -> 10 bytes, 5 spare bits
    p25[-1] |= 0x80
    add("packed-nonzero-spare-bits", "CodecError", "unused bits", "spare bits of the last byte set",
        cbt(bytes(p25), shape=(5, 5)))
    pk = bytearray(packed)
    pk[8:12] = struct.pack("<f", float("nan"))
    add("packed-nan-codebook", "CodecError", "non-finite", "NaN codebook entry", cbt(bytes(pk)))
    pk = bytearray(packed)
    pk[0:4] = struct.pack("<I", 0)
    add("packed-k-zero", "LimitExceededError", "codebook size K=0", "K = 0", cbt(bytes(pk)))
    pk = bytearray(packed)
    pk[4] = 2
    add("packed-k-too-big-for-bits", "CodecError", "does not fit", "K=5 with 2-bit indices", cbt(bytes(pk)))
    pk = bytearray(packed)
    pk[4] = 17
    add("packed-bits-17", "CodecError", "index width 17", "17-bit indices", cbt(bytes(pk)))
    add("packed-length-mismatch", "LayoutError", "its head implies", "one extra byte", cbt(packed + b"\0"))
    pk = bytearray(packed)
    pk[5] = 9
    add("packed-bad-scale-mode", "CodecError", "unknown scale mode 9", "scale mode 9", cbt(bytes(pk)))

    # rANS: 2 contexts, chunks of 8 symbols -> 3 chunks
    ctx = np.array([0, 1, 0, 1], np.uint16)
    cr = CodebookTensor((rows, rl), cb, idx, sc, ctx)
    rp, rchecked = rans_payload(cr, 8, 8)
    n_chunks = 3
    freqs_at, table_at, words_at = _rans_parts(rp, K, rows, True, True, 2, n_chunks)
    assert words_at == rchecked
    table = np.frombuffer(rp, "<u4", count=2 * n_chunks, offset=table_at).reshape(n_chunks, 2)
    assert all(table[:, 0] > 0), table

    def rb(payload, checked=rchecked):
        return cbt(bytes(payload), codec=2, checked=checked)
    AcqeReader(rb(rp)).verify()
    p = bytearray(rp)
    p[words_at] ^= 0x10
    add("rans-bad-chunk-crc", "ChecksumMismatchError", "chunk 0 CRC", "a word of chunk 0 changed, CRC not", rb(p))
    w0 = words_at + 4 * int(table[0, 0])              # first word of chunk 1
    n1 = int(table[1, 0])

    def with_chunk1(words1: bytes) -> bytearray:
        p = bytearray(rp[:w0]) + words1 + rp[w0 + 4 * n1:]
        p[table_at + 8:table_at + 16] = struct.pack("<II", len(words1) // 4, crc(words1))
        return p
    chunk1 = rp[w0:w0 + 4 * n1]
    for bit in range(32 * n1):                        # the first single-bit change the decoder itself notices
        c1 = bytearray(chunk1)
        c1[bit // 8] ^= 1 << (bit % 8)
        try:
            AcqeReader(rb(with_chunk1(bytes(c1)))).verify()
        except Exception as e:  # noqa: BLE001
            if "final state" in str(e):
                break
    else:
        raise AssertionError("no detectable flip")
    add("rans-corrupt-stream", "CodecError", "is not the initial state 0", f"bit {bit} of chunk 1 flipped and its "
        "CRC updated: the decoder must still notice (final state not 0)", rb(with_chunk1(bytes(c1))))
    add("rans-extra-word", "CodecError", "rANS chunk 1", "chunk 1 has one extra word (CRC updated)",
        rb(with_chunk1(chunk1 + b"\x01\0\0\0")))
    p = bytearray(rp)
    p[freqs_at:freqs_at + 4] = struct.pack("<I", struct.unpack_from("<I", rp, freqs_at)[0] + 1)
    add("rans-freq-sum", "CodecError", "sums to", "frequency table 0 sums to 2^8 + 1", rb(p))
    p = bytearray(rp)
    ctx_at = 16 + 4 * K + 4 * rows
    p[ctx_at:ctx_at + 2] = struct.pack("<H", 2)
    add("rans-context-out-of-range", "CodecError", "row context 2", "row context 2 with 2 tables", rb(p))
    p = bytearray(rp)
    p[4] = 25
    add("rans-precision-25", "CodecError", "precision 25", "precision 25", rb(p))
    p = bytearray(rp)
    p[12:16] = struct.pack("<I", 0)
    add("rans-chunk-size-zero", "LimitExceededError", "chunk size 0", "chunk size 0", rb(p))
    p = bytearray(rp)
    p[12:16] = struct.pack("<I", (1 << 20) + 1)
    add("rans-chunk-size-huge", "LimitExceededError", "chunk size 1048577", "chunk size 2^20+1", rb(p))
    p = bytearray(rp)
    p[8:12] = struct.pack("<I", 65537)
    add("rans-too-many-tables", "LimitExceededError", "tables (limit", "65537 frequency tables", rb(p))
    p = bytearray(rp)
    p[4] = 24
    add("rans-too-many-slots", "LimitExceededError", "slots exceed", "2 tables at precision 24 (2^25 slots)", rb(p))
    p = bytearray(rp)
    p[table_at:table_at + 4] = struct.pack("<I", int(table[0, 0]) + 1)
    add("rans-word-count-mismatch", "LayoutError", "chunks hold", "chunk 0 word count one too high", rb(p))
    add("rans-checked-length", "LayoutError", "checked_length says", "checked_length 4 bytes short",
        rb(rp, checked=rchecked - 4))
    # 16 + 20 + 16 + 8 = 60 bytes before the tables here: no padding; 3 rows leave 2 bytes of padding
    cr3 = CodebookTensor((3, 8), cb, idx[:24], sc[:3], np.array([0, 1, 0], np.uint16))
    rp3, ch3 = rans_payload(cr3, 8, 8)
    p3 = bytearray(rp3)
    pad3 = 16 + 4 * K + 12 + 6
    assert p3[pad3:pad3 + 2] == b"\0\0"
    p3[pad3] = 1
    add("rans-nonzero-padding", "LayoutError", "non-zero padding after the row contexts",
        "padding after 3 u16 contexts is 0x01", base([T(b"w", [3, 8], 1, 1, 2, bytes(p3), ch3)]).build())
    p = bytearray(rp)
    p[7] = 1
    add("rans-reserved", "LayoutError", "reserved head field", "reserved byte 1", rb(p))
    p = bytearray(rp)
    p[6] = 0   # context mode 0 with 2 tables
    add("rans-tables-without-contexts", "CodecError", "without row contexts", "context mode 0, 2 tables", rb(p))
    # a chunk whose first word is 0, with consistent CRCs
    p = bytearray(rp)
    p[words_at:words_at + 4] = b"\0\0\0\0"
    p[table_at + 4:table_at + 8] = struct.pack("<I", crc(bytes(p[words_at:words_at + 4 * int(table[0, 0])])))
    add("rans-leading-zero-word", "CodecError", "first word is 0", "chunk 0 starts with a zero word", rb(p))
    # a table whose u32 entries sum to 2^P only modulo 2^32: the sum must be taken without wrapping
    p = bytearray(rp)
    f0 = list(struct.unpack_from(f"<{K}I", rp, freqs_at))
    f0[0] += 1 << 31
    f0[1] += 1 << 31                                  # the sum is 2^8 + 2^32
    struct.pack_into(f"<{K}I", p, freqs_at, *f0)
    assert sum(f0) == 256 + (1 << 32)
    add("rans-freq-sum-wraps", "CodecError", "sums to", "table 0 sums to 2^8 only modulo 2^32", rb(p))

    # --- format 1.1: compressed sections (spec §4.1) ---
    def zfile(dir_store=zwrap, meta_store=zwrap, meta=None, required=1, data_flags=1, dir_extra=b"",
              tensors=None) -> bytes:
        secs = [S(1) if dir_store is None else zsec(1, store=dir_store),
                S(2, meta_bytes(meta or {"vector": "invalid-compressed"})) if meta_store is None
                else zsec(2, meta_bytes(meta or {"vector": "invalid-compressed"}), meta_store),
                S(4, flags=data_flags)]
        return Builder(secs, copy.deepcopy(good.tensors if tensors is None else tensors), minor=1,
                       required=required, dir_extra=dir_extra).build()
    zgood = zfile()
    AcqeReader(zgood).verify()

    def zraw(delta):                                   # raw_length off by delta
        return lambda raw: struct.pack("<Q", len(raw) + delta) + zlib.compress(raw, 9)
    add("compressed-flag-on-data", "LayoutError", "COMPRESSED flag is allowed only on DIRECTORY and METADATA",
        "1.1 file with flags 3 (REQUIRED | COMPRESSED) on DATA", zfile(data_flags=3))
    add("compressed-without-feature-bit", "LayoutError", "COMPRESSED needs the header's COMPRESSED_SECTIONS",
        "a well-formed compressed METADATA (flags 3) but required_features 0", zfile(dir_store=None, required=0))
    add("compressed-section-too-short", "LayoutError", "too short for its 8-byte raw_length",
        "compressed METADATA of 5 bytes", zfile(meta_store=lambda raw: b"\x05\0\0\0\0"))
    add("compressed-raw-length-huge", "LimitExceededError", "after decompression (limit",
        "a zlib bomb: a 10-byte stream whose raw_length is 2^40 (refused before inflating anything)",
        zfile(meta_store=lambda raw: struct.pack("<Q", 1 << 40) + zlib.compress(b"", 9)))
    add("compressed-raw-length-too-big", "LayoutError", "its raw_length says",
        "METADATA raw_length one more than the inflated size", zfile(meta_store=zraw(1)))
    add("compressed-raw-length-too-small", "LayoutError", "inflates to more than its raw_length",
        "DIRECTORY raw_length one less than the inflated size", zfile(dir_store=zraw(-1)))
    bomb = b'{"a":"' + b" " * (8 << 20) + b'"}'
    add("compressed-bomb-past-raw-length", "LayoutError", "inflates to more than its raw_length",
        "an 8 KB stream of 8 MiB of JSON whose raw_length says 64: a reader stops after 65 bytes of output",
        zfile(meta_store=lambda raw: struct.pack("<Q", 64) + zlib.compress(bomb, 9)))
    add("compressed-trailing-bytes", "LayoutError", "trailing bytes after the end of the zlib stream",
        "one zero byte after the METADATA zlib stream (CRC updated)",
        zfile(meta_store=lambda raw: zwrap(raw) + b"\0"))
    add("compressed-stream-truncated", "LayoutError", "does not end inside the section",
        "DIRECTORY zlib stream missing its last 6 bytes (CRC updated)", zfile(dir_store=lambda raw: zwrap(raw)[:-6]))

    def flip_first_zlib_error(raw: bytes) -> bytes:
        """zwrap(raw) with the first single-bit change inside the DEFLATE data that zlib itself rejects."""
        z = zwrap(raw)
        for bit in range(8 * 10, 8 * (len(z) - 4)):
            b = bytearray(z)
            b[bit // 8] ^= 1 << (bit % 8)
            try:
                d = zlib.decompressobj()
                d.decompress(bytes(b[8:]))
                if d.eof:
                    continue
            except zlib.error:
                return bytes(b)
        raise AssertionError("no flip rejected by zlib")
    add("compressed-corrupt-deflate", "LayoutError", "invalid zlib stream",
        "a bit of the DIRECTORY's DEFLATE data flipped, section CRC updated: zlib (data or Adler-32) must "
        "reject it", zfile(dir_store=flip_first_zlib_error))

    def bad_adler(raw: bytes) -> bytes:
        z = bytearray(zwrap(raw))
        z[-1] ^= 0x01
        return bytes(z)
    add("compressed-bad-adler32", "LayoutError", "incorrect data check",
        "METADATA zlib stream with its Adler-32 off by one (section CRC updated)", zfile(meta_store=bad_adler))

    def with_header(cmf_flg: bytes):
        def f(raw):
            z = bytearray(zwrap(raw))
            z[8:10] = cmf_flg
            return bytes(z)
        return f
    add("compressed-bad-zlib-header", "LayoutError", "invalid zlib stream",
        "METADATA zlib header 88 1b: compression method 8 but a 2^16-byte window (CINFO 8)",
        zfile(meta_store=with_header(b"\x88\x1b")))
    add("compressed-preset-dictionary", "LayoutError", "preset dictionary",
        "METADATA zlib header 78 bb: FDICT set (a valid FCHECK), no dictionary exists",
        zfile(meta_store=with_header(b"\x78\xbb")))
    add("compressed-stale-crc", "ChecksumMismatchError", "DIRECTORY section CRC",
        "a bit of the compressed DIRECTORY flipped, section CRC not updated: the CRC fails before inflating",
        _flip_unsealed(zgood, AcqeReader(zgood).sections[0].offset + 12))
    add("compressed-directory-trailing", "LayoutError", "trailing bytes after the last directory entry",
        "a valid zlib stream whose inflated directory has 4 extra bytes after the last entry",
        zfile(dir_extra=b"\0\0\0\0"))
    add("compressed-metadata-bad-json", "MetadataError", "not valid JSON",
        "a valid zlib stream whose inflated metadata is {\"a\": }",
        Builder([zsec(1), zsec(2, b'{"a": }'), S(4)],
                copy.deepcopy(good.tensors), minor=1, required=1).build())

    # --- the hardened 1.1 text: what a reader with fixed-width integers gets wrong (spec §1.1) ---
    data_off = good_reader.sections[-1].offset
    add("section-length-wraps", "LayoutError", "footer starts at",
        "DATA length 2^64 - offset: offset + length wraps to 0 in 64 bits", edit(sec(2, length=(1 << 64) - data_off)))
    y_off = good_reader.tensors[1].payload_offset
    add("payload-length-wraps", "LayoutError", "DATA section ends",
        "payload_length 2^64 - payload_offset: the payload's end wraps to 0 in 64 bits",
        edit(lambda b: setattr(b.tensors[1], "length", (1 << 64) - y_off)))
    add("asset-length-wraps", "LayoutError", "runs past the end",
        "asset data_length 2^64 - 15 (its position in the section): position + length wraps to 0",
        assets(struct.pack("<IH", 1, 1) + b"a" + struct.pack("<Q", (1 << 64) - 15) + b"x"))
    add("raw-length-sum-wraps", "LimitExceededError", "after decompression (limit",
        "compressed METADATA whose raw_length is 2^64 - 4: with the DIRECTORY's, the sum wraps to a few bytes "
        "in 64 bits (refused before inflating anything)",
        zfile(meta_store=lambda raw: struct.pack("<Q", (1 << 64) - 4) + zlib.compress(raw, 9)))
    p = bytearray(rp)
    for c in (0, 1):                                  # the u32 sum of the word counts gains exactly 2^32
        struct.pack_into("<I", p, table_at + 8 * c, int(table[c, 0]) + (1 << 31))
    add("word-count-sum-wraps", "LayoutError", "chunks hold",
        "chunk word counts of chunks 0 and 1 raised by 2^31 each: their u32 sum wraps to the right total "
        "(payload CRC updated)", rb(p))
    add("shape-2p32-squared", "LimitExceededError", "more than",
        "RAW float32 of shape [2^32, 2^32] with an empty payload: the product is 0 in 64 bits",
        edit(t0(shape=[1 << 32, 1 << 32], payload=b"")))
    add("rans-numel-beyond-payload", "LayoutError", "checked_length says",
        "CODEBOOK_RANS tensor of shape [2^40, 2^10] (2^50 elements) over an 8-symbol chunk's payload: the head "
        "must be checked before anything proportional to numel is allocated",
        base([T(b"w", [1 << 40, 1 << 10], 1, 1, 2, bytes(rp), rchecked)]).build())
    add("tensor-name-newline", "LayoutError", "control character", "tensor named x<LF>y",
        edit(t0(name=b"x\ny")))
    add("tensor-name-nul", "LayoutError", "control character", "tensor named x<NUL>y", edit(t0(name=b"x\0y")))

    def asset_list(*names):
        return assets(struct.pack("<I", len(names)) + b"".join(struct.pack("<H", len(n)) + n + struct.pack("<Q", 1) + b"x"
                                                               for n in names))
    add("asset-name-colon", "LayoutError", "safe relative path", "asset named C:evil (a drive on Windows)",
        asset_list(b"C:evil"))
    add("asset-name-device", "LayoutError", "safe relative path", "asset named tokenizer/aux.json (a device on Windows)",
        asset_list(b"tokenizer/aux.json"))
    add("asset-name-trailing-dot", "LayoutError", "safe relative path",
        "asset named notes. (Windows drops the dot)", asset_list(b"notes."))
    add("asset-name-non-ascii", "LayoutError", "safe relative path",
        "asset named vocab\u00e9.json (asset names are printable ASCII)", asset_list("vocab\u00e9.json".encode()))
    add("asset-name-case-duplicate", "LayoutError", "duplicate asset name",
        "assets Vocab.json and vocab.json (one file on a case-insensitive file system)",
        asset_list(b"Vocab.json", b"vocab.json"))
    add("asset-file-and-folder", "LayoutError", "folder",
        "assets tokenizer and tokenizer/vocab.json (a file cannot also be a folder)",
        asset_list(b"tokenizer", b"tokenizer/vocab.json"))
    return out


def _flip_unsealed(data: bytes, at: int) -> bytes:
    """`data` with one bit flipped at `at`, the section CRC left as it was (header and footer resealed)."""
    b = bytearray(data)
    b[at] ^= 0x04
    b[-48:-16] = hashlib.sha256(bytes(b[:-48])).digest()
    return bytes(b)


def main(out_dir: str | None = None) -> None:
    out_dir = out_dir or os.path.dirname(os.path.abspath(__file__))
    vdir, idir = os.path.join(out_dir, "valid"), os.path.join(out_dir, "invalid")
    for d in (vdir, idir):
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)
    for i, (name, desc, write) in enumerate(valid_cases(), 1):
        stem = f"{i:03d}-{name}"
        path = os.path.join(vdir, stem + ".acqe")
        write(path)
        with AcqeReader(path) as rd:
            rd.verify()
            doc = {"description": desc, "version": list(rd.version), "file_sha256":
                   hashlib.sha256(open(path, "rb").read()).hexdigest(), "metadata": rd.metadata,
                   "tensors": [{"name": t.name, "shape": list(t.shape), "codec": t.codec.name,
                                "stored_dtype": t.stored_dtype, "decoded_dtype": t.decoded_dtype,
                                "sha256": _sha(rd.read(t.name))} for t in rd.tensors],
                   "assets": {k: hashlib.sha256(v).hexdigest() for k, v in rd.assets.items()}}
        with open(os.path.join(vdir, stem + ".json"), "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")
    manifest = []
    for i, (name, err, frag, desc, data) in enumerate(invalid_cases(vdir), 1):
        stem = f"{i:03d}-{name}.acqe"
        with open(os.path.join(idir, stem), "wb") as f:
            f.write(data)
        manifest.append({"file": stem, "error": err, "message": frag, "description": desc})
    with open(os.path.join(idir, "MANIFEST.json"), "w", encoding="utf-8") as f:
        json.dump({"note": "Each file must be rejected (at the latest by a full verify) with this error class "
                           "(acqe_format.errors) and a message containing this fragment.",
                   "files": manifest}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(valid_cases())} valid and {len(manifest)} invalid vectors to {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
