"""The command line's own checks: every bad option value is one line on stderr and a non-zero exit, found
before any work starts; the options that pass do what they say (image format, a lone --height)."""
from __future__ import annotations

import pytest

from acqe_cli.main import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from recat_runtime.testing import tiny_pipeline
    from runtime_fixtures import write_tiny_acqe

    path = tmp_path_factory.mktemp("tiny") / "tiny.acqe"
    write_tiny_acqe(str(path), tiny_pipeline())
    return str(path)


def _one_line_error(capsys, code, expect_code=None):
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and (expect_code is None or code == expect_code), err
    assert len(err) == 1 and err[0].startswith("Error: "), err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("bits", ["0", "-1", "100", "nan", "inf", "-inf", "abc"])
def test_convert_bits(bits, tmp_path, capsys):
    line = _one_line_error(capsys, main(["convert", __file__, str(tmp_path / "o.acqe"), "--bits", bits]), 2)
    assert "--bits" in line


def test_demo_bits(capsys):
    assert "--bits" in _one_line_error(capsys, main(["demo", "--bits", "nan"]), 2)


def test_demo_unknown_model(capsys):
    err = _one_line_error(capsys, main(["demo", "--model", "nonsense"]), 2)
    assert "--model" in err and "sdxl" in err


@pytest.mark.parametrize("args, needle", [
    (["--height", "9"], "--height"),
    (["--width", "12"], "--width"),
    (["--height", "0"], "--height"),
    (["--guidance", "nan"], "--guidance"),
    (["--guidance", "inf"], "--guidance"),
    (["--device", "tpu"], "tpu"),
    (["--device", "cuda:99"], "cuda:99"),
    (["--out", "picture.xyz"], ".xyz"),
    (["--out", "noext"], "no suffix"),
    (["--height", "4096", "--width", "4096"], "--force"),
    (["--height", "2048", "--width", "1024"], "--force"),
])
def test_generate_options(tiny, tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    import recat_runtime.api as api

    monkeypatch.setattr(api, "load_pipeline", lambda *a, **k: pytest.fail("loaded the model"))
    line = _one_line_error(capsys, main(["generate", tiny, "--prompt", "a", "--steps", "2", *args]))
    assert needle in line


def test_cuda_without_cuda(tiny, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = _one_line_error(capsys, main(["generate", tiny, "--prompt", "a", "--device", "cuda",
                                         "--out", str(tmp_path / "x.png")]), 1)
    assert "no CUDA device" in line


def test_generate_output_folder_missing_is_found_first(tiny, tmp_path, capsys, monkeypatch):
    import recat_runtime.api as api

    monkeypatch.setattr(api, "load_pipeline", lambda *a, **k: pytest.fail("loaded the model"))
    out = tmp_path / "missing" / "x.png"
    line = _one_line_error(capsys, main(["generate", tiny, "--prompt", "a", "--out", str(out)]), 2)
    assert str(out) in line and ".acqe-spool" not in line


def test_convert_output_folder_missing_names_the_users_path(tiny, tmp_path, capsys):
    out = tmp_path / "missing" / "x.acqe"
    line = _one_line_error(capsys, main(["convert", tiny, str(out)]), 2)
    assert str(out) in line and "spool" not in line


def test_generate_honours_the_suffix_and_a_lone_height(tiny, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "g.jpg"
    assert main(["generate", tiny, "--prompt", "a", "--steps", "2", "--height", "8", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == "JPEG"
        assert im.size == (16, 8)                      # width: the tiny model's default 16 px; height as asked
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_generate_branch_out_of_range(tiny, tmp_path, capsys):
    line = _one_line_error(capsys, main(["generate", tiny, "--prompt", "a", "--steps", "4", "--cache", "uniform",
                                         "--full-steps", "2", "--branch", "99", "--out", str(tmp_path / "x.png")]), 1)
    assert "branch 99 does not exist" in line and "0..8" in line
    assert not (tmp_path / "x.png").exists()
