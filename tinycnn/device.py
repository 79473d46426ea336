"""Which device and how many CPU threads a run uses, checked before anything is built.

A name torch cannot parse, or ``cuda`` on a machine without a GPU, is a user error with an
accepted list, not a traceback at the first step.
"""
from __future__ import annotations

import platform

import torch

from .errors import SpecError


def accepted_devices() -> list[str]:
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return names


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is the first GPU if there is one, else the CPU."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SpecError(f"unknown device {name!r}; accepted here: {', '.join(accepted_devices())}") from None
    if device.type == "cuda" and not _cuda_index_exists(device):
        raise SpecError(f"device {name!r} is not available: torch sees "
                        f"{torch.cuda.device_count()} CUDA GPU(s); accepted here: {', '.join(accepted_devices())}")
    if device.type not in ("cpu", "cuda"):
        raise SpecError(f"device type {device.type!r} is not supported; accepted here: {', '.join(accepted_devices())}")
    return device


def _cuda_index_exists(device: torch.device) -> bool:
    return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()


def set_threads(threads: int | None) -> int:
    """Set torch's CPU thread count (None keeps torch's default) and return the count in use.

    On a busy 2-core machine torch's default threads collapse (~140 img/s on the MNIST
    final against ~1,800 with one thread), so runs name their thread count.
    """
    if threads is not None:
        if threads < 1:
            raise SpecError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
