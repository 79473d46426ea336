"""The corruption benchmark: every corruption is seeded, keeps shape and range, changes the
image, grows with severity; the benchmark's clean accuracy is tinycnn.evaluate's."""
import json
from pathlib import Path

import pytest
import torch

from tinycnn.checkpoint import load_model
from tinycnn.corruptions import CIFAR10_C, FAMILIES, MNIST_C, SEVERITIES, motion_kernels
from tinycnn.data import Split
from tinycnn.evaluate import evaluate
from tinycnn import robust as robust_module
from tinycnn.robust import corrupted_accuracy, robustness, subset

ROOT = Path(__file__).resolve().parents[1]
MNIST_FINAL = ROOT / "experiments" / "results" / "mnist" / "sam" / "seed0" / "model.pt"
# The published elastic constants trade a large random affine (severity 1) for local warping
# (severity 5): the pixel difference from clean shrinks while recognition gets harder. MNIST-C's
# fog rescales by max/(max + c): a thicker fog also dims, so the pixel difference stays flat.
NOT_MONOTONE_IN_PIXELS = {("cifar10", "elastic_transform"), ("mnist", "fog")}
STROKES = {"stripe", "dotted_line", "zigzag"}  # MNIST-C gives these no severity


def _images(channels: int, size: int, n: int = 6) -> torch.Tensor:
    """Images with coarse structure, fine detail and headroom (values in [0.15, 0.85])."""
    g = torch.Generator().manual_seed(1)
    coarse = torch.nn.functional.interpolate(torch.rand(n, channels, 4, 4, generator=g), size=(size, size),
                                             mode="bilinear", align_corners=False)
    fine = torch.rand(n, channels, size, size, generator=g)
    return 0.15 + 0.45 * coarse + 0.25 * fine


CASES = [("cifar10", n) for n in CIFAR10_C] + [("mnist", n) for n in MNIST_C]


@pytest.mark.parametrize("dataset,name", CASES)
def test_corruption_is_seeded_keeps_shape_and_range_and_changes_the_image(dataset, name):
    x = _images(3 if dataset == "cifar10" else 1, 32 if dataset == "cifar10" else 28)
    family = FAMILIES[dataset][name]
    severity = SEVERITIES[dataset][name][-1]
    a = family(x.clone(), severity, torch.Generator().manual_seed(5))
    b = family(x.clone(), severity, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert (a - x).abs().mean() > 1e-3, f"{name} leaves the image as it was"


@pytest.mark.parametrize("dataset,name", [c for c in CASES if c not in NOT_MONOTONE_IN_PIXELS and c[1] not in STROKES])
def test_corruption_grows_with_severity(dataset, name):
    x = _images(3 if dataset == "cifar10" else 1, 32 if dataset == "cifar10" else 28, n=16)
    family = FAMILIES[dataset][name]
    diff = [(family(x, s, torch.Generator().manual_seed(0)) - x).abs().mean().item() for s in (1, 5)]
    assert diff[1] > diff[0], f"{name}: severity 5 differs from clean by {diff[1]:.4f}, severity 1 by {diff[0]:.4f}"


def test_bad_severity_is_refused():
    with pytest.raises(ValueError, match="severity"):
        CIFAR10_C["contrast"](_images(3, 32), 6, torch.Generator())


def test_motion_kernels_sum_to_one_and_point_along_the_angle():
    k = motion_kernels(10, 2, torch.tensor([0.0, 90.0]))
    assert torch.allclose(k.sum((1, 2)), torch.ones(2))
    centre = (k.shape[-1] - 1) // 2
    assert k[0, centre, centre + 1:].sum() > 0.5  # 0 degrees: taps to the right of the centre
    assert k[1, :centre, centre].sum() > 0.5  # 90 degrees: taps above it


@pytest.mark.skipif(not MNIST_FINAL.is_file(), reason="the committed MNIST final is missing")
def test_benchmark_on_mnist_subset_matches_evaluate(mnist_test_subset):
    model = load_model(MNIST_FINAL)
    split = mnist_test_subset
    r = robustness(model, "mnist", split, seed=0, batch=100)
    assert r["clean"] == pytest.approx(evaluate(model, split, 10)["accuracy"])
    assert set(r["corruptions"]) == set(MNIST_C)
    for row in r["corruptions"].values():
        assert 0 <= row["accuracy"] <= 1
        assert row["drop"] == pytest.approx(r["clean"] - row["accuracy"])
    assert r["mean"] == pytest.approx(sum(v["accuracy"] for v in r["corruptions"].values()) / len(MNIST_C))
    again = robustness(model, "mnist", split, seed=0, batch=100)
    assert again["corruptions"] == r["corruptions"]


@pytest.fixture
def mnist_test_subset():
    from tinycnn.data import load_dataset

    try:
        ds = load_dataset("mnist", download=False)
    except Exception as e:  # no data on this machine
        pytest.skip(f"MNIST not available: {e}")
    return Split(ds.test.x[:300], ds.test.y[:300])


def test_subset_is_seeded_sorted_and_not_the_first_images():
    """Catches a quick estimate taken from the first N (MNIST's test halves differ) or one that
    changes from call to call."""
    split = Split(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1), torch.arange(100))
    a, b = subset(split, 10), subset(split, 10)
    assert torch.equal(a.y, b.y) and len(a) == 10
    assert torch.equal(a.y, a.y.sort().values) and not torch.equal(a.y, torch.arange(10))
    assert torch.equal(a.x.flatten().long(), a.y)  # images stay with their labels
    assert subset(split, 0) is split and subset(split, 500) is split


