"""A small ctypes binding to the shared libacqe (libacqe/build/libacqe.so), for tests and tools.

    from libacqe_ctypes import CFile, LibAcqeError, build
    so = build()                          # make -C libacqe (if needed); returns the .so path
    with CFile("model.acqe") as f:        # or CFile(bytes_object)
        f.tensors                         # [TensorEntry(name, shape, stored_dtype, decoded_dtype, codec, ...)]
        f.metadata                        # the validated JSON text (bytes)
        a = f.decode(0, dtype="float16", threads=2)   # numpy array (bfloat16 as uint16 bit patterns)
        report = f.verify(threads=2)      # dict: tensors, decoded_bytes, payload_bytes, max_expansion, ...

Errors raise `LibAcqeError` with `.category` ("LayoutError", ..., the names of spec section 14 and of
MANIFEST.json; "DecodeLimitError", "ArgumentError", "IOError" for the others) and `.message`.
The numpy-free parts work without numpy. This is a test binding; the package's own fast path is the
CPython extension in `_libacqe.c`.
"""
from __future__ import annotations

import ctypes as C
import os
import shutil
import subprocess
from typing import NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))
LIBDIR = os.path.dirname(HERE)

DTYPES = {0: None, 1: "float32", 2: "float16", 3: "bfloat16", 4: "float64", 5: "int8", 6: "uint8", 7: "int16",
          8: "int32", 9: "int64", 10: "bool", 11: "uint16", 12: "uint32", 13: "uint64"}
DTYPE_CODES = {v: k for k, v in DTYPES.items() if v}
CODECS = {1: "RAW", 2: "CODEBOOK_RANS", 3: "CODEBOOK_PACKED"}


class _Error(C.Structure):
    _fields_ = [("status", C.c_int), ("message", C.c_char * 512)]


class _Options(C.Structure):
    _fields_ = [("max_decoded_bytes", C.c_uint64), ("flags", C.c_uint32)]


class _Header(C.Structure):
    _fields_ = [("major", C.c_uint16), ("minor", C.c_uint16), ("alignment", C.c_uint32),
                ("required_features", C.c_uint64), ("optional_features", C.c_uint64),
                ("file_length", C.c_uint64), ("section_count", C.c_uint32), ("footer_sha256", C.c_uint8 * 32)]


class _Section(C.Structure):
    _fields_ = [("kind", C.c_uint32), ("flags", C.c_uint32), ("offset", C.c_uint64), ("length", C.c_uint64),
                ("content_length", C.c_uint64), ("crc32", C.c_uint32)]


class _Tensor(C.Structure):
    _fields_ = [("name", C.c_char_p), ("name_length", C.c_size_t), ("rank", C.c_uint32),
                ("shape", C.c_uint64 * 8), ("numel", C.c_uint64), ("stored_dtype", C.c_int),
                ("decoded_dtype", C.c_int), ("codec", C.c_int), ("payload_offset", C.c_uint64),
                ("payload_length", C.c_uint64), ("checked_length", C.c_uint64), ("payload_crc32", C.c_uint32)]


class _Asset(C.Structure):
    _fields_ = [("name", C.c_char_p), ("name_length", C.c_size_t), ("data", C.POINTER(C.c_uint8)),
                ("size", C.c_uint64)]


class _Report(C.Structure):
    _fields_ = [("tensors", C.c_uint64), ("decoded_bytes", C.c_uint64), ("payload_bytes", C.c_uint64),
                ("max_expansion", C.c_double), ("max_expansion_tensor", C.c_int64)]


class TensorEntry(NamedTuple):
    name: str
    shape: tuple
    stored_dtype: str
    decoded_dtype: str
    codec: str
    numel: int
    payload_offset: int
    payload_length: int
    checked_length: int
    payload_crc32: int


class LibAcqeError(Exception):
    """An error from libacqe: `.category` is the spec's category name (e.g. "LayoutError")."""

    def __init__(self, category: str, message: str):
        super().__init__(f"{category}: {message}")
        self.category = category
        self.message = message


