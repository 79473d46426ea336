"""What a new user hits first (issue #20): finding the data offline, figures in notebooks,
and flip TTA on digits."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tinycnn
from tinycnn import data
from tinycnn.data import Split
from tinycnn.errors import DataError, SpecError
from tinycnn.evaluate import evaluate, predict_logits


@pytest.fixture
def places(tmp_path, monkeypatch):
    """A fake HOME, no $TINYCNN_DATA and a fake shared folder: (env, home cache, shared)."""
    home, env, shared = tmp_path / "home", tmp_path / "env", tmp_path / "shared" / "data"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("TINYCNN_DATA", raising=False)
    monkeypatch.setattr(data, "shared_data_dir", lambda: shared)
    return env, home / ".cache" / "tinycnn", shared


def _put(folder: Path, name: str = "mnist") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.npz").write_bytes(b"")
    return folder / f"{name}.npz"


def test_search_order_env_then_cache_then_shared(places, monkeypatch):
    env, cache, shared = places
    assert data.find_dataset_file("mnist") is None  # nothing anywhere yet
    in_shared = _put(shared)
    assert data.find_dataset_file("mnist") == in_shared
    in_cache = _put(cache)
    assert data.find_dataset_file("mnist") == in_cache
    monkeypatch.setenv("TINYCNN_DATA", str(env))
    assert data.find_dataset_file("mnist") == in_cache  # a $TINYCNN_DATA without the file falls through
    in_env = _put(env)
    assert data.find_dataset_file("mnist") == in_env
    assert data.find_dataset_file("cifar10") is None
    assert data.search_dirs() == [env, cache, shared]


def test_explicit_data_dir_is_used_alone(places, tmp_path):
    env, cache, shared = places
    _put(cache), _put(shared)
    assert data.find_dataset_file("mnist", tmp_path / "mine") is None
    with pytest.raises(DataError, match=f"not found at {tmp_path / 'mine' / 'mnist.npz'} and"):
        data.load_dataset("mnist", tmp_path / "mine", download=False)


def test_shared_folder_is_beside_the_repository():
    repo_root = Path(data.__file__).resolve().parents[1]
    assert data.shared_data_dir() == repo_root.parent / "shared" / "data"


def test_readme_command_finds_the_shared_data_offline(tmp_path, monkeypatch):
    """With no env var and an empty HOME, a checkout beside shared/data needs no download."""
    if not (data.shared_data_dir() / "mnist.npz").is_file():
        pytest.skip(f"no shared data folder at {data.shared_data_dir()}")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("TINYCNN_DATA", raising=False)
    ds = data.load_dataset("mnist", download=False)
    assert ds.train.x.shape == (60000, 1, 28, 28)
    assert not list(tmp_path.iterdir())


def _offline(monkeypatch):
    """torchvision as it fails offline: the raw folder is made, then the download raises."""
    import torchvision

    def fail(root, **kwargs):
        Path(root, "MNIST", "raw").mkdir(parents=True, exist_ok=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://a/, got:\n"
                           "<urlopen error [Errno -2] Name or service not known>\n")

    monkeypatch.setattr(torchvision.datasets, "MNIST", fail)


def test_failed_download_leaves_nothing_and_lists_every_place(places, monkeypatch, tmp_path):
    env, cache, shared = places
    _offline(monkeypatch)
    with pytest.raises(DataError) as e:
        data.load_dataset("mnist")
    msg = str(e.value)
    assert "\n" not in msg and "Name or service not known" in msg
    assert f"{cache / 'mnist.npz'}, {shared / 'mnist.npz'}" in msg
    assert f"in {cache}" in msg and "--data-dir / $TINYCNN_DATA" in msg
    assert not list((tmp_path / "home").iterdir())  # no ~/.cache, no ~/.cache/tinycnn/torchvision


def test_failed_download_into_data_dir_removes_only_what_it_made(monkeypatch, tmp_path):
    _offline(monkeypatch)
    with pytest.raises(DataError, match=f"not found at {tmp_path / 'new' / 'mnist.npz'} and"):
        data.load_dataset("mnist", tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "old" / "torchvision").mkdir(parents=True)  # an earlier partial download stays
    with pytest.raises(DataError):
        data.load_dataset("mnist", tmp_path / "old")
    assert (tmp_path / "old" / "torchvision").is_dir()


FIGURES_SCRIPT = """
import sys, matplotlib
from pathlib import Path
import tinycnn.figures as f
backend = {backend!r}
assert backend is None or matplotlib.get_backend().lower() == backend, matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules
written = f.write_figures("mnist", Path(sys.argv[1]))
assert {{p.name for p in written}} == {{"params_per_phase.png", "accuracy_vs_params.png"}}, written
assert all(p.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n" for p in written)
"""


@pytest.mark.parametrize("backend", ["svg", None])
def test_figures_keep_the_backend_and_save_headless(backend, tmp_path):
    """Importing tinycnn.figures must not replace a notebook's backend, and needs no display."""
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "DISPLAY", "WAYLAND_DISPLAY")}
    env.update({"OMP_NUM_THREADS": "1", **({"MPLBACKEND": backend} if backend else {})})
    r = subprocess.run([sys.executable, "-c", FIGURES_SCRIPT.format(backend=backend), str(tmp_path)],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def _images(n: int, channels: int, size: int) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g),
                 torch.zeros(n, dtype=torch.long))


