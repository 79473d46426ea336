"""`tinycnn search retrain STUDY`: from study to result (issue #16).

    load_study -> pick_trial (the declared rule, or --trial N) -> per seed: run_or_reuse
    (the trial's arch, its recipe base + overrides, seed k) -> retrain.json beside the seeds

**The rule**: the COMPLETE trial with the highest validation accuracy, a tie going to the fewer
deployed parameters (`search.best_first`: the first row of `tinycnn search report`). A
two-objective study has no single best: name one of its trials with ``--trial``.

Each seed is an ordinary run (`pipeline.run_or_reuse`, mode ``continue``), in
``<results>/<dataset>/search/<study>/trial<N>/seed<k>``: a finished run is reused, an unfinished
one resumes from its checkpoint, and the test split is scored once, at the end of the run, as
for every run. Its metrics.json records the `tinycnn train` command that reproduces that run
alone; retrain.json records the `tinycnn search retrain` command that reproduces them all
(``--trial`` pinned, since a growing study may change its best).
"""
from __future__ import annotations

import shlex
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from .budget import phase_cost
from .data import Splits
from .pipeline import RunRequest, run_or_reuse
from .provenance import utc_now
from .recipe import load_recipe
from .results import RETRAIN, is_finished, portable, retrain_dir, write_json
from .search import (
    SearchError,
    best_table,
    is_database_url,
    load_study,
    mask_url,
    storage_location,
    train_tokens,
    trial_row,
)
from .spec import PhaseSpec

DEFAULT_SEEDS = (0, 1, 2)
RULE = "the complete trial with the highest validation accuracy; a tie: the fewer deployed parameters"


@dataclass(frozen=True)
class RetrainRequest:
    """What to retrain and where; ``splits`` lets tests pass small data (with a test split)."""

    study: str
    trial: int | None = None  # None: the declared rule picks it
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    storage: str | None = None  # as `tinycnn search --storage`; None: the default journal
    out_root: Path | None = None  # replaces the results root (experiments/results)
    data_dir: str | None = None
    device: str = "auto"
    quiet: bool = True
    splits: Splits | None = None


# --- which trial ----------------------------------------------------------------------------

def pick_trial(study: optuna.Study, number: int | None = None) -> dict:
    """The trial's row (`search.trial_row`): trial ``number``, which must be COMPLETE,
    or, when None, the best by the declared rule (one objective only)."""
    if number is None:
        return _best_row(study)
    trial = _trial_numbered(study, number)
    if trial.state != TrialState.COMPLETE:
        why = f" ({trial.user_attrs['infeasible']})" if "infeasible" in trial.user_attrs else ""
        raise SearchError(f"trial {number} of study {study.study_name!r} is {trial.state.name.lower()}{why}, "
                          f"not complete; accepted: a complete trial ({_complete_numbers(study)})")
    return trial_row(study, trial)


def _best_row(study: optuna.Study) -> dict:
    if len(study.directions) > 1:
        front = ", ".join(str(r["trial"]) for r in best_table(study)) or "none yet"
        raise SearchError(f"study {study.study_name!r} has {len(study.directions)} objectives, so no single best "
                          f"trial: give --trial N, a complete trial (its Pareto front: {front})")
    rows = best_table(study, top=1)
    if not rows:
        raise SearchError(f"study {study.study_name!r} has no complete trial yet: nothing to retrain")
    return rows[0]


def _trial_numbered(study: optuna.Study, number: int) -> FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    found = [t for t in trials if t.number == number]
    if not found:
        raise SearchError(f"study {study.study_name!r} has no trial {number}; its trials are numbered "
                          f"0 to {len(trials) - 1}")
    return found[0]


def _complete_numbers(study: optuna.Study, most: int = 10) -> str:
    """The complete trials' numbers, in order, for an error message."""
    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    if not done:
        return "this study has none yet"
    numbers = [str(t.number) for t in done]
    return ", ".join(numbers[:most]) + (f", ... ({len(numbers)} in all)" if len(numbers) > most else "")


# --- the runs -------------------------------------------------------------------------------

def trial_spec(dataset: str, row: dict) -> PhaseSpec:
    """The trial's network, checked against the parameter count the study recorded for it."""
    spec = PhaseSpec.from_arch(f"trial{row['trial']}", dataset, row["arch"], f"search trial {row['trial']}, retrained")
    params = phase_cost(spec).params
    if params != row["params"]:
        raise SearchError(f"trial {row['trial']}'s arch `{row['arch']}` has {params:,} deployed parameters today; "
                          f"the study recorded {row['params']:,}: the block grammar changed since it ran")
    return spec


