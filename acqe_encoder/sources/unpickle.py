"""A restricted unpickler for `torch.save` pickles that builds lazy numpy tensors, without torch.

Two passes over `data.pkl`:

1. `prescan`: `pickletools.genops` walks the opcodes without running anything. It refuses opcodes
   outside `ALLOWED_OPCODES` (exactly those torch's own weights_only unpickler implements), memo
   indices beyond the pickle's length (the C unpickler allocates up to the index), lengths that run
   past the data, and tuples nested deeper than `limits.MAX_TUPLE_DEPTH` or larger, as a tree, than
   `limits.MAX_TUPLE_NODES` (hashing one recurses in C without a limit or a cache: a deep chain
   crashes the process, a DAG of shared tuples never finishes). It tracks the stack abstractly.
2. `RestrictedUnpickler` (a `pickle.Unpickler` with `find_class` and `persistent_load` overridden).
   `find_class` answers only names in `ALLOWLIST`, and never with a live torch or numpy callable: with
   inert stand-ins (`_Fn` objects with no attributes a pickle could set) that validate their arguments.
   `persistent_load` accepts only `('storage', <storage type>, key, location, numel)`.

The allowlist is narrower than torch's `weights_only=True` one (which today's reader used): the tensor
rebuild functions, storage types and dtypes, `collections.OrderedDict`, `torch.Size`, the inert
Lightning callback stubs of `ckpt.py`, numpy scalars and dtypes of numeric kinds only, and
`_codecs.encode(str, "latin1")` (protocol 2's spelling of bytes). Meta-device, sparse, quantized, nested
and wrapper-subclass tensors are recognised and refused with one line when they are used.
"""
from __future__ import annotations

import collections
import io
import pickle
import pickletools
from math import prod

import numpy as np

from acqe_encoder.sources import limits as L
from acqe_format.errors import SourceError

# --------------------------------------------------------------------------------------------------
# dtypes: name -> (numpy code, itemsize). numpy has no bfloat16: its bits are read as uint16.
DTYPES = {"float32": ("f4", 4), "float16": ("f2", 2), "bfloat16": ("u2", 2), "float64": ("f8", 8),
          "int64": ("i8", 8), "int32": ("i4", 4), "int16": ("i2", 2), "int8": ("i1", 1), "uint8": ("u1", 1),
          "bool": ("u1", 1), "uint16": ("u2", 2), "uint32": ("u4", 4), "uint64": ("u8", 8)}
LEGACY_STORAGES = {"FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
                   "DoubleStorage": "float64", "LongStorage": "int64", "IntStorage": "int32",
                   "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool"}
UNSUPPORTED_STORAGES = ("ComplexFloatStorage", "ComplexDoubleStorage", "QUInt8Storage", "QInt8Storage",
                        "QInt32Storage", "QUInt4x2Storage", "QUInt2x4Storage")
UNSUPPORTED_DTYPES = ("complex32", "complex64", "complex128", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                      "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2", "qint8", "quint8", "qint32",
                      "quint4x2", "quint2x4", "bits1x8", "bits2x4", "bits4x2", "bits8", "bits16",
                      *(f"int{i}" for i in range(1, 8)), *(f"uint{i}" for i in range(1, 8)))
NUMPY_SCALAR_CODES = ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1")


class _Frozen:
    """Objects a pickle can reach but must not change: BUILD (`__setstate__` or slot state) raises."""
    __slots__ = ()

    def __setattr__(self, name, value):
        raise SourceError("the pickle tries to set an attribute of a checkpoint object (crafted; refusing it)")

    def __setstate__(self, state):
        raise SourceError("the pickle tries to set the state of a checkpoint object (crafted; refusing it)")

    def _init(self, **kw):
        for k, v in kw.items():
            object.__setattr__(self, k, v)


class DType(_Frozen):
    __slots__ = ("name", "code", "itemsize")

    def __init__(self, name: str):
        code, itemsize = DTYPES.get(name, (None, 0))
        self._init(name=name, code=code, itemsize=itemsize)

    @property
    def supported(self) -> bool:
        return self.code is not None


class StorageType(_Frozen):
    """`torch.FloatStorage`-style legacy storage classes and `torch.UntypedStorage` (bytes)."""
    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: DType):
        self._init(name=name, dtype=dtype)