def test_dataset_info_says_which_images_survive_a_mirror():
    assert not tinycnn.datasets.dataset_info("mnist").mirror_invariant
    assert tinycnn.datasets.dataset_info("cifar10").mirror_invariant


def test_tta_refused_on_digits():
    model, split = tinycnn.build(tinycnn.get_phase("mnist", "final")), _images(4, 1, 28)
    msg = "flips images left-right.*MNIST accepts no TTA; accepted: cifar10"
    with pytest.raises(SpecError, match=msg):
        evaluate(model, split, 10, tta=True)  # the dataset comes from model.spec
    with pytest.raises(SpecError, match=msg):
        predict_logits(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), split.x,
                       tta=True, dataset="mnist")
    assert evaluate(model, split, 10)["n"] == 4  # no TTA: as before


def test_tta_still_works_on_cifar10():
    model = tinycnn.build(tinycnn.get_phase("cifar10", "final"))
    result = evaluate(model, _images(4, 3, 32), 10, tta=True)
    assert result["tta"] and result["n"] == 4


def test_cli_eval_tta_on_mnist_is_a_one_line_error(tmp_path, real_data_dir, capsys):
    from tinycnn.cli import main

    tinycnn.save_model(tinycnn.build(tinycnn.get_phase("mnist", "final")), tmp_path / "model.pt")
    assert main(["eval", str(tmp_path / "model.pt"), "--tta", "--data-dir", str(real_data_dir)]) == 2
    err = capsys.readouterr().err
    assert "MNIST accepts no TTA" in err and "Traceback" not in err


# --- issue #20 items 2, 3, 7-9, 12, 14: the CLI and the run directory ---------------------

REPO = Path(__file__).resolve().parents[1]
SAM_MODEL = REPO / "experiments/results/mnist/sam/seed0/model.pt"
TINY_RUN = ["--recipe", "smoke", "--set", "train_subset=256", "--set", "val_size=200", "--set", "epochs=1",
            "--quiet", "--threads", "1"]


def cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "tinycnn", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args,message", [
    (("train", "mnist", "--arch", ""), "--arch is empty"),
    (("train", "mnist", "--arch", "  "), "--arch is empty"),
    (("train", "mnist", "--set", "cutout=-3"), "crop_pad and cutout must be >= 0"),
    (("train", "mnist", "--set", "eval_batch_size=0"), "eval_batch_size must be >= 1"),
    (("train", "mnist", "--set", "mix_prob=2"), "mix_prob must be a probability"),
    (("train", "mnist", "--budget", "-1"), "budget must be a positive number of parameters"),
    (("phases", "mnist", "--budget", "-5"), "budget must be a positive number of parameters"),
    (("fit", "mnist", "--budget", "1000000000"), "larger than phase"),
    (("train", "mnist", "--device", "foo"), "unknown device 'foo'; accepted here: auto, cpu"),
    (("train", "mnist", "--arch", "sep_k9_c4_se99 gap"), "squeeze-excite bottleneck se99"),
    (("train", "mnist", "--arch", "conv_k3_c8 max max max max max gap"), "downsamples 28x28"),
    (("train", "mnist", "--threads", "0"), "--threads must be >= 1"),
    (("ablate", "mnist", "--steps", "foo"), "unknown ablation step(s) foo for mnist; accepted: plain"),
])
def test_nonsense_is_refused_in_one_line(args, message):
    r = cli(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in " ".join(r.stderr.split()) and "Traceback" not in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line():
    r = cli("train", "mnist", "--device", "cuda")
    assert r.returncode == 2 and "is not available" in r.stderr and "Traceback" not in r.stderr


def test_ablate_with_an_unknown_step_leaves_the_committed_file_alone():
    path = REPO / "experiments/results/mnist/ablation.json"
    before = path.read_bytes()
    assert cli("ablate", "mnist", "--steps", "foo").returncode == 2
    assert path.read_bytes() == before


def test_an_out_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = cli("train", "mnist", "--out", str(blocker / "run"), *TINY_RUN)
    assert r.returncode == 2 and "cannot write the run directory" in r.stderr and "Traceback" not in r.stderr


def test_eval_val_split_of_zero_images_is_refused():
    r = cli("eval", str(SAM_MODEL), "--split", "val", "--val-size", "0")
    assert r.returncode == 2 and "at least 1 image" in r.stderr


def test_help_describes_the_tool_not_the_module():
    out = cli("--help").stdout
    assert "tiny CNNs for MNIST" in out and "thin" not in out and "TinyCNNError" not in out


@pytest.mark.slow
def test_user_runs_go_to_runs_and_never_into_the_committed_results(tmp_path, real_data_dir):
    results = REPO / "experiments/results"
    before = sorted(p.relative_to(results) for p in results.rglob("*"))
    r = cli("train", "mnist", "--seed", "1", *TINY_RUN, cwd=tmp_path, env={"TINYCNN_DATA": str(real_data_dir)})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "runs/mnist/sam-smoke/seed1/model.pt").exists()
    assert sorted(p.relative_to(results) for p in results.rglob("*")) == before


