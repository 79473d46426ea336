"""Ladder, ablation and report on tiny settings, in a temporary results folder."""
import json
from pathlib import Path

import pytest

from tinycnn.errors import CheckpointError
from tinycnn import build, count_params, get_phase
from tinycnn.figures import write_figures
from tinycnn.pipeline import RunRequest, run_or_reuse
from tinycnn.studies import ablation_steps, run_ablation, run_ladder, with_blurpool, without_se_and_blur
from tinycnn.report import results_markdown, summarize, write_report

REPO = Path(__file__).resolve().parents[1]
TINY = ["epochs=1", "train_subset=256", "val_size=200", "batch_size=64"]


@pytest.fixture
def results(tmp_path, monkeypatch, real_data_dir):
    monkeypatch.setenv("TINYCNN_RESULTS", str(tmp_path))
    return tmp_path


def test_with_blurpool_keeps_params():
    slim = get_phase("mnist", "slim")
    blurred = with_blurpool(slim)
    assert "max" not in blurred.arch.split() and blurred.arch.count("blur") == 2
    assert count_params(build(blurred)) == count_params(build(slim))


def test_ablation_steps_are_cumulative_and_end_at_the_final():
    steps = ablation_steps("cifar10")
    names = [s[0] for s in steps]
    assert names == ["plain", "clr", "crop", "ls", "cutout", "mixup", "blurpool", "se", "swa", "sam", "kd"]
    for (_, _, _, before), (_, _, _, after) in zip(steps, steps[1:]):
        assert after[:len(before)] == before  # each step keeps everything before it
    assert steps[0][2] == get_phase("cifar10", "slim") and steps[-1][2] == get_phase("cifar10", "final")


def test_mnist_ablation_starts_from_its_final_without_se_and_blur():
    final = get_phase("mnist", "final")
    steps = {name: spec for name, _, spec, _ in ablation_steps("mnist")}
    base = without_se_and_blur(final)
    assert steps["plain"] == base and "_se" not in base.arch and "blur" not in base.arch.split()
    # BlurPool then SE turn the base back into the final, so each step adds only its technique
    assert steps["blurpool"].arch == final.arch.replace("_se2", "") and steps["se"] == final
    assert count_params(build(steps["blurpool"])) == count_params(build(base)) < count_params(build(final))


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_committed_ablation_matches_the_declared_plan(dataset):
    """The README's ablation numbers must come from the steps the code declares today."""
    saved = json.loads((REPO / "experiments/results" / dataset / "ablation.json").read_text())
    declared = ablation_steps(dataset)
    assert [r["step"] for r in saved["steps"]] == [name for name, *_ in declared]
    for row, (name, adds, spec, changes) in zip(saved["steps"], declared):
        assert row["arch"] == spec.arch, name
        assert row["adds"] == adds, name
        assert row["overrides"][:len(changes)] == changes, name


