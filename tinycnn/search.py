"""Architecture and recipe search under a parameter budget, on Optuna (issue #16).

    run_search -> study (journal file or PostgreSQL) -> workers: optimize(SearchObjective) -> trials
    SearchObjective(trial): searchspace.suggest -> fit_only on the validation split -> val accuracy

The space, the candidates and how an infeasible one is handled: `tinycnn.searchspace`.
**The test split is never read**: the splits a search loads have ``test=None``.

**Storage** is a journal file, ``experiments/search/<study>/journal.log`` by default (an
absolute path, an ``fcntl.flock`` lock: FACTS.md), opened with ``load_if_exists`` so the same
command continues a study. The journal has no heartbeat, so a worker killed with ``kill -9``
leaves its trial RUNNING; **the stale-trial rule** (`fail_dead_trials`, run when a search
starts and after its workers end): every trial records ``host``, ``pid`` and ``pid_start``
(the process's start time in /proc, so a reused pid is not taken for the dead worker) as it
starts; a RUNNING trial whose ``host`` is this machine and whose process is gone (or a zombie)
is told FAIL. A RUNNING trial of **another host** is left alone, since its worker may be
alive: start the search on that host to clear it, or fail it by hand (`fail_trial`). A RUNNING
trial with no ``host`` at all (killed between Optuna's ``ask`` and its first line) is failed
once it is `ORPHAN_AFTER_S` old. A search whose every trial was infeasible ends with
`SearchError`.

**Many machines**: ``storage="postgresql://user:pass@host/db"`` (or ``postgresql+psycopg://``;
under SQLAlchemy 2.1 both mean psycopg 3) is Optuna's RDB storage (`rdb_storage`), and every
worker on every machine runs the same command. There the journal's pid rule is not used:
each running trial beats every `HEARTBEAT_INTERVAL_S`, and one silent for `GRACE_PERIOD_S`
(its worker was killed, on any host) is failed and queued again with the same parameters, at
most `MAX_RETRY` times (`fail_stale_heartbeats`, when a search starts and before each trial).
(The pid rule would misread a queued copy, which carries its dead worker's pid until it runs.)
The storage and the study are created once in the parent before its workers start; parents
on several machines that create the schema of an empty database at once collide, which is
retried. An unreachable database is one `SearchError` naming the URL, password masked.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import multiprocessing
import os
import random
import re
import shlex
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from .budget import phase_cost, require_positive_budget
from .callbacks import Callback
from .data import Splits, load_splits
from .datasets import dataset_info
from .errors import TinyCNNError, TrainingDiverged
from .pipeline import fit_only
from .recipe import Recipe
from .results import REPO_ROOT
from .searchspace import (
    GRID_LIMIT,
    KINDS,
    Choice,
    Range,
    SearchSpace,
    SearchSpaceError,
    grid_space,
    load_space,
    suggest,
    unit_arch,
)
from .trialseed import TrialSeededSampler

__all__ = ["GRID_LIMIT", "KINDS", "OBJECTIVES", "PRUNERS", "SAMPLERS", "Choice", "Range", "SearchError",
           "SearchObjective", "SearchSpace", "SearchSpaceError", "best_first", "best_table", "fail_dead_trials",
           "fail_stale_heartbeats", "grid_space", "journal_storage", "load_space", "load_study", "make_pruner",
           "make_sampler",
           "mask_url", "open_storage", "rdb_storage", "run_search", "suggest", "train_tokens", "trial_row", "unit_arch"]


class SearchError(TinyCNNError):
    """A search cannot run or continue as asked (storage, study, workers, no feasible candidate)."""


OBJECTIVES = {"val": "maximise validation accuracy (the budget is filled)",
              "pareto": "maximise validation accuracy, minimise deployed parameters (Pareto front)",
              "pareto-macs": "maximise validation accuracy, minimise MACs (Pareto front)"}
SAMPLERS = ("tpe", "random", "grid", "nsga2")
PRUNERS = ("none", "median", "halving", "hyperband")
ORPHAN_AFTER_S = 600.0
POLL_INTERVAL_S = 3.0  # several workers: the parent reads the storage this often for a live display
HEARTBEAT_INTERVAL_S = 60  # RDB storage: a running trial's heartbeat
GRACE_PERIOD_S = 180  # ... silent this long: the trial is failed and queued again
MAX_RETRY = 2  # ... at most this many times
CONNECT_TIMEOUT_S = 10
PG_DRIVERS = ("psycopg", "psycopg2")  # synchronous drivers Optuna's RDB storage works with
_SCHEMA_TRIES = 6
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --- the objective --------------------------------------------------------------------------

class ReportToTrial(Callback):
    """Each epoch's validation accuracy to the trial; ``TrialPruned`` out of the fit when the
    pruner says so (one objective only: Optuna cannot prune a multi-objective trial). The
    epochs report the trained weights; the trial's value is the final weights' (EMA/SWA
    when the recipe averages), as `FitResult.val_accuracy` gives it."""

    def __init__(self, trial) -> None:
        self.trial = trial

    def on_epoch_end(self, run, record: dict) -> None:
        epoch, val = record["epoch"], record["val_acc"]
        self.trial.report(val, epoch)
        if self.trial.should_prune():
            self.trial.set_user_attr("epochs_run", epoch)
            raise optuna.TrialPruned(f"pruned after epoch {epoch} of {run.recipe.epochs} (val {val:.4f})")


def search_splits(dataset: str, recipe: Recipe, data_dir=None) -> Splits:
    """Train and validation splits as the base recipe carves them; the test split is dropped
    here, so nothing in a search can read it."""
    splits = load_splits(dataset, recipe.val_size, data_dir, split_seed=recipe.split_seed)
    return Splits(splits.info, splits.train, splits.val, None)


@dataclass
class SearchObjective:
    """``objective(trial)`` for Optuna: draw, fill the budget, fit, return val accuracy
    (and params or MACs for a Pareto objective). The splits load on first use."""

    dataset: str
    budget: int
    space: SearchSpace
    objective: str = "val"
    splits: Splits | None = None
    data_dir: str | None = None
    device: str = "auto"
    ram_budget: int | None = None
    log: Callable[[str], None] | None = None  # a line as each trial starts (a trial can take half an hour)

    def __call__(self, trial) -> float | tuple[float, float]:
        mark_worker(trial)
        spec, recipe = suggest(trial, self.space, self.dataset, self.budget, self.objective, self.ram_budget)
        cost = phase_cost(spec, self.budget)
        trial.set_user_attr("macs", cost.macs)
        twin = earlier_twin(trial)
        if twin is not None:
            return self._as_twin(trial, twin)
        if self.log:
            a = trial.user_attrs
            self.log(f"trial {trial.number} starts ({a['params']:,} params, {recipe.epochs} epochs): {a['arch']}; "
                     f"{a['recipe_base']} {' '.join(a['overrides'])}")
        if self.splits is None:
            self.splits = search_splits(self.dataset, self.space.base_recipe, self.data_dir)
        if not len(self.splits.val):
            raise SearchError("a search needs a validation split: the base recipe has val_size = 0")
        callbacks = [ReportToTrial(trial)] if self.objective == "val" else []
        result = fit_only(spec, recipe, self.splits, device=self.device, callbacks=callbacks)
        trial.set_user_attr("epochs_run", len(result.history))
        if self.objective == "val":
            return result.val_accuracy
        return result.val_accuracy, float(cost.params if self.objective == "pareto" else cost.macs)

    def _as_twin(self, trial, twin: FrozenTrial) -> float | tuple[float, ...]:
        """A candidate drawn before (training is seeded, so it would score the same): its
        result again, at no cost; a pruned twin is pruned again."""
        trial.set_user_attr("twin_of", twin.number)
        trial.set_user_attr("epochs_run", twin.user_attrs.get("epochs_run", 0))
        if self.log:
            self.log(f"trial {trial.number} is trial {twin.number}'s candidate again: its result, not trained")
        if twin.state == TrialState.PRUNED:
            raise optuna.TrialPruned(f"the same candidate as trial {twin.number}, which was pruned")
        return twin.values[0] if self.objective == "val" else tuple(twin.values)


def candidate_key(trial) -> str:
    """What makes two trials the same candidate: the drawn params and the network and recipe
    they gave (`suggest`'s user attributes), for a live trial or a stored one alike."""
    a = trial.user_attrs
    return repr((sorted(trial.params.items()), a.get("arch"), a.get("params"), a.get("overrides")))


def earlier_twin(trial) -> FrozenTrial | None:
    """The first finished (complete or pruned) trial that drew exactly this candidate, if any.
    Samplers repeat themselves on small categorical spaces, and workers once did (S4)."""
    key = candidate_key(trial)
    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.number != trial.number and candidate_key(t) == key and not t.user_attrs.get("infeasible"):
            return t
    return None


# --- samplers and pruners -------------------------------------------------------------------

def make_sampler(name, space: SearchSpace, objective: str = "val", seed: int | None = None):
    """tpe (default), random, grid (`grid_space`) or nsga2; a sampler object passes through.
    With a seed, tpe, random and nsga2 draw each trial from (seed, trial number) (`trialseed`),
    so workers never replay each other's draws; grid keeps one seed: its shuffled order of
    points must be the same in every worker (trials record their point by index into it)."""
    if not isinstance(name, str):
        return name
    if name not in SAMPLERS:
        raise SearchError(f"unknown sampler {name!r}; accepted: {', '.join(SAMPLERS)}")
    if name == "grid":
        return optuna.samplers.GridSampler(grid_space(space, objective), seed=seed)
    make = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
            "nsga2": optuna.samplers.NSGAIISampler}[name]
    return make() if seed is None else TrialSeededSampler(lambda s: make(seed=s), seed)


