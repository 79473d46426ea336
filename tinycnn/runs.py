"""Where runs live and how a ladder's phases hand models to each other.

Kept out of ``train.py`` so the trainer never knows about ladders: the caller resolves
``kd_teacher = "previous"`` to a model file and passes the loaded teacher in.
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from .checkpoint import load_model
from .errors import CheckpointError
from .ladders import get_phase, ladder, previous_phase
from .spec import PhaseSpec

REPO_ROOT = Path(__file__).resolve().parents[1]


def results_root() -> Path:
    """``$TINYCNN_RESULTS`` or the repository's ``experiments/results``."""
    env = os.environ.get("TINYCNN_RESULTS")
    return Path(env) if env else REPO_ROOT / "experiments" / "results"


def run_dir_for(phase: PhaseSpec, seed: int, root: Path | None = None, tag: str = "") -> Path:
    """``<root>/<dataset>/<phase>[-<tag>]/seed<k>``: one folder per finished run."""
    name = f"{phase.name}-{tag}" if tag else phase.name
    return (root or results_root()) / phase.dataset / name / f"seed{seed}"


def is_finished(run_dir: Path) -> bool:
    """A run counts as finished when its metrics sit beside its model file: a number without
    its model cannot be checked, a model without metrics was cut off."""
    return (run_dir / "metrics.json").exists() and (run_dir / "model.pt").exists()


def resolve_teacher_path(phase: PhaseSpec, kd_teacher: str, root: Path | None = None) -> Path | None:
    """``""`` -> no teacher; ``"previous"`` or a phase name of the same ladder -> that phase's
    seed-0 model; else a path to a model file."""
    if not kd_teacher:
        return None
    if kd_teacher == "previous":
        teacher_phase = previous_phase(phase)
        if teacher_phase is None:
            raise CheckpointError(f"phase {phase.name!r} is the first of its ladder: it has no previous phase to "
                                  f"distil from; pass kd_teacher=<path to model.pt>")
    elif kd_teacher in {p.name for p in ladder(phase.dataset)}:
        teacher_phase = get_phase(phase.dataset, kd_teacher)
    else:
        path = Path(kd_teacher)
        # A repository-relative path (as attach_teacher records it) works from any cwd.
        return path if path.is_absolute() or path.exists() else REPO_ROOT / path
    path = run_dir_for(teacher_phase, 0, root) / "model.pt"
    if not path.exists():
        raise CheckpointError(f"kd_teacher={kd_teacher} needs {path}; train it first with "
                              f"`tinycnn train {phase.dataset} --phase {teacher_phase.name}`")
    return path


def attach_teacher(phase: PhaseSpec, recipe):
    """(recipe with ``kd_teacher`` resolved to a file path, loaded teacher or None).

    Recording the resolved path, not "previous", lets metrics.json say which model taught.
    """
    from dataclasses import replace

    path = resolve_teacher_path(phase, recipe.kd_teacher)
    if path is None:
        return recipe, None
    teacher = load_model(path)
    if teacher.spec.dataset != phase.dataset:
        raise CheckpointError(f"teacher {path} is a {teacher.spec.dataset} model; the student is {phase.dataset}")
    return replace(recipe, kd_teacher=_portable(path)), teacher


def _portable(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it, so a committed
    metrics.json names its teacher the same way on every machine."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def as_user_command(argv: list[str]) -> str | None:
    """``argv`` as a user would retype it: ``tinycnn ...`` for both the console script and
    ``python -m tinycnn`` (whose argv[0] is ``.../__main__.py``); None for anything else.
    Arguments are shell-quoted, so an ``--arch`` string pastes back as one argument."""
    if argv and (argv[0].endswith("tinycnn") or argv[0].endswith("__main__.py")):
        return shlex.join(["tinycnn", *argv[1:]])
    return None


def invoked_command() -> str | None:
    """This process's command line via ``as_user_command``; None when called from Python
    (train() then records argv as it is)."""
    return as_user_command(sys.argv)
