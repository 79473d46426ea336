"""experiments/bench_time_to_accuracy.py end to end on a sliver of MNIST: every contestant's
record has the fields the README reads, a missing Composer environment is a note, not a crash,
and a second invocation merges into the file instead of replacing it."""
import json
import re
import subprocess
import sys
from pathlib import Path

from tinycnn.report import time_to_accuracy_markdown

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "experiments" / "bench_time_to_accuracy.py"
sys.path.insert(0, str(BENCH.parent))
from bench_time_to_accuracy import FAST_VARIANTS  # noqa: E402


def _bench(out: Path, *only: str) -> None:
    cmd = [sys.executable, str(BENCH), "--dataset", "mnist", "--epochs", "1", "--train-subset", "512",
           "--composer-python", str(out.parent / "no-such-venv" / "python"), "--out", str(out), "--only", *only]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)


def test_contestants_recorded_and_merged(real_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYCNN_DATA", str(real_data_dir))
    out = tmp_path / "time-to-accuracy-test.json"
    _bench(out, "tinycnn", "composer")
    _bench(out, "plain_loop", "fast_variants")
    d = json.loads(out.read_text())["datasets"]["mnist"]
    variants = {f"fast:{v}" for v in FAST_VARIANTS["mnist"]}
    assert set(d["contestants"]) == {"tinycnn", "composer", "plain_loop"} | variants
    assert "no Composer environment" in d["contestants"]["composer"]["skipped"]
    for name in ("tinycnn", "plain_loop"):
        c = d["contestants"][name]
        assert c["epochs"] == 1 and len(c["history"]) == 1 and 0.0 <= c["test_acc"] <= 1.0
        assert set(c["time_to"]) == {"0.985", "0.990", "0.992"} and c["train_time_s"] > 0
    plain = d["contestants"]["plain_loop"]
    assert plain["recipe_changes"]["sam_rho"] == [0.05, 0.0]  # no SAM in a hand-written loop
    for v, (changes, label) in FAST_VARIANTS["mnist"].items():  # each option against `fast`, and only it
        c = d["contestants"][f"fast:{v}"]
        assert c["recipe"] == "fast" and c["label"] == label and len(c["history"]) == 1
        assert {k: new for k, (old, new) in c["recipe_changes"].items()} == \
            {k: val for k, val in changes.items() if k != "epochs"}  # --epochs 1 overrides a variant's epochs

    table = time_to_accuracy_markdown(tmp_path)  # what SPEED.md shows, from this very file
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 3 + len(variants) and len({row.count("|") for row in rows}) == 1  # a skipped row keeps the columns
    assert "| Composer peer | skipped: no Composer environment" in table
    engine = next(row for row in rows if row.startswith("| tinycnn engine"))
    assert f"{d['contestants']['tinycnn']['test_acc']:.2%}" in engine
    assert re.search(r"sam_rho 0\.05 → 0\.0", table)
