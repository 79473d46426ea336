"""tinycnn.search: the space file, budget filling, infeasible candidates, pruning, the journal
(continuing, dead workers, two processes). Tiny: 256 MNIST training images, 200 validation
images, one or two epochs, a handful of trials."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from optuna.trial import TrialState

from tinycnn import search
from tinycnn.budget import deployed_params
from tinycnn.cli import duration_seconds, main
from tinycnn.data import Split, Splits
from tinycnn.recipe import apply_overrides, load_recipe
from tinycnn.search import (
    SearchError,
    SearchSpaceError,
    best_table,
    grid_space,
    journal_storage,
    load_space,
    make_pruner,
    run_search,
    suggest,
)
from tinycnn.searchspace import unit_arch

# A cheap space: two stages of one 3x3 block at unit width 4; only lr and the kind are searched.
TINY_SPACE = """
[arch]
base_width = 4
stages = 2
stem = "conv"
downsample = "max"
[arch.stage]
blocks = 1
kind = ["sep", "dw"]
kernel = 3
[recipe]
base = "default"
epochs = EPOCHS
batch_size = 64
crop_pad = 0
channels_last = false
lr = {low = 0.05, high = 0.2, log = true}
"""


ROOT = Path(__file__).resolve().parents[1]


def _space_file(tmp_path, text: str, name: str = "space.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def tiny_space(tmp_path):
    return _space_file(tmp_path, TINY_SPACE.replace("EPOCHS", "1"))


@pytest.fixture(scope="module")
def tiny_splits(mnist_splits):
    """256 training and 200 validation images, copied out of the full tensors (a view would
    carry the whole dataset into a spawned worker), and no test split at all."""
    return Splits(mnist_splits.info, Split(mnist_splits.train.x[:256].clone(), mnist_splits.train.y[:256].clone()),
                  Split(mnist_splits.val.x[:200].clone(), mnist_splits.val.y[:200].clone()), None)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
        yield


def _run(tmp_path, splits, space, **kwargs):
    kwargs = {"budget": 1500, "n_trials": 2, "study_name": "s", "storage": tmp_path / "s" / "journal.log",
              "sampler": "random", "pruner": "none", "log": lambda line: None, "seed": 0, **kwargs}
    return run_search("mnist", space_path=space, splits=splits, **kwargs)


def _trials(path, name="s"):
    return optuna.load_study(study_name=name, storage=journal_storage(path)).get_trials(deepcopy=False)


# --- the space file -------------------------------------------------------------------------

def test_the_shipped_spaces_load():
    for dataset in ("mnist", "cifar10"):
        space = load_space(None, dataset)
        assert isinstance(space.stage["kind"], search.Choice)
        assert space.base_recipe.val_size > 0


STUDY_BUDGETS = {"mnist-sep.toml": 700, "mnist-1000.toml": 1000, "cifar10-40k.toml": 40_000}  # the budgets their studies run at


@pytest.mark.parametrize("path", sorted((ROOT / "experiments" / "spaces").glob("*.toml")), ids=lambda p: p.name)
def test_every_committed_space_loads_and_its_start_point_is_a_candidate(path):
    """A study's committed space (and its [start]) must still load when the code moves on."""
    dataset = "cifar10" if path.name.startswith("cifar10") else "mnist"
    space = load_space(path, dataset)
    study = optuna.create_study(direction="maximize")
    if space.start:
        study.enqueue_trial(dict(space.start))
    trial = study.ask()
    budget = STUDY_BUDGETS.get(path.name, 140_000 if dataset == "cifar10" else 1500)
    try:
        spec, _ = suggest(trial, space, dataset, budget)
    except optuna.TrialPruned:
        assert not space.start, f"{path.name}: its start point is infeasible at {budget:,}"
        return
    assert deployed_params(spec) <= budget


