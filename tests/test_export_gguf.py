"""GGUF export: read back with gguf-py, every tensor checked against the decoded `.acqe` (exact for
F32/F16/BF16, the block type's own quantisation otherwise), LDM names for stable-diffusion.cpp."""
import os

import gguf
import numpy as np
import pytest

from acqe_export import ExportError, export_gguf
from acqe_export.gguf import GGUF_TYPES, gguf_plan, read_gguf, tensor_type
from acqe_format import AcqeReader, AcqeWriter
from acqe_format.model.sd_v1 import diffusers_to_ldm
from recat_runtime.testing import tiny_pipeline
from runtime_fixtures import write_tiny_acqe

Q = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.acqe"
    write_tiny_acqe(path, tiny_pipeline(seed=5), codebook=True)
    return str(path)


def _check_against_acqe(acqe_path, gguf_path, type_name):
    """Every GGUF tensor equals the decoded .acqe tensor in the type it was stored in."""
    want = GGUF_TYPES[type_name][0]
    with AcqeReader(acqe_path) as r:
        plan = {p.name: p for p in gguf_plan(r, type_name)}
        seen = set()
        for name, gtype, values in read_gguf(gguf_path):
            p = plan[name]
            seen.add(name)
            assert gtype == p.gtype and values.shape == p.shape, name
            if gtype in (Q.F32, Q.F16, Q.BF16):
                if gtype == Q.BF16:
                    bits = r.read(p.source, dtype="bfloat16").reshape(p.shape)
                    ref = (bits.astype(np.uint32) << 16).view(np.float32)
                else:
                    ref = r.read(p.source, dtype={Q.F32: "float32", Q.F16: "float16"}[gtype]).reshape(p.shape)
                assert values.dtype == ref.dtype and np.array_equal(values.view(np.uint8), ref.view(np.uint8)), name
            elif gtype in (Q.I8, Q.I16, Q.I32, Q.I64):
                assert np.array_equal(values, r.read(p.source).reshape(p.shape)), name
            else:
                assert gtype == want
                x = r.read(p.source, dtype="float32").reshape(p.shape)
                own = gguf.quants.dequantize(gguf.quants.quantize(x, gtype), gtype)
                assert np.array_equal(values, own), name          # exactly the type's own quantisation
                # and that error is the type's: at most one quantisation step of each 32-value block
                bits = {Q.Q8_0: 8, Q.Q5_0: 5, Q.Q4_0: 4}[gtype]
                blocks_x, blocks_v = x.reshape(-1, 32), values.reshape(-1, 32)
                step = np.abs(blocks_x).max(axis=1, keepdims=True) / 2 ** (bits - 1)
                assert np.all(np.abs(blocks_v - blocks_x) <= step * 1.01 + 1e-12), name
        assert seen == set(plan) and len(plan) == len(r.tensors)


@pytest.mark.parametrize("type_name", list(GGUF_TYPES))
def test_every_tensor_reads_back(tiny, tmp_path, type_name):
    out = tmp_path / f"tiny.{type_name}.gguf"
    rep = export_gguf(tiny, str(out), type_name)
    assert rep.file_bytes == os.path.getsize(out) and rep.tensors > 100
    assert GGUF_TYPES[type_name][0].name in rep.types            # the type is really used
    _check_against_acqe(tiny, str(out), type_name)
    fields = gguf.GGUFReader(str(out)).fields
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "sd1"
    assert int(fields["general.file_type"].parts[-1][0]) == int(GGUF_TYPES[type_name][1])


