"""A deterministic corpus of hostile and damaged checkpoints for `acqe convert`, and the oracle to judge it.

    cases = list(corpus(seed=0, mutations=300))      # hand-written attacks + seeded mutations
    path = cases[i].materialise(workdir)              # writes the file or folder, returns what to convert

Everything here builds bytes itself (no torch needed): a small pickle assembler (`dumps` over `G`, `R`,
`PID`, `Build`, `NewObj`, `Raw`, ... nodes), a zip writer whose every header field can lie (`Rec`,
`build_zip`), a torch.save-shaped checkpoint builder (`torch_zip`), a safetensors writer, and folder
specs (files, FIFOs, symlinks). `reference()` loads a case the way the trusted libraries do
(`torch.load(weights_only=True)`, `safetensors`) so a runner can tell "refused", "same values" and
"silently wrong" apart. `tests/test_sources_hostile.py` runs a few hundred cases in CI;
`bench/fuzz_convert.py` runs tens of thousands.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import struct
import sys
import types
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

# --------------------------------------------------------------------------------------------------
# pickle assembler (protocol 2 opcodes, as torch.save writes them, plus anything an attacker might)


@dataclass(frozen=True)
class G:                     # GLOBAL module name
    module: str
    name: str


@dataclass(frozen=True)
class SG:                    # STACK_GLOBAL (protocol 4)
    module: str
    name: str


@dataclass
class R:                     # REDUCE: fn(*args)
    fn: object
    args: tuple = ()


@dataclass
class NewObj:                # NEWOBJ: cls.__new__(cls, *args)
    cls: object
    args: tuple = ()


@dataclass
class Build:                 # BUILD: obj.__setstate__(state)
    obj: object
    state: object


@dataclass
class PID:                   # BINPERSID
    pid: object


@dataclass
class Raw:                   # raw opcode bytes
    data: bytes


@dataclass
class Put:                   # memoize node at idx (BINPUT / LONG_BINPUT)
    node: object
    idx: int


@dataclass(frozen=True)
class Get:                   # BINGET / LONG_BINGET
    idx: int


@dataclass
class OD:                    # collections.OrderedDict() then SETITEMS
    items: dict


@dataclass
class Bytes:                 # protocol 2 bytes: _codecs.encode(str, 'latin1')
    data: bytes


def _enc(o, out: list) -> None:
    if isinstance(o, Raw):
        out.append(o.data)
    elif o is None:
        out.append(b"N")
    elif o is True:
        out.append(b"\x88")
    elif o is False:
        out.append(b"\x89")
    elif isinstance(o, int):
        if 0 <= o < 256:
            out.append(b"K" + bytes([o]))
        elif 0 <= o < 65536:
            out.append(b"M" + struct.pack("<H", o))
        elif -(1 << 31) <= o < (1 << 31):
            out.append(b"J" + struct.pack("<i", o))
        else:
            b = pickle.encode_long(o)
            out.append(b"\x8a" + bytes([len(b)]) + b if len(b) < 256 else b"\x8b" + struct.pack("<i", len(b)) + b)
    elif isinstance(o, float):
        out.append(b"G" + struct.pack(">d", o))
    elif isinstance(o, str):
        b = o.encode("utf-8", "surrogatepass")
        out.append(b"X" + struct.pack("<I", len(b)) + b)
    elif isinstance(o, Bytes):
        _enc(R(G("_codecs", "encode"), (o.data.decode("latin1"), "latin1")), out)
    elif isinstance(o, bytes):
        out.append(b"C" + bytes([len(o)]) + o if len(o) < 256 else b"B" + struct.pack("<I", len(o)) + o)
    elif isinstance(o, tuple):
        if not o:
            out.append(b")")
        elif len(o) <= 3:
            for x in o:
                _enc(x, out)
            out.append({1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(o)])
        else:
            out.append(b"(")
            for x in o:
                _enc(x, out)
            out.append(b"t")
    elif isinstance(o, list):
        out.append(b"]")
        if o:
            out.append(b"(")
            for x in o:
                _enc(x, out)
            out.append(b"e")
    elif isinstance(o, (dict, OD)):
        if isinstance(o, OD):
            _enc(R(G("collections", "OrderedDict"), ()), out)
            items = o.items
        else:
            out.append(b"}")
            items = o
        if items:
            out.append(b"(")
            for k, v in items.items():
                _enc(k, out)
                _enc(v, out)
            out.append(b"u")
    elif isinstance(o, G):
        out.append(b"c" + o.module.encode("utf-8", "surrogatepass") + b"\n" + o.name.encode("utf-8", "surrogatepass") + b"\n")
    elif isinstance(o, SG):
        _enc(o.module, out)
        _enc(o.name, out)
        out.append(b"\x93")
    elif isinstance(o, R):
        _enc(o.fn, out)
        _enc(tuple(o.args), out)
        out.append(b"R")
    elif isinstance(o, NewObj):
        _enc(o.cls, out)
        _enc(tuple(o.args), out)
        out.append(b"\x81")
    elif isinstance(o, Build):
        _enc(o.obj, out)
        _enc(o.state, out)
        out.append(b"b")
    elif isinstance(o, PID):
        _enc(o.pid, out)
        out.append(b"Q")
    elif isinstance(o, Put):
        _enc(o.node, out)
        out.append(b"q" + bytes([o.idx]) if o.idx < 256 else b"r" + struct.pack("<I", o.idx))
    elif isinstance(o, Get):
        out.append(b"h" + bytes([o.idx]) if o.idx < 256 else b"j" + struct.pack("<I", o.idx))
    else:
        raise TypeError(f"cannot assemble {type(o).__name__}")


def dumps(obj, proto: int = 2) -> bytes:
    out: list[bytes] = [b"\x80" + bytes([proto])]
    _enc(obj, out)
    out.append(b".")
    return b"".join(out)


STORAGE = {"float32": ("FloatStorage", "<f4"), "float16": ("HalfStorage", "<f2"), "bfloat16": ("BFloat16Storage", "<u2"),
           "float64": ("DoubleStorage", "<f8"), "int64": ("LongStorage", "<i8"), "int32": ("IntStorage", "<i4"),
           "int16": ("ShortStorage", "<i2"), "int8": ("CharStorage", "i1"), "uint8": ("ByteStorage", "u1"),
           "bool": ("BoolStorage", "u1")}


def storage_pid(key: str, stype: str = "FloatStorage", numel: int = 1, location: str = "cpu", module: str | None = None):
    module = module or ("torch.storage" if stype == "UntypedStorage" else "torch")
    return PID(("storage", G(module, stype), key, location, numel))


def tensor(key: str, size=(), stride=None, offset: int = 0, numel: int | None = None, stype: str = "FloatStorage",
           fn: str = "_rebuild_tensor_v2", location: str = "cpu", pid=None, extra: tuple = ()):
    """torch's `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` for storage `key`."""
    size = tuple(size)
    if stride is None:
        stride, acc = [], 1
        for d in reversed(size):
            stride.insert(0, acc)
            acc *= max(d, 1)
    if numel is None:
        numel = offset + (1 + sum((d - 1) * s for d, s in zip(size, stride)) if all(size) else 0)
    pid = pid if pid is not None else storage_pid(key, stype, numel, location)
    args = (pid, offset, size, tuple(stride), False, OD({})) + tuple(extra)
    if fn == "_rebuild_tensor":
        args = args[:4]
    return R(G("torch._utils", fn), args)


# --------------------------------------------------------------------------------------------------
# zip writer where every field can lie


@dataclass
class Rec:
    name: str
    data: bytes
    method: int = 0
    flags: int = 0x800                # utf-8 names
    cd_crc: int | None = None         # central directory overrides (None: the true value)
    cd_csize: int | None = None
    cd_usize: int | None = None
    cd_offset: int | None = None
    cd_method: int | None = None
    cd_external: int = 0              # external file attributes (0x10: MS-DOS directory)
    lh_name: str | None = None        # local header overrides
    lh_method: int | None = None
    extra: bytes = b""
    descriptor: bool = False          # sizes and CRC in a data descriptor (as torch/miniz writes)


def _compress(data: bytes, method: int) -> bytes:
    if method == 8:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    return data


def build_zip(recs: list[Rec], prepend: bytes = b"", comment: bytes = b"", truncate_cd: int = 0) -> bytes:
    out = bytearray(prepend)
    cd = bytearray()
    for r in recs:
        comp = _compress(r.data, r.method)
        crc = zlib.crc32(r.data)
        off = len(out)
        name = r.name.encode("utf-8", "surrogatepass")
        lname = (r.lh_name if r.lh_name is not None else r.name).encode("utf-8", "surrogatepass")
        flags = r.flags | (0x8 if r.descriptor else 0)
        lmethod = r.lh_method if r.lh_method is not None else r.method
        if r.descriptor:
            out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, lmethod, 0, 0x21, 0, 0, 0, len(lname), len(r.extra))
        else:
            out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, lmethod, 0, 0x21, crc, len(comp), len(r.data),
                               len(lname), len(r.extra))
        out += lname + r.extra + comp
        if r.descriptor:
            out += struct.pack("<IIII", 0x08074B50, crc, len(comp), len(r.data))
        cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags,
                          r.cd_method if r.cd_method is not None else r.method, 0, 0x21,
                          crc if r.cd_crc is None else r.cd_crc & 0xFFFFFFFF,
                          len(comp) if r.cd_csize is None else r.cd_csize & 0xFFFFFFFF,
                          len(r.data) if r.cd_usize is None else r.cd_usize & 0xFFFFFFFF,
                          len(name), 0, 0, 0, 0, r.cd_external, (off if r.cd_offset is None else r.cd_offset) & 0xFFFFFFFF)
        cd += name
    cd_off = len(out)
    out += cd[:len(cd) - truncate_cd] if truncate_cd else cd
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(recs), len(recs), len(cd), cd_off, len(comment)) + comment
    return bytes(out)