BAD_SPACES = [
    ("colour = 1\n[recipe]\nlr = [0.1, 0.2]", "colour"),
    ("[arch]\nwidth = 8\n[recipe]\nlr = [0.1, 0.2]", "width"),
    ("[arch.stage]\nkinds = ['sep']\n[recipe]\nlr = [0.1, 0.2]", "kinds"),
    ("[recipe]\nlearning_rate = [0.1, 0.2]", "learning_rate"),
    ("[arch.stage]\nkind = []", "kind"),
    ("[arch.stage]\nkind = ['sep', 'resnet']", "resnet"),
    ("[arch.stage]\nkernel = [3, 4]", "kernel"),
    ("[recipe]\nlr = {low = 0.2, high = 0.1}", "lr"),
    ("[recipe]\nlr = {low = 0.0, high = 0.1, log = true}", "lr"),
    ("[recipe]\nlr = {low = 0.1, high = 0.2, slope = 1}", "slope"),
    ("[recipe]\nepochs = {low = 1.5, high = 4}", "epochs"),
    ("[recipe]\nlabel_smoothing = [0.0, 1.5]", "label_smoothing"),
    ("[recipe]\nval_size = [1000, 5000]", "val_size"),
    ("[recipe]\nbase = 'nonesuch'\nlr = [0.1, 0.2]", "base"),
    ("[arch]\nbase_width = [4, 8]\n[recipe]\nlr = [0.1, 0.2]", "base_width"),
    ("[arch]\nstem = {low = 1, high = 2}\n[recipe]\nlr = [0.1, 0.2]", "stem"),
    ("[arch]\nstages = 6\ndownsample = 'blur'\n[recipe]\nlr = [0.1, 0.2]", "stages"),
    ("[arch]\nstages = 3\n[recipe]\nlr = 0.1", "empty space"),
    ("[arch\nstages = 3", "not valid TOML"),
    ("arch = 3\n[recipe]\nlr = [0.1, 0.2]", "must be a table"),
]


@pytest.mark.parametrize("text,named", BAD_SPACES)
def test_a_bad_space_gets_one_clear_error(tmp_path, text, named):
    with pytest.raises(SearchSpaceError, match=named) as e:
        load_space(_space_file(tmp_path, text), "mnist")
    assert "\n" not in str(e.value)


def test_an_unknown_key_lists_what_is_accepted(tmp_path):
    with pytest.raises(SearchSpaceError, match="accepted keys: blocks, kind, kernel"):
        load_space(_space_file(tmp_path, "[arch.stage]\nkinds = ['sep']"), "mnist")


def test_grid_means_the_product_of_choices_and_range_grids(tmp_path):
    text = TINY_SPACE.replace("EPOCHS", "1").replace("log = true}", "log = true, grid = [0.05, 0.1, 0.2]}")
    grid = grid_space(load_space(_space_file(tmp_path, text), "mnist"))
    assert grid == {"s1_kind": ["sep", "dw"], "s2_kind": ["sep", "dw"], "lr": [0.05, 0.1, 0.2]}
    with pytest.raises(SearchSpaceError, match="the grid has"):
        grid_space(load_space(None, "mnist"))


def test_pruner_names_and_pareto_refuses_pruning(tiny_space):
    space = load_space(tiny_space, "mnist")
    assert isinstance(make_pruner("hyperband", space), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("halving", space), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner(None, space, "pareto"), optuna.pruners.NopPruner)
    with pytest.raises(SearchError, match="pruner none"):
        make_pruner("median", space, "pareto")


def test_bad_search_settings_are_refused_before_any_trial(tmp_path, tiny_space, tiny_splits):
    no_val = _space_file(tmp_path, "[recipe]\nval_size = 0\nlr = [0.1, 0.2]", "noval.toml")
    for kwargs, message in [({"space": no_val, "splits": None}, "val_size = 0"),
                            ({"sampler": "annealing"}, "unknown sampler"),
                            ({"storage": "sqlite:///study.db"}, "must be PostgreSQL"),
                            ({"study_name": "a/b"}, "study name"),
                            ({"objective": "pareto", "pruner": "median"}, "pruner none")]:
        args = {"space": tiny_space, "splits": tiny_splits, **kwargs}
        with pytest.raises(SearchError, match=message):
            _run(tmp_path, args.pop("splits"), args.pop("space"), n_trials=0, **args)
    assert not (tmp_path / "s").exists()


