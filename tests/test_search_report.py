"""tinycnn.search_report: `tinycnn search report STUDY` (table, counts, figures, JSON) and the
live progress callback. The studies are tiny and never train: ``fit_only`` is monkeypatched,
and pruned / infeasible / failed trials are added to the journal directly."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

optuna = pytest.importorskip("optuna")

import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from test_search import (
    TINY_SPACE,
    _quiet,  # noqa: F401  (autouse: Optuna's experimental/future warnings, as there)
)

from tinycnn import search
from tinycnn.data import Split, Splits
from tinycnn.datasets import dataset_info
from tinycnn.ladders import final_phase
from tinycnn.search import SearchError, journal_storage, run_search
from tinycnn.search_report import (
    SearchProgress,
    importances,
    load_study,
    non_dominated,
    trial_counts,
    write_search_report,
)

SPACE = TINY_SPACE.replace("EPOCHS", "1")  # the same cheap space as test_search's
VALS = [0.80, 0.95, 0.90, 0.85]
PNG = b"\x89PNG\r\n\x1a\n"


def _fake_splits():
    x = torch.zeros(8, 1, 28, 28, dtype=torch.uint8)
    y = torch.zeros(8, dtype=torch.int64)
    return Splits(dataset_info("mnist"), Split(x, y), Split(x.clone(), y.clone()), None)


def _study(tmp_path, monkeypatch, n_trials=4, name="s"):
    """A journal with ``n_trials`` complete trials (val accuracies from VALS), then one pruned,
    one infeasible and one failed trial added by hand."""
    vals = iter(VALS)
    monkeypatch.setattr(search, "fit_only", lambda *a, **k: SimpleNamespace(val_accuracy=next(vals), history=[{}]))
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    journal = tmp_path / name / "journal.log"
    run_search("mnist", 1500, space, name, n_trials, "random", "none", storage=journal, splits=_fake_splits(),
               log=lambda line: None, seed=0)
    study = optuna.load_study(study_name=name, storage=journal_storage(journal))
    dist = {"lr": FloatDistribution(0.05, 0.2, log=True)}
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"lr": 0.1}, distributions=dist,
                                 intermediate_values={1: 0.5}, user_attrs={"arch": "x", "epochs_run": 1}))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"lr": 0.1}, distributions=dist,
                                 user_attrs={"infeasible": "too big", "min_params": 9999}))
    study.add_trial(create_trial(state=TrialState.FAIL, params={"lr": 0.1}, distributions=dist))
    return journal


def _fake_final(root, params=1400, val=0.97):
    """A finished ladder-final run in a results root of its own."""
    run = root / "mnist" / final_phase("mnist").name / "seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"params": params, "val_accuracy": val, "test_accuracy": 0.5,
                                                  "seed": 0}))
    (run / "model.pt").write_bytes(b"")
    return run


def test_the_report_writes_table_counts_figures_and_json(tmp_path, monkeypatch):
    journal = _study(tmp_path, monkeypatch)
    results = tmp_path / "results"
    _fake_final(results)
    paths = write_search_report("s", journal, results_root=results)
    names = {p.name for p in paths}
    assert names == {"report.md", "report.json", "history.png", "pareto.png", "importances.png"}
    assert all(p.parent == journal.parent for p in paths)
    for p in paths:
        if p.suffix == ".png":
            assert p.read_bytes().startswith(PNG) and p.stat().st_size > 1000
    data = json.loads((journal.parent / "report.json").read_text())
    assert data["counts"] == {"total": 7, "complete": 4, "pruned": 1, "infeasible": 1, "failed": 1, "running": 0,
                              "waiting": 0}
    best = data["best"]
    assert [r["val_accuracy"] for r in best] == sorted(VALS, reverse=True)
    md = (journal.parent / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith(f"| {best[0]['trial']} |")]
    assert table and best[0]["arch"] in table[0] and "95.00%" in table[0]
    rows = [line for line in md.splitlines() if line.startswith("| ") and "%" in line]
    assert rows[0] == table[0]  # the best trial is the first row
    assert "4 complete, 1 pruned, 1 infeasible" in md and "test" in md
    assert data["ladder_finals"] == [{"phase": final_phase("mnist").name, "seed": 0, "params": 1400,
                                      "val_accuracy": 0.97}]  # validation accuracy only, never the test figure
    assert data["anchors"][0]["params"] == 697
    assert [p["pruned"] for p in data["history"]] == [False] * 4 + [True]
    assert json.loads(json.dumps(data)) == data


def test_the_report_goes_to_out(tmp_path, monkeypatch):
    journal = _study(tmp_path, monkeypatch, n_trials=2)
    out = tmp_path / "elsewhere"
    paths = write_search_report("s", journal, out=out)
    assert all(p.parent == out for p in paths) and not (journal.parent / "report.md").exists()


def test_importances_with_one_complete_trial_is_a_note(tmp_path, monkeypatch):
    journal = _study(tmp_path, monkeypatch, n_trials=1)
    study = load_study("s", journal)
    values, note = importances(study)
    assert values == {} and "at least" in note and "has 1" in note
    paths = write_search_report("s", journal)
    assert "Note: parameter importances need" in (journal.parent / "report.md").read_text()
    assert any(p.name == "importances.png" for p in paths)


def test_importances_with_enough_trials(tmp_path, monkeypatch):
    values, note = importances(load_study("s", _study(tmp_path, monkeypatch)))
    assert values and all(v >= 0 for v in values.values())
    assert "only one parameter" in note or "from only 4 complete trials" in note  # 4 < FEW_TRIALS_FOR_IMPORTANCE


def test_importances_of_a_small_study_are_flagged_as_a_hint():
    study = optuna.create_study(direction="maximize")
    dist = {"lr": FloatDistribution(0.01, 1.0, log=True), "wd": FloatDistribution(1e-6, 1e-3, log=True)}
    for n in (5, 12):
        while len(study.trials) < n:
            i = len(study.trials)
            study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.9 + 0.001 * ((i * 7) % 11),
                                         params={"lr": 0.01 * (1.4 ** i), "wd": 1e-6 * (1.8 ** i)}, distributions=dist))
        values, note = importances(study)
        assert set(values) == {"lr", "wd"}
        assert ("hint, not a finding" in note) == (n < 10), (n, note)


def test_importances_that_cannot_tell_trials_apart_are_a_note_not_a_warning(recwarn):
    study = optuna.create_study()
    dist = {"lr": FloatDistribution(0.05, 0.2, log=True), "wd": FloatDistribution(1e-5, 1e-3, log=True)}
    for i in range(4):  # every trial scores the same: no top quantile stands apart
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5, params={"lr": 0.05 + 0.01 * i, "wd": 1e-4},
                                     distributions=dist))
    values, note = importances(study)
    assert "importances are all equal" in note
    assert not [w for w in recwarn if "same set of trials" in str(w.message)]


def test_missing_or_empty_studies_are_one_error(tmp_path, monkeypatch):
    with pytest.raises(SearchError, match="no study journal"):
        load_study("s", tmp_path / "nothing.log")
    journal = _study(tmp_path, monkeypatch, n_trials=1)
    with pytest.raises(SearchError, match="no study 'other'.*studies there: s"):
        load_study("other", journal)
    optuna.create_study(study_name="empty", storage=journal_storage(journal))
    with pytest.raises(SearchError, match="no trials yet"):
        load_study("empty", journal)


def test_non_dominated_points():
    assert non_dominated([(100, 0.9), (200, 0.95), (150, 0.85), (200, 0.9), (50, 0.5)]) == [0, 1, 4]


def _cli(*args, env_root=None):
    import os

    env = dict(os.environ, TINYCNN_RESULTS=str(env_root)) if env_root else None
    return subprocess.run([sys.executable, "-m", "tinycnn", "search", "report", *args], check=False,
                          capture_output=True,
                          text=True, env=env)


def test_cli_search_report(tmp_path, monkeypatch):
    journal = _study(tmp_path, monkeypatch, n_trials=2)
    r = _cli("s", "--storage", str(journal), env_root=tmp_path / "results")
    assert r.returncode == 0, r.stderr
    assert "report.md" in r.stdout and (journal.parent / "pareto.png").is_file()
    r = _cli("missing", "--storage", str(tmp_path / "missing" / "journal.log"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "no study journal" in r.stderr


def test_cli_search_still_takes_a_dataset_and_mentions_report():
    from tinycnn.cli import build_parser

    args = build_parser().parse_args(["search", "mnist", "--budget", "700"])
    assert args.dataset == "mnist" and args.budget == 700
    r = subprocess.run([sys.executable, "-m", "tinycnn", "search", "--help"], check=False, capture_output=True,
                       text=True)
    assert r.returncode == 0 and "tinycnn search report STUDY" in " ".join(r.stdout.split())


def test_trial_counts_and_progress_for_fake_trials():
    def t(state, value=None, number=0, **attrs):
        return SimpleNamespace(state=state, values=None if value is None else [value], number=number,
                               user_attrs=attrs)

    trials = [t(TrialState.COMPLETE, 0.8, 0), t(TrialState.PRUNED, number=1), t(TrialState.PRUNED, number=2,
              infeasible="too big"), t(TrialState.COMPLETE, 0.9, 3), t(TrialState.FAIL, number=4),
              t(TrialState.COMPLETE, 0.85, 5)]
    progress = SearchProgress(total=6)
    assert "0/6 done" in progress.line() and "no best yet" in progress.line()
    for trial in trials:
        progress(None, trial)
    assert progress.done == 6
    assert progress.counts == {"complete": 3, "pruned": 1, "infeasible": 1, "failed": 1}
    assert (progress.best, progress.best_trial) == (0.9, 3)
    assert progress.line() == ("trials 6/6 done: 3 complete, 1 pruned, 1 infeasible, 1 failed; "
                               "best val 0.9000 (trial 3)")
    assert trial_counts(trials) == {"total": 6, "complete": 3, "pruned": 1, "infeasible": 1, "failed": 1,
                                    "running": 0, "waiting": 0}


def test_run_search_passes_callbacks_to_the_trials(tmp_path, monkeypatch):
    progress = SearchProgress()
    vals = iter([0.5, 0.7])
    monkeypatch.setattr(search, "fit_only", lambda *a, **k: SimpleNamespace(val_accuracy=next(vals), history=[{}]))
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    run_search("mnist", 1500, space, "cb", 2, "random", "none", storage=tmp_path / "cb.log", splits=_fake_splits(),
               log=lambda line: None, seed=0, callbacks=(progress,))
    assert progress.done == 2 and progress.best == 0.7


def test_progress_observes_trials_read_from_the_storage():
    def t(state, value=None, number=0, **attrs):
        return SimpleNamespace(state=state, values=None if value is None else [value], number=number,
                               user_attrs=attrs)

    progress = SearchProgress(total=4)
    progress.observe([t(TrialState.COMPLETE, 0.7, 0), t(TrialState.RUNNING, number=1),
                      t(TrialState.PRUNED, number=2, infeasible="x")])
    assert progress.line() == ("trials 2/4 done: 1 complete, 0 pruned, 1 infeasible, 0 failed, 1 running; "
                               "best val 0.7000 (trial 0)")


def test_the_parent_of_several_workers_polls_this_commands_trials(tmp_path, monkeypatch):
    """`_join` with a stand-in worker process: the poll sees only trials the command added."""
    journal = _study(tmp_path, monkeypatch, n_trials=1)
    job = search.SearchJob("mnist", 1500, None, "s", str(journal))
    study = optuna.load_study(study_name="s", storage=journal_storage(journal))
    monkeypatch.setattr(search, "POLL_INTERVAL_S", 0.01)
    ticks, seen = iter([True, True, False]), []

    class Worker:
        def is_alive(self):
            return next(ticks)

        def join(self, timeout=None):
            study.add_trial(create_trial(state=TrialState.FAIL, params={}, distributions={}))

    search._join([Worker()], job, lambda trials: seen.append(len(trials)))
    assert seen == [1, 2]