def test_eval_batches_and_memory_format_do_not_change_the_result():
    """The corrupted set is fixed by its generation chunk; classifying it in smaller batches
    or in NHWC must give the same count (catches a batch-size-dependent draw)."""
    from tinycnn.build import build
    from tinycnn.spec import PhaseSpec

    torch.manual_seed(0)
    model = build(PhaseSpec.from_dict({"dataset": "cifar10", "name": "t", "arch": "conv_k3_c8 blur conv_k3_c8 gap"})).eval()
    x = (torch.rand(600, 3, 32, 32) * 255).to(torch.uint8)
    split = Split(x, torch.randint(0, 10, (600,)))
    base = corrupted_accuracy(model, split, "cifar10", "gaussian_noise", 3, seed=1, batch=600)
    model.to(memory_format=torch.channels_last)
    nhwc = corrupted_accuracy(model, split, "cifar10", "gaussian_noise", 3, seed=1, batch=600, channels_last=True)
    assert nhwc == base
    g = robust_module._generator(1, "gaussian_noise", 3, torch.device("cpu"))
    from tinycnn.batches import to_float
    xc = CIFAR10_C["gaussian_noise"](to_float(x), 3, g).mul_(255).round_().div_(255)
    model.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        expected = (model(xc).argmax(1) == split.y).float().mean().item()
    assert base == pytest.approx(expected)


@pytest.mark.skipif(not MNIST_FINAL.is_file(), reason="the committed MNIST final is missing")
def test_cli_robust_on_the_runs_validation_split(tmp_path, mnist_test_subset):
    """--split val corrupts the split the run's metrics.json records; without that file it
    refuses in one line; --n takes a seeded sample."""
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "tinycnn", "robust", *map(str, args)],
                              capture_output=True, text=True, cwd=ROOT)

    r = run(MNIST_FINAL, "--split", "val", "--n", "200", "--json", "--threads", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["split"] == "val" and out["n"] == 200 and out["subset"] == 200
    lone = tmp_path / "model.pt"
    lone.write_bytes(MNIST_FINAL.read_bytes())
    r = run(lone, "--split", "val")
    assert r.returncode == 2 and "needs the run's metrics.json" in r.stderr and "Traceback" not in r.stderr
    r = run(MNIST_FINAL, "--n", "-1")
    assert r.returncode == 2 and "--n must be >= 0" in r.stderr