def make_pruner(name, space: SearchSpace, objective: str = "val"):
    """none, median (after 5 trials, from epoch 2), halving (successive halving) or
    hyperband (1 .. the space's longest epochs); None: median, or none for Pareto objectives.
    A step is an epoch. Trials of different lengths are compared epoch for epoch, though
    their schedules differ: a short schedule looks better early, which pruning favours."""
    if name is None:
        name = "median" if objective == "val" else "none"
    if not isinstance(name, str):
        pruner = name
    elif name not in PRUNERS:
        raise SearchError(f"unknown pruner {name!r}; accepted: {', '.join(PRUNERS)}")
    else:
        pruner = {"none": optuna.pruners.NopPruner,
                  "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
                  "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
                  "hyperband": lambda: optuna.pruners.HyperbandPruner(1, space.max_epochs, reduction_factor=3),
                  }[name]()
    if objective != "val" and not isinstance(pruner, optuna.pruners.NopPruner):
        raise SearchError(f"objective {objective!r} has two objectives, and Optuna prunes single-objective "
                          f"studies only; use pruner none")
    return pruner


# --- storage --------------------------------------------------------------------------------

class FlockLock:
    """The journal's lock: ``fcntl.flock`` on the journal file itself. The kernel drops it when
    its holder dies, so a killed worker never stalls the others (FACTS.md: Optuna's own locks
    stalled 30 s in 3 of 10 kills)."""

    def __init__(self, path: str) -> None:
        self.path, self._fds = path, []

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # write mode: NFS locks need it
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fds.append(fd)
        return True

    def release(self) -> None:
        fd = self._fds.pop()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def search_root() -> Path:
    """``$TINYCNN_SEARCH`` or the repository's ``experiments/search``."""
    env = os.environ.get("TINYCNN_SEARCH")
    return Path(env) if env else REPO_ROOT / "experiments" / "search"


