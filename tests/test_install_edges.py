"""A standard install's edges: a missing optional dependency is one line naming the extra, numba's kernel
cache never crashes a user who can write nothing usual, and transformers' torchvision notice is gone."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from acqe_cli._errors import format_error
from acqe_cli.extras import extras_for, install_hint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANS_VECTOR = os.path.join(ROOT, "spec", "vectors", "valid", "015-rans-contexts.acqe")


def test_extras_come_from_pyproject():
    assert extras_for("diffusers") == ["runtime"]
    assert "runtime" in extras_for("torch")
    assert extras_for("numba") == ["runtime", "encoder"]  # the base install reads through libacqe
    assert extras_for("numpy") == []                     # a base dependency
    assert extras_for("PIL") is None or isinstance(extras_for("PIL"), list)
    assert extras_for("no_such_module_xyz") is None


@pytest.mark.parametrize("module", ["torch", "diffusers", "transformers", "accelerate"])
def test_missing_runtime_module_is_one_line_naming_the_extra(module):
    line = format_error(ModuleNotFoundError(f"No module named '{module}'", name=module), "runtime")
    assert line is not None and "\n" not in line
    assert line.startswith(f"missing dependency: {module} is not installed")
    assert "pip install 'acqe[runtime]'" in line


def test_missing_module_prefers_the_commands_extra():
    assert install_hint("numba", "encoder").startswith("pip install 'acqe[encoder]'")
    assert install_hint("numba", "runtime").startswith("pip install 'acqe[runtime]'")
    assert install_hint("torch", "encoder").startswith("pip install 'acqe[runtime]'")   # only runtime has it


def test_missing_numba_and_gguf():
    assert "pip install 'acqe[runtime]'" in format_error(ModuleNotFoundError("No module named 'numba'", name="numba"))
    assert "base dependencies" in format_error(ModuleNotFoundError("No module named 'numpy'", name="numpy"))
    assert "gguf" in format_error(ModuleNotFoundError("No module named 'gguf'", name="gguf"))


def test_import_errors_inside_the_project_stay_bugs():
    assert format_error(ImportError("cannot import name 'x' from 'acqe_format'", name="acqe_format")) is None
    assert format_error(ImportError("something odd")) is None


def test_cli_without_torch_is_one_line(tmp_path):
    """`acqe generate` in an install without torch: one line naming the runtime extra, no traceback."""
    block = tmp_path / "block"
    block.mkdir()
    for mod in ("torch", "diffusers", "transformers"):
        (block / f"{mod}.py").write_text(f"raise ModuleNotFoundError(\"No module named '{mod}'\", name='{mod}')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), ROOT]))
    p = subprocess.run([sys.executable, "-m", "acqe_cli.main", "generate", RANS_VECTOR, "--prompt", "a",
                        "--out", str(tmp_path / "x.png")], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "missing dependency: torch is not installed" in lines[0] and "acqe[runtime]" in lines[0]


# --- numba's kernel cache ---------------------------------------------------------------------------
_READ_ALL = ("import acqe_encoder.kernels, acqe_encoder.clustering; from acqe_format import AcqeReader; "
             f"r = AcqeReader({RANS_VECTOR!r}); print(sum(r.read(t.name).size for t in r.tensors))")


def _package_copy(dest) -> str:
    for pkg in ("acqe_format", "acqe_encoder"):
        shutil.copytree(os.path.join(ROOT, pkg), os.path.join(dest, pkg),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(dest)


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME",
                                                            "NUMBA_DISABLE_JIT", "PYTHONPATH")}
    env.update(extra)
    return env


def test_numba_cache_without_any_writable_folder(tmp_path):
    """No writable __pycache__ beside the package (a file sits where the folder would go, which stops root
    too) and a HOME under which nothing can be created: every kernel still compiles and runs."""
    root = _package_copy(tmp_path / "site")
    for folder, _dirs, files in os.walk(root):
        if any(f.endswith(".py") for f in files):
            open(os.path.join(folder, "__pycache__"), "w").close()
    env = _clean_env(HOME="/dev/null", PYTHONPATH=root, PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.run([sys.executable, "-c", _READ_ALL], capture_output=True, text=True, env=env, timeout=300,
                       cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "no locator available" not in p.stderr


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a read-only bind mount")
def test_numba_cache_with_read_only_package_and_home(tmp_path):
    """The same with a really read-only copy of the package and a read-only HOME (bind mounts)."""
    root = _package_copy(tmp_path / "site")
    home = tmp_path / "home"
    home.mkdir()
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no mount namespace here")
    script = (f"mount --bind -o ro {root} {root} && mount --bind -o ro {home} {home} && "
              f"exec {sys.executable} -c \"{_READ_ALL}\"")
    env = _clean_env(HOME=str(home), PYTHONPATH=root, PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env,
                       timeout=300, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]


def test_transformers_torchvision_notice_is_silenced():
    code = ("import recat_runtime.loading; from diffusers import StableDiffusionPipeline; "
            "import transformers; transformers.utils.logging.get_logger('transformers').warning('still here')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "requires torchvision" not in p.stderr
    assert "still here" in p.stderr                 # only that notice: other warnings still show
