"""The project's allowed and forbidden import arrows (docs/ARCHITECTURE.md), checked from the source.

Every ``import`` / ``from ... import`` statement counts, also one inside a function (a lazy import is
still an arrow). `check(root)` returns the list of violations of a source tree, so the test can run it
on the real tree and on a deliberately broken copy.
"""
from __future__ import annotations

import ast
import os
import sys
from dataclasses import dataclass

PACKAGES = ("acqe_format", "acqe_export", "acqe_encoder", "recat_runtime", "acqe_demo", "acqe_cli")

# project packages each package may import (itself always)
ALLOWED_PROJECT = {
    "acqe_format": set(),
    "acqe_export": {"acqe_format"},
    "acqe_encoder": {"acqe_format"},
    "recat_runtime": {"acqe_format"},
    "acqe_demo": {"acqe_format", "acqe_encoder", "recat_runtime"},
    "acqe_cli": {"acqe_format", "acqe_export", "acqe_encoder", "recat_runtime", "acqe_demo"},
}
# third-party distributions a package must never import (beyond the standard library, numpy and
# numba, which all may use); (package, module prefix) -> the only files that may
HEAVY = ("torch", "diffusers", "transformers", "accelerate", "PIL", "safetensors", "peft")
FORBIDDEN_THIRD_PARTY = {
    "acqe_format": HEAVY + ("click", "rich", "sklearn", "gguf"),
    "acqe_export": HEAVY + ("click", "rich"),
    "acqe_encoder": tuple(h for h in HEAVY if h not in ("torch", "diffusers", "safetensors")) + ("click", "rich"),
    "recat_runtime": ("click", "rich"),
}
# torch and diffusers inside the encoder: only the optional calibration (--calibrate runs the UNet);
# checkpoints are read without torch (acqe_encoder/sources)
ENCODER_TORCH_FILES = ("acqe_encoder/calibrate.py",)
ENCODER_TORCH = ("torch", "diffusers")
# triton inside the runtime: only the kernel module, imported when a Triton rebuild runs
RUNTIME_TRITON_FILES = ("recat_runtime/triton_kernels.py",)


@dataclass(frozen=True)
class Arrow:
    source: str        # importing module, e.g. "acqe_format.reader"
    target: str        # imported module (project) or top-level name (third party)
    path: str
    line: int


def _module_name(root: str, path: str) -> str:
    rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _modules(root: str) -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        base = os.path.join(root, pkg)
        for folder, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__pycache__")) and d != "weights"]
            for f in files:
                if f.endswith(".py"):
                    p = os.path.join(folder, f)
                    out[_module_name(root, p)] = p
    return out


def arrows(root: str) -> list[Arrow]:
    """Every import of every module of the project packages under ``root``."""
    modules = _modules(root)
    found = []
    for mod, path in modules.items():
        is_pkg = path.endswith("__init__.py")
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    found.append(Arrow(mod, _resolve(a.name, modules), path, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = mod.split(".")
                    keep = len(parts) - node.level + (1 if is_pkg else 0)
                    base = ".".join(parts[:keep] + ([base] if base else []))
                for a in node.names:
                    sub = f"{base}.{a.name}" if base else a.name
                    found.append(Arrow(mod, sub if sub in modules else _resolve(base, modules), path, node.lineno))
    return found


def _resolve(name: str, modules: dict[str, str]) -> str:
    """The project module an import names (its longest existing prefix), or the top-level third-party name."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        cand = ".".join(parts[:k])
        if cand in modules:
            return cand
    return parts[0]


def _package(module: str) -> str:
    return module.split(".")[0]


def cycles(found: list[Arrow]) -> list[list[str]]:
    """Module-level import cycles (Tarjan), ignoring a package ``__init__`` importing its own submodules
    (that is how a package exposes them, not a dependency back up)."""
    graph: dict[str, set[str]] = {}
    for a in found:
        if _package(a.target) not in PACKAGES or a.target == a.source:
            continue
        if a.target.startswith(a.source + "."):
            continue
        graph.setdefault(a.source, set()).add(a.target)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def check(root: str) -> list[str]:
    """Every violation of the rules in the tree at ``root``, one line each (empty: the tree is clean)."""
    found = arrows(root)
    bad = []
    for a in found:
        src_pkg, tgt = _package(a.source), a.target
        where = f"{os.path.relpath(a.path, root)}:{a.line}"
        tgt_pkg = _package(tgt)
        if tgt_pkg in PACKAGES:
            if tgt_pkg != src_pkg and tgt_pkg not in ALLOWED_PROJECT[src_pkg]:
                bad.append(f"{where}: {a.source} imports {tgt} ({src_pkg} may not import {tgt_pkg})")
            continue
        if tgt_pkg in FORBIDDEN_THIRD_PARTY.get(src_pkg, ()):
            bad.append(f"{where}: {a.source} imports {tgt_pkg}")
        elif src_pkg == "recat_runtime" and tgt_pkg == "triton":
            if os.path.relpath(a.path, root).replace(os.sep, "/") not in RUNTIME_TRITON_FILES:
                bad.append(f"{where}: {a.source} imports triton (only recat_runtime/triton_kernels.py may)")
        elif src_pkg == "acqe_encoder" and tgt_pkg in ENCODER_TORCH:
            rel = os.path.relpath(a.path, root).replace(os.sep, "/")
            if rel not in ENCODER_TORCH_FILES:
                bad.append(f"{where}: {a.source} imports {tgt_pkg} (only calibrate.py may)")
    for cyc in cycles(found):
        bad.append(f"import cycle: {' -> '.join(cyc)}")
    return bad