def _check_study_name(study_name: str) -> None:
    if not _STUDY_NAME.match(study_name):
        raise SearchError(f"study name {study_name!r} must be letters, digits, '.', '_' or '-' (a folder name)")


def journal_path(study_name: str, storage: str | os.PathLike | None = None) -> Path:
    """The journal file of a study, absolute: ``storage`` when given, else ``<search root>/<study>/journal.log``."""
    _check_study_name(study_name)
    if is_database_url(storage):
        raise SearchError(f"storage {mask_url(str(storage))} is a database URL, not a journal file")
    path = Path(storage).expanduser() if storage is not None else search_root() / study_name / "journal.log"
    return (path / "journal.log" if path.is_dir() else path).resolve()


def storage_location(study_name: str, storage: str | os.PathLike | None = None) -> str:
    """Where a study lives: its journal file (absolute) or a checked PostgreSQL URL."""
    _check_study_name(study_name)
    return database_url(str(storage)) if is_database_url(storage) else str(journal_path(study_name, storage))


def open_storage(location: str) -> optuna.storages.BaseStorage:
    """A journal file or, for a URL, the RDB storage."""
    return rdb_storage(location) if is_database_url(location) else journal_storage(location)


def _refuse_foreign_file(path: Path) -> None:
    """A --storage naming some other file (notes, a model): Optuna would append its records to
    it, then fail on the file's own first line with a JSONDecodeError. A journal's first line is
    always its small create-study record."""
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 16)
    except (FileNotFoundError, IsADirectoryError):
        return
    except OSError as e:
        raise SearchError(f"cannot open the study journal {path}: {e}") from e
    if not first:
        return  # an empty file: a new journal
    try:
        record = json.loads(first)
    except ValueError:
        record = None
    if not (isinstance(record, dict) and "op_code" in record):
        raise SearchError(f"{path} is not an Optuna journal (its first line is no journal record); give --storage "
                          f"a journal written by `tinycnn search`, a folder, or the name of a new file")