class Refused(_Frozen):
    """A value the pickle builds that this reader cannot represent (meta, sparse, ... tensors)."""
    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self._init(reason=reason)


class StorageRef(_Frozen):
    """One storage: the zip record `data/<key>`, `numel` elements of `dtype` (uint8 when untyped)."""
    __slots__ = ("key", "dtype", "numel", "untyped", "nbytes", "reader")

    def __init__(self, key: str, dtype: DType, numel: int, untyped: bool):
        self._init(key=key, dtype=dtype, numel=numel, untyped=untyped, nbytes=numel * dtype.itemsize, reader=None)

    def bind(self, reader) -> None:
        """`reader(storage) -> (uint8 bytes of the storage, big endian?)`, given once unpickling is over."""
        object.__setattr__(self, "reader", reader)


class LazyTensor(_Frozen):
    """A dense tensor view (dtype, shape, element strides, element offset) of a storage; `load()` reads it."""
    __slots__ = ("storage", "dtype", "offset", "shape", "stride", "numel", "span_bytes")

    def __init__(self, storage: StorageRef, dtype: DType, offset, shape, stride):
        numel = prod(shape)
        # bytes of storage the view reaches, from its first element to its last
        span = 0 if numel == 0 else (1 + sum((d - 1) * s for d, s in zip(shape, stride))) * dtype.itemsize
        self._init(storage=storage, dtype=dtype, offset=offset, shape=shape, stride=stride, numel=numel,
                   span_bytes=span)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def load(self) -> np.ndarray:
        """The values as a numpy array (bf16 as exact float32 values, bool as numpy bool, native order)."""
        raw, big = self.storage.reader(self.storage)
        size = self.dtype.itemsize
        if big and size > 1 and (self.storage.untyped or self.storage.dtype.itemsize != size):
            # torch swaps a big-endian storage by the storage's own element size (none for untyped ones)
            raise SourceError(f"a big-endian checkpoint views a {self.storage.dtype.name} storage as "
                              f"{self.dtype.name}: its byte order is ambiguous; refusing it")
        code = self.dtype.code
        dt = np.dtype(code).newbyteorder(">" if big else "<") if size > 1 else np.dtype(code)
        usable = raw.shape[0] - raw.shape[0] % size
        base = raw[:usable].view(dt)
        if self.numel == 0:
            a = np.zeros(self.shape, dt)
        else:
            # a stride on a dimension of size 1 is never applied: 0 keeps numpy's intp arithmetic in range
            strides = [s * size if d > 1 else 0 for d, s in zip(self.shape, self.stride)]
            view = np.lib.stride_tricks.as_strided(base[self.offset:], self.shape, strides, writeable=False)
            a = view if view.flags.c_contiguous else np.array(view)
        if big and size > 1:
            a = a.astype(dt.newbyteorder("="))
        if self.dtype.name == "bfloat16":
            return (np.asarray(a, np.uint16).astype(np.uint32) << 16).view(np.float32)
        if self.dtype.name == "bool":
            return a != 0
        return a


# --------------------------------------------------------------------------------------------------
# argument checks shared by the rebuild functions

def _ints(v, what: str) -> tuple[int, ...]:
    if type(v) not in (tuple, list) or len(v) > 64 or not all(type(x) is int for x in v):
        raise SourceError(f"a tensor's {what} is not a tuple of integers")
    return tuple(v)


def _tensor(storage, offset, size, stride, dtype: DType | None = None):
    if isinstance(storage, Refused):
        return storage
    if not isinstance(storage, StorageRef):
        raise SourceError("a tensor's storage is not a storage record")
    if dtype is None:
        dtype = storage.dtype
    if not dtype.supported:
        return Refused(f"has unsupported dtype torch.{dtype.name}")
    if type(offset) is not int or offset < 0:
        raise SourceError("a tensor's storage offset is not a non-negative integer")
    shape, stride = _ints(size, "shape"), _ints(stride, "stride")
    if len(shape) != len(stride):
        raise SourceError(f"a tensor has {len(shape)} dimensions but {len(stride)} strides")
    if any(d < 0 for d in shape):
        raise SourceError("a tensor has a negative dimension")
    if max(shape + stride + (offset,)) > L.MAX_DIM or min(stride, default=0) < -L.MAX_DIM:
        raise SourceError("a tensor's size, stride or offset does not fit in 64 bits")   # torch holds int64
    if 0 not in shape and any(s < 0 and d > 1 for d, s in zip(shape, stride)):
        # as torch: a negative stride is refused where it would be applied (a dimension of size > 1)
        raise SourceError("a tensor has a negative stride")
    t = LazyTensor(storage, dtype, offset, shape, stride)
    if t.numel and offset * dtype.itemsize + t.span_bytes > storage.nbytes:
        raise SourceError(f"a tensor of shape {list(shape)} (offset {offset}, strides {list(stride)}) reaches "
                          f"past the end of its {storage.nbytes:,}-byte storage")
    return t


FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")


def _grad_ok(t, requires_grad):
    """torch refuses requires_grad that is not a bool, or True on a non-float tensor: so does this reader."""
    if type(requires_grad) is not bool:
        raise SourceError("a tensor's requires_grad is not a boolean")
    if requires_grad and isinstance(t, LazyTensor) and t.dtype.name not in FLOAT_DTYPES:
        raise SourceError(f"a {t.dtype.name} tensor cannot require gradients (corrupt checkpoint)")
    return t


def _metadata_ok(metadata):
    if not metadata or (type(metadata) is dict and not any(metadata.values())):
        return None                                   # torch applies metadata only when it is truthy
    if type(metadata) is dict:
        return Refused("has the conjugate or negative bit set (" + ", ".join(sorted(map(str, metadata)))[:60] + ")")
    raise SourceError("a tensor's metadata is not a dict")


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    return _metadata_ok(metadata) or _grad_ok(_tensor(storage, storage_offset, size, stride), requires_grad)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    if not isinstance(dtype, DType):
        raise SourceError("a tensor's dtype is not a torch dtype")
    return _metadata_ok(metadata) or _grad_ok(_tensor(storage, storage_offset, size, stride, dtype), requires_grad)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    if not isinstance(data, (LazyTensor, Refused)):
        raise SourceError("a parameter's data is not a tensor")
    return _grad_ok(data, requires_grad)


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _rebuild_from_type_v2(func, new_type, args, state):
    if not (isinstance(func, _Fn) and func.rebuild) or new_type not in (_TENSOR, _PARAMETER) or type(args) is not tuple:
        raise SourceError("_rebuild_from_type_v2 with arguments other than a tensor rebuild")
    return func(*args)


def _refuse(reason: str):
    def fn(*args):
        return Refused(reason)
    return fn


def _size(dims=()):
    return _ints(dims, "torch.Size")


def _codecs_encode(text, encoding="utf-8"):
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise SourceError("_codecs.encode is allowed only as protocol 2's spelling of bytes (str, 'latin1')")
    return text.encode("latin1")


class NpDType(_Frozen):
    """numpy.dtype(code) for numeric kinds only; BUILD may set its byte order, nothing else."""
    __slots__ = ("code", "order")

    def __init__(self, code):
        if type(code) is not str or code not in NUMPY_SCALAR_CODES:
            raise SourceError(f"numpy dtype {_clean(code, 20)!r} is not a numeric scalar type")
        self._init(code=code, order="<")

    def __setstate__(self, state):
        # numpy pickles a plain numeric dtype as (3, order, None, None, None, -1, -1, 0); anything else
        # (subarrays, fields, flags such as NPY_LIST_PICKLE) describes another kind of dtype
        if (type(state) is not tuple or len(state) != 8 or state[1] not in ("<", ">", "|", "=")
                or state[:1] + state[2:] != (3, None, None, None, -1, -1, 0)):
            raise SourceError("a numpy dtype's pickled state is not that of a plain numeric dtype")
        object.__setattr__(self, "order", state[1])


def _np_dtype(code, align=False, copy=True):
    return NpDType(code)


def _np_dtype_class(code):
    def fn():
        return NpDType(code)
    return fn


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, NpDType) or type(data) is not bytes:
        raise SourceError("numpy scalar with a non-numeric dtype or no data")
    dt = np.dtype(dtype.code).newbyteorder(dtype.order if dtype.order in "<>" else "=")
    if len(data) != dt.itemsize:
        raise SourceError(f"numpy scalar of {dtype.code} with {len(data)} data bytes")
    return np.frombuffer(data, dt)[0].item()       # a Python bool / int / float