def test_types_follow_stable_diffusion_cpp(tiny):
    """What stays exact and what is blocked, by stable-diffusion.cpp's converter rules."""
    assert tensor_type("model.diffusion_model.input_blocks.1.1.proj_in.bias", (32,), "float32", Q.Q4_0) == Q.F32
    assert tensor_type("model.diffusion_model.out.0.weight", (32,), "float32", Q.F16) == Q.F32        # 1-D: exact
    assert tensor_type("model.diffusion_model.time_embed.0.weight", (128, 32), "float32", Q.Q8_0) == Q.F32
    emb = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    assert tensor_type(emb, (49408, 768), "float32", Q.Q4_0) == Q.F32
    assert tensor_type("model.diffusion_model.input_blocks.1.0.in_layers.2.weight", (32, 32, 3, 3), "float32",
                       Q.Q8_0) == Q.F16                                                            # 3x3: F16
    assert tensor_type("model.diffusion_model.input_blocks.1.0.in_layers.2.weight", (32, 32, 3, 3), "float32",
                       Q.BF16) == Q.BF16
    assert tensor_type("x.attn1.to_q.weight", (32, 48), "float32", Q.Q5_0) == Q.F16                 # 48 % 32
    assert tensor_type("x.attn1.to_q.weight", (32, 64), "float32", Q.Q5_0) == Q.Q5_0
    assert tensor_type("x.position_ids", (1, 77), "int64", Q.Q4_0) == Q.I64


def _write_diffusers_named(path):
    pipe = tiny_pipeline(seed=6)
    parts = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder}
    with AcqeWriter(path) as w:
        w.set_metadata({"architecture": "stable-diffusion-v1", "naming": "diffusers",
                        "components": {c: f"{c}." for c in parts}})
        for comp, model in parts.items():
            for k, v in model.state_dict().items():
                w.add_raw(f"{comp}.{k}", v.detach().numpy())
    return {c: {k: v.detach().numpy() for k, v in m.state_dict().items()} for c, m in parts.items()}


def test_diffusers_names_are_mapped_to_ldm(tmp_path):
    src = tmp_path / "diffusers.acqe"
    sds = _write_diffusers_named(src)
    out = tmp_path / "d.gguf"
    export_gguf(str(src), str(out), "f32")
    ldm = diffusers_to_ldm(sds["unet"], sds["vae"], sds["text_encoder"])
    got = {name: values for name, _, values in read_gguf(str(out))}
    expected = {k: np.asarray(v) for k, v in ldm.items() if not k.endswith("position_ids") or k in got}
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k].shape == tuple(v.shape) and np.array_equal(got[k], v), k   # VAE attention: [C, C, 1, 1]


def test_flat_naming_is_refused(tmp_path):
    src = tmp_path / "flat.acqe"
    with AcqeWriter(src) as w:
        w.set_metadata({"naming": "flat"})
        w.add_raw("w", np.ones((4, 4), np.float32))
    with pytest.raises(ExportError, match="naming is 'flat'"):
        export_gguf(str(src), str(tmp_path / "x.gguf"), "f16")
    assert not (tmp_path / "x.gguf").exists()                        # nothing half-written


def test_unknown_type_is_refused(tiny, tmp_path):
    with pytest.raises(ExportError, match="unknown GGUF type 'q3_k'"):
        export_gguf(tiny, str(tmp_path / "x.gguf"), "q3_k")


def test_cli_export_gguf_and_suffix_checks(tiny, tmp_path, capsys):
    from acqe_cli.main import main

    out = tmp_path / "m.gguf"
    assert main(["export", tiny, str(out), "--type", "q8_0"]) == 0
    err = capsys.readouterr().err
    assert "Q8_0" in err and "\x1b[" not in err                       # piped: a summary line, no progress bar
    assert gguf.GGUFReader(str(out)).tensors[0].name
    for bad, extra, msg in [("m.bin", [], "OUT must end in .safetensors or .gguf"),
                            ("m.safetensors", ["--type", "q8_0"], "--type is for .gguf output"),
                            ("n.gguf", ["--dtype", "fp16"], "--dtype is for .safetensors output")]:
        assert main(["export", tiny, str(tmp_path / bad), *extra]) == 2
        assert msg in capsys.readouterr().err
        assert not (tmp_path / bad).exists()
    assert main(["export", tiny, str(tmp_path / "q.gguf"), "-q"]) == 0
    assert capsys.readouterr().err.startswith("wrote ")
