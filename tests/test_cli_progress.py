"""Progress: rich bars on a terminal for export / verify / generate / profile-cache, nothing when piped or
with -q; the library reports through callbacks and leaves diffusers' own bar alone unless given one."""
import io
import shutil

import pytest

from acqe_cli.main import main
from acqe_cli.progress import progress_display
from recat_runtime.testing import tiny_pipeline
from runtime_fixtures import write_tiny_acqe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("progress") / "tiny.acqe"
    write_tiny_acqe(path, tiny_pipeline(seed=3), codebook=True)
    return str(path)


def test_display_draws_on_a_terminal_only():
    term, pipe = Terminal(), io.StringIO()
    with progress_display(stream=term) as show:
        show("decode", 5, 10)
        show("load", 0, None)                   # unknown total: a spinner
    assert "decode" in term.getvalue() and "load" in term.getvalue()
    for stream, quiet in ((pipe, False), (Terminal(), True)):
        with progress_display(quiet, stream=stream) as show:
            show("decode", 5, 10)
        assert stream.getvalue() == ""


def _run(monkeypatch, argv, terminal: bool):
    err = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    rc = main(argv)
    return rc, err.getvalue()


def test_verify_export_generate_show_progress_on_a_terminal(tiny, tmp_path, monkeypatch):
    cases = [(["verify", tiny], ("decode", "sha256")),
             (["export", tiny, str(tmp_path / "m.gguf"), "--type", "q8_0"], ("export gguf",)),
             (["export", tiny, str(tmp_path / "m.safetensors")], ("export safetensors",)),
             (["generate", tiny, "--prompt", "a red circle", "--steps", "3", "--device", "cpu", "--height", "16",
               "--width", "16", "--out", str(tmp_path / "a.png")], ("load", "denoise"))]
    for argv, labels in cases:
        rc, err = _run(monkeypatch, argv, terminal=True)
        assert rc == 0, err
        assert all(label in err for label in labels), (argv[0], err)
        rc, err = _run(monkeypatch, argv, terminal=False)             # piped: at most the result line, no bars
        assert rc == 0 and len(err.strip().splitlines()) <= 1, err
        assert "%|" not in err and "\x1b[" not in err
        rc, err = _run(monkeypatch, argv + ["-q"], terminal=True)     # -q on a terminal: no bars either
        assert rc == 0 and all(label not in err for label in labels if label != "load"), err


def test_profile_cache_shows_progress_on_a_terminal(tiny, tmp_path, monkeypatch):
    path = tmp_path / "p.acqe"
    shutil.copyfile(tiny, path)
    argv = ["profile-cache", str(path), "--steps", "4", "--full-steps", "2", "--samples", "4",
            "--validation-samples", "0", "--batch-size", "4", "--device", "cpu"]
    rc, err = _run(monkeypatch, argv, terminal=True)
    assert rc == 0, err
    assert "profile" in err
    rc, err = _run(monkeypatch, argv + ["--reprofile", "-q"], terminal=True)
    assert rc == 0 and "%|" not in err and "profile " not in err.split("stored ReCaT")[0].replace("B=", ""), err


def test_library_leaves_diffusers_progress_bar_alone(tiny):
    from recat_runtime.api import generate
    from recat_runtime.loading import load_pipeline

    pipe = load_pipeline(tiny, device="cpu")
    assert not getattr(pipe, "_progress_bar_config", {}).get("disable", False)   # diffusers' default: shown
    seen = []
    res = generate(tiny, ["a red circle"], steps=3, device="cpu", height=16, width=16,
                   progress=lambda label, done, total: seen.append((label, done, total)))
    assert len(res.images) == 1
    assert ("denoise", 3, 3) in seen and seen[0] == ("load", 0, None)