@pytest.mark.slow
def test_ladder_then_report_and_figures(results):
    run_ladder("mnist", overrides=TINY, seeds=1, final_seeds=2, phases=["blur", "deep", "sam"], log=lambda s: None)
    rows = summarize("mnist")
    assert [r["phase"] for r in rows] == ["blur", "deep", "sam"]
    assert rows[1]["seeds"] == [0] and rows[2]["seeds"] == [0, 1] and rows[2]["std"] >= 0  # the final: 2 seeds
    assert (results / "mnist/sam/seed1/model.pt").exists()
    # each phase trains with its own recipe: `sam` differs from `deep` only by SAM
    deep_m, sam_m = (json.loads((results / f"mnist/{p}/seed0/metrics.json").read_text()) for p in ("deep", "sam"))
    assert deep_m["recipe"]["sam_rho"] == 0.0 and sam_m["recipe"]["sam_rho"] == 0.05
    assert sam_m["recipe_name"] == "sam" and sam_m["arch"] == deep_m["arch"]
    md = results_markdown("mnist")
    assert "`sam`" in md and "2 seeds" in md and "tinycnn train mnist --phase sam --recipe sam" in md
    report = write_report("mnist")
    assert report.exists() and json.loads(report.with_suffix(".json").read_text())[0]["phase"] == "blur"
    text = report.read_text()
    assert "## Candidates and time to accuracy" in text
    assert "sam (final phase, sam recipe)" in text and "deep (ladder phase, default recipe)" in text
    figs = {p.name for p in write_figures("mnist")}
    assert {"params_per_phase.png", "accuracy_vs_params.png", "confusion_final.png"} <= figs

    # re-running reuses finished runs instead of training again
    before = (results / "mnist/deep/seed0/metrics.json").stat().st_mtime
    run_ladder("mnist", overrides=TINY, seeds=1, final_seeds=1, phases=["deep"], log=lambda s: None)
    assert (results / "mnist/deep/seed0/metrics.json").stat().st_mtime == before
    # ... but never a finished run of another architecture
    from tinycnn.recipe import load_recipe
    with pytest.raises(CheckpointError, match="holds a finished run of `conv_k3_c8"):
        run_or_reuse(RunRequest(get_phase("mnist", "plain"), load_recipe("mnist", "default", TINY),
                                results / "mnist/deep/seed0"))
    # ... nor one of the same network trained with another recipe (`sam` is `deep` + SAM)
    with pytest.raises(CheckpointError, match="recipe 'sam', not 'default'"):
        run_or_reuse(RunRequest(get_phase("mnist", "deep"), load_recipe("mnist", "default", TINY),
                                results / "mnist/sam/seed0", recipe_name="default"))

    # the KD step of the ablation finds the ladder's `blur` model (the phase before the final) as its teacher
    out = run_ablation("mnist", epochs=1, extra=TINY[1:], steps=["plain", "blurpool", "kd"], log=lambda s: None)
    assert [s["step"] for s in out["steps"]] == ["plain", "blurpool", "kd"]
    saved = json.loads((results / "mnist/ablation.json").read_text())
    assert saved["steps"][2]["overrides"][-len(TINY[1:]):] == TINY[1:]
    kd_metrics = json.loads((results / "mnist/ablation/kd/metrics.json").read_text())
    assert kd_metrics["teacher"].endswith("mnist/blur/seed0/model.pt")
    assert "ablation.png" in {p.name for p in write_figures("mnist")}
    # re-running reuses the finished KD step without loading its teacher, which may be gone
    (results / "mnist/blur/seed0/model.pt").rename(results / "teacher.pt")
    again = run_ablation("mnist", epochs=1, extra=TINY[1:], steps=["kd"], log=lambda s: None)
    assert again["steps"][2]["test_accuracy"] == out["steps"][2]["test_accuracy"]
    (results / "teacher.pt").rename(results / "mnist/blur/seed0/model.pt")

    # a teacher can also be named by its ladder phase
    from tinycnn.pipeline import resolve_teacher_path
    assert resolve_teacher_path(get_phase("mnist", "final"), "blur") == results / "mnist/blur/seed0/model.pt"
    with pytest.raises(CheckpointError, match="tinycnn ladder mnist --phases dw"):
        resolve_teacher_path(get_phase("mnist", "final"), "dw")


def test_bench_markdown_renders_every_measurement(tmp_path):
    from tinycnn.report import bench_markdown

    (tmp_path / "bench-cpu.json").write_text(json.dumps({
        "device": "cpu (x86_64, 2 threads)", "torch": "2.14.1", "threads": 2, "images_per_epoch": 2048,
        "phases": {"mnist": {"plain": 900.0, "sep": 1200.0, "blur": 1400.0}, "cifar10": {"plain": 300.0, "blur": 500.0}},
        "augment": {"mnist": {"crop": {"tensor": 90000.0, "kornia": 20000.0}}},
        "final_train": {"mnist": {"no SAM": 1400.0, "SAM rho=0.05": 700.0}},
    }))
    md = bench_markdown(tmp_path)
    assert "| dataset | plain | sep | blur |" in md
    assert "| mnist | 900 | 1,200 | 1,400 |" in md and "| cifar10 | 300 |  | 500 |" in md  # no `sep` phase there
    assert "| mnist | crop | 90,000 | 20,000 |" in md
    assert "| mnist | 1,400 | 700 |" in md


def test_compile_markdown_gives_every_configuration_its_ratio_to_eager(tmp_path):
    from tinycnn.report import compile_markdown

    assert "Not measured yet (`python experiments/bench_compile.py`)" in compile_markdown(tmp_path)
    configs = {"eager, NCHW": {"first_epoch_s": 2.0, "images_per_s": 1000.0, "wall_s": 6.0},
               "compiled, channels_last": {"first_epoch_s": 61.5, "images_per_s": 1500.0, "wall_s": 70.0}}
    (tmp_path / "compile-cpu-1thread.json").write_text(json.dumps({
        "device": "cpu (x86_64, 1 thread)", "torch": "2.14.1", "threads": 1, "images_per_epoch": 4096, "epochs": 3,
        "datasets": {"mnist": {"phase": "sam", "recipe": "sam", "batch_size": 64, "sam_rho": 0.05,
                               "configurations": configs,
                               "speedup_over_eager_nchw": {"eager, NCHW": 1.0, "compiled, channels_last": 1.5}}}}))
    md = compile_markdown(tmp_path)
    assert "| mnist `sam` (`sam`, 64) | eager, NCHW | 1,000 | 1.00x | 2.0 |" in md
    assert "| mnist `sam` (`sam`, 64) | compiled, channels_last | 1,500 | 1.50x | 61.5 |" in md


