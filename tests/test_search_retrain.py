"""tinycnn.search_retrain: `tinycnn search retrain STUDY`. Which trial the rule picks, which
trials are refused, and a real retrain of a tiny study's best trial (1 epoch on 64 random
images a split): runs, metrics.json commands, retrain.json, reuse, the README section, the CLI."""
from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")

import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from test_search_report import (
    _quiet,  # noqa: F401  (autouse: Optuna's experimental/future warnings)
    _study,
)

from tinycnn import cli, pipeline
from tinycnn.data import Split, Splits
from tinycnn.datasets import dataset_info
from tinycnn.ladders import get_phase
from tinycnn.report import incremental_markdown, retrained_markdown
from tinycnn.search import SearchError, best_table, journal_storage, run_search
from tinycnn.search_retrain import RetrainRequest, pick_trial, retrain

ARCH = "conv_k3_c4 max sep_k3_c8 gap"


def _memory_study(trials, directions=("maximize",)):
    """An in-memory study of hand-made trials: (state, values, params)."""
    study = optuna.create_study(directions=list(directions))
    study.set_user_attr("dataset", "mnist")
    dist = {"lr": FloatDistribution(0.05, 0.2, log=True)}
    for state, values, params in trials:
        attrs = {"arch": ARCH, "recipe_base": "default", "overrides": ["lr=0.1"], "params": params}
        study.add_trial(create_trial(state=state, values=values, params={"lr": 0.1}, distributions=dist,
                                     user_attrs=attrs))
    return study


def _random_splits(n=64):
    """Random MNIST-shaped train / val / test splits: a run on them takes a second."""
    g = torch.Generator().manual_seed(0)

    def split():
        return Split(torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g),
                     torch.randint(0, 10, (n,), generator=g))

    return Splits(dataset_info("mnist"), split(), split(), split())


# --- which trial ----------------------------------------------------------------------------

def test_the_rule_picks_the_highest_val_and_a_tie_goes_to_fewer_params():
    C = TrialState.COMPLETE
    study = _memory_study([(C, [0.90], 1000), (C, [0.95], 1450), (C, [0.95], 1300), (C, [0.95], 1400),
                           (TrialState.PRUNED, None, 100)])
    assert pick_trial(study)["trial"] == 2
    assert best_table(study)[0]["trial"] == 2  # the report's first row is the trial retrained
    assert pick_trial(study, 0)["trial"] == 0  # --trial: any complete trial


def test_a_trial_that_is_not_complete_is_refused_naming_the_accepted_ones():
    C = TrialState.COMPLETE
    study = _memory_study([(C, [0.9], 1000), (TrialState.PRUNED, None, 900), (C, [0.8], 800),
                           (TrialState.FAIL, None, 700)])
    with pytest.raises(SearchError, match=r"trial 1 .* is pruned, not complete; accepted: a complete trial \(0, 2\)"):
        pick_trial(study, 1)
    with pytest.raises(SearchError, match="trial 3 .* is fail"):
        pick_trial(study, 3)
    with pytest.raises(SearchError, match="no trial 9; its trials are numbered 0 to 3"):
        pick_trial(study, 9)
    with pytest.raises(SearchError, match="no complete trial"):
        pick_trial(_memory_study([(TrialState.PRUNED, None, 900)]))


def test_a_two_objective_study_needs_a_trial_number():
    C = TrialState.COMPLETE
    study = _memory_study([(C, [0.9, 1000], 1000), (C, [0.8, 500], 500)], directions=("maximize", "minimize"))
    with pytest.raises(SearchError, match=r"2 objectives.*--trial N.*Pareto front: 1, 0"):
        pick_trial(study)
    assert pick_trial(study, 1)["trial"] == 1


def test_a_pruned_trial_of_a_stored_study_is_refused_before_any_run(tmp_path, monkeypatch):
    journal = _study(tmp_path, monkeypatch, n_trials=2)  # trials 0-1 complete, 2 pruned, 3 infeasible, 4 failed
    out = tmp_path / "results"
    for trial, state in ((2, "pruned"), (3, "pruned \\(too big\\)"), (4, "fail")):
        with pytest.raises(SearchError, match=f"trial {trial} of study 's' is {state}"):
            retrain(RetrainRequest("s", trial, storage=str(journal), out_root=out))
    with pytest.raises(SearchError, match="--seeds must be distinct"):
        retrain(RetrainRequest("s", seeds=(0, 0), storage=str(journal), out_root=out))
    assert not out.exists()


