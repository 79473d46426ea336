"""The results layout and run records: the one module that knows where runs live, how a
run directory is read and written, and how a run's command line is spelled.

    experiments/results/<dataset>/<phase>/seed<k>/   runs of the committed study (ladder, ablation)
    runs/<dataset>/<phase>/seed<k>/                  a user's own `tinycnn train` runs (git-ignored)
    experiments/results/<dataset>/search/<study>/trial<N>/seed<k>/   a search's trial retrained
                                                     (`tinycnn search retrain`), retrain.json beside the seeds

A run directory holds ``model.pt`` and ``metrics.json`` when finished, ``checkpoint.pt``
while not, and ``train.log`` always.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shlex
import sys
from pathlib import Path

from .atomic import atomic_write_text
from .spec import PhaseSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL, METRICS, CHECKPOINT, LOG = "model.pt", "metrics.json", "checkpoint.pt", "train.log"
RETRAIN = "retrain.json"


def results_root() -> Path:
    """``$TINYCNN_RESULTS`` or the repository's ``experiments/results``: the committed study."""
    env = os.environ.get("TINYCNN_RESULTS")
    return Path(env) if env else REPO_ROOT / "experiments" / "results"


def user_runs_root() -> Path:
    """``$TINYCNN_RUNS`` or ``./runs``: where `tinycnn train` writes unless told otherwise,
    so a user's runs never land in (or overwrite) the committed results."""
    env = os.environ.get("TINYCNN_RUNS")
    return Path(env) if env else Path("runs")


def run_dir_for(phase: PhaseSpec, seed: int, root: Path | None = None, tag: str = "") -> Path:
    """``<root>/<dataset>/<phase>[-<tag>]/seed<k>``: one folder per run."""
    name = f"{phase.name}-{tag}" if tag else phase.name
    return (root or results_root()) / phase.dataset / name / f"seed{seed}"


def is_finished(run_dir: Path) -> bool:
    """A run counts as finished when its metrics sit beside its model file: a number without
    its model cannot be checked, a model without metrics was cut off."""
    return (Path(run_dir) / METRICS).exists() and (Path(run_dir) / MODEL).exists()


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / CHECKPOINT).exists()


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / METRICS).read_text())


def write_metrics(run_dir: Path, metrics: dict) -> None:
    atomic_write_text(Path(run_dir) / METRICS, json.dumps(metrics, indent=2))


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2))


def finished_runs(base: Path, pattern: str) -> list[tuple[Path, dict]]:
    """(metrics path, metrics) of every finished run matching ``pattern`` under ``base``."""
    return [(p, json.loads(p.read_text())) for p in sorted(Path(base).glob(pattern)) if is_finished(p.parent)]


def study_dir(dataset: str, root: Path | None = None) -> Path:
    """``<results>/<dataset>``: one dataset's part of the committed study."""
    return (root or results_root()) / dataset


def phase_runs(dataset: str, phase: str, root: Path | None = None) -> list[tuple[Path, dict]]:
    """Finished ladder runs of one phase, seed by seed."""
    return finished_runs(study_dir(dataset, root), f"{phase}/seed*/{METRICS}")


def search_runs(dataset: str, root: Path | None = None) -> list[tuple[str, dict]]:
    """(candidate, metrics) of architecture candidates: ``search/<name>/`` (one run) or
    ``search/<name>/seed<k>/`` (several seeds)."""
    base = study_dir(dataset, root)
    single = [(p.parent.name, m) for p, m in finished_runs(base, f"search/*/{METRICS}")]
    seeded = [(p.parent.parent.name, m) for p, m in finished_runs(base, f"search/*/seed*/{METRICS}")]
    return single + seeded


def recipe_runs(dataset: str, root: Path | None = None) -> list[tuple[str, dict]]:
    """(recipe, metrics) of recipe candidates for the final: ``recipes/<recipe>/seed<k>/``."""
    return [(p.parent.parent.name, m)
            for p, m in finished_runs(study_dir(dataset, root), f"recipes/*/seed*/{METRICS}")]


def prune_runs(dataset: str, root: Path | None = None) -> list[tuple[str, dict]]:
    """(row, metrics) of the pruning comparison: ``prune/<row>/seed<k>/`` (row: finetune<N>, scratch<N>)."""
    return [(p.parent.parent.name, m)
            for p, m in finished_runs(study_dir(dataset, root), f"prune/*/seed*/{METRICS}")]


