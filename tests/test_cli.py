"""The CLI as a user runs it: a subprocess, exit codes, one-line errors without tracebacks."""
import json
import subprocess
import sys

import pytest

from tinycnn.spec import parse_arch


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tinycnn.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_phases_table_and_json():
    r = run("phases", "mnist")
    assert r.returncode == 0 and "blur" in r.stdout and "1,497" in r.stdout and "over by 190" in r.stdout
    rows = json.loads(run("phases", "cifar10", "--json").stdout)
    assert [row["phase"] for row in rows] == ["plain", "dw", "paper", "slim", "se", "blur", "long"]
    assert rows[-1]["within_budget"] and rows[-1]["params"] <= 140_000


@pytest.mark.parametrize("columns", [80, 160])
def test_phases_table_keeps_every_number_whole_in_any_terminal(columns):
    """At 80 columns rich used to squeeze the "change" column to nothing and cut numbers to "26,0…"."""
    import os
    env = {**os.environ, "COLUMNS": str(columns)}
    r = subprocess.run([sys.executable, "-m", "tinycnn.cli", "phases", "cifar10", "--ram-budget", "50000"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "…" not in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= columns
    rows = json.loads(run("phases", "cifar10", "--json").stdout)
    for row in rows:
        for number in (f"{row['params']:,}", f"{row['macs']:,}", f"{row['int8_weight_bytes']:,} B"):
            assert number in r.stdout, (row["phase"], number)
    words = " ".join(r.stdout.replace("│", " ").split())
    assert "every conv after the stem becomes depthwise-separable" in words


def test_python_dash_m_runs_the_cli_and_records_a_retypeable_command():
    r = subprocess.run([sys.executable, "-m", "tinycnn", "phases", "cifar10", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout)
    import tinycnn.results as runs
    argv = sys.argv
    try:
        sys.argv = ["/x/tinycnn/__main__.py", "train", "mnist"]
        assert runs.invoked_command() == "tinycnn train mnist"
        sys.argv = ["pytest"]
        assert runs.invoked_command() is None
    finally:
        sys.argv = argv


def test_fit_json():
    r = run("fit", "mnist", "--budget", "1000", "--json")
    assert r.returncode == 0
    out = json.loads(r.stdout)
    assert out["params"] <= 1000 and 0 < out["width"] < 1
    r = run("fit", "mnist", "--budget", "1500", "--multiple", "8", "--json")
    assert r.returncode == 0, r.stderr
    blocks, _ = parse_arch(json.loads(r.stdout)["arch"])
    widths = [b.out for b in blocks if b.out]
    assert widths and all(w % 8 == 0 for w in widths)


@pytest.mark.parametrize("args,message", [
    (("phases", "svhn"), "unknown dataset 'svhn'; accepted: mnist, cifar10"),
    (("fit", "mnist", "--phase", "huge", "--budget", "10"), "unknown phase 'huge'"),
    (("fit", "mnist", "--budget", "20"), "cannot fit"),
    (("fit", "mnist", "--budget", "1500", "--ram-budget", "100"), "B of activation RAM (planned int8 arena) even at "
                                                                  "its narrowest (x0.01), over the RAM budget of 100 B"),
    (("phases", "mnist", "--ram-budget", "-5"), "RAM budget must be a positive number of bytes, got -5"),
    (("prune", "does-not-exist.pt", "--budget", "700"), "does-not-exist.pt"),
    (("train", "mnist", "--phase", "paper", "--budget", "1500", "--recipe", "smoke"), "over the budget of 1,500 by 190"),
    (("train", "mnist", "--set", "bogus=1"), "unknown recipe field 'bogus'"),
    (("train", "mnist", "--arch", "conv_k3_c8 maxpool gap"), "unknown block"),
    (("eval", "does-not-exist.pt"), "no file at does-not-exist.pt"),
    (("train", "--resume", "no-such-run"), "no file at no-such-run/checkpoint.pt"),
])
def test_bad_input_is_one_clear_line(args, message):
    r = run(*args)
    assert r.returncode == 2
    assert message in " ".join(r.stderr.split())
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_train_then_eval(tmp_path, real_data_dir):
    out = tmp_path / "run"
    r = run("train", "mnist", "--recipe", "smoke", "--out", str(out), "--quiet",
            "--set", "val_size=500", "--set", "split_seed=3")
    assert r.returncode == 0, r.stderr
    assert (out / "model.pt").exists() and (out / "metrics.json").exists() and (out / "train.log").exists()
    again = run("train", "mnist", "--recipe", "smoke", "--out", str(out), "--quiet")
    assert again.returncode == 2 and "already holds a finished run" in again.stderr
    r = run("eval", str(out / "model.pt"), "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["n"] == 10000 and len(result["confusion"]) == 10
    assert sum(map(sum, result["confusion"])) == 10000
    # --split val scores the run's own held-out images (val_size 500, split_seed 3 from its
    # metrics.json), not the default 5,000 of split_seed 0, most of which it trained on.
    val = json.loads(run("eval", str(out / "model.pt"), "--split", "val", "--json").stdout)
    metrics = json.loads((out / "metrics.json").read_text())
    assert val["n"] == 500 and val["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    assert run("eval", str(out / "model.pt"), "--dataset", "cifar10").returncode == 2