# --- a real retrain -------------------------------------------------------------------------

def _counting_train(monkeypatch) -> list:
    """Record the run directory of every run that trains (a reused one does not)."""
    trained, real = [], pipeline._train

    def train(req, resume):
        trained.append(req.run_dir.name)
        return real(req, resume)

    monkeypatch.setattr(pipeline, "_train", train)
    return trained


def _check_command_reproduces(metrics: dict, run_dir) -> None:
    """metrics.json's command, parsed by `tinycnn train`, asks for this very run."""
    tokens = shlex.split(metrics["command"])
    assert tokens[:2] == ["tinycnn", "train"]
    req = cli._new_request(cli.build_parser().parse_args(tokens[1:]))
    assert req.spec.arch == metrics["arch"] and req.run_dir == run_dir
    assert req.recipe.to_dict() == metrics["recipe"] and req.recipe_name == metrics["recipe_name"]


def test_retrain_writes_ordinary_runs_and_retrain_json_then_reuses_them(tmp_path, monkeypatch, capsys):
    journal = _study(tmp_path, monkeypatch, n_trials=2)  # vals 0.80, 0.95: trial 1 is the best
    out, splits = tmp_path / "results", _random_splits()
    trained = _counting_train(monkeypatch)
    record = retrain(RetrainRequest("s", seeds=(0, 1), storage=str(journal), out_root=out, splits=splits),
                     log=lambda line: None)
    assert trained == ["seed0", "seed1"]
    base = out / "mnist" / "search" / "s" / "trial1"
    assert json.loads((base / "retrain.json").read_text()) == record
    row = best_table(optuna.load_study(study_name="s", storage=journal_storage(journal)))[0]
    assert record["trial"] == 1 and record["val_accuracy_in_study"] == 0.95 and record["seeds"] == [0, 1]
    assert {k: record[k] for k in ("arch", "recipe", "overrides", "params")} == \
        {k: row[k] for k in ("arch", "recipe", "overrides", "params")}
    assert "epochs=1" in record["overrides"]
    for seed, run in zip((0, 1), record["runs"]):
        m = json.loads((base / f"seed{seed}" / "metrics.json").read_text())
        assert (base / f"seed{seed}" / "model.pt").is_file() and m["seed"] == seed and m["arch"] == row["arch"]
        assert run["test_accuracy"] == m["test_accuracy"] and run["val_accuracy"] == m["val_accuracy"]
        assert run["command"] == m["command"] and not run["reused"]
        assert m["recipe"]["epochs"] == 1 and m["recipe"]["seed"] == seed
        _check_command_reproduces(m, base / f"seed{seed}")
    tests = [r["test_accuracy"] for r in record["runs"]]
    assert record["test_mean"] == pytest.approx(statistics.fmean(tests))
    assert record["test_sd"] == pytest.approx(statistics.stdev(tests))
    assert shlex.split(record["command"])[:7] == ["tinycnn", "search", "retrain", "s", "--trial", "1", "--seeds"]

    # the same command again: every seed is reused, nothing trains; a new seed trains alone
    model_time = (base / "seed0" / "model.pt").stat().st_mtime_ns
    assert cli.main(["search", "retrain", "s", "--seeds", "0", "1", "--storage", str(journal),
                     "--out-root", str(out), "--quiet"]) == 0
    assert trained == ["seed0", "seed1"] and (base / "seed0" / "model.pt").stat().st_mtime_ns == model_time
    printed = capsys.readouterr().out
    assert "reusing the finished run" in printed and "test accuracy" in printed and "over 2 seed(s)" in printed
    again = retrain(RetrainRequest("s", seeds=(0, 1, 2), storage=str(journal), out_root=out, splits=splits),
                    log=lambda line: None)
    assert trained == ["seed0", "seed1", "seed2"] and [r["reused"] for r in again["runs"]] == [True, True, False]
    assert again["runs"][:2] == [dict(r, reused=True) for r in record["runs"]]

    table = retrained_markdown(out)
    cells = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    assert cells[:4] == ["mnist", "`s`", "1", f"{record['params']:,}"] and cells[4] == "95.00%"
    assert cells[6] == "3" and cells[7] == f"`{again['command']}`" and "±" in cells[5]