def build(make: str = "make", jobs: int = 2) -> str:
    """Build libacqe with its Makefile if the shared library is missing or older than a source file;
    returns the library's path. Raises RuntimeError without a C compiler."""
    so = os.path.join(LIBDIR, "build", "libacqe.so")
    sources = [os.path.join(d, f) for d in (os.path.join(LIBDIR, "src"), LIBDIR) for f in os.listdir(d)
               if f.endswith((".c", ".h"))]
    if os.path.exists(so) and all(os.path.getmtime(so) >= os.path.getmtime(s) for s in sources):
        return so
    if not shutil.which(make) or not (shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
                                      or shutil.which("clang")):
        raise RuntimeError("no make or C compiler")
    subprocess.run([make, "-C", LIBDIR, f"-j{jobs}", "build/libacqe.so"], check=True, capture_output=True)
    return so


_LIB = None


def lib(path: str | None = None):
    global _LIB
    if _LIB is None:
        L = C.CDLL(path or build())
        L.acqe_open_path.argtypes = [C.c_char_p, C.POINTER(_Options), C.POINTER(C.c_void_p), C.POINTER(_Error)]
        L.acqe_open_buffer.argtypes = [C.c_void_p, C.c_size_t, C.POINTER(_Options), C.POINTER(C.c_void_p),
                                       C.POINTER(_Error)]
        L.acqe_close.argtypes = [C.c_void_p]
        L.acqe_get_header.argtypes = [C.c_void_p, C.POINTER(_Header)]
        L.acqe_section_count.argtypes = [C.c_void_p]
        L.acqe_section_count.restype = C.c_size_t
        L.acqe_get_section.argtypes = [C.c_void_p, C.c_size_t, C.POINTER(_Section)]
        L.acqe_metadata.argtypes = [C.c_void_p, C.POINTER(C.c_size_t)]
        L.acqe_metadata.restype = C.POINTER(C.c_uint8)
        L.acqe_tensor_count.argtypes = [C.c_void_p]
        L.acqe_tensor_count.restype = C.c_size_t
        L.acqe_tensor.argtypes = [C.c_void_p, C.c_size_t]
        L.acqe_tensor.restype = C.POINTER(_Tensor)
        L.acqe_find_tensor.argtypes = [C.c_void_p, C.c_char_p, C.c_size_t]
        L.acqe_find_tensor.restype = C.c_int64
        L.acqe_assets.argtypes = [C.c_void_p, C.POINTER(C.POINTER(_Asset)), C.POINTER(C.c_size_t),
                                  C.POINTER(_Error)]
        L.acqe_output_size.argtypes = [C.POINTER(_Tensor), C.c_int, C.POINTER(C.c_uint64), C.POINTER(_Error)]
        L.acqe_decode.argtypes = [C.c_void_p, C.c_size_t, C.c_int, C.c_void_p, C.c_size_t, C.c_int,
                                  C.POINTER(_Error)]
        L.acqe_verify.argtypes = [C.c_void_p, C.c_int, C.POINTER(_Report), C.POINTER(_Error)]
        L.acqe_set_max_decoded_bytes.argtypes = [C.c_void_p, C.c_uint64]
        L.acqe_status_name.argtypes = [C.c_int]
        L.acqe_status_name.restype = C.c_char_p
        _LIB = L
    return _LIB


def _raise(status: int, err: _Error):
    name = lib().acqe_status_name(status).decode()
    raise LibAcqeError(name, err.message.decode("utf-8", "replace"))