# --- candidates -----------------------------------------------------------------------------

@pytest.mark.parametrize("dataset,budget,n", [("mnist", 1500, 6), ("mnist", 700, 6), ("cifar10", 40_000, 3)])
def test_a_candidate_always_fits_its_budget(dataset, budget, n):
    space = load_space(None, dataset)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    feasible = 0
    for _ in range(n):
        trial = study.ask()
        try:
            spec, recipe = suggest(trial, space, dataset, budget)
        except optuna.TrialPruned:
            assert trial.user_attrs["infeasible"]
            study.tell(trial, state=TrialState.PRUNED)
            continue
        feasible += 1
        assert deployed_params(spec) == trial.user_attrs["params"] <= budget
        assert recipe == apply_overrides(load_recipe(dataset, space.base), trial.user_attrs["overrides"])
        study.tell(trial, 0.0)
    assert feasible


def test_a_conv_stage_gives_full_convs_with_se_and_residuals(tmp_path):
    """`kind = "conv"` stages express the CIFAR-10 final's family (full 3x3 convs early)."""
    space = load_space(_space_file(tmp_path, """
[arch]
base_width = 8
stages = 2
width_growth = 2.0
[arch.stage]
blocks = 2
kind = "conv"
se = true
residual = true
[recipe]
base = "default"
lr = [0.1, 0.2]
"""), "cifar10")
    trial = optuna.create_study().ask()
    assert unit_arch(trial, space) == ("conv_k3_c8 conv_k3_c16 conv_k3_c16_se4_r max "
                                       "conv_k3_c32 conv_k3_c32_se8_r gap")


def test_an_impossible_budget_is_infeasible_and_never_trains(tmp_path, tiny_space, tiny_splits, monkeypatch):
    calls = []
    monkeypatch.setattr(search, "fit_only", lambda *a, **k: calls.append(a))
    with pytest.raises(SearchError, match="no candidate fits"):
        _run(tmp_path, tiny_splits, tiny_space, budget=30, n_trials=3)
    trials = _trials(tmp_path / "s" / "journal.log")
    assert calls == []
    assert [t.state for t in trials] == [TrialState.PRUNED] * 3
    assert all(t.user_attrs["min_params"] > 30 and "infeasible" in t.user_attrs for t in trials)


# --- training, pruning, the test split ------------------------------------------------------

def test_a_search_trains_on_val_and_never_reads_the_test_split(tmp_path, tiny_space, tiny_splits):
    assert tiny_splits.test is None  # any read of it would fail
    lines = []
    study = _run(tmp_path, tiny_splits, tiny_space, n_trials=1, log=lines.append)
    (trial,) = study.trials
    starts = [i for i, line in enumerate(lines) if line.startswith("trial 0 starts (")]
    ends = [i for i, line in enumerate(lines) if line.startswith("trial 0 val ")]
    assert starts and ends and starts[0] < ends[0] and trial.user_attrs["arch"] in lines[starts[0]]
    assert trial.state == TrialState.COMPLETE and 0.0 <= trial.value <= 1.0
    assert trial.user_attrs["params"] <= 1500 and trial.user_attrs["epochs_run"] == 1


def test_search_splits_drop_the_test_split(real_data_dir):
    splits = search.search_splits("mnist", load_recipe("mnist", "default"), real_data_dir)
    assert splits.test is None and len(splits.val) == 5000


def test_pruning_stops_a_trial_after_its_first_epoch(tmp_path, tiny_splits):
    epochs = 3
    space = _space_file(tmp_path, TINY_SPACE.replace("EPOCHS", str(epochs)))
    study = _run(tmp_path, tiny_splits, space, n_trials=1, pruner=optuna.pruners.ThresholdPruner(lower=1.0))
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED and "infeasible" not in trial.user_attrs
    assert trial.user_attrs["epochs_run"] == 1 < epochs
    assert list(trial.intermediate_values) == [1]