def journal_storage(path: str | os.PathLike) -> optuna.storages.JournalStorage:
    path = Path(path).expanduser().resolve()  # a relative path makes Optuna's locks spin (FACTS.md)
    _refuse_foreign_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(path), lock_obj=FlockLock(str(path)))
    except OSError as e:
        raise SearchError(f"cannot open the study journal {path}: {e}") from e
    return optuna.storages.JournalStorage(backend)


# --- PostgreSQL (many machines) -------------------------------------------------------------

def is_database_url(storage) -> bool:
    return storage is not None and "://" in str(storage)


def mask_url(url: str) -> str:
    """The URL with its password as ***, for messages."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


def database_url(url: str) -> str:
    """Refuse a storage URL other than PostgreSQL's through a synchronous driver."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as e:
        raise SearchError(f"storage {mask_url(url)} is not a valid database URL ({e}); write "
                          f"postgresql://user:password@host:port/database, or give a journal file path") from e
    if parsed.get_backend_name() != "postgresql" or parsed.get_driver_name() not in PG_DRIVERS:
        raise SearchError(f"storage {mask_url(url)}: a database URL must be PostgreSQL "
                          f"(postgresql://user:password@host:port/database, driver {' or '.join(PG_DRIVERS)}); "
                          f"SQLite is not safe for several workers (Optuna #820): use a journal file path instead")
    return url


def _connect_args(url: str) -> dict:
    """A connect timeout (an unreachable host fails in seconds, not minutes) and a UTF-8 client
    (a SQL_ASCII database, as ``initdb --no-locale`` makes, hands psycopg 3 bytes that SQLAlchemy
    cannot read); either may be set in the URL's query instead."""
    from sqlalchemy.engine import make_url

    query = make_url(url).query
    defaults = {"connect_timeout": CONNECT_TIMEOUT_S, "client_encoding": "utf8"}
    return {k: v for k, v in defaults.items() if k not in query}


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on PostgreSQL: heartbeats, stale trials queued again (`MAX_RETRY`),
    ``pool_pre_ping`` (idle connections drop, Optuna #5600; Optuna sets it for MySQL only).
    Processes creating the schema of an empty database at once collide on PostgreSQL's
    catalogue ("duplicate key ... pg_type_typname_nsp_index"): the loser tries again."""
    database_url(url)
    for attempt in range(_SCHEMA_TRIES):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs={"pool_pre_ping": True, "connect_args": _connect_args(url)},
                heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=GRACE_PERIOD_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as e:
            race = e  # another process is creating the schema
            if attempt + 1 < _SCHEMA_TRIES:
                time.sleep(random.uniform(0.2, 1.0))
        except (sqlalchemy.exc.SQLAlchemyError, ImportError) as e:
            raise _database_error(url, e) from None
    raise _database_error(url, race) from None


def _database_error(url: str, e: BaseException) -> SearchError:
    """One line: the URL (password masked), the driver's first line, what to check."""
    where = mask_url(url)
    if isinstance(e, ImportError):
        return SearchError(f"storage {where} needs the PostgreSQL driver psycopg 3 ({e}): "
                           f"pip install 'psycopg[binary]'")
    detail = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
    if isinstance(e, sqlalchemy.exc.OperationalError):
        return SearchError(f"cannot reach the study database {where}: {detail}; check that the PostgreSQL "
                           f"server runs and accepts TCP connections at that host and port, that the database "
                           f"exists (createdb) and that the user and password are right")
    return SearchError(f"the study database {where} failed: {detail}")


# --- workers and the stale-trial rule -------------------------------------------------------

def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), which a reused pid does not share."""
    stat = _proc_stat(pid)
    return stat[19] if stat and len(stat) > 19 else None


def mark_worker(trial) -> None:
    """Record which process runs the trial, for `fail_dead_trials`."""
    pid = os.getpid()
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", pid)
    trial.set_user_attr("pid_start", process_start(pid))


def process_alive(pid: int, start: str | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    stat = _proc_stat(pid)
    if stat is None:
        return not Path("/proc").is_dir()  # no /proc (not Linux): trust os.kill; else it just died
    return stat[0] != "Z" and (start is None or stat[19] == start)


def _left_by_dead_worker(trial: FrozenTrial, host: str) -> bool:
    attrs = trial.user_attrs
    if "host" not in attrs:
        started = trial.datetime_start or datetime.now()
        return (datetime.now() - started).total_seconds() > ORPHAN_AFTER_S
    return attrs["host"] == host and not process_alive(int(attrs["pid"]), attrs.get("pid_start"))


def fail_dead_trials(study: optuna.Study, log: Callable[[str], None] = print) -> list[int]:
    """Tell FAIL for every RUNNING trial whose worker is gone (the rule in the module docstring)."""
    host, failed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _left_by_dead_worker(t, host):
            study.tell(t.number, state=TrialState.FAIL)
            failed.append(t.number)
            log(f"trial {t.number} was left running by a dead worker (host {t.user_attrs.get('host', '?')}, "
                f"pid {t.user_attrs.get('pid', '?')}): marked failed, not counted")
    return failed


def fail_stale_heartbeats(study: optuna.Study, log: Callable[[str], None] = print) -> list[int]:
    """RDB storage: Optuna's heartbeat rule, which Optuna applies only inside ``optimize``: a
    RUNNING trial silent for `GRACE_PERIOD_S` is failed and queued again (WAITING, same
    parameters, `MAX_RETRY` times at most); the next worker to ask runs it."""
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.number in running and t.state == TrialState.FAIL]
    for t in failed:
        again = [r.number for r in trials if r.state == TrialState.WAITING
                 and r.system_attrs.get("retry_history", [None])[-1] == t.number]
        log(f"trial {t.number} sent no heartbeat for {GRACE_PERIOD_S} s (host {t.user_attrs.get('host', '?')}, "
            f"pid {t.user_attrs.get('pid', '?')}): marked failed, not counted; "
            + (f"queued again as trial {again[0]}" if again else f"not retried (retried {MAX_RETRY} times already)"))
    return [t.number for t in failed]


def fail_stale(study: optuna.Study, location: str, log: Callable[[str], None] = print) -> list[int]:
    """The stale-trial rule of the study's storage: heartbeats (a database) or the pid rule (a journal)."""
    return (fail_stale_heartbeats if is_database_url(location) else fail_dead_trials)(study, log)


