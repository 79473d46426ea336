"""Model files and training checkpoints: atomic writes, safe loads.

A model file is a plain dict ``{"format", "version", "spec", "state_dict", "info"}``
holding only tensors and built-in types, so it is read with ``torch.load(...,
weights_only=True)``: opening a model file never runs code. The spec is stored as its
architecture string, so a model loads without the caller knowing the architecture.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .build import TinyCNN, build
from .errors import CheckpointError, TinyCNNError
from .spec import PhaseSpec

MODEL_FORMAT = "tinycnn-model"
CHECKPOINT_FORMAT = "tinycnn-checkpoint"
VERSION = 1


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename.

    A crash mid-write leaves the previous file intact, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a model file is for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _safe_load(path: str | os.PathLike, expected_format: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no file at {path}; expected a {expected_format} file written by tinycnn")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and unpickler errors all mean "not loadable"
        raise CheckpointError(f"{path} is corrupt or not a {expected_format} file ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict) or obj.get("format") != expected_format:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is not a {expected_format} file (found {got!r})")
    if obj.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} has format version {obj['version']}; this tinycnn reads <= {VERSION}")
    return obj


def save_model(model: TinyCNN, path: str | os.PathLike, info: dict | None = None) -> None:
    """Write ``model`` (its spec and weights, float32, on CPU) to ``path`` atomically."""
    state = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
             for k, v in model.state_dict().items()}
    atomic_save({"format": MODEL_FORMAT, "version": VERSION, "spec": model.spec.to_dict(),
                 "state_dict": state, "info": info or {}}, path)


def load_model(path: str | os.PathLike) -> nn.Module:
    """A model ready for inference: eval mode, float32 NCHW input in [0, 1], logits out."""
    obj = _safe_load(path, MODEL_FORMAT)
    try:
        model = build(PhaseSpec.from_dict(obj["spec"]))
        model.load_state_dict(obj["state_dict"])
    except (TinyCNNError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: weights do not match the recorded spec ({e})") from e
    model.info = obj.get("info", {})
    return model.eval()


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    atomic_save({"format": CHECKPOINT_FORMAT, "version": VERSION, **state}, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    return _safe_load(path, CHECKPOINT_FORMAT)