# --------------------------------------------------------------------------------------------------
# Full pickle paths of inert classes a training checkpoint may reference (Lightning callbacks, as a dict
# key or as an instance holding its state). Each maps to a stub that only records its state.
ALLOWED_STUB_PATHS = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
    "lightning.pytorch.callbacks.early_stopping.EarlyStopping",
    "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor",
    "lightning.pytorch.callbacks.lr_monitor.LearningRateMonitor",
)


def _make_stub(path: str) -> type:
    module, _, qual = path.rpartition(".")

    def __setstate__(self, state):
        self._acqe_state = state

    def __init__(self, *args, **kwargs):  # only a REDUCE on the class calls this (NEWOBJ uses __new__)
        self._acqe_state = {"args": args, "kwargs": kwargs}

    cls = type(qual, (), {"__setstate__": __setstate__, "__init__": __init__, "_acqe_path": path,
                          "__module__": module, "__doc__": f"Inert stand-in for {path}: records its state only."})
    cls.__qualname__ = qual
    return cls


STUBS = {p: _make_stub(p) for p in ALLOWED_STUB_PATHS}


# --------------------------------------------------------------------------------------------------
class _Fn(_Frozen):
    """An allowlisted global: calling it runs the checking stand-in, never the real function.

    Frozen, without `append`/`extend`/`__setitem__`: a pickle's BUILD, APPENDS or SETITEMS on it fails
    instead of changing it (the allowlist is shared by every load in the process).
    """
    __slots__ = ("path", "fn", "rebuild")

    def __init__(self, path: str, fn, rebuild: bool = False):
        self._init(path=path, fn=fn, rebuild=rebuild)

    def __call__(self, *args):
        if self.fn is None:
            raise SourceError(f"the pickle calls {self.path}, which may only appear as an argument")
        return self.fn(*args)


_TENSOR = _Fn("torch.Tensor", None)
_PARAMETER = _Fn("torch.nn.parameter.Parameter", None)


def _build_allowlist() -> dict[str, object]:
    allow: dict[str, object] = {"collections.OrderedDict": collections.OrderedDict,
                                "torch.Tensor": _TENSOR, "torch.nn.parameter.Parameter": _PARAMETER,
                                "torch.Size": _Fn("torch.Size", _size),
                                "_codecs.encode": _Fn("_codecs.encode", _codecs_encode)}
    for name, fn in (("_rebuild_tensor", _rebuild_tensor), ("_rebuild_tensor_v2", _rebuild_tensor_v2),
                     ("_rebuild_tensor_v3", _rebuild_tensor_v3), ("_rebuild_parameter", _rebuild_parameter),
                     ("_rebuild_parameter_with_state", _rebuild_parameter_with_state)):
        allow[f"torch._utils.{name}"] = _Fn(f"torch._utils.{name}", fn, rebuild=True)
    allow["torch._tensor._rebuild_from_type_v2"] = _Fn("torch._tensor._rebuild_from_type_v2", _rebuild_from_type_v2)
    for name, why in (("_rebuild_meta_tensor_no_storage", "is a meta-device tensor (it holds no data)"),
                      ("_rebuild_sparse_tensor", "is a sparse tensor"), ("_rebuild_qtensor", "is a quantized tensor"),
                      ("_rebuild_nested_tensor", "is a nested tensor"),
                      ("_rebuild_wrapper_subclass", "is a tensor subclass without data of its own"),
                      ("_rebuild_device_tensor_from_numpy", "is a device tensor rebuilt from numpy"),
                      ("_rebuild_device_tensor_from_cpu_tensor", "is a device tensor rebuilt from a CPU tensor")):
        allow[f"torch._utils.{name}"] = _Fn(f"torch._utils.{name}", _refuse(why), rebuild=True)
    allow["torch.serialization._get_layout"] = _Fn("torch.serialization._get_layout", _refuse("is a sparse tensor"))
    for q in ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric",
              "per_channel_affine_float_qparams"):
        allow[f"torch.{q}"] = _Fn(f"torch.{q}", None)
    for name in (*DTYPES, *UNSUPPORTED_DTYPES):
        allow[f"torch.{name}"] = DType(name)
    for mod in ("torch", "torch.cuda"):
        for cls, name in LEGACY_STORAGES.items():
            allow[f"{mod}.{cls}"] = StorageType(f"{mod}.{cls}", DType(name))
        for cls in UNSUPPORTED_STORAGES:
            if mod == "torch" or cls.startswith("Complex"):      # torch has no torch.cuda.Q*Storage
                allow[f"{mod}.{cls}"] = StorageType(f"{mod}.{cls}", DType(cls))
    untyped = StorageType("torch.UntypedStorage", DType("uint8"))
    allow["torch.storage.UntypedStorage"] = untyped
    for path, cls in STUBS.items():
        allow[path] = cls
    scalar = _Fn("numpy.core.multiarray.scalar", _np_scalar)
    allow["numpy.core.multiarray.scalar"] = allow["numpy._core.multiarray.scalar"] = scalar
    allow["numpy.dtype"] = _Fn("numpy.dtype", _np_dtype)
    for cls, code in (("Float64DType", "f8"), ("Float32DType", "f4"), ("Int64DType", "i8"), ("Int32DType", "i4")):
        allow[f"numpy.dtypes.{cls}"] = _Fn(f"numpy.dtypes.{cls}", _np_dtype_class(code))
    return allow


