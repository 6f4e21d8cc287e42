"""`.ckpt` read without torch: values equal `torch.load(weights_only=True)` on every layout torch writes.

Covers the zip records' compression methods (stored, deflated), dtypes, views (offsets, strides, shared
storages, expanded dims), byte order, Lightning-style checkpoints, `.bin` weights in diffusers folders,
and that converting a `.ckpt` never imports torch.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from acqe_cli.main import main as acqe_main  # noqa: E402
from acqe_encoder.sources import open_source  # noqa: E402
from acqe_format import AcqeReader  # noqa: E402
from acqe_format.errors import SourceError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import hostile_checkpoints as H  # noqa: E402


def run(*args):
    import contextlib
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = acqe_main(list(args))
    return rc, err.getvalue()


def as_numpy(t):
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.float().numpy()
    return t.resolve_neg().resolve_conj().contiguous().numpy()


def bits(a):
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def assert_same_as_torch(path, key="state_dict"):
    """Every entry open_source yields equals torch.load(weights_only=True) bit for bit (dtype, shape)."""
    ref = H.torch_load(path)
    sd = ref[key] if key and isinstance(ref, dict) and key in ref else ref
    src = open_source(path)
    try:
        names = [e.name for e in src.entries]
        assert names == [k for k, v in sd.items() if isinstance(v, torch.Tensor)]
        for e in src.entries:
            want = as_numpy(sd[e.name])
            got = e.load()
            assert got.shape == want.shape and got.dtype == want.dtype, e.name
            assert np.array_equal(bits(got), bits(want)), e.name
        return src
    finally:
        src.close()


def views_state_dict():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 30, generator=g)
    wide = torch.randn(8, 64, generator=g)
    return {
        "f32": torch.randn(32, 48, generator=g),
        "f16": torch.randn(32, 48, generator=g).half(),
        "bf16": torch.randn(32, 48, generator=g).bfloat16(),
        "f64": torch.randn(5, 7, generator=g).double(),
        "i64": torch.arange(-50, 50, dtype=torch.int64).reshape(10, 10),
        "i32": torch.arange(12, dtype=torch.int32),
        "i16": torch.arange(-6, 6, dtype=torch.int16),
        "i8": torch.arange(-6, 6, dtype=torch.int8),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "transposed": base.t(),                       # non-contiguous, shares base's storage
        "sliced": base[5:17, 3:29:2],                 # offset + strides, same storage
        "base": base,
        "row": base[7],                               # offset into the shared storage
        "expanded": torch.arange(77).expand(1, -1),   # CLIP's position_ids: stride 0 on a size-1 dim
        "broadcast": torch.ones(1, 64).expand(16, 64),  # a small genuine broadcast (stride 0)
        "wide_t": wide.t()[::3],
        "empty": torch.zeros(0, 4),
    }


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    out = {}
    plain = d / "plain.ckpt"
    torch.save({"state_dict": views_state_dict(), "global_step": 12}, plain)
    out["plain"] = str(plain)
    raw = plain.read_bytes()
    out["deflated"] = str(d / "deflated.ckpt")
    open(out["deflated"], "wb").write(H.rezip(raw, method=zipfile.ZIP_DEFLATED))
    out["bigendian"] = str(d / "big.ckpt")
    open(out["bigendian"], "wb").write(H.to_big_endian(raw))
    out["bigendian_deflated"] = str(d / "big-deflated.ckpt")
    open(out["bigendian_deflated"], "wb").write(H.rezip(H.to_big_endian(raw), method=zipfile.ZIP_DEFLATED))
    flat = d / "flat.pt"
    torch.save(views_state_dict(), flat)
    out["flat"] = str(flat)
    return out


@pytest.mark.parametrize("kind", ["plain", "deflated", "bigendian", "bigendian_deflated", "flat"])
def test_values_equal_torch_weights_only(ckpts, kind):
    src = assert_same_as_torch(ckpts[kind], key=None if kind == "flat" else "state_dict")
    assert src.files and src.files[0].path == ckpts[kind]


def _write_deflated(path, sd):
    buf = io.BytesIO()
    torch.save({"state_dict": sd}, buf)
    open(path, "wb").write(H.rezip(buf.getvalue(), method=zipfile.ZIP_DEFLATED))


@pytest.mark.parametrize("method", ["stored", "deflated"])
def test_deflated_records_convert_to_the_values_torch_reads(tmp_path, method):
    """Issue 11 item 1: a deflated zip checkpoint converted into wrong values (or failed) with mmap=True."""
    g = torch.Generator().manual_seed(1)
    sd = {"w32": torch.randn(48, 40, generator=g), "w16": torch.randn(48, 40, generator=g).half(),
          "wbf": torch.randn(48, 40, generator=g).bfloat16(), "ids": torch.arange(300, dtype=torch.int64),
          "t": torch.randn(40, 48, generator=g).t()}
    src = str(tmp_path / f"{method}.ckpt")
    if method == "stored":
        torch.save({"state_dict": sd}, src)
    else:
        _write_deflated(src, sd)
        assert {i.compress_type for i in zipfile.ZipFile(src).infolist()} == {zipfile.ZIP_DEFLATED}
    out = str(tmp_path / f"{method}.acqe")
    rc, err = run("convert", src, out, "--lossless", "--keep-unknown", "-q")
    assert rc == 0, err
    ref = H.torch_load(src)["state_dict"]
    with AcqeReader(out) as r:
        for name, t in ref.items():
            got = r.read(name)
            want = t.contiguous().view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else as_numpy(t)
            assert got.dtype == want.dtype and np.array_equal(got, want), name


def test_lightning_checkpoint_matches_torch(tmp_path):
    p = str(tmp_path / "lightning.ckpt")
    cfg = {"architecture": "acqe-test", "unet": {"sample_size": 8}, "scheduler": {"num_train_timesteps": 10}}
    with H.fake_lightning() as MC:
        cb = MC.__new__(MC)
        cb.__dict__.update({"dirpath": "/ckpts", "best_model_score": torch.tensor(0.25)})
        torch.save({"state_dict": views_state_dict(), "global_step": 470000, "epoch": 6,
                    "pytorch-lightning_version": "1.4.2", "callbacks": {MC: {"monitor": None, "dirpath": "/x"}},
                    "callback_obj": cb, "np_scalar": np.float64(0.5), "np_int": np.int64(-3),
                    "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}}}],
                    "acqe_configs": json.dumps(cfg)}, p)
    src = assert_same_as_torch(p)
    assert src.architecture == "acqe-test" and src.configs == {"unet": {"sample_size": 8},
                                                               "scheduler": {"num_train_timesteps": 10}}
    assert src.extras["global_step"] == 470000 and src.extras["np_scalar"] == 0.5 and src.extras["np_int"] == -3
    assert src.extras["callbacks"] == {"ModelCheckpoint": {"monitor": None, "dirpath": "/x"}}
    assert src.extras["callback_obj"]["state"]["best_model_score"] == 0.25
    assert src.dropped == ["optimizer_states"]


def test_parameters_and_tensor_attributes(tmp_path):
    p = str(tmp_path / "params.ckpt")
    t = torch.arange(6.0)
    t.note = "attr"                                  # pickled through _rebuild_from_type_v2
    torch.save({"state_dict": {"p": torch.nn.Parameter(torch.ones(3, 2)), "t": t,
                               "u16": torch.tensor([0, 7, 65535], dtype=torch.int32).to(torch.uint16)}}, p)
    assert_same_as_torch(p)


def test_legacy_pickle_is_refused_with_how_to_resave(tmp_path):
    p = str(tmp_path / "legacy.ckpt")
    torch.save({"state_dict": {"w": torch.ones(4)}}, p, _use_new_zipfile_serialization=False)
    with pytest.raises(SourceError, match="legacy .*re-save it"):
        open_source(p)


@pytest.mark.parametrize("what", ["meta", "sparse", "quantized", "complex", "neg"])
def test_tensors_without_plain_data_are_one_line_errors(tmp_path, what):
    make = {"meta": lambda: torch.empty(4, 4, device="meta"), "sparse": lambda: torch.eye(3).to_sparse(),
            "quantized": lambda: torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8),
            "complex": lambda: torch.zeros(3, dtype=torch.complex64), "neg": lambda: torch.ones(3)._neg_view()}
    p, out = str(tmp_path / f"{what}.ckpt"), str(tmp_path / f"{what}.acqe")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save({"state_dict": {"ok": torch.ones(64, 64), "bad": make[what]()}}, p)
    rc, err = run("convert", p, out, "--keep-unknown", "-q")
    assert rc == 1 and err.startswith("Error: cannot read input") and "'bad'" in err, err
    assert len(err.strip().splitlines()) <= 2 and not os.path.exists(out)


def test_bin_weights_in_a_diffusers_folder_use_the_same_reader(tmp_path):
    g = torch.Generator().manual_seed(2)
    sd = {"conv_in.weight": torch.randn(8, 4, 3, 3, generator=g), "conv_in.bias": torch.randn(8, generator=g).half()}
    for method in ("stored", "deflated"):
        d = tmp_path / method / "unet"
        d.mkdir(parents=True)
        buf = io.BytesIO()
        torch.save(sd, buf)
        raw = buf.getvalue() if method == "stored" else H.rezip(buf.getvalue(), method=zipfile.ZIP_DEFLATED)
        (d / "diffusion_pytorch_model.bin").write_bytes(raw)
        (d / "config.json").write_text(json.dumps({"sample_size": 8}))
        src = open_source(str(tmp_path / method))
        try:
            for e in src.entries:
                assert np.array_equal(e.load(), as_numpy(sd[e.name.split(".", 1)[1]])), e.name
            assert sorted(os.path.basename(f.path) for f in src.files) == ["config.json", "diffusion_pytorch_model.bin"]
        finally:
            src.close()


def test_ckpt_conversion_never_imports_torch(tmp_path):
    p, out = str(tmp_path / "plain.ckpt"), str(tmp_path / "plain.acqe")
    torch.save({"state_dict": {"w": torch.randn(64, 64), "b": torch.zeros(64).bfloat16()}, "global_step": 3}, p)
    code = ("import sys; sys.modules['torch'] = None\n"          # any `import torch` now raises ImportError
            "from acqe_cli.main import main\n"
            f"rc = main(['convert', {p!r}, {out!r}, '--bits', '6', '--tokenizer', 'omit', '--keep-unknown', '-q'])\n"
            "assert rc == 0, rc\n"
            "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules if sys.modules[m] is not None)\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with AcqeReader(out) as rd:
        assert rd.metadata["source"]["format"] == "ckpt"


def test_allowlist_is_no_wider_than_the_torch_based_readers():
    """Every global the torch-free unpickler answers was allowed by torch.load(weights_only=True) plus the
    extra safe globals of the reader it replaces (Lightning stubs, numpy scalars and dtypes)."""
    from torch._weights_only_unpickler import _get_allowed_globals

    from acqe_encoder.sources.unpickle import ALLOWED_OPCODES, ALLOWLIST
    before = set(_get_allowed_globals()) | {path for _, path in H.torch_safe_globals()}
    assert set(ALLOWLIST) <= before, sorted(set(ALLOWLIST) - before)
    import inspect

    import torch._weights_only_unpickler as wo
    src = inspect.getsource(wo.Unpickler.load)
    assert all(f"{op}[0]" in src for op in ALLOWED_OPCODES), [op for op in ALLOWED_OPCODES if f"{op}[0]" not in src]