def test_tta_markdown_shows_each_runs_gain(tmp_path):
    from tinycnn.report import tta_markdown

    (tmp_path / "tta-cpu.json").write_text(json.dumps({
        "device": "cpu (x86_64, 1 thread)", "torch": "2.14.1", "mean_gain_points": 0.9,
        "runs": {"experiments/results/cifar10/long/seed0": {"val_images": 5000, "val_acc": 0.9078,
                 "val_acc_tta": 0.9168, "gain_points": 0.9, "eval_s": 23.8, "eval_s_tta": 47.0}}}))
    md = tta_markdown(tmp_path)
    assert "mean gain +0.90 points" in md
    assert "| `experiments/results/cifar10/long/seed0` | 5,000 | 90.78% | 91.68% | +0.90 | 23.8 | 47.0 |" in md


def test_candidates_table_shows_val_and_time_to_paper_accuracy(tmp_path):
    from tinycnn.report import candidates_markdown

    def write_run(rel, val_curve, device):
        d = tmp_path / "cifar10" / rel
        d.mkdir(parents=True)
        (d / "model.pt").write_bytes(b"x")
        history = [{"epoch": i + 1, "val_acc": v, "train_time_s": 100.0 * (i + 1)} for i, v in enumerate(val_curve)]
        (d / "metrics.json").write_text(json.dumps({
            "params": 1000, "arch": "conv_k3_c8 gap", "recipe": {"epochs": len(val_curve), "batch_size": 128},
            "val_accuracy": val_curve[-1],
            "history": history, "device": device, "command": "tinycnn train cifar10 --recipe fast"}))

    write_run("recipes/fast/seed0", [0.80, 0.861, 0.85, 0.88], "cpu (x86_64, 2 threads)")
    write_run("recipes/fast/seed1", [0.80, 0.85, 0.86], "NVIDIA H100 80GB HBM3")
    write_run("search/wide/seed0", [0.87], "cpu (x86_64, 1 threads)")
    write_run("search/wide/seed1", [0.85], "cpu (x86_64, 1 threads)")
    md = candidates_markdown("cifar10", tmp_path)
    row = next(line for line in md.splitlines() if line.startswith("| recipes/fast"))
    assert "87.00% ± 1.41%" in row  # val mean ± std of the two seeds; test accuracy is never shown
    assert "ep 2, 200 s, CPU 2 thr; not reached" in row  # first epoch >= 86.01%, not the best one
    wide = next(line for line in md.splitlines() if line.startswith("| search/wide"))
    assert "86.00% ± 1.41%" in wide and "| 2 |" in wide  # an architecture candidate with two seeds


def test_teacher_is_recorded_relative_to_the_repo_and_found_from_any_cwd(tmp_path, monkeypatch):
    from tinycnn.recipe import load_recipe
    from tinycnn.pipeline import attach_teacher, resolve_teacher_path
    from tinycnn.results import REPO_ROOT

    monkeypatch.delenv("TINYCNN_RESULTS", raising=False)  # the committed ladder's `se` model teaches
    monkeypatch.chdir(tmp_path)
    final = get_phase("mnist", "final")
    recipe, teacher = attach_teacher(final, load_recipe("mnist", "default", ["kd_teacher=se"]))
    assert recipe.kd_teacher == "experiments/results/mnist/se/seed0/model.pt"
    assert count_params(teacher) == count_params(build(get_phase("mnist", "se")))
    assert resolve_teacher_path(final, recipe.kd_teacher) == REPO_ROOT / recipe.kd_teacher


def test_display_command_names_the_phase_a_recorded_final_meant():
    from tinycnn.report import display_command
    recorded = "/x/tinycnn/__main__.py train mnist --phase final --seed 0 --out experiments/results/final/seed0"
    assert display_command(recorded, "blur") == \
        "tinycnn train mnist --phase blur --seed 0 --out experiments/results/final/seed0"
    assert display_command("tinycnn train mnist --phase deep", "deep") == "tinycnn train mnist --phase deep"


def test_recorded_commands_quote_an_arch_string_so_it_pastes_back():
    import shlex
    from tinycnn.report import display_command
    from tinycnn.results import as_user_command
    argv = ["/x/tinycnn/__main__.py", "train", "mnist", "--arch", "conv_k3_c8 max gap", "--seed", "0"]
    recorded = as_user_command(argv)
    assert shlex.split(recorded)[1:] == argv[1:]
    assert display_command(recorded) == recorded
    # commands recorded before quoting still display unchanged
    assert display_command("tinycnn train mnist --phase deep --seed 0") == "tinycnn train mnist --phase deep --seed 0"