def _interrupted_run(tmp_path, splits):
    from tinycnn import get_phase
    from tinycnn.callbacks import OnEpochEnd
    from tinycnn.errors import RunInterrupted
    from tinycnn.pipeline import RunRequest, run_or_reuse
    from tinycnn.recipe import load_recipe

    def stop(run):
        raise KeyboardInterrupt

    recipe = load_recipe("mnist", "smoke", ["epochs=2"])
    req = RunRequest(get_phase("mnist", "slim"), recipe, tmp_path / "run", recipe_name="smoke", splits=splits,
                     callbacks=(OnEpochEnd(stop),), command="tinycnn train mnist --phase slim --recipe smoke")
    with pytest.raises(RunInterrupted):
        run_or_reuse(req, "new")
    return req


@pytest.fixture
def tiny_splits(real_data_dir):
    from tinycnn.data import Splits, load_splits

    s = load_splits("mnist", 200, real_data_dir)
    return Splits(s.info, s.train.subset(256), s.val, s.test.subset(200))


def test_resume_refuses_flags_that_contradict_its_checkpoint(tmp_path, tiny_splits, capsys):
    from tinycnn.cli import main

    req = _interrupted_run(tmp_path, tiny_splits)
    code = main(["train", "--resume", str(req.run_dir), "--phase", "sam", "--set", "epochs=5",
                 "--out", str(tmp_path / "elsewhere"), "cifar10"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    for named in ("dataset cifar10", "--phase sam", "epochs=5", "--out"):
        assert named in err, (named, err)


def test_a_killed_force_run_never_leaves_the_old_model_beside_its_checkpoint(tmp_path, tiny_splits):
    from dataclasses import replace

    from tinycnn.pipeline import run_or_reuse

    req = _interrupted_run(tmp_path, tiny_splits)
    finished = run_or_reuse(replace(req, callbacks=()), "resume")
    assert (req.run_dir / "model.pt").exists() and finished["command"] == req.command  # the original command
    from tinycnn.callbacks import OnEpochEnd
    from tinycnn.errors import RunInterrupted

    def stop(run):
        raise KeyboardInterrupt

    with pytest.raises(RunInterrupted):
        run_or_reuse(replace(req, callbacks=(OnEpochEnd(stop),)), "force")
    assert (req.run_dir / "checkpoint.pt").exists() and not (req.run_dir / "model.pt").exists()
    aside = list(tmp_path.glob(".replaced-run-*"))
    assert len(aside) == 1 and (aside[0] / "model.pt").exists()


def test_eval_names_the_ladder_phase_and_its_recipe(real_data_dir):
    r = cli("eval", str(SAM_MODEL), "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "phase sam, deep's network, recipe sam" in " ".join(r.stdout.split())


def test_progress_moves_the_whole_run_bar_within_an_epoch():
    """The run's time-remaining estimate needs progress between epoch ends."""
    from types import SimpleNamespace

    from tinycnn.callbacks import RichProgress

    run = SimpleNamespace(recipe=SimpleNamespace(epochs=4, batch_size=8), steps_per_epoch=20,
                          state=SimpleNamespace(epoch=1, optim=SimpleNamespace(lr=0.1)))
    stats = SimpleNamespace(last_loss=torch.tensor(1.0), correct=torch.tensor(4.0), t0=0.0)
    progress = RichProgress()
    progress.on_fit_start(run)
    progress.on_batch_end(run, 10, stats)
    task = progress.progress.tasks[progress.run_task]
    progress.stop()
    assert task.completed == pytest.approx(1 + 11 / 20)