def test_a_pareto_search_gives_a_front_of_sizes(tmp_path, tiny_space, tiny_splits):
    study = _run(tmp_path, tiny_splits, tiny_space, objective="pareto")
    assert len(study.directions) == 2
    rows = best_table(study)
    assert rows and all(r["params"] <= 1500 for r in rows)
    assert all("budget_fraction" in t.params for t in study.trials)


# --- the journal ----------------------------------------------------------------------------

def test_the_same_command_continues_a_study(tmp_path, tiny_space, tiny_splits, monkeypatch):
    monkeypatch.setenv("TINYCNN_SEARCH", str(tmp_path / "search"))
    kwargs = {"storage": None, "study_name": "again"}
    _run(tmp_path, tiny_splits, tiny_space, **kwargs)
    study = _run(tmp_path, tiny_splits, tiny_space, **kwargs)
    journal = tmp_path / "search" / "again" / "journal.log"
    assert journal.is_file()
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    row = best_table(study)[0]
    assert row["command"].startswith("tinycnn train mnist --arch") and row["params"] <= 1500
    with pytest.raises(SearchError, match="under 1500"):
        _run(tmp_path, tiny_splits, tiny_space, budget=1000, **kwargs)


def test_a_timeout_stops_starting_trials_and_keeps_the_one_it_ran(tmp_path, tiny_space, tiny_splits):
    """A sitting with an end time: once the timeout has passed no trial starts, the running one
    completes (Optuna checks after each trial), and the same command without it continues."""
    study = _run(tmp_path, tiny_splits, tiny_space, n_trials=4, timeout_s=1e-3)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    study = _run(tmp_path, tiny_splits, tiny_space, n_trials=2)
    assert [t.number for t in study.trials] == [0, 1, 2]
    with pytest.raises(SearchError, match="positive number of seconds"):
        _run(tmp_path, tiny_splits, tiny_space, n_trials=1, timeout_s=0)