def torch_zip(pkl: bytes, storages: dict[str, bytes], archive: str = "archive", method: int = 0,
              byteorder: bytes | None = b"little", version: bytes | None = b"3\n", descriptor: bool = True,
              extra_recs: list[Rec] = (), **zip_kw) -> bytes:
    """A checkpoint laid out as torch.save writes one (records in its order, data descriptors)."""
    recs = [Rec(f"{archive}/data.pkl", pkl, method, descriptor=descriptor),
            Rec(f"{archive}/.format_version", b"1", descriptor=descriptor),
            Rec(f"{archive}/.storage_alignment", b"64", descriptor=descriptor)]
    if byteorder is not None:
        recs.append(Rec(f"{archive}/byteorder", byteorder, descriptor=descriptor))
    recs += [Rec(f"{archive}/data/{k}", v, method, descriptor=descriptor) for k, v in storages.items()]
    if version is not None:
        recs.append(Rec(f"{archive}/version", version, descriptor=descriptor))
    recs += list(extra_recs)
    return build_zip(recs, **zip_kw)


def rezip(raw: bytes, method: int = zipfile.ZIP_DEFLATED, only: Callable[[str], bool] | None = None) -> bytes:
    """The same zip with every (or every `only`-selected) record re-written with `method`."""
    zin = zipfile.ZipFile(io.BytesIO(raw))
    recs = []
    for i in zin.infolist():
        m = method if (only is None or only(i.filename)) else zipfile.ZIP_STORED
        recs.append(Rec(i.filename, zin.read(i.filename), m))
    return build_zip(recs)


class _Anything:
    """What `storage_itemsizes` hands a pickle: calls, builds and items all succeed and do nothing."""
    def __init__(self, *a, **k): pass
    def __call__(self, *a, **k): return _Anything()
    def __setstate__(self, s): pass
    def __setitem__(self, k, v): pass


def storage_itemsizes(pkl: bytes) -> dict[str, int]:
    """{storage key: element size} of a (trusted) torch pickle, without torch and without running it."""
    sizes = {}
    legacy = {v[0]: np.dtype(v[1]).itemsize for v in STORAGE.values()}

    class U(pickle.Unpickler):
        def find_class(self, m, n):
            return ("storage-type", n) if n.endswith("Storage") else _Anything()

        def persistent_load(self, pid):
            sizes[pid[2]] = 1 if pid[1][1] == "UntypedStorage" else legacy[pid[1][1]]
            return _Anything()
    U(io.BytesIO(pkl)).load()
    return sizes


def to_big_endian(raw: bytes) -> bytes:
    """A torch zip checkpoint rewritten as a big-endian machine would have saved it."""
    zin = zipfile.ZipFile(io.BytesIO(raw))
    names = zin.namelist()
    prefix = names[0].split("/")[0]
    sizes = storage_itemsizes(zin.read(f"{prefix}/data.pkl"))
    recs = []
    for n in names:
        d = zin.read(n)
        rel = n[len(prefix) + 1:]
        if rel == "byteorder":
            d = b"big"
        elif rel.startswith("data/") and sizes.get(rel[5:], 1) > 1:
            k = sizes[rel[5:]]
            d = np.frombuffer(d, f"<u{k}").astype(f">u{k}").tobytes()
        recs.append(Rec(n, d))
    if f"{prefix}/byteorder" not in names:
        recs.insert(1, Rec(f"{prefix}/byteorder", b"big"))
    return build_zip(recs)


@contextlib.contextmanager
def fake_lightning():
    """Registers `pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint` while torch.save pickles it."""
    names = ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint")
    saved = {n: sys.modules.get(n) for n in names}
    mods = [types.ModuleType(n) for n in names]
    cls = type("ModelCheckpoint", (), {"__module__": names[-1]})
    mods[-1].ModelCheckpoint = cls
    for n, m in zip(names, mods):
        sys.modules[n] = m
    try:
        yield cls
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


# --------------------------------------------------------------------------------------------------
# safetensors writer (header fields can lie)


def safetensors_bytes(tensors: dict[str, np.ndarray] | None = None, header: dict | None = None, data: bytes | None = None,
                      raw_header: bytes | None = None, length: int | None = None) -> bytes:
    if header is None:
        header, chunks, pos = {}, [], 0
        codes = {"<f4": "F32", "<f2": "F16", "<f8": "F64", "<i8": "I64", "<i4": "I32", "<i2": "I16", "|i1": "I8",
                 "|u1": "U8", "|b1": "BOOL", "<u2": "U16"}
        for k, a in (tensors or {}).items():
            b = np.ascontiguousarray(a).tobytes()
            header[k] = {"dtype": codes[a.dtype.str], "shape": list(a.shape), "data_offsets": [pos, pos + len(b)]}
            chunks.append(b)
            pos += len(b)
        data = b"".join(chunks) if data is None else data
    h = raw_header if raw_header is not None else json.dumps(header, allow_nan=True).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h) if length is None else length) + h + (data or b"")


# --------------------------------------------------------------------------------------------------
# cases