def fail_trial(study: optuna.Study, number: int) -> None:
    """Fail one RUNNING trial by hand (a worker on another host that will not come back)."""
    study.tell(number, state=TrialState.FAIL)


@dataclass(frozen=True)
class SearchJob:
    """Everything a worker needs, picklable for spawned processes."""

    dataset: str
    budget: int
    space: SearchSpace
    study_name: str
    storage: str  # an absolute journal path or a PostgreSQL URL (`storage_location`)
    sampler: object = "tpe"
    pruner: object = None
    objective: str = "val"
    data_dir: str | None = None
    splits: Splits | None = None
    device: str = "auto"
    seed: int | None = None
    ram_budget: int | None = None  # bytes of planned int8 activation arena every candidate must fit
    timeout_s: float | None = None  # no trial starts after this many seconds of a worker (Optuna's timeout)

    @property
    def directions(self) -> list[str]:
        return ["maximize"] if self.objective == "val" else ["maximize", "minimize"]

    @property
    def where(self) -> str:
        """The storage for messages (a URL's password masked)."""
        return mask_url(self.storage)


@contextlib.contextmanager
def quiet_optuna():
    """Optuna's per-trial INFO lines and its Experimental/Future warnings off; our log says more."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"optuna(\.|$)")
        try:
            yield
        finally:
            optuna.logging.set_verbosity(verbosity)


def _open_study(job: SearchJob, sampler=None, pruner=None) -> optuna.Study:
    return optuna.create_study(storage=open_storage(job.storage), study_name=job.study_name,
                               directions=job.directions, sampler=sampler, pruner=pruner, load_if_exists=True)


def _optimize(job: SearchJob, n_trials: int, log: Callable[[str], None], callbacks: tuple = ()) -> None:
    """One worker: its own sampler (each trial seeded by its number) on the shared study;
    ``callbacks`` (Optuna's ``callback(study, trial)``) run after each of its trials."""
    study = _open_study(job, None, make_pruner(job.pruner, job.space, job.objective))
    study.sampler = make_sampler(job.sampler, job.space, job.objective, job.seed)
    objective = SearchObjective(job.dataset, job.budget, job.space, job.objective, job.splits, job.data_dir,
                                job.device, job.ram_budget, log)
    study.optimize(objective, n_trials=n_trials, timeout=job.timeout_s, catch=(TrainingDiverged,),
                   callbacks=[lambda s, t: log(describe_trial(t)), *callbacks])


def _worker(job: SearchJob, n_trials: int, worker: int) -> None:
    """A spawned worker process: one torch thread."""
    import torch

    torch.set_num_threads(1)
    with quiet_optuna():
        _optimize(job, n_trials, lambda line: print(f"[worker {worker}] {line}", flush=True))


@contextlib.contextmanager
def _environment(**values: str):
    """Set environment variables while child processes start (they copy it), then restore."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _spawn_workers(job: SearchJob, n_trials: int, workers: int, log: Callable[[str], None],
                   poll: Callable[[list[FrozenTrial]], None] | None = None) -> None:
    """``workers`` processes share ``n_trials`` exactly (no MaxTrialsCallback overshoot). While
    they run, ``poll`` (when given) gets this command's trials, read from the storage every
    `POLL_INTERVAL_S` seconds: a live display of several workers."""
    shares = [n_trials // workers + (i < n_trials % workers) for i in range(workers)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(job, n, i), name=f"tinycnn-search-{i}")
             for i, n in enumerate(shares) if n]
    with _environment(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"):
        for p in procs:
            p.start()
    try:
        _join(procs, job, poll)
    except KeyboardInterrupt:  # the workers got Ctrl-C too: let them record their trials as failed
        for p in procs:
            p.join(timeout=30)
        raise
    fail_stale(_open_study(job, sampler=optuna.samplers.RandomSampler()), job.storage, log)  # a crashed worker's
    bad = [f"{p.name} (exit status {p.exitcode})" for p in procs if p.exitcode != 0]
    if bad:
        raise SearchError(f"search worker(s) {', '.join(bad)} stopped; every finished trial is kept in "
                          f"{job.where}: run the same command to continue")


def _join(procs: list, job: SearchJob, poll: Callable[[list[FrozenTrial]], None] | None) -> None:
    """Wait for the workers; with ``poll``, hand it the trials this command started, every few
    seconds (a storage read that fails leaves the display as it was: the workers go on)."""
    if poll is None:
        for p in procs:
            p.join()
        return
    watch = _open_study(job, sampler=optuna.samplers.RandomSampler())
    before = {t.number for t in watch.get_trials(deepcopy=False) if t.state.is_finished()}
    while any(p.is_alive() for p in procs):
        for p in procs:
            p.join(timeout=POLL_INTERVAL_S / len(procs))
        try:
            poll([t for t in watch.get_trials(deepcopy=False) if t.number not in before])
        except (OSError, ValueError, sqlalchemy.exc.SQLAlchemyError):
            pass


# --- the search -----------------------------------------------------------------------------

def default_study_name(dataset: str, budget: int, objective: str = "val") -> str:
    return f"{dataset}-{budget}" + ("" if objective == "val" else f"-{objective}")


def _prepare_study(job: SearchJob, log: Callable[[str], None]) -> optuna.Study:
    """Create or reopen the study (once, before any worker), check that it searches what this
    command asks for, and fail the trials dead workers left running."""
    study = _open_study(job, sampler=optuna.samplers.RandomSampler())  # a grid sampler's tell() may stop()
    want = {"dataset": job.dataset, "budget": job.budget, "objective": job.objective, "ram_budget": job.ram_budget}
    have = study.user_attrs
    if not have:
        for key, value in {**want, "space": _portable(job.space.path)}.items():
            study.set_user_attr(key, value)
        if job.space.start:  # the space's [start] point is the new study's first trial
            study.enqueue_trial(job.space.start, user_attrs={"start": True})
    elif any(have.get(k) != v for k, v in want.items()):
        raise SearchError(f"study {job.study_name!r} ({job.where}) searches {have.get('dataset')} under "
                          f"{have.get('budget')} parameters (RAM budget {have.get('ram_budget')}) with objective "
                          f"{have.get('objective')!r}; this command asks for {job.dataset} under {job.budget} "
                          f"(RAM budget {job.ram_budget}) with {job.objective!r}: "
                          f"repeat its settings to continue it, or name another study")
    else:
        done = len(study.get_trials(deepcopy=False))
        log(f"continuing study {job.study_name!r}: {done} trial(s) so far in {job.where}")
    fail_stale(study, job.storage, log)
    return study


def _portable(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p)


def run_search(dataset: str, budget: int, space_path=None, study_name: str | None = None, n_trials: int = 10,
               sampler="tpe", pruner=None, objective: str = "val", workers: int = 1, storage=None,
               data_dir=None, splits: Splits | None = None, log: Callable[[str], None] = print,
               device: str = "auto", seed: int | None = None, ram_budget: int | None = None,
               callbacks: tuple = (), poll: Callable[[list[FrozenTrial]], None] | None = None,
               timeout_s: float | None = None) -> optuna.Study:
    """Run ``n_trials`` more trials of a study (created, or continued from its storage).

    ``timeout_s``: no new trial starts once a worker has run this long (a running one finishes
    and is kept), so a sitting with an end time stops by itself instead of being killed mid-trial.

    ``storage``: a journal file (default ``experiments/search/<study>/journal.log``) or a
    ``postgresql://`` URL shared by workers on many machines. ``workers`` > 1 spawns that many
    processes (one torch thread each) on the same study, created here first; ``splits`` lets
    tests pass small data (its test split may be None: it is never read). ``callbacks``
    (``callback(study, frozen_trial)``, e.g. a live progress display) run after each trial
    when ``workers`` is 1; spawned workers do not run them: with ``workers`` > 1 the parent calls
    ``poll(trials)`` with this command's trials, read from the storage every `POLL_INTERVAL_S`."""
    dataset = dataset_info(dataset).name
    require_positive_budget(budget)
    if ram_budget is not None:
        require_positive_budget(ram_budget, "RAM budget", "bytes")
    if objective not in OBJECTIVES:
        raise SearchError(f"unknown objective {objective!r}; accepted: {', '.join(OBJECTIVES)}")
    if not (isinstance(workers, int) and workers >= 1 and isinstance(n_trials, int) and n_trials >= 0):
        raise SearchError(f"need workers >= 1 and n_trials >= 0, got workers={workers}, n_trials={n_trials}")
    if timeout_s is not None and not timeout_s > 0:
        raise SearchError(f"the timeout must be a positive number of seconds, got {timeout_s!r}")
    if seed is not None and not (isinstance(seed, int) and 0 <= seed < 2 ** 32):  # numpy's seed range
        raise SearchError(f"the sampler seed must be an integer from 0 to {2 ** 32 - 1}, got {seed!r}")
    space = load_space(space_path, dataset)
    if space.fixed_arch is not None and objective != "val":
        raise SearchError(f"{space.path} fixes the network ([arch] fixed), whose one parameter count leaves "
                          f"nothing to trade against: use --objective val")
    _require_val(space, splits)
    name = study_name or default_study_name(dataset, budget, objective)
    job = SearchJob(dataset, budget, space, name, storage_location(name, storage), sampler, pruner, objective,
                    None if data_dir is None else str(data_dir), splits, device, seed, ram_budget, timeout_s)
    with quiet_optuna(), _database_errors(job):
        make_sampler(sampler, space, objective)  # refuse a bad sampler or pruner before any trial
        make_pruner(pruner, space, objective)
        _prepare_study(job, log)
        if workers == 1:
            _optimize(job, n_trials, log, callbacks=tuple(callbacks))
        else:
            _spawn_workers(job, n_trials, workers, log, poll)
        study = _open_study(job)
    _require_feasible(study, job)
    log(summary(study))
    return study


@contextlib.contextmanager
def _database_errors(job: SearchJob):
    """A database lost in the middle of a search: one `SearchError`, not SQLAlchemy's traceback."""
    try:
        yield
    except sqlalchemy.exc.OperationalError as e:
        detail = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise SearchError(f"lost the study database {job.where}: {detail}; finished trials are kept there: "
                          f"run the same command to continue once it is reachable") from None


def _require_val(space: SearchSpace, splits: Splits | None) -> None:
    """Trials are scored on the validation split: refuse a search without one before it starts."""
    if splits is not None and not len(splits.val):
        raise SearchError("a search needs a validation split; the splits given have none")
    if splits is None and not space.base_recipe.val_size:
        raise SearchError(f"a search needs a validation split; recipe {space.base!r} has val_size = 0: "
                          f"set val_size in [recipe] of {space.path}")


def _require_feasible(study: optuna.Study, job: SearchJob) -> None:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if trials and all("infeasible" in t.user_attrs for t in trials):
        smallest = [t.user_attrs["min_params"] for t in trials if "min_params" in t.user_attrs]
        fixed = job.space.fixed_arch is not None
        why = (trials[0].user_attrs["infeasible"] if fixed or not smallest
               else f"the smallest needed {min(smallest):,} parameters at its narrowest widths")
        fix = "fix a smaller network" if fixed else "narrow the space"
        raise SearchError(f"no candidate fits: all {len(trials)} trial(s) of study {job.study_name!r} were "
                          f"infeasible under {job.budget:,} parameters ({why}); raise the budget or {fix} "
                          f"({job.space.path}{'' if fixed else ': fewer stages or blocks'})")


# --- reading a study ------------------------------------------------------------------------

def load_study(study_name: str, storage=None) -> optuna.Study:
    """The stored study, or one `SearchError` line: no journal, unreadable storage, no such
    study (naming those there are), or a study without trials."""
    location = storage_location(study_name, storage)
    where = mask_url(location)
    if not is_database_url(location) and not Path(location).is_file():
        raise SearchError(f"no study journal at {where}: run `tinycnn search` first, or give --storage")
    try:
        with quiet_optuna():
            store = open_storage(location)
            names = optuna.get_all_study_names(store)
            if study_name not in names:
                raise SearchError(f"no study {study_name!r} in {where}; studies there: {', '.join(names) or 'none'}")
            study = optuna.load_study(study_name=study_name, storage=store)
    except (OSError, ValueError, KeyError, sqlalchemy.exc.SQLAlchemyError) as e:
        raise SearchError(f"cannot read the study storage {where}: {type(e).__name__}: {e}") from None
    if not study.get_trials(deepcopy=False):
        raise SearchError(f"study {study_name!r} in {where} has no trials yet: nothing to report or retrain")
    return study


def describe_trial(t: FrozenTrial) -> str:
    """One log line per finished trial."""
    a = t.user_attrs
    if "infeasible" in a:
        return f"trial {t.number} infeasible: {a['infeasible']}"
    if t.state == TrialState.PRUNED:
        return f"trial {t.number} pruned after epoch {a.get('epochs_run', '?')}: {a.get('arch', '')}"
    if t.state != TrialState.COMPLETE:
        return f"trial {t.number} {t.state.name.lower()}: {a.get('arch', '')}"
    values = t.values
    extra = f", objective 2: {values[1]:,.0f}" if len(values) > 1 else ""
    return f"trial {t.number} val {values[0]:.4f}{extra} ({a['params']:,} params): {a['arch']}"


def summary(study: optuna.Study) -> str:
    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in TrialState}
    infeasible = sum("infeasible" in t.user_attrs for t in trials)
    line = (f"study {study.study_name!r}: {len(trials)} trials, {count[TrialState.COMPLETE]} complete, "
            f"{count[TrialState.PRUNED] - infeasible} pruned, {infeasible} infeasible, "
            f"{count[TrialState.FAIL]} failed, {count[TrialState.RUNNING]} running")
    rows = best_table(study, top=1)
    if len(study.directions) > 1:
        return line + f"; {len(rows)} on the Pareto front"
    return line + (f"; best val {rows[0]['val_accuracy']:.4f} (trial {rows[0]['trial']})" if rows else "")