ALLOWLIST = _build_allowlist()


# --------------------------------------------------------------------------------------------------
# pass 1: opcodes only

# Exactly the opcodes torch's weights_only unpickler implements (what torch.save's protocol 2 writes).
ALLOWED_OPCODES = frozenset({
    "APPEND", "APPENDS", "BINFLOAT", "BINGET", "BININT", "BININT1", "BININT2", "BINPERSID", "BINPUT", "BINUNICODE",
    "BUILD", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_SET", "EMPTY_TUPLE", "GLOBAL", "LONG1", "LONG_BINGET",
    "LONG_BINPUT", "MARK", "NEWFALSE", "NEWOBJ", "NEWTRUE", "NONE", "PROTO", "REDUCE", "SETITEM", "SETITEMS",
    "SHORT_BINSTRING", "STOP", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"})
_TUPLES = frozenset({"TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"})
_CALLS = frozenset({"REDUCE", "NEWOBJ", "BINPERSID"})
_INPLACE = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "BUILD"})
_MARK = pickletools.markobject
_LEAF = (0, 1)


def _clean(s: str, n: int = 100) -> str:
    return "".join(c if c.isprintable() else "?" for c in str(s))[:n]


def prescan(data: bytes, base: str) -> None:
    """Check the opcode stream before anything runs (see the module docstring).

    Each stack slot is tracked as (tuple depth, tuple nodes): how deeply tuples nest in it and how many
    values a walk of it as a tree visits. Hashing a tuple (a dict key) walks that tree in C, recursively
    and without caching: a deep chain crashes the process, and a small DAG of shared tuples (each level
    holding the previous one twice) takes 2**levels steps. Lists and dicts count as leaves: they are
    unhashable, so no hash walks into them.
    """
    stack: list[tuple[int, int]] = []
    marks: list[int] = []
    memo: dict[int, tuple[int, int]] = {}
    max_memo = min(L.MAX_MEMO_INDEX, len(data))
    try:
        for op, arg, pos in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name not in ALLOWED_OPCODES:
                raise SourceError(f"{base}: the pickle uses opcode {name} (at byte {pos}), which torch.save's "
                                  f"protocol never writes; refusing to unpickle it")
            if name in ("BINPUT", "LONG_BINPUT"):
                if not 0 <= arg <= max_memo:
                    raise SourceError(f"{base}: the pickle stores memo slot {arg} (corrupt or crafted)")
                if not stack:
                    raise SourceError(f"{base}: the pickle's stack is empty at byte {pos} (corrupt)")
                memo[arg] = stack[-1]
                continue
            if name in ("BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise SourceError(f"{base}: the pickle reads memo slot {arg} before storing it (corrupt)")
                stack.append(memo[arg])
                continue
            before = op.stack_before
            popped: list[tuple[int, int]] = []
            if _MARK in before:
                if not marks:
                    raise SourceError(f"{base}: the pickle pops a mark it never set (at byte {pos}; corrupt)")
                m = marks.pop()
                popped = stack[m:]
                del stack[m:]
                n_below = before.index(_MARK)
            else:
                n_below = len(before)
            if len(stack) < n_below:
                raise SourceError(f"{base}: the pickle's stack underflows at byte {pos} (corrupt)")
            below = stack[len(stack) - n_below:] if n_below else []
            if n_below:
                del stack[len(stack) - n_below:]
            if name == "MARK":
                marks.append(len(stack))
            elif name == "STOP":
                return
            elif name in _TUPLES or name in _CALLS:
                items = popped + below
                d = 1 + max((x[0] for x in items), default=0)
                n = 1 + sum(x[1] for x in items)
                if d > L.MAX_TUPLE_DEPTH or n > L.MAX_TUPLE_NODES:
                    raise SourceError(f"{base}: the pickle nests tuples {d} deep / {n:,} values large (limits "
                                      f"{L.MAX_TUPLE_DEPTH} and {L.MAX_TUPLE_NODES:,}; crafted? refusing it)")
                stack.append(_LEAF if name == "BINPERSID" else (d, n))
            elif name in _INPLACE:
                stack.append(below[0])
            else:
                stack.extend([_LEAF] * len(op.stack_after))
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001 - genops: ValueError on truncated / unknown opcodes
        raise SourceError(f"{base}: the pickle is malformed ({_clean(e, 160)})") from None
    raise SourceError(f"{base}: the pickle ends without a STOP opcode (truncated)")


# --------------------------------------------------------------------------------------------------
# pass 2: unpickle with the allowlist

class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, base: str):
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self.base = base
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module, name):
        path = f"{module}.{name}"
        obj = ALLOWLIST.get(path)
        if obj is None:
            raise SourceError(f"{self.base}: the pickle asks for {_clean(path)}, which is not on the allowlist of "
                              f"inert classes; refusing to unpickle it")
        return obj

    def persistent_load(self, pid):
        if type(pid) is not tuple or len(pid) != 5:
            raise SourceError(f"{self.base}: the pickle holds a persistent id that is not a storage reference")
        kind, stype, key, location, numel = pid
        if isinstance(kind, bytes):
            kind = kind.decode("ascii", "replace")
        if kind != "storage" or not isinstance(stype, StorageType):
            raise SourceError(f"{self.base}: the pickle holds a persistent id that is not a storage reference")
        if (type(key) is not str or not 0 < len(key) <= L.MAX_STORAGE_KEY_CHARS
                or not all(c.isalnum() or c in "_-." for c in key) or key in (".", "..")):
            raise SourceError(f"{self.base}: storage key {_clean(key, 40)!r} is not a plain record name")
        if type(location) not in (str, bytes) or len(location) > 64:
            raise SourceError(f"{self.base}: storage {key!r} has a malformed device location")
        untyped = stype.name.endswith("UntypedStorage")
        ref = self.storages.get(key)
        if ref is not None:          # torch silently keeps the first declaration; a different one is refused
            if ref.dtype.name != stype.dtype.name or ref.untyped != untyped or ref.numel != numel:
                raise SourceError(f"{self.base}: storage {key!r} is declared twice with different types or sizes")
            return ref
        if type(numel) is not int or numel < 0:
            raise SourceError(f"{self.base}: storage {key!r} has a size that is not a non-negative integer")
        if not stype.dtype.supported:
            return Refused(f"uses unsupported storage type {stype.name}")
        ref = StorageRef(key, stype.dtype, numel, untyped)
        self.storages[key] = ref
        return ref


def unpickle(data: bytes, base: str):
    """(object, storages by key) of a torch.save pickle; one-line `SourceError` on anything refused."""
    prescan(data, base)
    u = RestrictedUnpickler(data, base)
    try:
        obj = u.load()
    except SourceError as e:
        if str(e).startswith(f"{base}: "):
            raise
        raise SourceError(f"{base}: {e}") from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - the C unpickler raises many types on malformed input
        raise SourceError(f"{base}: cannot unpickle the checkpoint (corrupt or crafted): "
                          f"{type(e).__name__}: {_clean(e, 160)}") from None
    return obj, u.storages
