"""Bad input is refused up front, in tinycnn's own words, saying what is accepted."""
import itertools
import math
import re
from pathlib import Path

import pytest
import torch

import tinycnn.checkpoint as checkpoint
from tinycnn import build, count_params, fit_width, get_phase, load_model, save_model
from tinycnn.build import TinyCNN
from tinycnn.budget import check_budget, phase_cost
from tinycnn.datasets import dataset_info
from tinycnn.errors import BudgetError, CheckpointError, RecipeError, SpecError
from tinycnn.phases_table import phase_rows
from tinycnn.recipe import Recipe, apply_overrides, load_recipe
from tinycnn.spec import PhaseSpec, parse_arch, parse_block


# 1. squeeze-excite wider than its block

@pytest.mark.parametrize("text", ["sep_k9_c4_se99", "conv_k3_c8_se9", "pw_c2_se3"])
def test_se_wider_than_its_block_is_refused(text):
    with pytest.raises(SpecError, match=rf"block '{text}'.*must be 1\.\.\d+"):
        parse_block(text)


def test_se_up_to_the_block_width_is_accepted():
    assert parse_block("sep_k3_c4_se4").se == 4 and parse_block("sep_k3_c4_se1").se == 1
    # scaling never rounds a bottleneck past its (rounded) block width
    spec = PhaseSpec.from_arch("x", "mnist", "conv_k3_c8_se8 gap")
    for width in (0.3, 0.7, 1.4, 2.3):
        for multiple in (1, 4, 8):
            block = spec.scaled(width, multiple).blocks[0]
            assert 1 <= block.se <= block.out


# 2. downsampling below what the torch ops accept

def _unchecked(dataset: str, arch: str) -> PhaseSpec:
    """A PhaseSpec that skips validation, to run what the check would refuse."""
    blocks, head = parse_arch(arch)
    spec = object.__new__(PhaseSpec)
    for name, value in dict(name="x", dataset=dataset, blocks=blocks, change="", head=head, meta={}).items():
        object.__setattr__(spec, name, value)
    return spec


def _forward_runs(spec: PhaseSpec) -> bool:
    info = dataset_info(spec.dataset)
    model = TinyCNN(spec).eval()
    try:
        with torch.no_grad():
            return model(torch.rand(1, info.channels, info.size, info.size)).shape == (1, info.num_classes)
    except RuntimeError:
        return False


def test_too_much_downsampling_is_refused_when_the_spec_is_built():
    arch = "conv_k3_c8 max max max max max gap"  # 28 -> 14 -> 7 -> 3 -> 1 -> 0
    with pytest.raises(SpecError, match=r"block 6 of 6 \('max'\) receives 1x1 pixels.*needs at least 2x2"):
        PhaseSpec.from_arch("x", "mnist", arch)
    assert not _forward_runs(_unchecked("mnist", arch))
    # a blur at 2x2 would crash in its reflect padding (CIFAR: 32 -> 16 -> 8 -> 4 -> 2)
    with pytest.raises(SpecError, match=r"block 6 of 6 \('blur'\) receives 2x2 pixels.*needs at least 3x3"):
        PhaseSpec.from_arch("x", "cifar10", "conv_k3_c8 max max max max blur gap")


@pytest.mark.parametrize("h", [1, 2, 3, 4, 5, 6, 7, 8, 13, 14, 27, 28, 31, 32])
def test_size_formula_matches_the_built_modules(h):
    from tinycnn.build import _build_block
    from tinycnn.spec import min_input_size, output_size

    texts = ["max", "blur", "drop_p10", "pw_c3", "pw_c3_se2", "conv_k1_c3_s2", "conv_k3_c3", "conv_k3_c3_s2",
             "conv_k5_c3_s2", "conv_k7_c3", "dw_k3_c3_s2", "dw_k5_c3_se2", "sep_k3_c3_s2", "sep_k7_c3_s2"]
    for text in texts:
        block = parse_block(text)
        layer, _ = _build_block(block, 2)
        try:
            got = layer.eval()(torch.rand(1, 2, h, h)).shape[-2:]
        except RuntimeError:
            got = None
        if h < min_input_size(block):
            assert got is None, f"{text} runs at {h}x{h} but is refused"
        else:
            assert got == (output_size(block, h),) * 2, text


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_the_check_accepts_exactly_the_layouts_that_run(dataset):
    downsamplers = ["max", "blur", "conv_k3_c2_s2"]
    for n in (4, 5, 6):
        for layout in itertools.product(downsamplers, repeat=n):
            arch = " ".join(["pw_c2", *layout, "gap"])
            try:
                spec = PhaseSpec.from_arch("x", dataset, arch)
            except SpecError:
                assert not _forward_runs(_unchecked(dataset, arch)), f"refused but runs: {arch}"
            else:
                assert _forward_runs(spec), f"accepted but crashes: {arch}"


