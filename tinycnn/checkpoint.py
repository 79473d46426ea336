"""Model files and training checkpoints: atomic writes, safe loads.

A model file is a plain dict ``{"format", "version", "spec", "state_dict", "info"}``
holding only tensors and built-in types, so it is read with ``torch.load(...,
weights_only=True)``: opening a model file never runs code. The spec is stored as its
architecture string, so a model loads without the caller knowing the architecture.
"""
from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write
from .build import TinyCNN, build
from .deploy import reparameterize
from .errors import CheckpointError, TinyCNNError
from .spec import PhaseSpec

MODEL_FORMAT = "tinycnn-model"
CHECKPOINT_FORMAT = "tinycnn-checkpoint"
VERSION = 1
MAX_MODEL_PARAMS = 50_000_000  # ~200 MB of float32: far above any tiny net, far below a hostile spec's


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through `atomic.atomic_write`: a crash mid-write leaves the previous
    file intact, never a truncated one."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _unreadable(path: Path, expected_format: str, e: Exception) -> str:
    """Our own words only: torch's text advises retrying with weights_only=False, which on
    a hostile file would run its code."""
    if isinstance(e, pickle.UnpicklingError) and "global" in str(e).lower():
        return (f"{path} is not a {expected_format} file: it contains objects other than tensors and "
                f"plain types (classes or functions), which tinycnn refuses to load for safety")
    return (f"{path} is corrupt, truncated or not a {expected_format} file "
            f"(it could not be read as a torch file: {type(e).__name__})")


def _safe_load(path: str | os.PathLike, expected_format: str) -> dict:
    path = Path(path)
    if path.is_dir():
        inside = path / "model.pt"  # a run folder: name the model file in it
        raise CheckpointError(f"{path} is a folder, not a {expected_format} file written by tinycnn"
                              + (f"; give {inside}" if expected_format == MODEL_FORMAT and inside.is_file() else ""))
    if not path.is_file():
        raise CheckpointError(f"no file at {path}; expected a {expected_format} file written by tinycnn")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and unpickler errors all mean "not loadable"
        raise CheckpointError(_unreadable(path, expected_format, e)) from e
    if not isinstance(obj, dict) or obj.get("format") != expected_format:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is not a {expected_format} file (found {got!r})")
    version = obj.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path} has format version {version!r}; this tinycnn reads <= {VERSION}")
    return obj


def save_model(model: TinyCNN, path: str | os.PathLike, info: dict | None = None) -> None:
    """Write ``model`` (its spec and weights, float32, on CPU) to ``path`` atomically, in its
    deployed form: re-parameterised blocks fused (what the budget counts is what is shipped;
    a checkpoint keeps the training form for resuming)."""
    deployed = reparameterize(copy.deepcopy(model).cpu().eval())
    state = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
             for k, v in deployed.state_dict().items()}
    atomic_save({"format": MODEL_FORMAT, "version": VERSION, "spec": model.spec.to_dict(),
                 "state_dict": state, "info": {**(info or {}), "form": "deployed"}}, path)


def _built(spec: PhaseSpec, info: dict) -> nn.Module:
    """The module a file's weights belong to: deployed form, or (files before #15) as trained,
    which is the same module for every spec without re-parameterisable blocks."""
    model = build(spec)
    return reparameterize(model) if info.get("form") == "deployed" else model


def load_model(path: str | os.PathLike) -> nn.Module:
    """A model ready for inference: eval mode, float32 NCHW input in [0, 1], logits out.

    The recorded spec is checked against the file's tensors on the meta device first, so a
    tiny file naming a huge architecture never allocates it.
    """
    obj = _safe_load(path, MODEL_FORMAT)
    spec = _recorded_spec(path, obj)
    state = obj.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: its state_dict is not a mapping of names to tensors")
    info = obj.get("info") if isinstance(obj.get("info"), dict) else {}
    _check_weights_match(path, spec, state, info)
    model = _built(spec, info)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # shapes were checked; this is a defence in depth, in our words
        raise CheckpointError(f"{path}: weights do not match the recorded spec {_brief(spec.arch)}") from e
    model.info = info
    return model.eval()


def _recorded_spec(path: str | os.PathLike, obj: dict) -> PhaseSpec:
    try:
        return PhaseSpec.from_dict(obj.get("spec"))
    except TinyCNNError as e:
        raise CheckpointError(f"{path}: the recorded spec is not valid: {e}") from e


def _brief(arch: str, limit: int = 120) -> str:
    """A file's architecture string, quoted and cut short: a hostile one can be any length."""
    return repr(arch if len(arch) <= limit else arch[:limit] + "...")


def _check_weights_match(path: str | os.PathLike, spec: PhaseSpec, state: dict, info: dict) -> None:
    """Refuse an implausibly large spec, or tensors whose names or shapes differ from it."""
    with torch.device("meta"):
        model = _built(spec, info)
    n_params = sum(p.numel() for p in model.parameters())
    if n_params > MAX_MODEL_PARAMS:
        raise CheckpointError(f"{path}: the recorded spec {_brief(spec.arch)} has {n_params:,} parameters; "
                              f"tinycnn loads models of at most {MAX_MODEL_PARAMS:,}")
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {str(k)[:80]: tuple(v.shape) for k, v in state.items()}  # a hostile name stays short
    problems = [f"{k} missing" for k in want if k not in got]
    problems += [f"{k} not in the spec" for k in got if k not in want]
    problems += [f"{k} has shape {list(got[k])}, the spec needs {list(want[k])}"
                 for k in want if k in got and got[k] != want[k]]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(f"{path}: weights do not match the recorded spec {_brief(spec.arch)}: "
                              f"{'; '.join(problems[:5])}{more}")


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    atomic_save({"format": CHECKPOINT_FORMAT, "version": VERSION, **state}, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    return _safe_load(path, CHECKPOINT_FORMAT)