@dataclass
class Case:
    name: str
    kind: str                         # "ckpt" | "safetensors" | "folder"
    data: bytes | None = None         # the file (ckpt / safetensors)
    tree: dict | None = None          # folder: relative path -> bytes | ("fifo",) | ("symlink", target) | ("dir",)
    torch_safe: bool = True           # torch.load can be run on it in-process (no known crash / huge allocation)
    expect: str = "any"               # "error": must be refused; "ok": must convert; "any": judged by the oracle
    suffix: str = ".ckpt"

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        return sum(len(v) for v in (self.tree or {}).values() if isinstance(v, bytes))

    def materialise(self, workdir: str) -> str:
        """Write the case under `workdir`; returns the path `acqe convert` gets."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)[:80]
        if self.kind != "folder":
            p = os.path.join(workdir, safe + self.suffix)
            with open(p, "wb") as f:
                f.write(self.data)
            return p
        root = os.path.join(workdir, safe)
        os.makedirs(root, exist_ok=True)
        for rel, v in (self.tree or {}).items():
            p = os.path.join(root, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            if isinstance(v, bytes):
                with open(p, "wb") as f:
                    f.write(v)
            elif v[0] == "fifo":
                os.mkfifo(p)
            elif v[0] == "symlink":
                os.symlink(v[1], p)
            elif v[0] == "dir":
                os.makedirs(p, exist_ok=True)
        return root


def _arr(rng, dtype: str, shape) -> np.ndarray:
    n = int(np.prod(shape)) if shape else 1
    if dtype in ("float32", "float16", "float64"):
        return rng.standard_normal(n).astype(dtype).reshape(shape)
    if dtype == "bfloat16":
        return (rng.standard_normal(n).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).reshape(shape)
    if dtype == "bool":
        return (rng.random(n) < 0.5).astype(np.uint8).reshape(shape)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), n, dtype=dtype).reshape(shape)


def _sd_tensors(rng, spec: dict[str, tuple[str, tuple]]) -> tuple[dict, dict]:
    """(pickle nodes by name, storage bytes by key) for a dict of contiguous tensors."""
    nodes, stores = {}, {}
    for i, (name, (dtype, shape)) in enumerate(spec.items()):
        a = _arr(rng, dtype, shape)
        stores[str(i)] = a.astype(STORAGE[dtype][1]).tobytes() if dtype not in ("bfloat16", "bool") else a.tobytes()
        nodes[name] = tensor(str(i), shape, stype=STORAGE[dtype][0])
    return nodes, stores


STUB = G("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint")


def seeds(rng: random.Random) -> list[Case]:
    """Valid checkpoints of every shape the readers handle (the mutation inputs)."""
    nrng = np.random.default_rng(rng.randrange(1 << 30))
    out = []
    spec = {"enc.w": ("float32", (6, 5)), "enc.b": ("float16", (6,)), "dec.w": ("bfloat16", (3, 4)),
            "ids": ("int64", (1, 7)), "mask": ("bool", (4,)), "d": ("float64", (2, 2)), "s": ("float32", ())}
    nodes, stores = _sd_tensors(nrng, spec)
    out.append(Case("seed/flat", "ckpt", torch_zip(dumps(nodes), stores)))
    out.append(Case("seed/ordereddict", "ckpt", torch_zip(dumps(OD(nodes)), stores)))
    cfg = json.dumps({"architecture": "acqe-fuzz", "unet": {"sample_size": 8}, "scheduler": {"beta_start": 0.00085}})
    light = {"state_dict": OD(nodes), "global_step": 470000, "epoch": 3,
             "callbacks": {STUB: {"dirpath": "/ckpt", "best_model_score": None}},
             "cb": Build(NewObj(STUB, ()), {"monitor": "val/loss", "k": [1, 2, 3]}),
             "lr": R(G("numpy._core.multiarray", "scalar"), (Build(R(G("numpy", "dtype"), ("f8", False, True)),
                                                                     (3, "<", None, None, None, -1, -1, 0)),
                                                               Bytes(struct.pack("<d", 1e-4)))),
             "acqe_configs": cfg,
             "optimizer_states": [{"state": {0: {"exp_avg": tensor("99", (6, 5))}}}]}
    st = dict(stores, **{"99": np.zeros(30, "<f4").tobytes()})
    out.append(Case("seed/lightning", "ckpt", torch_zip(dumps(light), st)))
    # views of one storage: offsets, strides, transposes, expanded dims, v3 untyped, parameters
    base = nrng.standard_normal(120).astype("<f4")
    views = {"base": tensor("0", (10, 12)),
             "t": tensor("0", (12, 10), (1, 12)),
             "slice": tensor("0", (4, 5), (12, 2), offset=13, numel=120),
             "row": tensor("0", (12,), (1,), offset=36, numel=120),
             "pos": tensor("1", (1, 7), (0, 1)),
             "bcast": tensor("2", (8, 5), (0, 1)),
             "u16": R(G("torch._utils", "_rebuild_tensor_v3"),
                      (storage_pid("3", "UntypedStorage", 10, ), 0, (5,), (1,), False, OD({}), G("torch", "uint16"))),
             "param": R(G("torch._utils", "_rebuild_parameter"), (tensor("4", (3, 3), stype="HalfStorage"), True, OD({}))),
             "attr": R(G("torch._tensor", "_rebuild_from_type_v2"),
                       (G("torch._utils", "_rebuild_tensor_v2"), G("torch", "Tensor"),
                        (storage_pid("5", "LongStorage", 3), 0, (3,), (1,), False, OD({})), {"note": "x"}))}
    vst = {"0": base.tobytes(), "1": np.arange(7, dtype="<i8").astype("<f4").tobytes(),
           "2": nrng.standard_normal(5).astype("<f4").tobytes(), "3": np.arange(5, dtype="<u2").tobytes(),
           "4": nrng.standard_normal(9).astype("<f2").tobytes(), "5": np.array([-1, 0, 7], "<i8").tobytes()}
    out.append(Case("seed/views", "ckpt", torch_zip(dumps({"state_dict": views}), vst)))
    out.append(Case("seed/deflated", "ckpt", torch_zip(dumps(OD(nodes)), stores, method=8)))
    out.append(Case("seed/views-deflated", "ckpt", torch_zip(dumps({"state_dict": views}), vst, method=8)))
    big = {}
    for i, (dt, _) in enumerate(spec.values()):
        k = np.dtype(STORAGE[dt][1]).itemsize
        big[str(i)] = np.frombuffer(stores[str(i)], f"<u{k}").byteswap().tobytes() if k > 1 else stores[str(i)]
    out.append(Case("seed/bigendian", "ckpt", torch_zip(dumps(nodes), big, byteorder=b"big")))
    out.append(Case("seed/no-byteorder", "ckpt", torch_zip(dumps(nodes), stores, byteorder=None)))
    # safetensors
    arrs = {"a.w": nrng.standard_normal((6, 5)).astype(np.float32), "a.b": nrng.standard_normal(6).astype(np.float16),
            "n": np.arange(4, dtype=np.int64)}
    out.append(Case("seed/safetensors", "safetensors", safetensors_bytes(arrs), suffix=".safetensors"))
    blob = safetensors_bytes(arrs)
    hdr = json.loads(blob[8:8 + struct.unpack("<Q", blob[:8])[0]])
    hdr["__metadata__"] = {"format": "pt", "acqe_configs": cfg}
    out.append(Case("seed/safetensors-meta", "safetensors",
                    safetensors_bytes(header=hdr, data=b"".join(a.tobytes() for a in arrs.values())), suffix=".safetensors"))
    # diffusers folder
    tree = {"unet/diffusion_pytorch_model.safetensors": safetensors_bytes({"conv.w": arrs["a.w"]}),
            "unet/config.json": json.dumps({"sample_size": 8}).encode(),
            "vae/diffusion_pytorch_model.bin": torch_zip(dumps(OD({"dec.w": tensor("0", (6, 5))})), {"0": base[:30].tobytes()}),
            "vae/config.json": b'{"latent_channels": 4}',
            "scheduler/scheduler_config.json": b'{"num_train_timesteps": 1000}',
            "README.md": b"not read"}
    out.append(Case("seed/folder", "folder", tree=tree))
    return out


def attacks() -> list[Case]:
    """Hand-written attacks; each must be refused with one line (or, where noted, converted)."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal(20).astype("<f4").tobytes()
    ok = {"w": tensor("0", (4, 5))}
    cases: list[Case] = []

    def ck(name, obj, stores=None, expect="error", torch_safe=True, proto=2, **kw):
        cases.append(Case(f"attack/{name}", "ckpt", torch_zip(dumps(obj, proto) if not isinstance(obj, bytes) else obj,
                                                              {"0": w} if stores is None else stores, **kw),
                          torch_safe=torch_safe, expect=expect))

    # forbidden globals and callables
    for mod, fn in (("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"),
                    ("__builtin__", "eval"), ("subprocess", "Popen"), ("builtins", "getattr"), ("torch", "load"),
                    ("numpy", "load"), ("numpy.core.multiarray", "_reconstruct"), ("torch.serialization", "load"),
                    ("collections", "Counter"), ("builtins", "set"), ("torch", "device"), ("copyreg", "_reconstructor"),
                    ("pytorch_lightning.utilities.parsing", "AttributeDict")):
        ck(f"global-{mod}.{fn}", dict(ok, x=R(G(mod, fn), ("echo pwned",))))
    ck("stack-global-os.system", dict(ok, x=R(SG("os", "system"), ("echo pwned",))), proto=4)
    ck("reduce-on-storage-type", dict(ok, x=R(G("torch", "FloatStorage"), (1,))))
    ck("reduce-on-dtype", dict(ok, x=R(G("torch", "float32"), ())))
    ck("reduce-on-tensor-class", dict(ok, x=R(G("torch", "Tensor"), ())))
    ck("newobj-on-rebuild", dict(ok, x=NewObj(G("torch._utils", "_rebuild_tensor_v2"), ())))
    ck("build-mutates-allowlist",
       dict(ok, x=Build(G("torch", "FloatStorage"), (None, {"dtype": G("torch", "int64")}))))
    ck("build-mutates-rebuild-fn",
       dict(ok, x=Build(G("torch._utils", "_rebuild_tensor_v2"), (None, {"fn": G("collections", "OrderedDict")}))))
    ck("build-on-tensor", dict(w=Build(tensor("0", (4, 5)), (None, {"numel": 10 ** 12}))))
    ck("build-on-storage", dict(w=R(G("torch._utils", "_rebuild_tensor_v2"),
                                    (Build(storage_pid("0", numel=20), (None, {"nbytes": 10 ** 12})), 0, (4, 5), (5, 1),
                                     False, OD({})))))
    ck("build-stub-class", dict(ok, x=Build(STUB, (None, {"__setstate__": None}))), expect="error")
    ck("stub-reduce-ok", dict(ok, x=R(STUB, ("a", 1))), expect="ok")
    ck("rebuild-from-type-ordereddict", dict(w=R(G("torch._tensor", "_rebuild_from_type_v2"),
                                               (G("collections", "OrderedDict"), G("torch", "Tensor"), (), {}))))
    ck("np-scalar-object-dtype", dict(ok, x=R(G("numpy._core.multiarray", "scalar"),
                                             (R(G("numpy", "dtype"), ("O8", False, True)), Bytes(b"\0" * 8)))))
    ck("np-dtype-void", dict(ok, x=R(G("numpy", "dtype"), ("V16", False, True))))
    ck("codecs-rot13", dict(ok, x=R(G("_codecs", "encode"), ("abc", "rot13"))))
    ck("codecs-non-latin", dict(ok, x=R(G("_codecs", "encode"), ("\u20ac", "latin1"))))
    # opcodes a torch.save pickle never holds
    for name, raw in (("inst", b"(S'x'\nios\nsystem\n"), ("obj", b"(cos\nsystem\nS'x'\no"), ("ext1", b"\x82\x01"),
                      ("persid-text", b"Pfoo\n"), ("string", b"S'abc'\n"), ("next-buffer", b"\x97")):
        ck(f"opcode-{name}", b"\x80\x02" + raw + b".")
    ck("huge-binbytes8", b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"xx.")
    ck("huge-binunicode", b"\x80\x02X" + struct.pack("<I", 0xFFFFFFF0) + b"x.")
    ck("huge-memo-index", b"\x80\x02}r" + struct.pack("<I", 0xFFFFFFF0) + b".")
    ck("memo-get-missing", b"\x80\x02j" + struct.pack("<I", 7) + b".")
    ck("stack-underflow", b"\x80\x02R.")
    ck("no-stop", b"\x80\x02}")
    ck("deep-tuple-key", b"\x80\x02}" + b")" + b"\x85" * 200_000 + b"K\x01s.", torch_safe=False)
    ck("deep-list", dict(ok, x=Raw(b"]" * 50_000 + b"a" * 49_999)), expect="ok")
    ck("deep-dict", dict(ok, x=Raw(b"}K\x01" * 50_000 + b"N" + b"s" * 50_000)), expect="ok")
    ck("dag-lists", dict(ok, x=[Put([], 1)] + [Put([Get(i)] * 8, i + 1) for i in range(1, 40)]), expect="ok")
    dag = {f"k{i}": Put((Get(i), Get(i)), i + 1) for i in range(1, 24)}
    ck("dag-tuples", dict(ok, base=Put((1,), 1), **dag), expect="error", torch_safe=False)
    ck("dag-tuple-key", dict(ok, base=Put((1,), 1), **dag, key={Get(24): 1}), expect="error", torch_safe=False)
    ck("tuple-10-deep-ok", dict(ok, x=Raw(b")" + b"\x85" * 10)), expect="ok")
    ck("huge-int", dict(ok, step=10 ** 600), expect="ok")
    ck("huge-int-key", dict(ok, **{"x": {10 ** 600: 1}}), expect="ok")
    ck("nan-extra", dict(ok, loss=float("nan")), expect="ok")
    ck("lone-surrogate-extra", dict(ok, note="bad \ud800 text", **{"\udfff": 1}), expect="ok")
    ck("lone-surrogate-name", {"w\ud800": tensor("0", (4, 5))})
    ck("empty-name", {"": tensor("0", (4, 5))})
    ck("long-name", {"n" * 2000: tensor("0", (4, 5))})
    ck("int-and-str-key", {1: tensor("0", (4, 5)), "1": tensor("0", (4, 5))})
    ck("tuple-key-tensor", {(1, 2): tensor("0", (4, 5))})
    ck("top-level-list", [tensor("0", (4, 5))])
    ck("top-level-tensor", tensor("0", (4, 5)))
    ck("top-level-int", 7)
    ck("state-dict-not-dict", {"state_dict": [tensor("0", (4, 5))]})
    ck("no-tensors", {"state_dict": {}, "global_step": 3})
    ck("all-empty", {"a": tensor("0", (0, 5), numel=0)}, stores={"0": b""})
    # persistent ids and storages
    for name, pid in (("int", 0), ("str", "storage"), ("list", ["storage", G("torch", "FloatStorage"), "0", "cpu", 20]),
                      ("short", ("storage", G("torch", "FloatStorage"), "0")), ("not-storage", ("module", 1, 2, 3, 4)),
                      ("type-not-storage", ("storage", G("collections", "OrderedDict"), "0", "cpu", 20)),
                      ("key-traversal", ("storage", G("torch", "FloatStorage"), "../0", "cpu", 20)),
                      ("key-int", ("storage", G("torch", "FloatStorage"), 0, "cpu", 20)),
                      ("numel-negative", ("storage", G("torch", "FloatStorage"), "0", "cpu", -1)),
                      ("numel-float", ("storage", G("torch", "FloatStorage"), "0", "cpu", 20.0)),
                      ("numel-bool", ("storage", G("torch", "FloatStorage"), "0", "cpu", True)),
                      ("numel-huge", ("storage", G("torch", "FloatStorage"), "0", "cpu", 10 ** 18)),
                      ("location-int", ("storage", G("torch", "FloatStorage"), "0", 5, 20))):
        ck(f"pid-{name}", {"w": R(G("torch._utils", "_rebuild_tensor_v2"), (PID(pid), 0, (4, 5), (5, 1), False, OD({})))})
    ck("storage-twice-different-dtype", {"a": tensor("0", (4, 5)), "b": tensor("0", (4, 5), stype="IntStorage")})
    ck("storage-twice-different-numel", {"a": tensor("0", (4, 5)), "b": tensor("0", (2,), numel=2)})
    ck("record-missing", {"a": tensor("7", (4, 5))})
    ck("record-too-big", ok, stores={"0": w + b"\0" * 4})
    ck("record-too-small", ok, stores={"0": w[:-4]})
    # shapes, strides, offsets
    for name, args in (("size-negative", ((-4, 5), (5, 1), 0)), ("stride-negative", ((4, 5), (-5, 1), 19)),
                       ("size-float", ((4.0, 5), (5, 1), 0)), ("size-bool", ((True, 5), (5, 1), 0)),
                       ("size-str", (("4", 5), (5, 1), 0)), ("rank-mismatch", ((4, 5), (5,), 0)),
                       ("offset-negative", ((4, 5), (5, 1), -1)), ("offset-huge", ((4, 5), (5, 1), 10 ** 15)),
                       ("out-of-bounds", ((5, 5), (5, 1), 0)), ("out-of-bounds-stride", ((4, 5), (6, 1), 0)),
                       ("rank-9", ((1,) * 8 + (20,), (20,) * 8 + (1,), 0)), ("numel-overflow", ((2 ** 40, 2 ** 40), (1, 1), 0)),
                       ("stride-huge", ((2, 2), (2 ** 62, 1), 0))):
        size, stride, off = args
        ck(f"view-{name}", {"w": R(G("torch._utils", "_rebuild_tensor_v2"),
                                   (storage_pid("0", numel=20), off, size, stride, False, OD({})))},
           torch_safe=name not in ("numel-overflow",))
    ck("view-stride-negative-size1", {"w": R(G("torch._utils", "_rebuild_tensor_v2"),
                                             (storage_pid("0", numel=20), 0, (1, 20), (-7, 1), False, OD({})))},
       expect="ok")
    ck("stride0-20000x20000", {"w": tensor("0", (20000, 20000), (0, 0), numel=20)})
    ck("stride0-1e12", {"w": tensor("0", (10 ** 6, 10 ** 6), (0, 0), numel=20)})
    ck("overlapping-strides", {"w": tensor("0", (4000, 4000), (1, 1), numel=8000)}, stores={"0": b"\0" * 4 * 8000})
    ck("expand-16x-ok", {"w": tensor("0", (16, 4096), (0, 1), numel=4096)}, stores={"0": b"\0" * 4 * 4096}, expect="ok")
    ck("expand-17x", {"w": tensor("0", (17, 4096), (0, 1), numel=4096)}, stores={"0": b"\0" * 4 * 4096})
    ck("expand-small-ok", {"w": tensor("0", (64, 64), (0, 1), numel=64)}, stores={"0": b"\0" * 4 * 64}, expect="ok")
    shared = {f"t{i}": tensor("0", (256, 256)) for i in range(300)}
    ck("shared-storage-amplified", shared, stores={"0": b"\0" * 4 * 65536})
    for name, fn, args in (("meta", "_rebuild_meta_tensor_no_storage", (G("torch", "float32"), (4, 4), (4, 1), False)),
                           ("sparse", "_rebuild_sparse_tensor", (R(G("torch.serialization", "_get_layout"), ("torch.sparse_coo",)), ())),
                           ("qtensor", "_rebuild_qtensor", (storage_pid("0", "QInt8Storage", 20), 0, (20,), (1,),
                                                           (G("torch", "per_tensor_affine"), 0.1, 0), False, OD({}))),
                           ("nested", "_rebuild_nested_tensor", (tensor("0", (20,)), tensor("0", (2,), numel=20),
                                                                 tensor("0", (2,), numel=20), tensor("0", (2,), numel=20))),
                           ("wrapper", "_rebuild_wrapper_subclass", (G("torch", "Tensor"), G("torch", "float32"), (4,), (1,), 0,
                                                                    None, "cpu", False)),
                           ("from-numpy", "_rebuild_device_tensor_from_numpy", (None, G("torch", "float32"), "cpu", False))):
        ck(f"tensor-{name}", dict(ok, bad=R(G("torch._utils", fn), args)))
    ck("tensor-complex", dict(ok, bad=tensor("1", (2,), stype="ComplexFloatStorage")), stores={"0": w, "1": b"\0" * 16})
    ck("tensor-neg-bit", dict(ok, bad=tensor("0", (4, 5), extra=({"neg": True},))))
    ck("tensor-v3-float8", dict(ok, bad=R(G("torch._utils", "_rebuild_tensor_v3"),
                                          (storage_pid("1", "UntypedStorage", 80), 0, (80,), (1,), False, OD({}),
                                           G("torch", "float8_e4m3fn")))), stores={"0": w, "1": w})
    ck("v3-untyped-bigendian", {"w": R(G("torch._utils", "_rebuild_tensor_v3"),
                                       (storage_pid("0", "UntypedStorage", 80), 0, (20,), (1,), False, OD({}),
                                        G("torch", "float32")))}, byteorder=b"big")
    ck("v3-float-over-half-storage", {"w": R(G("torch._utils", "_rebuild_tensor_v3"),
                                             (storage_pid("0", "HalfStorage", 40), 0, (20,), (1,), False, OD({}),
                                              G("torch", "float32")))}, expect="any")
    # acqe_configs
    sd = {"state_dict": OD(ok), "global_step": 1}
    for name, v in (("arch-int", '{"architecture": 7}'), ("arch-list", '{"architecture": ["x"]}'),
                    ("nan", '{"unet": {"x": NaN}}'), ("infinity", '{"unet": {"x": Infinity}}'),
                    ("overflow", '{"unet": {"x": 1e999}}'), ("bigint", '{"unet": {"x": 123456789012345678901234}}'),
                    ("deep", '{"unet": ' + "[" * 100_000 + "]" * 100_000 + "}"),
                    ("deep-70", '{"unet": ' + "[" * 70 + "]" * 70 + "}"),
                    ("unet-list", '{"unet": [1, 2]}'), ("top-list", "[1]"), ("dup-key", '{"unet": {}, "unet": {}}'),
                    ("lone-surrogate", '{"unet": {"x": "\\ud800"}}'), ("not-json", "{unet"),
                    ("huge", '{"unet": {"x": "' + "a" * (1 << 20) + '"}}'), ("bytes", Bytes(b"{}")),
                    ("dict-nan", {"unet": {"x": float("nan")}}), ("dict-tensor", {"unet": {"x": tensor("0", (4, 5))}}),
                    ("dict-tuple-key", {"unet": {(1,): 2}}), ("int", 5)):
        ck(f"configs-{name}", dict(sd, acqe_configs=v))
    # any JSON object reads; configs a model cannot take are the schema's to refuse (one line)
    ck("configs-dict-ok", dict(sd, acqe_configs={"architecture": "x", "unet": {"sample_size": 32}}), expect="ok")
    ck("configs-unknown-key", dict(sd, acqe_configs={"architecture": "x", "unet": {"a": [1, 2.5, None, True]}}),
       expect="error")
    # zip container
    good = dumps(ok)
    def z(name, expect="error", torch_safe=True, **kw):
        cases.append(Case(f"zip/{name}", "ckpt", torch_zip(good, {"0": w}, **kw), expect=expect, torch_safe=torch_safe))
    z("deflated-ok", method=8, expect="ok")
    z("stored-no-descriptor", descriptor=False, expect="ok")
    z("no-version", version=None)
    z("version-text", version=b"three")
    z("byteorder-middle", byteorder=b"middle")
    z("archive-named-dotdot", archive="..", expect="any")
    z("torchscript", extra_recs=[Rec("archive/constants.pkl", b"\x80\x02].")])
    z("prepended-junk", prepend=b"JUNK" * 100, expect="any")
    z("comment", comment=b"hello", expect="ok")
    z("truncated-cd", truncate_cd=20)
    for name, recs in (
            ("dup-entry", lambda r: r[:5] + [Rec("archive/data/0", b"\x7f" * 80)] + r[5:]),
            ("no-folder", lambda r: [Rec("data.pkl", good)] + r[1:]),
            ("traversal-names", lambda r: r + [Rec("archive/../../etc/passwd", b"x"), Rec("/abs", b"y")]),
            ("missing-pkl", lambda r: [Rec("archive/x", b"")] + r[1:]),
            ("crc-stored", lambda r: [_set(x, cd_crc=1) if x.name.endswith("data/0") else x for x in r]),
            ("crc-deflated", lambda r: [_set(x, method=8, cd_crc=1) if x.name.endswith("data/0") else x for x in r]),
            ("crc-pkl", lambda r: [_set(x, cd_crc=1) if x.name.endswith("data.pkl") else x for x in r]),
            ("method-bzip2", lambda r: [_set(x, method=12, cd_method=12, lh_method=12) if x.name.endswith("data/0") else x for x in r]),
            ("method-lzma", lambda r: [_set(x, cd_method=14, lh_method=14) if x.name.endswith("data/0") else x for x in r]),
            ("method-99", lambda r: [_set(x, cd_method=99, lh_method=99) if x.name.endswith("data/0") else x for x in r]),
            ("method-mismatch", lambda r: [_set(x, lh_method=8) if x.name.endswith("data/0") else x for x in r]),
            ("encrypted", lambda r: [_set(x, flags=0x801) if x.name.endswith("data/0") else x for x in r]),
            # patch data, strong encryption, masked local headers: miniz says "unsupported encryption" to each
            ("patch-data", lambda r: [_set(x, flags=0x820) if x.name.endswith("data/0") else x for x in r]),
            ("strong-encryption", lambda r: [_set(x, flags=0x840) if x.name.endswith("data/0") else x for x in r]),
            ("masked-local-header", lambda r: [_set(x, flags=0x2800) if x.name.endswith("data/0") else x for x in r]),
            ("directory-attribute", lambda r: [_set(x, cd_external=0x10) if x.name.endswith("data/0") else x for x in r]),
            ("lh-name-mismatch", lambda r: [_set(x, lh_name="archive/data/1") if x.name.endswith("data/0") else x for x in r]),
            ("bomb-declared-size", lambda r: [_set(x, method=8, cd_usize=0xFFFFFFF0) if x.name.endswith("data/0") else x for x in r]),
            ("bomb-pkl-size", lambda r: [_set(x, method=8, cd_usize=0xFFFFFFF0) if x.name.endswith("data.pkl") else x for x in r]),
            ("csize-lies", lambda r: [_set(x, cd_csize=10 ** 9) if x.name.endswith("data/0") else x for x in r]),
            ("offset-lies", lambda r: [_set(x, cd_offset=10 ** 9) if x.name.endswith("data/0") else x for x in r]),
            ("big-extra", lambda r: [_set(x, extra=b"\xfe\xca" + struct.pack("<H", 60000) + b"\0" * 60000)
                                     if x.name.endswith("data/0") else x for x in r]),
    ):
        recs_ = recs(_recs(good, {"0": w}))
        cases.append(Case(f"zip/{name}", "ckpt", build_zip(recs_), expect="any" if name in ("traversal-names", "big-extra") else "error"))
    # overlapping records: two storages read from the same bytes
    inner = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0x800, 0, 0, 0x21, zlib.crc32(w), len(w), len(w), 14, 0)
    inner += b"archive/data/1" + w                    # a whole local record hidden inside storage 0's bytes
    recs_ = _recs(dumps({"a": tensor("0", (len(inner) // 4,)), "b": tensor("1", (4, 5))}), {"0": inner, "1": w})
    blob = build_zip(recs_)
    zi = zipfile.ZipFile(io.BytesIO(blob)).getinfo("archive/data/0")
    data0 = zi.header_offset + 30 + len("archive/data/0")
    cases.append(Case("zip/overlapping-records", "ckpt",
                      build_zip([_set(r, cd_offset=data0) if r.name.endswith("data/1") else r for r in recs_])))
    zeros = b"\0" * (48 << 20)
    cases.append(Case("zip/deflate-ratio-bomb", "ckpt", torch_zip(dumps({"w": tensor("0", (len(zeros) // 4,))}),
                                                                  {"0": zeros}, method=8), expect="error"))
    for cut in (10, 100, 300, 600, -200, -22, -1):
        data = torch_zip(good, {"0": w})
        cases.append(Case(f"zip/truncated{cut}", "ckpt", data[:cut], expect="error"))
    cases.append(Case("file/empty", "ckpt", b"", expect="error"))
    cases.append(Case("file/seven-bytes", "ckpt", b"PK\x03\x04abc", expect="error"))
    cases.append(Case("file/text", "ckpt", b"hello world, not a checkpoint\n", expect="error"))
    cases.append(Case("file/legacy-pickle", "ckpt", b"\x80\x02\x8a\x0alp\xfc\x9cF\xf9 j\xa8P\x19.", expect="error"))
    cases += safetensors_attacks()
    cases += folder_attacks()
    return cases


def _recs(pkl: bytes, stores: dict) -> list[Rec]:
    return [Rec("archive/data.pkl", pkl), Rec("archive/byteorder", b"little")] + \
        [Rec(f"archive/data/{k}", v) for k, v in stores.items()] + [Rec("archive/version", b"3\n")]


def _set(r: Rec, **kw) -> Rec:
    d = dict(r.__dict__)
    d.update(kw)
    return Rec(**d)


def safetensors_attacks() -> list[Case]:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    data = a.tobytes()
    out = []

    def st(name, header=None, raw=None, expect="error", data_=data, **kw):
        out.append(Case(f"safetensors/{name}", "safetensors",
                        safetensors_bytes(header=header, data=data_, raw_header=raw, **kw), suffix=".safetensors",
                        expect=expect))
    e = {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]}
    st("ok", {"w": e}, expect="ok")
    for name, field_, v in (("shape-float", "shape", [3.5, 4]), ("shape-64.5", "shape", [64.5, 64]),
                            ("shape-bool", "shape", [True, 12]), ("shape-negative", "shape", [-3, -4]),
                            ("shape-str", "shape", ["3", 4]), ("shape-null", "shape", None), ("shape-dict", "shape", {}),
                            ("shape-inf", "shape", [float("inf"), 4]), ("shape-nan", "shape", [float("nan"), 4]),
                            ("offsets-three", "data_offsets", [0, 24, 48]), ("offsets-negative", "data_offsets", [-48, 0]),
                            ("offsets-float", "data_offsets", [0.0, 48.0]), ("offsets-reversed", "data_offsets", [48, 0]),
                            ("offsets-bool", "data_offsets", [False, 48]), ("offsets-str", "data_offsets", "0-48"),
                            ("dtype-unknown", "dtype", "F8"), ("dtype-int", "dtype", 1), ("dtype-lower", "dtype", "f32")):
        st(name, {"w": dict(e, **{field_: v})})
    st("shape-1e999", raw=b'{"w": {"dtype": "F32", "shape": [1e999, 4], "data_offsets": [0, 48]}}')
    st("shape-big-int", raw=b'{"w": {"dtype": "F32", "shape": [123456789012345678901234567890, 0], "data_offsets": [0, 0]}}',
       data_=b"")
    st("metadata-list", {"__metadata__": ["a"], "w": e})
    st("metadata-int-values", {"__metadata__": {"a": 1}, "w": e})
    st("metadata-nested", {"__metadata__": {"a": {"b": "c"}}, "w": e})
    st("metadata-acqe-configs-nan", {"__metadata__": {"acqe_configs": '{"unet": {"x": NaN}}'}, "w": e})
    st("metadata-acqe-configs-arch-int", {"__metadata__": {"acqe_configs": '{"architecture": 1}'}, "w": e})
    st("deep-header", raw=b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    st("deep-metadata", raw=b'{"__metadata__": {"a": ' + b"[" * 5000 + b"]" * 5000 + b'}, "w": ' + json.dumps(e).encode() + b"}")
    st("dup-keys", raw=b'{"w": ' + json.dumps(e).encode() + b', "w": ' + json.dumps(e).encode() + b"}")
    st("entry-not-dict", {"w": [1, 2]})
    st("header-list", raw=b"[1, 2, 3]")
    st("header-not-utf8", raw=b'{"w\xff": 1}')
    st("header-bom", raw=b'\xef\xbb\xbf{"w": ' + json.dumps(e).encode() + b"}")
    st("header-nan", raw=b'{"w": NaN}')
    st("lone-surrogate-name", raw=b'{"w\\ud800": ' + json.dumps(e).encode() + b"}")
    st("empty-name", {"": e})
    st("long-name", {"n" * 2000: e})
    st("no-tensors", {})
    st("only-metadata", {"__metadata__": {"a": "b"}})
    st("gap", {"w": dict(e, data_offsets=[4, 52])}, data_=data + b"\0" * 4)
    st("overlap", {"w": e, "v": dict(e, data_offsets=[24, 72])}, data_=data + b"\0" * 24)
    st("trailing-bytes", {"w": e}, data_=data + b"junk")
    st("truncated-data", {"w": e}, data_=data[:-8])
    st("length-huge", {"w": e}, length=1 << 62)
    st("length-past-end", {"w": e}, length=10 ** 6)
    st("rank-9", {"w": dict(e, shape=[1] * 7 + [3, 4])}, expect="error")
    st("all-empty", {"w": dict(e, shape=[0, 4], data_offsets=[0, 0])}, data_=b"")
    return out


def folder_attacks() -> list[Case]:
    w = safetensors_bytes({"conv.w": np.ones((4, 5), np.float32)})
    cfg = b'{"sample_size": 8}'
    out = []

    def fo(name, tree, expect="error"):
        out.append(Case(f"folder/{name}", "folder", tree=tree, expect=expect))
    base = {"unet/diffusion_pytorch_model.safetensors": w, "unet/config.json": cfg}
    fo("ok", base, expect="ok")
    fo("fifo-weights", {"unet/diffusion_pytorch_model.safetensors": ("fifo",), "unet/config.json": cfg})
    fo("fifo-config", dict(base, **{"unet/config.json": ("fifo",)}))
    fo("fifo-unrelated", dict(base, **{"unet/notes.txt": ("fifo",), "junk.fifo": ("fifo",)}), expect="ok")
    fo("devzero-weights", {"unet/diffusion_pytorch_model.safetensors": ("symlink", "/dev/zero"), "unet/config.json": cfg})
    fo("devzero-config", dict(base, **{"unet/config.json": ("symlink", "/dev/zero")}))
    fo("devzero-unrelated", dict(base, **{"unet/zero.bin": ("symlink", "/dev/zero"), "zero": ("symlink", "/dev/zero")}),
       expect="ok")
    fo("devzero-scheduler", dict(base, **{"scheduler/scheduler_config.json": ("symlink", "/dev/zero")}))
    fo("dangling-weights", {"unet/diffusion_pytorch_model.safetensors": ("symlink", "/nonexistent/x"), "unet/config.json": cfg})
    fo("loop-weights", {"unet/diffusion_pytorch_model.safetensors": ("symlink", "diffusion_pytorch_model.safetensors")})
    fo("dir-as-weights", {"unet/diffusion_pytorch_model.safetensors": ("dir",), "unet/config.json": cfg})
    fo("config-1MiB-padded", dict(base, **{"unet/config.json": cfg + b" " * (2 << 20)}))
    fo("config-nan", dict(base, **{"unet/config.json": b'{"x": NaN}'}))
    fo("config-array", dict(base, **{"unet/config.json": b"[1, 2]"}))
    fo("config-deep", dict(base, **{"unet/config.json": b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"}))
    fo("config-deep-70", dict(base, **{"unet/config.json": b'{"a": ' + b"[" * 70 + b"]" * 70 + b"}"}))
    fo("config-dup", dict(base, **{"unet/config.json": b'{"a": 1, "a": 2}'}))
    fo("config-not-utf8", dict(base, **{"unet/config.json": b'{"a": "\xff"}'}))
    fo("unet-is-file", {"unet": w})
    fo("unet-is-fifo", {"unet": ("fifo",)})
    fo("empty", {"README.md": b"x"})
    fo("no-weights", {"unet/config.json": cfg})
    fo("bin-legacy", {"unet/diffusion_pytorch_model.bin": b"\x80\x02\x8a\x0alp\xfc\x9cF\xf9 j\xa8P\x19.", "unet/config.json": cfg})
    fo("symlinked-weights-ok", {"blobs/abc": w, "unet/diffusion_pytorch_model.safetensors": ("symlink", "../blobs/abc"),
                                "unet/config.json": cfg}, expect="ok")
    return out


# --------------------------------------------------------------------------------------------------
# mutations

def _mutate_pickle(pkl: bytes, rng: random.Random) -> bytes:
    b = bytearray(pkl)
    op = rng.randrange(6)
    if op == 0 or len(b) < 4:                        # flip bytes
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 1:                                    # delete a span
        i = rng.randrange(len(b))
        del b[i:i + rng.randint(1, 8)]
    elif op == 2:                                    # duplicate a span
        i = rng.randrange(len(b))
        b[i:i] = b[i:i + rng.randint(1, 16)]
    elif op == 3:                                    # replace a small int (BININT1/2 argument) with a boundary value
        idx = [i for i in range(len(b) - 1) if b[i] in (0x4B, 0x4D)]
        if idx:
            i = rng.choice(idx)
            v = rng.choice([0, 1, 2, 255, 65535, -1, 2 ** 31 - 1, -2 ** 31, 2 ** 40, 10 ** 12, 2 ** 63])
            w = 2 if b[i] == 0x4B else 3
            b[i:i + w] = dumps(v)[2:-1]
    elif op == 4:                                    # swap two opcodes' positions
        i, j = sorted(rng.randrange(len(b)) for _ in range(2))
        b[i], b[j] = b[j], b[i]
    else:                                            # splice in a random global
        g = rng.choice([G("os", "system"), G("torch", "HalfStorage"), G("torch", "LongStorage"),
                        G("torch._utils", "_rebuild_tensor"), G("torch", "bfloat16"), G("collections", "OrderedDict"),
                        G("torch._utils", "_rebuild_meta_tensor_no_storage"), G("torch", "Size")])
        i = rng.randrange(len(b))
        b[i:i] = dumps(g)[2:-1]
    return bytes(b)


def _mutate_zip(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    op = rng.randrange(4)
    if op == 0:                                      # flip bytes anywhere
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 1:                                    # truncate
        b = b[:rng.randrange(len(b))]
    elif op == 2:                                    # corrupt a header field in the central directory
        i = bytes(b).rfind(b"PK\x01\x02")
        if i >= 0:
            f = rng.choice([10, 16, 20, 24, 28, 42])
            w = 2 if f in (10, 28) else 4
            b[i + f:i + f + w] = rng.getrandbits(8 * w).to_bytes(w, "little") if rng.random() < 0.5 else b"\xff" * w
    else:                                            # insert junk
        i = rng.randrange(len(b) + 1)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    return bytes(b)


def _mutate_safetensors(data: bytes, rng: random.Random) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    op = rng.randrange(4)
    if op == 0:
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    keys = [k for k in header if k != "__metadata__"]
    k = rng.choice(keys)
    junk = rng.choice([None, -1, 0, 1.5, True, "x", [], {}, 2 ** 64, [1, 2, 3], [0], 10 ** 30])
    if op == 1:
        header[k][rng.choice(["dtype", "shape", "data_offsets"])] = junk
    elif op == 2:
        s = header[k]["shape"]
        if s:
            s[rng.randrange(len(s))] = junk
        else:
            header[k]["shape"] = [junk]
    else:
        header["__metadata__"] = rng.choice([junk, {"a": junk}, {"acqe_configs": json.dumps({"architecture": junk})}])
    return safetensors_bytes(header=header, data=body)


LDM_NAMES = ("model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.out.2.weight",
             "model.diffusion_model.input_blocks.1.0.out_layers.3.weight", "model.diffusion_model.input_blocks.3.0.op.weight",
             "model.diffusion_model.input_blocks.1.1.proj_in.weight",
             "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
             "model.diffusion_model.output_blocks.0.1.proj_in.weight", "first_stage_model.decoder.conv_in.weight",
             "first_stage_model.encoder.conv_in.bias", "cond_stage_model.transformer.text_model.embeddings.position_ids",
             "cond_stage_model.transformer.text_model.final_layer_norm.weight", "betas", "model_ema.decay")


def random_checkpoint(rng: random.Random) -> bytes:
    """A well-formed torch zip checkpoint with random storages, dtypes and views (most of them inside
    their storage, some not), random rebuild spellings, byte order and compression; now and then one
    hostile element. Most load with torch, so the values are compared, not just the refusals."""
    nrng = np.random.default_rng(rng.getrandbits(32))
    big = rng.random() < 0.2
    stores, pids, kinds = {}, {}, {}
    for k in range(rng.randint(1, 4)):
        dt = rng.choice(list(STORAGE))
        untyped = rng.random() < 0.15
        numel = rng.choice([0, 1, 2, 3, 7, 12, 24, 60])
        a = _arr(nrng, dt, (numel,))
        code = STORAGE[dt][1]
        raw = a.astype(code).tobytes() if dt not in ("bfloat16", "bool") else a.tobytes()
        if big and np.dtype(code).itemsize > 1 and not untyped:
            raw = np.frombuffer(raw, f"<u{np.dtype(code).itemsize}").byteswap().tobytes()
        key = str(k)
        stores[key] = raw
        kinds[key] = ("uint8" if untyped else dt, len(raw) if untyped else numel, dt)
        pids[key] = storage_pid(key, "UntypedStorage" if untyped else STORAGE[dt][0], len(raw) if untyped else numel)
    tensors = {}
    for j in range(rng.randint(1, 6)):
        key = rng.choice(list(stores))
        sdt, snumel, real_dt = kinds[key]
        itemsize = np.dtype(STORAGE[real_dt][1]).itemsize
        v3 = sdt == "uint8" and kinds[key][0] == "uint8" and real_dt != "uint8"
        elems = snumel // itemsize if v3 else snumel
        rank = rng.randint(0, 3)
        size = [rng.choice([0, 1, 1, 2, 3, 4]) for _ in range(rank)]
        stride = [rng.choice([0, 1, 2, 3, 5]) for _ in range(rank)]
        if rng.random() < 0.5:                       # contiguous
            acc = 1
            for d in range(rank - 1, -1, -1):
                stride[d] = acc
                acc *= max(size[d], 1)
        span = 1 + sum((d - 1) * st for d, st in zip(size, stride)) if all(size) else 0
        room = max(elems - span, 0)
        offset = rng.randint(0, room) if rng.random() < 0.9 else rng.randint(0, elems + 3)
        args = (pids[key], offset, tuple(size), tuple(stride), False, OD({}))
        if v3:
            node = R(G("torch._utils", "_rebuild_tensor_v3"), args + (G("torch", real_dt),))
        else:
            fn = rng.choice(["_rebuild_tensor_v2"] * 6 + ["_rebuild_tensor", "param", "from_type"])
            if fn == "_rebuild_tensor":
                node = R(G("torch._utils", fn), args[:4])
            else:
                node = R(G("torch._utils", "_rebuild_tensor_v2"), args)
                if fn == "param":
                    node = R(G("torch._utils", "_rebuild_parameter"), (node, True, OD({})))
                elif fn == "from_type":
                    node = R(G("torch._tensor", "_rebuild_from_type_v2"),
                             (G("torch._utils", "_rebuild_tensor_v2"), G("torch", "Tensor"), args, {"a": 1}))
        if rng.random() < 0.3:                       # SD key names: exercises layout detection downstream
            name = rng.choice(LDM_NAMES)
        else:
            name = f"t{j}.{rng.choice(['weight', 'bias', 'running_mean'])}"
        tensors[name] = node
    if rng.random() < 0.1:                           # one hostile element
        tensors["evil"] = rng.choice([R(G("os", "system"), ("true",)), R(G("builtins", "eval"), ("1",)),
                                      R(G("torch._utils", "_rebuild_meta_tensor_no_storage"),
                                        (G("torch", "float32"), (2,), (1,), False)),
                                      R(G("torch._utils", "_rebuild_tensor_v2"), (pids[key], 0, (10 ** 6,), (0,), False, OD({}))),
                                      Build(G("torch", "FloatStorage"), (None, {"dtype": 1}))])
    top = rng.choice(["flat", "od", "lightning"])
    body = tensors if top == "flat" else OD(tensors)
    if top == "lightning":
        body = {"state_dict": body, "global_step": rng.randint(0, 10 ** 6), "epoch": 1,
                "callbacks": {STUB: {"best": None}}, "hp": {"lr": 1e-4, "betas": (0.9, 0.999)}}
        if rng.random() < 0.3:
            body["acqe_configs"] = json.dumps({"architecture": rng.choice(["acqe-fuzz", "stable-diffusion-v1"]),
                                               "unet": {"sample_size": rng.choice([8, 0, -1])},
                                               rng.choice(["vae", "text_encoder"]): {"hidden_size": 32}})
    return torch_zip(dumps(body), stores, method=8 if rng.random() < 0.3 else 0,
                     byteorder=b"big" if big else rng.choice([b"little", None]), descriptor=rng.random() < 0.7)


def random_safetensors(rng: random.Random) -> bytes:
    nrng = np.random.default_rng(rng.getrandbits(32))
    arrs = {}
    for j in range(rng.randint(1, 5)):
        dt = rng.choice(["float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8"])
        shape = tuple(rng.choice([1, 2, 3, 5]) for _ in range(rng.randint(0, 3)))
        arrs[f"m{j}.w"] = _arr(nrng, dt, shape)
    return safetensors_bytes(arrs)


def random_folder(rng: random.Random) -> dict:
    """A diffusers folder tree: per component a weight file that may be valid, damaged, or not a regular
    file at all, a config that may be valid or not, and junk (FIFOs, /dev/zero links) around them."""
    nrng = np.random.default_rng(rng.getrandbits(32))
    tree: dict = {}
    for comp in rng.sample(["unet", "vae", "text_encoder"], rng.randint(1, 3)):
        kind = rng.choice(["st", "st", "bin", "bin-deflated", "fifo", "devzero", "dangling", "dir", "garbage"])
        a = nrng.standard_normal((rng.randint(1, 4), rng.randint(1, 5))).astype(np.float32)
        if kind == "st":
            tree[f"{comp}/diffusion_pytorch_model.safetensors"] = safetensors_bytes({"conv.weight": a})
        elif kind.startswith("bin"):
            tree[f"{comp}/diffusion_pytorch_model.bin"] = torch_zip(
                dumps(OD({"conv.weight": tensor("0", a.shape)})), {"0": a.astype("<f4").tobytes()},
                method=8 if kind == "bin-deflated" else 0)
        elif kind == "garbage":
            tree[f"{comp}/model.safetensors"] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        else:
            tree[f"{comp}/diffusion_pytorch_model.safetensors"] = {
                "fifo": ("fifo",), "devzero": ("symlink", "/dev/zero"), "dangling": ("symlink", "/nonexistent"),
                "dir": ("dir",)}[kind]
        cfg = rng.choice(["ok", "ok", "none", "nan", "array", "fifo", "devzero", "big"])
        if cfg != "none":
            tree[f"{comp}/config.json"] = {"ok": b'{"sample_size": 8}', "nan": b'{"a": NaN}', "array": b"[1]",
                                           "fifo": ("fifo",), "devzero": ("symlink", "/dev/zero"),
                                           "big": b"{}" + b" " * (1 << 20)}[cfg]
    for j in range(rng.randint(0, 3)):                      # junk the conversion must not open
        tree[rng.choice(["", "unet/", "vae/", "tokenizer/"]) + f"junk{j}"] = rng.choice(
            [("fifo",), ("symlink", "/dev/zero"), b"x" * 10])
    if rng.random() < 0.5:
        tree["scheduler/scheduler_config.json"] = rng.choice([b'{"num_train_timesteps": 1000}', ("fifo",), b"{"])
    return tree


def mutations(seed_cases: list[Case], n: int, rng: random.Random) -> Iterator[Case]:
    ckpts = [c for c in seed_cases if c.kind == "ckpt"]
    sts = [c for c in seed_cases if c.kind == "safetensors"]
    for i in range(n):
        r = rng.random()
        if r < 0.3:                                  # random well-formed checkpoints (values compared)
            data = random_checkpoint(rng)
            if rng.random() < 0.15:
                data = _mutate_zip(data, rng)
            yield Case(f"mutate/{i:06d}/random-ckpt", "ckpt", data)
        elif r < 0.38:
            yield Case(f"mutate/{i:06d}/random-safetensors", "safetensors", random_safetensors(rng), suffix=".safetensors")
        elif r < 0.43:
            yield Case(f"mutate/{i:06d}/random-folder", "folder", tree=random_folder(rng))
        elif r < 0.7:                                # pickle mutations inside a valid zip
            c = rng.choice(ckpts)
            zin = zipfile.ZipFile(io.BytesIO(c.data))
            recs = [Rec(x.filename, zin.read(x.filename), x.compress_type, descriptor=bool(x.flag_bits & 8))
                    for x in zin.infolist()]
            for r_ in recs:
                if r_.name.endswith("data.pkl"):
                    r_.data = _mutate_pickle(r_.data, rng)
                    if rng.random() < 0.3:
                        r_.data = _mutate_pickle(r_.data, rng)
            yield Case(f"mutate/{i:06d}/pickle/{c.name[5:]}", "ckpt", build_zip(recs))
        elif r < 0.85:
            c = rng.choice(ckpts)
            yield Case(f"mutate/{i:06d}/zip/{c.name[5:]}", "ckpt", _mutate_zip(c.data, rng))
        else:
            c = rng.choice(sts)
            yield Case(f"mutate/{i:06d}/safetensors/{c.name[5:]}", "safetensors", _mutate_safetensors(c.data, rng),
                       suffix=".safetensors")


def large_seeds(sizes=(4 << 20, 32 << 20)) -> Iterator[Case]:
    """Valid checkpoints of realistic size (stored, deflated, strided views, safetensors): what peak
    memory per input byte looks like when the input, not the fixed overhead, dominates."""
    nrng = np.random.default_rng(11)
    for size in sizes:
        n = size // 4 // 4
        rows = 256
        arrs = [nrng.standard_normal(n).astype("<f4") for _ in range(4)]
        nodes = {f"m{i}.weight": tensor(str(i), (rows, n // rows)) for i in range(4)}
        nodes["m0.weight_t"] = tensor("0", (n // rows, rows), (1, n // rows))
        stores = {str(i): a.tobytes() for i, a in enumerate(arrs)}
        mb = size >> 20
        yield Case(f"large/{mb}MiB-stored", "ckpt", torch_zip(dumps({"state_dict": OD(nodes)}), stores))
        yield Case(f"large/{mb}MiB-deflated", "ckpt", torch_zip(dumps(OD(nodes)), stores, method=8))
        yield Case(f"large/{mb}MiB-safetensors", "safetensors",
                   safetensors_bytes({f"m{i}.weight": a.reshape(rows, -1) for i, a in enumerate(arrs)}),
                   suffix=".safetensors")


def corpus(seed: int = 0, mutations_n: int = 300) -> Iterator[Case]:
    """Seeds, hand-written attacks, then `mutations_n` seeded mutations (deterministic for a seed)."""
    rng = random.Random(seed)
    s = seeds(rng)
    yield from s
    yield from attacks()
    yield from mutations(s, mutations_n, rng)


# --------------------------------------------------------------------------------------------------
# the oracle: what the trusted libraries read from a case

@dataclass
class Reference:
    ok: bool
    tensors: dict = field(default_factory=dict)     # name -> numpy (bf16 as uint16 bits)
    error: str = ""
    no_data: bool = False                           # torch built tensors without values (meta, sparse, ...)


def _torch_numpy(t):
    import torch
    if t.layout != torch.strided or t.is_meta or t.is_quantized or t.is_nested or t.is_complex():
        return None
    t = t.detach().resolve_neg().resolve_conj().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    try:
        return t.numpy()
    except TypeError:
        return None


def reference(case: Case, path: str) -> Reference:
    """torch.load(weights_only=True) for ckpt cases, safetensors for .safetensors; per file for folders."""
    try:
        if case.kind == "ckpt":
            return _ref_ckpt(path)
        if case.kind == "safetensors":
            return _ref_safetensors(path)
        tensors = {}
        for comp in ("unet", "vae", "text_encoder"):
            names = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin",
                     "pytorch_model.bin")
            if os.path.isdir(os.path.join(path, comp)) and not any(
                    os.path.lexists(os.path.join(path, comp, f)) for f in names):
                return Reference(False, error=f"{comp}/ holds no weight file")    # diffusers cannot load it either
            for f in names:
                p = os.path.join(path, comp, f)
                if os.path.lexists(p):
                    import stat
                    if not stat.S_ISREG(os.stat(p).st_mode):
                        return Reference(False, error="not a regular file")
                    r = _ref_safetensors(p) if f.endswith(".safetensors") else _ref_ckpt(p)
                    if not r.ok:
                        return r
                    tensors.update({f"{comp}.{k}": v for k, v in r.tensors.items()})
                    break
        return Reference(True, tensors)
    except Exception as e:  # noqa: BLE001
        return Reference(False, error=f"{type(e).__name__}: {e}"[:200])


STUB_PATHS = ("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
              "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
              "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
              "lightning.pytorch.callbacks.early_stopping.EarlyStopping",
              "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor",
              "lightning.pytorch.callbacks.lr_monitor.LearningRateMonitor")


def torch_safe_globals() -> list:
    """The extra globals the torch-based reader (before issue 11) allowed on top of weights_only's own:
    the Lightning callback stubs and numpy scalar / dtype constructors. torch.load with these is the
    reference the torch-free reader is compared against."""
    def init(self, *args, **kwargs):
        pass
    allowed = [(type(path.rsplit(".", 1)[1], (), {"__init__": init}), path) for path in STUB_PATHS]
    try:
        from numpy.core.multiarray import scalar as np_scalar  # type: ignore
    except Exception:  # noqa: BLE001
        np_scalar = None
    if np_scalar is not None:
        allowed += [(np_scalar, "numpy.core.multiarray.scalar"), (np_scalar, "numpy._core.multiarray.scalar")]
    allowed += [(np.dtype, "numpy.dtype")]
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType"):
        t = getattr(np.dtypes, name, None)
        if t is not None:
            allowed.append((t, f"numpy.dtypes.{name}"))
    return allowed


def torch_load(path: str):
    """torch.load(weights_only=True) with `torch_safe_globals()`: what the reader before issue 11 ran."""
    import warnings

    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.serialization.safe_globals(torch_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=False)


def _ref_ckpt(path: str) -> Reference:
    import torch
    try:
        obj = torch_load(path)
    except Exception as e:  # noqa: BLE001
        return Reference(False, error=f"{type(e).__name__}: {str(e)[:200]}")
    sd = obj["state_dict"] if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else obj
    if not isinstance(sd, dict):
        return Reference(True, {})
    out, no_data = {}, False
    for k, v in sd.items():
        if isinstance(v, torch.Tensor):
            a = _torch_numpy(v)
            if a is None:
                no_data = True
            else:
                out[str(k)] = a
    return Reference(True, out, no_data=no_data)


def _ref_safetensors(path: str) -> Reference:
    try:
        from safetensors import safe_open
        out = {}
        with safe_open(path, framework="np") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
        return Reference(True, out)
    except Exception as e:  # noqa: BLE001
        msg = f"{type(e).__name__}: {str(e)[:200]}"
        if "bfloat16" in msg.lower() or "BF16" in msg:
            try:
                import torch  # noqa: F401
                from safetensors.torch import load_file
                return Reference(True, {k: _torch_numpy(v) for k, v in load_file(path).items()})
            except Exception as e2:  # noqa: BLE001
                return Reference(False, error=f"{type(e2).__name__}: {str(e2)[:200]}")
        return Reference(False, error=msg)


# --------------------------------------------------------------------------------------------------
# running a case through `acqe convert` and judging it

BAD_VERDICTS = ("traceback", "hang", "wrong", "accepted-refused", "expect-mismatch", "bad-error", "memory",
                "refused-unexplained")

# Where the reader deliberately refuses what the reference (torch.load(weights_only=True), safetensors)
# loads: one documented reason each (acqe_encoder/sources/README.md). A refusal of a loadable input
# matching none of these is a verdict of its own ("refused-unexplained"): a false refusal to look at.
STRICTER_THAN_REFERENCE = {
    "CRC-32 checked (torch does not check stored records)": ("CRC-32", "Bad CRC"),
    "inflated data does not match its zip headers": ("while decompressing", "cannot inflate record",
                                                     "inflates to"),
    "only regular files": ("expected a regular file",),
    "zip structure refused (local headers, overlaps, duplicates)": ("local header does not match", "overlap",
                                                                    "appears twice", "past the end of its data"),
    "every zip entry, used or not, stored or deflated and unencrypted": ("compression method", "is encrypted"),
    "zip headers Python's zipfile refuses (miniz is laxer)": ("not a readable zip archive",),
    "zip entry marked as a directory (torch reads it as zeros)": ("marked as a directory",),
    "SD key names in a layout the encoder cannot infer": ("unknown layout",),
    # --keep-unknown stores a UNet-less LDM file as it is only when it carries no configs (they would
    # describe a model the file does not hold)
    "LDM component names without a UNet, with configs": ("no LDM UNet",),
    "SD 2.x single files must state their prediction type (512-base and 768-v share tensors)": ("same tensors",),
    "expansion rule (16x the spanned storage, or 64 KiB)": ("would expand",),
    "total rule (16x the file + 16 MiB)": ("materialise to", "inflate to"),
    "not representable in .acqe (names, rank, all-empty)": ("tensor name", "both named", "has rank",
                                                           "every tensor is empty", "key is a"),
    "NaN/Inf weights (the encoder refuses them)": ("NaN/Inf",),
    "configs must be strict JSON objects": ("acqe_configs", "config.json", "scheduler_config.json", "__metadata__"),
    "configs must fit the metadata schema (acqe_format/model/schema.py)": ("bad metadata: metadata configs",),
    "narrower allowlist": ("not on the allowlist", "may only appear as an argument", "numpy dtype",
                           "_codecs.encode is allowed", "tries to set", "not a plain numeric dtype"),
    "storage references must be plain and consistent": ("storage key", "device location",
                                                        "declared twice with different"),
    "ambiguous byte order (big-endian untyped storage)": ("byte order is ambiguous",),
    "conjugate / negative bit": ("conjugate or negative bit",),
    # torch's weights-only unpickler ignores the PROTO byte and keeps its memo in a dict; the prescan
    # (sources/README.md) refuses protocols Python does not know and memo indices beyond the pickle's length
    "pickle protocol and memo indices within bounds": ("unsupported pickle protocol", "memo slot"),
    "duplicate safetensors keys": ("duplicate JSON key",),
}


def stricter_reason(message: str) -> str | None:
    for reason, words in STRICTER_THAN_REFERENCE.items():
        if any(w in message for w in words):
            return reason
    return None


@dataclass
class Outcome:
    name: str
    verdict: str          # converted | converted-unchecked | refused | refused-loadable | one of BAD_VERDICTS
    detail: str = ""
    seconds: float = 0.0
    rss_growth: int = 0   # bytes: peak RSS during the conversion minus RSS before it
    size: int = 0         # bytes of the input


class _Timeout(BaseException):
    pass


def _rss(field_: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_ + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_bound(size: int) -> int:
    """The stated bound on peak RSS growth while converting an input of `size` bytes."""
    return (64 << 20) + 32 * size


def bits(a) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def judge(case: Case, workdir: str, timeout: float = 20.0, with_reference: bool = True,
          before_reference: Callable[[], None] | None = None) -> Outcome:
    """Convert `case` in-process (`acqe convert --lossless`) and compare with `reference()`.

    The conversion runs first, then the reference: torch's own reader can take minutes on a crafted zip
    (it never returned on one in 60 s), and ``before_reference()`` (called in between) lets a caller that
    has to kill a stuck judge tell a stuck reference from a stuck conversion."""
    import signal
    import time

    from acqe_cli.main import main as acqe_main
    path = case.materialise(workdir)
    out = os.path.join(workdir, "out.acqe")
    if os.path.exists(out):
        os.remove(out)
    err = io.StringIO()

    def on_alarm(*_):
        raise _Timeout()
    old = signal.signal(signal.SIGALRM, on_alarm)
    measured = _reset_peak()          # without /proc/self/clear_refs the peak cannot be attributed to a case
    before = _rss("VmRSS")
    t0 = time.time()
    verdict, detail, rc = "", "", None
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        with contextlib.redirect_stderr(err):
            # the corpus is about reading hostile files safely: its state dicts name no architecture
            rc = acqe_main(["convert", path, out, "--lossless", "--tokenizer", "omit", "--keep-unknown", "-q"])
    except _Timeout:
        verdict, detail = "hang", f"no result after {timeout} s"
    except BaseException as e:  # noqa: BLE001 - anything escaping main() is a traceback for the user
        verdict, detail = "traceback", f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    seconds = time.time() - t0
    growth = max(0, _rss("VmHWM") - before) if measured else 0
    o = Outcome(case.name, verdict, detail, seconds, growth, case.size)
    if verdict:
        return o
    if before_reference is not None:
        before_reference()
    ref = reference(case, path) if with_reference and case.torch_safe else None
    text = err.getvalue()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if "Traceback" in text:
        o.verdict, o.detail = "traceback", text[-300:]
    elif rc != 0:
        errors = [ln for ln in lines if ln.startswith("Error: ")]
        if rc != 1 or len(errors) != 1 or lines[-1] != errors[0]:
            o.verdict, o.detail = "bad-error", f"rc {rc}: {text[-300:]}"
        elif case.expect == "ok":
            o.verdict, o.detail = "expect-mismatch", errors[0][:300]
        elif ref is not None and ref.ok and ref.tensors and not ref.no_data:
            reason = stricter_reason(errors[0])
            o.verdict = "refused-loadable" if reason else "refused-unexplained"
            o.detail = f"{reason or 'no documented reason'}: {errors[0][:300]}"
        else:
            o.verdict, o.detail = "refused", errors[0][:300]
    elif case.expect == "error":
        o.verdict, o.detail = "expect-mismatch", "converted a case that must be refused"
    elif ref is None:
        o.verdict = "converted-unchecked"
    elif not ref.ok:
        o.verdict, o.detail = "accepted-refused", ref.error[:300]
    else:
        o.verdict = "converted"
        from acqe_format import AcqeReader
        with AcqeReader(out) as r:
            names = [t.name for t in r.tensors]
            if sorted(names) != sorted(ref.tensors):
                o.verdict = "wrong"
                o.detail = f"tensors {sorted(set(names) ^ set(ref.tensors))[:5]} differ from the reference's"
            else:
                for n in names:
                    got, want = r.read(n), ref.tensors[n]
                    if got.shape != want.shape or got.dtype != want.dtype or not np.array_equal(bits(got), bits(want)):
                        o.verdict = "wrong"
                        o.detail = f"{n}: {got.dtype}{list(got.shape)} vs reference {want.dtype}{list(want.shape)}"
                        break
    if o.verdict not in BAD_VERDICTS and growth > memory_bound(case.size):
        o.verdict, o.detail = "memory", f"peak RSS grew {growth:,} bytes for a {case.size:,}-byte input"
    return o