def retrain_dir(dataset: str, study: str, trial: int, root: Path | None = None) -> Path:
    """``<results>/<dataset>/search/<study>/trial<N>``: one search trial retrained, ``seed<k>/`` a run."""
    return study_dir(dataset, root) / "search" / study / f"trial{trial}"


def retrain_records(root: Path | None = None) -> list[dict]:
    """Every ``retrain.json`` under ``<results>/*/search/*/trial*/``, in path order."""
    return [json.loads(p.read_text()) for p in sorted((root or results_root()).glob(f"*/search/*/trial*/{RETRAIN}"))]


def ablation_dir(dataset: str, root: Path | None = None) -> Path:
    return study_dir(dataset, root) / "ablation"


def ablation_file(dataset: str, root: Path | None = None) -> Path:
    return study_dir(dataset, root) / "ablation.json"


def benchmark_files(prefix: str, root: Path | None = None) -> list[Path]:
    """The committed benchmark results whose names start with ``prefix``."""
    return sorted((root or results_root()).glob(f"{prefix}*.json"))


def move_aside(run_dir: Path) -> Path:
    """Rename a run directory to a hidden sibling before starting it over, so a killed new
    run can never leave the old model beside the new checkpoint (and be scored as new)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f".replaced-{run_dir.name}-{stamp}")
    run_dir.rename(target)
    return target


FLOAT32_SLACK = 1e-6  # > a float32 rounding of a fraction near 1 (6e-8), < one image in 60,000


def first_reach(history: list[dict], target: float, key: str = "val_acc") -> dict | None:
    """The first epoch whose ``key`` reaches ``target``, with the training time to get there.
    Histories written before accuracies were exact counts hold float32 means (9,920 of 10,000 as
    0.99199998): `FLOAT32_SLACK` lets those meet the target they met; two accuracies of different
    counts differ by at least 1/60,000, far more than the slack."""
    for rec in history:
        v = rec.get(key)
        if v is not None and not math.isnan(v) and v >= target - FLOAT32_SLACK:
            return {"epoch": rec["epoch"], "train_time_s": rec["train_time_s"], key: v}
    return None


# --- command lines -------------------------------------------------------------------------

def train_command(dataset: str, phase: str, recipe: str | None = None, seed: int | None = None,
                  overrides: list[str] | None = None, out: Path | str | None = None) -> str:
    """The `tinycnn train` command that reproduces a run, shell-quoted."""
    tokens = ["tinycnn", "train", dataset, "--phase", phase]
    if recipe:
        tokens += ["--recipe", recipe]
    if seed is not None:
        tokens += ["--seed", str(seed)]
    for o in overrides or []:
        tokens += ["--set", o]
    if out is not None:
        tokens += ["--out", str(out)]
    return shlex.join(tokens)


def resume_command(run_dir: Path) -> str:
    return shlex.join(["tinycnn", "train", "--resume", str(run_dir)])


def as_user_command(argv: list[str]) -> str | None:
    """``argv`` as a user would retype it: ``tinycnn ...`` for both the console script and
    ``python -m tinycnn`` (whose argv[0] is ``.../__main__.py``); None for anything else.
    Arguments are shell-quoted, so an ``--arch`` string pastes back as one argument."""
    if argv and (argv[0].endswith("tinycnn") or argv[0].endswith("__main__.py")):
        return shlex.join(["tinycnn", *argv[1:]])
    return None


def invoked_command() -> str | None:
    """This process's command line via ``as_user_command``; None when called from Python."""
    return as_user_command(sys.argv)


def display_command(command: str, phase: str = "") -> str:
    """A recorded command as it reproduces the run today: ``.../tinycnn/__main__.py`` (a
    ``python -m tinycnn`` run) becomes ``tinycnn``, and ``--phase final`` names the phase it
    meant then (``phase``), since a later final phase takes the alias over."""
    try:
        tokens = shlex.split(as_user_command(shlex.split(command)) or command)
    except ValueError:  # not shell syntax (e.g. a Python caller's argv): show it as recorded
        return command
    if phase and phase != "custom":
        tokens = [phase if tok == "final" and i and tokens[i - 1] == "--phase" else tok
                  for i, tok in enumerate(tokens)]
    return shlex.join(tokens)


def portable(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it, so a committed record
    names a file the same way on every machine."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
