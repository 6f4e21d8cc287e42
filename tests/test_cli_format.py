"""`acqe inspect` and `acqe verify` through click's CliRunner and `main()`."""
from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from acqe_cli.commands.inspect_cmd import escape
from acqe_cli.main import cli, main
from acqe_format import AcqeWriter, CodebookTensor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def model(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "model.acqe"
    with AcqeWriter(p) as w:
        w.set_metadata({"architecture": "stable-diffusion-v1", "naming": "ldm",
                        "components": {"unet": "model.diffusion_model.", "vae": "first_stage_model."},
                        "encoder": {"name": "test", "version": "0"}})
        ct = CodebookTensor((64, 100), rng.standard_normal(16).astype(np.float32),
                            rng.integers(0, 16, 6400).astype(np.uint8), rng.random(64).astype(np.float32))
        w.add_codebook("model.diffusion_model.w", ct, codec="rans")
        w.add_raw("model.diffusion_model.b", rng.standard_normal(64).astype(np.float16))
        w.add_raw("first_stage_model.w", rng.standard_normal((8, 8)).astype(np.float16))
        # control characters (ESC) are invalid in tensor names (spec §6); a bidi override is not
        w.add_raw("bad[2Jname\u202e[red]x", np.zeros(3, np.int64))
    return p


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_inspect_table_and_honest_bits(model):
    res = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["inspect", str(model)])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "ACQE 1.0" in out and "CODEBOOK_RANS" in out and "RAW" in out
    size = os.path.getsize(model)
    params = 6400 + 64 + 64 + 3
    assert f"{size * 8 / params:.4f} bits/param" in out
    assert "unet" in out and "vae" in out and "(other)" in out
    assert "\u202e" not in out
    assert "bad[2Jname\\u202e[red]x" in out      # escaped, and not eaten as rich markup


def test_inspect_json(model):
    res = CliRunner().invoke(cli, ["inspect", "--json", str(model)])
    assert res.exit_code == 0
    d = json.loads(res.output)
    size = os.path.getsize(model)
    assert d["file_bytes"] == size and d["version"] == "1.0"
    assert d["totals"]["parameters"] == 6400 + 64 + 64 + 3
    assert d["totals"]["bits_per_param"] == round(size * 8 / d["totals"]["parameters"], 4)
    assert d["totals"]["payload_bytes"] + d["totals"]["side_bytes"] == size
    assert [t["name"] for t in d["tensors"]][:2] == ["model.diffusion_model.w", "model.diffusion_model.b"]
    comps = {c["component"]: c for c in d["components"]}
    assert comps["unet"]["parameters"] == 6464 and comps["vae"]["parameters"] == 64
    assert d["metadata"]["architecture"] == "stable-diffusion-v1"
    assert all(ord(c) < 128 for c in res.output)


def test_escape():
    assert escape("a\nb\x00\u202e\\") == "a\\x0ab\\x00\\u202e\\\\"
    assert escape("unet.down_blocks.0 ü") == "unet.down_blocks.0 ü"


def test_verify_ok(model):
    rc, out, err = _run(["verify", str(model)])
    assert rc == 0 and out.startswith("OK ") and err == ""
    rc, out, err = _run(["verify", "-q", str(model)])
    assert rc == 0 and out == ""


def test_verify_flipped_byte(model, tmp_path):
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x40
    bad = tmp_path / "bad.acqe"
    bad.write_bytes(bytes(data))
    rc, out, err = _run(["verify", str(bad)])
    assert rc == 3 and err.startswith("Error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_verify_not_acqe(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(b"\x10\0\0\0\0\0\0\0{\"a\":1}        ")
    rc, _out, err = _run(["verify", str(p)])
    assert rc == 3 and err.startswith("Error: not an .acqe file") and "safetensors" in err


def test_inspect_bad_file_one_line(tmp_path):
    p = tmp_path / "x.acqe"
    p.write_bytes(b"\x89ACQE\r\n\x1a\x01\0\0\0" + b"\0" * 20)
    rc, _out, err = _run(["inspect", str(p)])
    assert rc == 1 and err.startswith("Error: truncated") and err.count("\n") == 1


def test_missing_file(tmp_path):
    rc, _out, err = _run(["verify", str(tmp_path / "nope.acqe")])
    assert rc == 1 and "no such file" in err


def test_inspect_every_valid_vector():
    vdir = os.path.join(ROOT, "spec", "vectors", "valid")
    for f in sorted(os.listdir(vdir)):
        if not f.endswith(".acqe"):
            continue
        path = os.path.join(vdir, f)
        res = CliRunner().invoke(cli, ["inspect", "--json", path])
        assert res.exit_code == 0, (f, res.output)
        d = json.loads(res.output)
        assert d["totals"]["payload_bytes"] + d["totals"]["side_bytes"] == os.path.getsize(path)
        res = CliRunner(env={"COLUMNS": "160"}).invoke(cli, ["inspect", path])
        assert res.exit_code == 0 and "bits/param" in res.output
        if "future" in f:
            assert "unknown(2147418113)" in res.output and "bit40" in res.output