def seed_request(req: RetrainRequest, dataset: str, row: dict, spec: PhaseSpec, seed: int) -> RunRequest:
    """One seed as an ordinary run, recording the `tinycnn train` command that reproduces it."""
    run_dir = retrain_dir(dataset, req.study, row["trial"], req.out_root) / f"seed{seed}"
    recipe = load_recipe(dataset, row["recipe"], [*row["overrides"], f"seed={seed}"])
    tokens = train_tokens(dataset, row["arch"], row["recipe"], row["overrides"])
    command = shlex.join([*tokens, "--seed", str(seed), "--out", portable(run_dir)])
    return RunRequest(spec, recipe, run_dir, recipe_name=row["recipe"], command=command, data_dir=req.data_dir,
                      device=req.device, quiet=req.quiet, splits=req.splits)


def _run_seed(run: RunRequest, log: Callable[[str], None]) -> dict:
    """Train, resume or reuse one seed; its numbers as retrain.json lists them."""
    reused = is_finished(run.run_dir)
    if reused:
        log(f"seed {run.recipe.seed}: reusing the finished run in {run.run_dir}")
    m = run_or_reuse(run, "continue")
    return {"seed": run.recipe.seed, "run_dir": portable(run.run_dir), "val_accuracy": m["val_accuracy"],
            "test_accuracy": m["test_accuracy"], "final_weights": m["final_weights"],
            "val_size": m["recipe"]["val_size"], "command": m.get("command", run.command), "reused": reused}


# --- the record -----------------------------------------------------------------------------

def retrain_command(req: RetrainRequest, trial: int) -> str:
    """The `tinycnn search retrain` command that reproduces every seed of this retrain."""
    tokens = ["tinycnn", "search", "retrain", req.study, "--trial", str(trial),
              "--seeds", *map(str, req.seeds)]
    if req.storage is not None:
        tokens += ["--storage", _storage_text(req)]
    if req.out_root is not None:
        tokens += ["--out-root", portable(Path(req.out_root))]
    return shlex.join(tokens)


def _storage_text(req: RetrainRequest) -> str:
    """Where the study lives, safe to commit: a journal repository-relative, a URL's password masked."""
    location = storage_location(req.study, req.storage)
    return mask_url(location) if is_database_url(location) else portable(Path(location))


def retrain_record(study: optuna.Study, row: dict, req: RetrainRequest, runs: list[dict]) -> dict:
    """retrain.json: the trial as the study saw it, each seed's run, and the test mean ± sd."""
    tests = [r["test_accuracy"] for r in runs]
    attrs = study.user_attrs
    return {
        "study": study.study_name, "storage": _storage_text(req), "dataset": attrs.get("dataset"),
        "budget": attrs.get("budget"), "objective": attrs.get("objective", "val"),
        "trial": row["trial"], "chosen_by": "--trial" if req.trial is not None else RULE,
        "val_accuracy_in_study": row["val_accuracy"], "arch": row["arch"], "recipe": row["recipe"],
        "overrides": row["overrides"], "params": row["params"], "macs": row["macs"],
        "phase": row.get("phase"),  # the ladder phase a recipe-only study fixed, else None
        "seeds": list(req.seeds), "runs": runs,
        "test_mean": statistics.fmean(tests), "test_sd": statistics.stdev(tests) if len(tests) > 1 else None,
        "command": retrain_command(req, row["trial"]), "finished_at": utc_now(),
    }


def _checked_seeds(seeds) -> tuple[int, ...]:
    seeds = tuple(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise SearchError(f"--seeds must be distinct integers >= 0, at least one; got {' '.join(map(str, seeds))}")
    return seeds


def retrain(req: RetrainRequest, log: Callable[[str], None] = print) -> dict:
    """Retrain the study's chosen trial for every seed; write and return retrain.json's record."""
    req = replace(req, seeds=_checked_seeds(req.seeds))
    study = load_study(req.study, req.storage)
    row = pick_trial(study, req.trial)
    dataset = study.user_attrs.get("dataset")
    if not dataset:
        raise SearchError(f"study {req.study!r} does not record its dataset: not a study `tinycnn search` made")
    spec = trial_spec(dataset, row)
    log(f"retraining trial {row['trial']} of study {req.study!r} (val {row['val_accuracy']:.4f} in the study, "
        f"{row['params']:,} params): `{row['arch']}`, recipe {row['recipe']} "
        f"{' '.join(row['overrides'])}; seeds {' '.join(map(str, req.seeds))}")
    runs = [_run_seed(seed_request(req, dataset, row, spec, seed), log) for seed in req.seeds]
    record = retrain_record(study, row, req, runs)
    path = retrain_dir(dataset, req.study, row["trial"], req.out_root) / RETRAIN
    write_json(path, record)
    log(f"wrote {path}")
    return record