def _fake_phase_runs(root, phase: str, tests: list[float]) -> None:
    """Finished runs of a ladder phase (its own recipe) with these test accuracies."""
    for seed, test in enumerate(tests):
        run = root / "mnist" / phase / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "model.pt").write_bytes(b"")
        (run / "metrics.json").write_text(json.dumps({"test_accuracy": test, "recipe_name": "default",
                                                      "recipe": {"val_size": 5000}, "seed": seed}))


def test_a_recipe_only_study_retrained_joins_the_incremental_table(tmp_path):
    """[arch] fixed = "sep": a real 2-trial search on random images, its best trial retrained
    (2 seeds), then the row beside the phase's own runs, with the gain in points."""
    space = tmp_path / "space.toml"
    space.write_text('[arch]\nfixed = "sep"\n[recipe]\nbase = "default"\nepochs = 1\nbatch_size = 64\n'
                     'crop_pad = 0\nchannels_last = false\nlr = {low = 0.05, high = 0.2, log = true}\n')
    journal, out, splits = tmp_path / "r" / "journal.log", tmp_path / "results", _random_splits()
    assert incremental_markdown(out).startswith("_No recipe-only study retrained yet")
    run_search("mnist", 2000, space, "r", 2, "random", "none", storage=journal, log=lambda line: None, seed=0,
               splits=Splits(splits.info, splits.train, splits.val, None))
    record = retrain(RetrainRequest("r", seeds=(0, 1), storage=str(journal), out_root=out, splits=splits),
                     log=lambda line: None)
    assert record["phase"] == "sep" and record["arch"] == get_phase("mnist", "sep").arch
    assert [run["val_size"] for run in record["runs"]] == [5000, 5000]  # the recipe's split (tests pass their own)
    _fake_phase_runs(out, "sep", [0.50, 0.70])
    (row,) = incremental_markdown(out).splitlines()[2:]
    cells = [c.strip() for c in row.strip("|").split("|")]
    searched = statistics.fmean(run["test_accuracy"] for run in record["runs"])
    assert cells[:5] == ["mnist", "`sep` (`default`)", f"{record['params']:,}", "60.00% ± 14.14% (2 seeds)", "55,000"]
    assert cells[5].startswith(f"`r`, {record['trial']}: `default` `epochs=1`") and "`lr=0." in cells[5]
    assert "(2 seeds)" in cells[6]
    assert cells[7] == "55,000" and cells[8] == f"{(searched - 0.60) * 100:+.2f} pt"


def test_the_readme_section_says_so_when_nothing_was_retrained(tmp_path):
    assert retrained_markdown(tmp_path) == "_No searched net retrained yet (`tinycnn search retrain STUDY`)._"


# --- the command line -----------------------------------------------------------------------

def test_cli_an_unknown_study_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "TINYCNN_SEARCH": str(tmp_path / "search"),
           "TINYCNN_RESULTS": str(tmp_path / "results")}
    r = subprocess.run([sys.executable, "-m", "tinycnn", "search", "retrain", "nosuch"], check=False,
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "no study journal" in r.stderr and "nosuch" in r.stderr
    assert not (tmp_path / "results").exists()


def test_cli_errors_name_what_is_accepted(tmp_path, monkeypatch, capsys):
    journal = _study(tmp_path, monkeypatch, n_trials=2)
    assert cli.main(["search", "retrain", "other", "--storage", str(journal)]) == 2
    assert "no study 'other'" in capsys.readouterr().err
    assert cli.main(["search", "retrain", "s", "--trial", "2", "--storage", str(journal)]) == 2
    assert "accepted: a complete trial (0, 1)" in " ".join(capsys.readouterr().err.split())
    args = cli.build_parser().parse_args(["search", "mnist", "--budget", "700"])  # `search DATASET` unchanged
    assert args.dataset == "mnist"
