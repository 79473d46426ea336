"""Where a result came from: code version, library versions, time. Recorded in every run."""
from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from pathlib import Path

import torch


def git_commit() -> str:
    """The commit of the checkout tinycnn runs from, or "" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def environment() -> dict:
    from . import __version__

    return {"torch_version": torch.__version__, "tinycnn_version": __version__,
            "python": platform.python_version(), "git_commit": git_commit()}