def best_first(t: FrozenTrial) -> tuple:
    """The declared rule that ranks complete trials: highest validation accuracy, a tie to the
    fewer deployed parameters, then to the earlier trial."""
    return -t.values[0], t.user_attrs.get("params", math.inf), t.number


def best_table(study: optuna.Study, top: int = 10) -> list[dict]:
    """The best complete trials (`best_first`; the Pareto front, by size, for two objectives),
    each with its arch string, recipe overrides and the `tinycnn train` command that retrains it."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    firsts = {}
    for t in done:  # one row per candidate: a twin (drawn again) repeats its first trial's result
        firsts.setdefault(candidate_key(t), t)
    done = list(firsts.values())
    if len(study.directions) == 1:
        chosen = sorted(done, key=best_first)[:top]
    else:
        chosen = sorted(study.best_trials, key=lambda t: t.values[1])
    return [trial_row(study, t) for t in chosen]


def train_tokens(dataset: str, arch: str, recipe: str, overrides: list[str]) -> list[str]:
    """The `tinycnn train` argv that trains a trial's net with its recipe (base + overrides)."""
    tokens = ["tinycnn", "train", dataset, "--arch", arch, "--recipe", recipe]
    for o in overrides:
        tokens += ["--set", o]
    return tokens


def trial_row(study: optuna.Study, t: FrozenTrial) -> dict:
    """A complete trial as the tables and `tinycnn search retrain` read it."""
    a = t.user_attrs
    tokens = train_tokens(study.user_attrs.get("dataset", ""), a["arch"], a["recipe_base"], a["overrides"])
    return {"trial": t.number, "val_accuracy": t.values[0], "params": a["params"], "macs": a.get("macs"),
            "arch": a["arch"], "recipe": a["recipe_base"], "overrides": list(a["overrides"]),
            "epochs_run": a.get("epochs_run"), "phase": a.get("phase"),
            "duration_s": t.duration.total_seconds() if t.duration else None,
            "command": shlex.join(tokens)}
