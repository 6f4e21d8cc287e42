"""Which `pip install 'acqe[EXTRA]'` brings a missing third-party module, read from the package's own
requirements so that moving a dependency between extras in pyproject.toml is the only edit needed.

A source checkout (pyproject.toml beside the packages) is read first: an editable install's recorded
metadata goes stale when pyproject.toml changes. An installed wheel has no pyproject.toml and answers from
its metadata (``importlib.metadata.requires``).
"""
from __future__ import annotations

import functools
import importlib.metadata
import os
import re

DISTRIBUTION = "acqe"

# import name -> distribution name, where the two differ
_DISTRIBUTION_OF = {"PIL": "pillow", "sklearn": "scikit-learn", "yaml": "pyyaml", "cv2": "opencv-python"}

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject_requirements() -> list[str] | None:
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")
    try:
        import tomllib

        with open(path, "rb") as f:
            project = tomllib.load(f).get("project", {})
    except (OSError, ImportError, ValueError):
        return None
    if project.get("name") != DISTRIBUTION:
        return None
    reqs = list(project.get("dependencies", []))
    for extra, items in project.get("optional-dependencies", {}).items():
        reqs += [f'{r}; extra == "{extra}"' for r in items]
    return reqs


@functools.lru_cache(maxsize=1)
def _requirements() -> tuple[tuple[str, str | None], ...]:
    """(distribution, extra or None for the base install) for every requirement of the package."""
    reqs = _pyproject_requirements()
    if reqs is None:
        try:
            reqs = importlib.metadata.requires(DISTRIBUTION) or []
        except importlib.metadata.PackageNotFoundError:
            reqs = []
    out = []
    for r in reqs:
        m = _NAME.match(r)
        if m:
            extra = _EXTRA.search(r.partition(";")[2])
            out.append((_normal(m[1]), extra[1] if extra else None))
    return tuple(out)


def extras_for(module: str) -> list[str] | None:
    """The extras that install the top-level ``module`` (in pyproject order), ``[]`` when the base
    install has it, None when no requirement of the package names it."""
    dist = _normal(_DISTRIBUTION_OF.get(module, module))
    found = [extra for name, extra in _requirements() if name == dist]
    if not found:
        return None
    if None in found:
        return []
    return list(dict.fromkeys(found))


def install_hint(module: str, prefer: str | None = None) -> str:
    """How to get ``module``: ``pip install 'acqe[runtime]'``, the base package, or the module itself.
    ``prefer`` names the extra to suggest first when several install it (the command's own)."""
    extras = extras_for(module)
    if extras is None:
        return f"pip install {_DISTRIBUTION_OF.get(module, module)}"
    if not extras:
        return f"reinstall {DISTRIBUTION} (pip install {DISTRIBUTION}): {module} is one of its base dependencies"
    if prefer in extras:
        extras.remove(prefer)
        extras.insert(0, prefer)
    first = f"pip install '{DISTRIBUTION}[{extras[0]}]'"
    more = " or ".join(f"'{DISTRIBUTION}[{e}]'" for e in extras[1:])
    return first + (f" (or {more})" if more else "")


__all__ = ["extras_for", "install_hint"]
