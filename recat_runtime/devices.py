"""Device names a user types (``cpu``, ``cuda``, ``cuda:1``, ``mps``) checked against this machine, so a
typo or a missing GPU is one line before anything is loaded, not torch's traceback halfway through."""
from __future__ import annotations

import torch

from recat_runtime.errors import DeviceError

__all__ = ["resolve_device", "default_device"]


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name) -> torch.device:
    """The ``torch.device`` for ``name`` (None: :func:`default_device`), checked to exist here.

    Raises:
        DeviceError: an unknown device type, or one this machine does not have.
    """
    if name is None:
        return default_device()
    if isinstance(name, torch.device):
        dev = name
    else:
        try:
            dev = torch.device(str(name))
        except (RuntimeError, ValueError):
            raise DeviceError(f"{name!r} is not a device name (cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{name!r}: this machine has no CUDA device (torch {torch.__version__}"
                              f"{'' if torch.version.cuda else ', built without CUDA'})")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise DeviceError(f"{name!r}: this machine has {n} CUDA device(s), cuda:0..cuda:{n - 1}")
        return dev
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError(f"{name!r}: MPS is not available on this machine")
        return dev
    backend = getattr(torch, dev.type, None)            # xpu, mtia, ...: their own is_available()
    if dev.type != "meta" and callable(getattr(backend, "is_available", None)) and backend.is_available():
        return dev
    raise DeviceError(f"{name!r}: not usable on this machine (cpu{', cuda' if torch.cuda.is_available() else ''})")