# 3. budgets must be positive

@pytest.mark.parametrize("budget", [-5, 0, -1])
def test_budgets_must_be_positive(budget):
    final = get_phase("mnist", "final")
    msg = f"budget must be a positive number of parameters, got {budget}"
    for call in (lambda: phase_cost(final, budget=budget), lambda: phase_rows("mnist", budget),
                 lambda: check_budget(final, budget), lambda: fit_width(final, budget)):
        with pytest.raises(BudgetError, match=msg):
            call()


# 4. a budget larger than the phase can use is not silently capped

def test_fit_width_refuses_a_budget_it_cannot_reach():
    final = get_phase("mnist", "final")
    widest = count_params(build(final.scaled(8.0)))
    with pytest.raises(BudgetError, match=rf"larger than phase 'sam' \(mnist\) can use at up to x8\.0 "
                                          rf"\({widest:,} params there\).*bigger max_width or another phase"):
        fit_width(final, 1_000_000_000)
    with pytest.raises(BudgetError, match=r"up to x2\.0"):
        fit_width(final, widest, max_width=2.0)
    fit = fit_width(final, widest, max_width=9.0)  # room to grow: a real fit again
    assert fit.width >= 8.0 and fit.params <= widest


# 5. a model file naming a huge architecture is refused before anything real is built

@pytest.fixture
def meta_builds_only(monkeypatch):
    """Fail the test if load_model builds a real (not meta) model."""
    real_build = checkpoint.build

    def build_on_meta_only(spec):
        assert torch.get_default_device().type == "meta", "load_model built a real model"
        return real_build(spec)

    monkeypatch.setattr(checkpoint, "build", build_on_meta_only)


def _model_file(path: Path, arch: str, state_dict: dict) -> Path:
    spec = {"name": "x", "dataset": "mnist", "arch": arch, "change": ""}
    torch.save({"format": "tinycnn-model", "version": 1, "spec": spec, "state_dict": state_dict, "info": {}}, path)
    return path


def test_a_huge_recorded_spec_is_refused_without_allocating(tmp_path, meta_builds_only):
    path = _model_file(tmp_path / "m.pt", "conv_k3_c4000 conv_k3_c4000 gap", {})
    assert path.stat().st_size < 4_000
    limit = r"144,\d{3},\d{3} parameters; tinycnn loads models of at most 50,000,000"
    with pytest.raises(CheckpointError, match=limit):
        load_model(path)


def test_weights_not_matching_the_spec_are_listed_in_our_words(tmp_path, meta_builds_only):
    final = get_phase("mnist", "final")
    state = build(final.scaled(1.5)).state_dict()
    with pytest.raises(CheckpointError, match=r"do not match the recorded spec.*has shape \[\d+, 1, 3, 3\], "
                                              r"the spec needs \[8, 1, 3, 3\].*more\)") as e:
        load_model(_model_file(tmp_path / "w.pt", final.arch, state))
    assert "size mismatch" not in str(e.value)  # torch's load_state_dict text
    state = {k: v for k, v in build(final).state_dict().items() if not k.startswith("head.")}
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"head\.fc\.weight missing; head\.fc\.bias missing; "
                                              r"extra\.weight not in the spec"):
        load_model(_model_file(tmp_path / "k.pt", final.arch, state))


def test_a_matching_file_still_loads(tmp_path):
    model = build(get_phase("mnist", "final")).eval()
    save_model(model, tmp_path / "m.pt")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(load_model(tmp_path / "m.pt")(x), model(x))


# 6. load errors never pass on torch's advice to disable weights_only

class _RunsCode:
    def __reduce__(self):
        return (open, ("RAN_CODE", "w"))  # creates a file if the pickle's code ever runs


def test_foreign_pickle_message_is_ours_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "tinycnn-model", "x": _RunsCode()}, "evil.pt")
    assert not (tmp_path / "RAN_CODE").exists()
    with pytest.raises(CheckpointError, match="refuses to load for safety") as e:
        load_model("evil.pt")
    msg = str(e.value)
    assert "weights_only" not in msg and "will likely succeed" not in msg and "\n" not in msg
    assert "objects other than tensors and plain types" in msg
    assert e.value.__cause__ is not None  # chained, for debugging
    assert not (tmp_path / "RAN_CODE").exists()