class CFile:
    """An open .acqe file, read by libacqe (a path, or bytes kept alive by this object)."""

    def __init__(self, source, max_decoded_bytes: int = 0):
        L = lib()
        self._h = C.c_void_p()
        self._keep = None
        err = _Error()
        opts = _Options(max_decoded_bytes, 0)
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._keep = C.create_string_buffer(bytes(source), len(source)) if len(source) else None
            st = L.acqe_open_buffer(self._keep, len(source), C.byref(opts), C.byref(self._h), C.byref(err))
        else:
            st = L.acqe_open_path(os.fsencode(source), C.byref(opts), C.byref(self._h), C.byref(err))
        if st:
            _raise(st, err)

    def close(self):
        if self._h:
            lib().acqe_close(self._h)
            self._h = C.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def __del__(self):
        self.close()

    @property
    def header(self) -> dict:
        h = _Header()
        lib().acqe_get_header(self._h, C.byref(h))
        return {"version": (h.major, h.minor), "alignment": h.alignment, "required_features": h.required_features,
                "optional_features": h.optional_features, "file_length": h.file_length,
                "section_count": h.section_count, "footer_sha256": bytes(h.footer_sha256)}

    @property
    def sections(self) -> list[dict]:
        out = []
        for i in range(lib().acqe_section_count(self._h)):
            s = _Section()
            lib().acqe_get_section(self._h, i, C.byref(s))
            out.append({k: getattr(s, k) for k, _ in _Section._fields_})
        return out

    @property
    def metadata(self) -> bytes:
        n = C.c_size_t()
        p = lib().acqe_metadata(self._h, C.byref(n))
        return C.string_at(p, n.value)

    @property
    def tensors(self) -> list[TensorEntry]:
        out = []
        for i in range(lib().acqe_tensor_count(self._h)):
            t = lib().acqe_tensor(self._h, i).contents
            out.append(TensorEntry(C.string_at(t.name, t.name_length).decode("utf-8"), tuple(t.shape[:t.rank]),
                                   DTYPES[t.stored_dtype], DTYPES[t.decoded_dtype], CODECS[t.codec], t.numel,
                                   t.payload_offset, t.payload_length, t.checked_length, t.payload_crc32))
        return out

    def find(self, name: str) -> int:
        b = name.encode("utf-8")
        return lib().acqe_find_tensor(self._h, b, len(b))

    @property
    def assets(self) -> dict[str, bytes]:
        p = C.POINTER(_Asset)()
        n = C.c_size_t()
        err = _Error()
        st = lib().acqe_assets(self._h, C.byref(p), C.byref(n), C.byref(err))
        if st:
            _raise(st, err)
        return {C.string_at(p[i].name, p[i].name_length).decode("utf-8"): C.string_at(p[i].data, p[i].size)
                for i in range(n.value)}

    def set_max_decoded_bytes(self, n: int) -> None:
        lib().acqe_set_max_decoded_bytes(self._h, n)

    def decode(self, index, dtype: str | None = None, threads: int = 1):
        """Tensor `index` (or name) decoded, or converted to dtype ("float32", "float16", "bfloat16")."""
        import numpy as np
        if isinstance(index, str):
            i = self.find(index)
            if i < 0:
                raise KeyError(index)
            index = i
        L = lib()
        t = L.acqe_tensor(self._h, index)
        if not t:
            raise IndexError(index)
        code = DTYPE_CODES[dtype] if dtype else 0
        nbytes = C.c_uint64()
        err = _Error()
        st = L.acqe_output_size(t, code, C.byref(nbytes), C.byref(err))
        if st:
            _raise(st, err)
        out_code = code or t.contents.decoded_dtype
        npd = {"bfloat16": "<u2", "bool": "?"}.get(DTYPES[out_code], DTYPES[out_code])
        shape = tuple(t.contents.shape[:t.contents.rank])
        numel = t.contents.numel
        out = np.empty(max(numel, 1), dtype=np.dtype(npd).newbyteorder("="))
        st = L.acqe_decode(self._h, index, code, out.ctypes.data_as(C.c_void_p), nbytes.value, threads, C.byref(err))
        if st:
            _raise(st, err)
        return out[:numel].reshape(shape)

    def verify(self, threads: int = 1) -> dict:
        rep = _Report()
        err = _Error()
        st = lib().acqe_verify(self._h, threads, C.byref(rep), C.byref(err))
        if st:
            _raise(st, err)
        return {k: getattr(rep, k) for k, _ in _Report._fields_}


def category_of(source, threads: int = 1) -> str | None:
    """None if libacqe opens and verifies `source`, else the error's category name."""
    try:
        with CFile(source) as f:
            f.verify(threads)
        return None
    except LibAcqeError as e:
        return e.category