@pytest.mark.parametrize("text,seconds", [("5400", 5400), ("90m", 5400), ("1.5h", 5400), ("45s", 45)])
def test_timeout_durations_parse(text, seconds):
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5m", "0", "2d", "infh"])
def test_a_bad_timeout_is_one_clear_error_naming_the_accepted_forms(text, capsys):
    with pytest.raises(SystemExit) as e:
        main(["search", "mnist", "--budget", "1500", f"--timeout={text}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "not a duration" in err and "90m" in err and "Traceback" not in err


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_trial_left_running_by_a_dead_worker_is_failed_at_the_next_start(tmp_path, tiny_space, tiny_splits):
    path = tmp_path / "s" / "journal.log"
    _run(tmp_path, tiny_splits, tiny_space, n_trials=0)  # creates the study, trains nothing
    study = optuna.load_study(study_name="s", storage=journal_storage(path))
    host, me = socket.gethostname(), os.getpid()
    cases = {"dead": (host, _dead_pid(), None), "reused pid": (host, me, "1"),
             "alive": (host, me, search.process_start(me)), "other host": ("elsewhere", _dead_pid(), None)}
    numbers = {}
    for case, (h, pid, start) in cases.items():
        trial = study.ask()
        trial.set_user_attr("host", h)
        trial.set_user_attr("pid", pid)
        trial.set_user_attr("pid_start", start)
        numbers[case] = trial.number
    _run(tmp_path, tiny_splits, tiny_space, n_trials=0)
    state = {t.number: t.state for t in _trials(path)}
    assert state[numbers["dead"]] == state[numbers["reused pid"]] == TrialState.FAIL
    assert state[numbers["alive"]] == state[numbers["other host"]] == TrialState.RUNNING


@pytest.mark.slow
def test_two_worker_processes_share_one_journal(tmp_path, tiny_space, tiny_splits):
    """Real (tiny) trials in two spawned processes: a monkeypatched objective would not cross spawn."""
    study = _run(tmp_path, tiny_splits, tiny_space, n_trials=4, workers=2)
    trials = study.trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids


KILLED_WORKER = """
import sys, time
import torch
from tinycnn import search
from tinycnn.data import Split, Splits
from tinycnn.datasets import dataset_info

search.fit_only = lambda *a, **k: time.sleep(600)  # a trial that hangs until it is killed
x, y = torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64)
search.run_search("mnist", 1500, space_path=sys.argv[1], study_name="s", storage=sys.argv[2], n_trials=1,
                  sampler="random", pruner="none", splits=Splits(dataset_info("mnist"), Split(x, y), Split(x, y), None))
"""


def _a_trial_is_running(path) -> bool:
    """Whether a worker has recorded itself on a RUNNING trial (False before the study exists)."""
    try:
        return any("pid" in t.user_attrs for t in _trials(path) if t.state == TrialState.RUNNING)
    except (KeyError, FileNotFoundError):
        return False


@pytest.mark.slow
def test_a_search_killed_with_kill_9_continues_with_the_same_command(tmp_path, tiny_space, tiny_splits):
    """A real kill -9 in the middle of a trial (one that sleeps, so the test costs no CPU)."""
    import signal
    import time

    path = tmp_path / "s" / "journal.log"
    worker = subprocess.Popen([sys.executable, "-c", KILLED_WORKER, str(tiny_space), str(path)])
    try:
        deadline = time.monotonic() + 120
        while not _a_trial_is_running(path):
            assert worker.poll() is None and time.monotonic() < deadline, "the worker never started its trial"
            time.sleep(0.5)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    study = _run(tmp_path, tiny_splits, tiny_space, n_trials=1)
    assert [(t.number, t.state) for t in study.trials] == [(0, TrialState.FAIL), (1, TrialState.COMPLETE)]
    assert study.trials[0].user_attrs["pid"] == worker.pid


def test_cli_search_with_a_bad_space_is_one_line(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "space.toml"
    bad.write_text("[arch]\nbogus = 1\n")
    r = subprocess.run([sys.executable, "-m", "tinycnn", "search", "mnist", "--budget", "1500", "--space", str(bad),
                        "--storage", str(tmp_path / "j.log")], capture_output=True, text=True)
    assert r.returncode == 2 and "bogus" in r.stderr and "Traceback" not in r.stderr
    assert "[arch] key 'bogus'" in r.stderr  # the table's name is text, not rich markup swallowed


def test_a_ram_budget_makes_candidates_infeasible_before_training(tmp_path, tiny_space, tiny_splits, monkeypatch):
    calls = []
    monkeypatch.setattr(search, "fit_only", lambda *a, **k: calls.append(a))
    with pytest.raises(SearchError, match="no candidate fits"):
        _run(tmp_path, tiny_splits, tiny_space, ram_budget=1_000, n_trials=2)
    trials = _trials(tmp_path / "s" / "journal.log")
    assert calls == [] and [t.state for t in trials] == [TrialState.PRUNED] * 2
    assert all("over the RAM budget of 1,000 B" in t.user_attrs["infeasible"] for t in trials)
    with pytest.raises(SearchError, match=r"RAM budget 1000\) .* asks for .*RAM budget 2000\)"):
        _run(tmp_path, tiny_splits, tiny_space, ram_budget=2_000, n_trials=0)


def test_a_continued_study_does_not_replay_its_first_candidates(tmp_path, tiny_splits, tiny_space):
    """The same command (same --seed) run again must draw new candidates, not the first ones again."""
    _run(tmp_path, tiny_splits, tiny_space)
    _run(tmp_path, tiny_splits, tiny_space)
    trials = _trials(tmp_path / "s" / "journal.log")
    assert len(trials) == 4
    assert [t.params for t in trials[:2]] != [t.params for t in trials[2:]]


def test_workers_started_apart_with_one_seed_never_draw_the_same_candidates(tmp_path, tiny_space):
    """Study S4's bug: two commands with --seed 0 that found the same number of stored trials
    seeded their samplers alike and trained every candidate twice. Trial numbers keep them apart,
    and a fresh study with the same seed still draws the same candidates (reproducible)."""
    space = load_space(tiny_space, "mnist")

    def draw(study, n):
        for _ in range(n):
            trial = study.ask()
            study.tell(trial, trial.suggest_float("lr", 0.01, 1.0, log=True))

    def workers(folder, n):
        storage = search.journal_storage(folder / "journal.log")
        return [optuna.create_study(storage=storage, study_name="s", load_if_exists=True, direction="maximize",
                                    sampler=search.make_sampler("tpe", space, seed=0)) for _ in range(n)]

    one, two = workers(tmp_path / "a", 2)
    for _ in range(3):
        draw(one, 1), draw(two, 1)
    drawn = [t.params["lr"] for t in one.trials]
    assert len(drawn) == 6 and len(set(drawn)) == 6
    (again,) = workers(tmp_path / "b", 1)
    draw(again, 6)
    assert [t.params["lr"] for t in again.trials] == drawn


# --- a recipe-only space: [arch] fixed ------------------------------------------------------

FIXED_SPACE = """
[arch]
fixed = "FIXED"
[recipe]
base = "default"
epochs = 1
batch_size = 64
crop_pad = 0
channels_last = false
lr = {low = 0.05, high = 0.2, log = true}
"""


def test_a_fixed_space_keeps_the_phase_and_searches_the_recipe_alone(tmp_path):
    from tinycnn.budget import deployed_params
    from tinycnn.ladders import final_phase, get_phase

    space = load_space(_space_file(tmp_path, FIXED_SPACE.replace("FIXED", "final")), "mnist")
    final = final_phase("mnist")
    assert (space.fixed_arch, space.fixed_phase) == (final.arch, final.name)
    assert grid_space(space) == {"lr": [pytest.approx((0.05 * 0.2) ** 0.5)]}  # no architecture key
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        trial = study.ask()
        spec, recipe = suggest(trial, space, "mnist", 1500)
        assert spec.arch == final.arch and trial.user_attrs["params"] == deployed_params(final)
        assert trial.user_attrs["phase"] == final.name and trial.user_attrs["width"] == 1.0
        assert set(trial.params) == {"lr"} and 0.05 <= recipe.lr <= 0.2
        study.tell(trial, 0.5)
    arch = get_phase("mnist", "sep").arch  # an architecture string works too, without a phase name
    space = load_space(_space_file(tmp_path, FIXED_SPACE.replace("FIXED", arch)), "mnist")
    assert (space.fixed_arch, space.fixed_phase) == (arch, None)


@pytest.mark.parametrize("arch_lines,named", [
    ('fixed = "final"\nstages = 2', r"'stages' would never be used"),
    ('fixed = "final"\n[arch.stage]\nkind = ["sep", "dw"]', r"'\[arch.stage\] kind' would never be used"),
    ('fixed = "nonesuch"', r"neither a phase of the mnist ladder \(plain, .*final\) nor a valid architecture"),
    ('fixed = ["final", "sep"]', "fixed is fixed, not searched"),
])
def test_a_bad_fixed_space_gets_one_clear_error(tmp_path, arch_lines, named):
    text = FIXED_SPACE.replace('fixed = "FIXED"', arch_lines)
    with pytest.raises(SearchSpaceError, match=named) as e:
        load_space(_space_file(tmp_path, text), "mnist")
    assert "\n" not in str(e.value)


def test_a_fixed_network_over_the_budget_is_infeasible_and_pareto_is_refused(tmp_path, tiny_splits, monkeypatch):
    space = _space_file(tmp_path, FIXED_SPACE.replace("FIXED", "final"))
    calls = []
    monkeypatch.setattr(search, "fit_only", lambda *a, **k: calls.append(a))
    with pytest.raises(SearchError, match="no candidate fits.*fixed network has 1,473 deployed parameters, over "
                                          "the budget of 1,000"):
        _run(tmp_path, tiny_splits, space, budget=1000, n_trials=1)
    assert calls == []
    with pytest.raises(SearchError, match="fixes the network .* use --objective val"):
        _run(tmp_path, tiny_splits, space, objective="pareto", study_name="p", storage=tmp_path / "p.log")


def test_a_candidate_drawn_again_repeats_its_first_result_without_training(tmp_path, tiny_splits, monkeypatch):
    """Two lrs to draw from and six trials: most are twins, which cost nothing (training is
    seeded, so a twin would score the same); the report lists each candidate once."""
    from types import SimpleNamespace

    space = _space_file(tmp_path, FIXED_SPACE.replace("FIXED", "final").replace(
        "lr = {low = 0.05, high = 0.2, log = true}", "lr = [0.05, 0.1]"))
    calls = []

    def fit(spec, recipe, *a, **k):
        calls.append(recipe.lr)
        return SimpleNamespace(val_accuracy=recipe.lr * 5, history=[{}])

    monkeypatch.setattr(search, "fit_only", fit)
    study = _run(tmp_path, tiny_splits, space, n_trials=6)
    trials = study.trials
    assert sorted(calls) == [0.05, 0.1] and all(t.state == TrialState.COMPLETE for t in trials)
    assert all(t.value == t.params["lr"] * 5 for t in trials)
    twins = [t for t in trials if "twin_of" in t.user_attrs]
    assert len(twins) == 4 and all(trials[t.user_attrs["twin_of"]].params == t.params for t in twins)
    assert sorted(r["trial"] for r in best_table(study)) == sorted(t.number for t in trials if t not in twins)


# --- [start]: the first trial at a known-good point ------------------------------------------

def test_a_start_point_is_the_new_studys_first_trial_and_only_its_first(tmp_path, tiny_splits):
    text = TINY_SPACE.replace("EPOCHS", "1") + '\n[start]\nlr = 0.1\ns1_kind = "dw"\n'
    space = _space_file(tmp_path, text)
    assert load_space(space, "mnist").start == {"lr": 0.1, "s1_kind": "dw"}
    _run(tmp_path, tiny_splits, space, n_trials=2)
    _run(tmp_path, tiny_splits, space, n_trials=1)  # continued: the start point is not queued again
    trials = _trials(tmp_path / "s" / "journal.log")
    assert trials[0].params["lr"] == 0.1 and trials[0].params["s1_kind"] == "dw" and trials[0].user_attrs["start"]
    assert all(t.params["lr"] != 0.1 and "start" not in t.user_attrs for t in trials[1:])
    assert len(trials) == 3


@pytest.mark.parametrize("start,named", [
    ("momentum = 0.9", r"\[start\] key 'momentum' is unknown; accepted keys \(the searched dimensions\): .*lr"),
    ("lr = 0.5", r"\[start\] lr = 0.5 is not in the space; accepted: a number in \[0.05, 0.2\]"),
    ('s1_kind = "ir"', r"\[start\] s1_kind = 'ir' is not in the space; accepted: 'sep', 'dw'"),
])
def test_a_start_point_outside_the_space_is_refused(tmp_path, start, named):
    text = TINY_SPACE.replace("EPOCHS", "1") + f"\n[start]\n{start}\n"
    with pytest.raises(SearchSpaceError, match=named):
        load_space(_space_file(tmp_path, text), "mnist")


def test_a_search_logged_to_a_file_prints_its_progress_after_each_trial(monkeypatch, capsys):
    """Under nohup (no terminal, so no rich Live) a one-worker search used to print only its
    "trial N starts" lines: nothing said how trials ended or what the best was so far."""
    import argparse

    from tinycnn import cli

    trials = [optuna.trial.create_trial(value=0.91), optuna.trial.create_trial(state=TrialState.PRUNED)]

    def fake_run_search(*args, callbacks=(), **kw):
        for number, t in enumerate(trials):
            t.number = number
            for cb in callbacks:
                cb(None, t)

    monkeypatch.setattr(search, "run_search", fake_run_search)
    args = argparse.Namespace(dataset="mnist", budget=1500, space=None, study=None, trials=2, sampler="tpe",
                              pruner="median", objective="val", workers=1, storage=None, data_dir=None,
                              device="cpu", seed=0, ram_budget=None, timeout=None)
    cli._run_search_live(args)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("progress:")]
    assert lines == [
        "progress: trials 1/2 done: 1 complete, 0 pruned, 0 infeasible, 0 failed; best val 0.9100 (trial 0)",
        "progress: trials 2/2 done: 1 complete, 1 pruned, 0 infeasible, 0 failed; best val 0.9100 (trial 0)"]