def test_truncated_file_message_is_ours(tmp_path):
    save_model(build(get_phase("mnist", "final")), tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    for bad in (b"\x00garbage", data[: len(data) // 2]):
        (tmp_path / "t.pt").write_bytes(bad)
        with pytest.raises(CheckpointError, match="corrupt, truncated or not a tinycnn-model file") as e:
            load_model(tmp_path / "t.pt")
        msg = str(e.value)
        assert "weights_only" not in msg and "PytorchStreamReader" not in msg and e.value.__cause__ is not None


# 7. the CLI audit: inputs that gave a traceback, a silent wrong result or an unclear line


@pytest.mark.parametrize("override", ["lr=inf", "weight_decay=-inf", "onecycle_div=inf"])
def test_infinite_recipe_values_are_refused(override):
    """`lr > 0` and `weight_decay >= 0` let inf through; it trained garbage without a word."""
    name, value = override.split("=")
    with pytest.raises(RecipeError, match=rf"{name} = {value} must be a finite number"):
        apply_overrides(Recipe(), [override])


@pytest.mark.parametrize("line,message", [
    ('epochs = "ten"', "epochs = 'ten' must be an integer"),  # was: '>=' not supported between 'str' and 'int'
    ("epochs = 2.5", "epochs = 2.5 must be an integer"),  # was accepted
    ('flip = "no"', "flip = 'no' must be true or false"),  # was accepted, and "no" is truthy
    ('lr = "0.1"', "lr = '0.1' must be a number"),
    ('step_milestones = "abc"', "step_milestones = 'abc' must be a list of numbers"),  # was a ValueError traceback
    ("step_milestones = 5", "step_milestones = 5 must be a list of numbers"),  # was a TypeError traceback
])
def test_recipe_file_values_must_have_their_field_type(tmp_path, line, message):
    path = tmp_path / "r.toml"
    path.write_text(line + "\n")
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe("mnist", str(path))
    path.write_text("lr = 1\nepochs = 3\nstep_milestones = [0.5, 1e-1]\n")  # an int for a float field is fine
    assert load_recipe("mnist", str(path)).step_milestones == (0.5, 0.1)


def test_a_recipe_path_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(RecipeError, match="recipe file .* not found \\(it is a folder\\)"):  # was IsADirectoryError
        load_recipe("mnist", str(tmp_path) + "/")


@pytest.mark.parametrize("step", [math.nan, 1e-9])
def test_fit_width_refuses_a_nan_or_too_fine_step(step):
    with pytest.raises(SpecError, match=r"<= step <= max_width, got step="):  # nan: a ValueError traceback
        fit_width(get_phase("mnist", "final"), 1000, step=step)


def test_over_budget_custom_arch_is_not_sent_to_fit_phase_custom():
    with pytest.raises(BudgetError) as e:
        check_budget(PhaseSpec.from_arch("custom", "mnist", "conv_k3_c8 gap"), 10)
    assert "--phase custom" not in str(e.value) and "narrow its blocks" in str(e.value)
    with pytest.raises(BudgetError, match=r"try `tinycnn fit mnist --phase paper --budget 1500`"):
        check_budget(get_phase("mnist", "paper"), 1500)


def test_a_folder_given_as_a_model_is_named_as_one(tmp_path):
    with pytest.raises(CheckpointError, match=r"is a folder, not a tinycnn-model file written by tinycnn$"):
        load_model(tmp_path)
    save_model(build(get_phase("mnist", "final")), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=rf"; give {re.escape(str(tmp_path / 'model.pt'))}$"):
        load_model(tmp_path)


def _cli(capsys, *argv) -> str:
    from tinycnn.cli import main

    assert main([str(a) for a in argv]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err
    return err


def _refuse_to_run(monkeypatch, module, name):
    def fail(*a, **k):
        raise AssertionError(f"{name} started on bad input")
    monkeypatch.setattr(module, name, fail)


def test_ladder_and_ablate_refuse_empty_lists_and_negative_counts(tmp_path, monkeypatch, capsys):
    import tinycnn.studies as studies

    monkeypatch.setenv("TINYCNN_RESULTS", str(tmp_path))  # nothing reaches the committed results
    _refuse_to_run(monkeypatch, studies, "run_or_reuse")
    with pytest.raises(SpecError, match=r"--seeds and --final-seeds must be >= 0"):  # trained nothing, exit 0
        studies.run_ladder("mnist", seeds=-1, phases=["plain"])
    with pytest.raises(RecipeError, match="epochs must be >= 1"):  # --epochs 0 trained the recipe's 30
        studies.run_ablation("mnist", epochs=0, steps=["plain"], log=lambda _: None)
    assert not (tmp_path / "mnist" / "ablation.json").exists()
    _refuse_to_run(monkeypatch, studies, "run_ladder")
    _refuse_to_run(monkeypatch, studies, "run_ablation")
    assert "--phases is empty" in _cli(capsys, "ladder", "mnist", "--phases", "")  # was: the whole ladder
    assert "--steps is empty" in _cli(capsys, "ablate", "mnist", "--steps", " ")  # was: every step


def test_split_val_of_a_model_without_one_says_so(tmp_path, capsys):
    path = tmp_path / "model.pt"
    save_model(build(get_phase("mnist", "final")), path, info={"val_size": 0, "split_seed": 0})
    for command in ("eval", "robust"):  # robust has no --val-size, yet the line named it
        err = _cli(capsys, command, path, "--split", "val", "--threads", "1")
        assert f"{path} was trained without one (val_size = 0); use --split test" in err
    assert "got --val-size 0" in _cli(capsys, "eval", path, "--split", "val", "--val-size", "0")


def test_eval_refuses_a_negative_split_seed(tmp_path, capsys):
    path = tmp_path / "model.pt"
    save_model(build(get_phase("mnist", "final")), path, info={"val_size": 500, "split_seed": 0})
    err = _cli(capsys, "eval", path, "--split", "val", "--split-seed", "-1", "--threads", "1")
    assert "--split-seed must be >= 0" in err  # was: scored a split no run held out


def test_robust_refuses_a_sample_larger_than_the_split(tmp_path, monkeypatch, capsys, real_data_dir):
    import tinycnn.robust as robust

    _refuse_to_run(monkeypatch, robust, "robustness")  # it ran on all 10,000 and recorded "subset": 10001
    path = tmp_path / "model.pt"
    save_model(build(get_phase("mnist", "final")), path)
    err = _cli(capsys, "robust", path, "--n", "10001", "--data-dir", real_data_dir, "--threads", "1", "--save")
    assert "--n 10001 is more than the 10,000 images of the test split" in err
    assert not list(tmp_path.glob("robust*.json"))


def test_resume_of_a_finished_run_says_it_is_finished(tmp_path, capsys):
    (tmp_path / "model.pt").write_bytes(b"")
    (tmp_path / "metrics.json").write_text("{}")
    assert "holds a finished run (model.pt and metrics.json): nothing to resume" in _cli(
        capsys, "train", "--resume", tmp_path)  # was: "no file at .../checkpoint.pt"


def test_export_refuses_patch_rows_below_one_before_any_work(tmp_path, monkeypatch, capsys):
    import tinycnn.export as export

    _refuse_to_run(monkeypatch, export, "export_run")  # it exported ONNX and int8 first
    err = _cli(capsys, "export", tmp_path / "model.pt", "--format", "c", "--patch-rows", "0")
    assert "--patch-rows must be >= 1" in err


def test_search_report_refuses_top_below_one(tmp_path):
    pytest.importorskip("optuna")
    from tinycnn.search import SearchError
    from tinycnn.search_report import write_search_report

    for top in (0, -1):  # -1 silently left the best trial out: rows[:-1]
        with pytest.raises(SearchError, match=rf"--top must be >= 1 \(rows in the best-trials table\), got {top}"):
            write_search_report("s", tmp_path / "journal.log", tmp_path, top=top)


def test_a_storage_that_is_not_a_journal_is_refused_and_left_alone(tmp_path):
    pytest.importorskip("optuna")
    from tinycnn.search import SearchError, journal_storage, load_study

    notes = tmp_path / "notes.txt"
    for content in (b"hello\n", b"hello", b"\x80\x02binary"):
        notes.write_bytes(content)
        with pytest.raises(SearchError, match="is not an Optuna journal"):  # it appended, then a JSONDecodeError
            journal_storage(notes)
        with pytest.raises(SearchError, match="is not an Optuna journal"):
            load_study("s", notes)
        assert notes.read_bytes() == content
    journal_storage(tmp_path / "new.log")  # a new file, or an empty one, starts a journal
    (tmp_path / "empty.log").write_bytes(b"")
    journal_storage(tmp_path / "empty.log")


@pytest.mark.parametrize("seed", [-1, 2 ** 32])
def test_search_refuses_a_seed_numpy_cannot_take(tmp_path, monkeypatch, seed):
    pytest.importorskip("optuna")
    from tinycnn import search

    _refuse_to_run(monkeypatch, search, "fit_only")
    journal = tmp_path / "journal.log"
    with pytest.raises(search.SearchError, match=rf"sampler seed must be an integer from 0 to 4294967295, got {seed}"):
        search.run_search("mnist", 1500, None, "s", 1, "random", "none", storage=journal, seed=seed,
                          log=lambda _: None)  # was: numpy's ValueError traceback, after creating the study
    assert not journal.exists()
