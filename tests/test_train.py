"""End-to-end training on small slices of the real data, plus each averaging technique."""
import copy
import json

import pytest
import torch

from tinycnn import build, get_phase, load_model
from tinycnn.data import Splits
from tinycnn.errors import TrainingDiverged
from tinycnn.recipe import Recipe
from tinycnn.train import distillation_loss, first_reach, soft_cross_entropy, train


@pytest.fixture(scope="module")
def small(mnist_splits) -> Splits:
    s = mnist_splits
    return Splits(s.info, s.train.subset(4096), s.val.subset(1000), s.test.subset(2000))


@pytest.fixture(scope="module")
def tiny(mnist_splits) -> Splits:
    s = mnist_splits
    return Splits(s.info, s.train.subset(512), s.val.subset(200), s.test.subset(200))


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.slow
def test_final_phase_learns_and_writes_a_loadable_run(small, tmp_path):
    recipe = Recipe(epochs=4, batch_size=64, lr=0.1, crop_pad=1, label_smoothing=0.05)
    m = train(get_phase("mnist", "final"), recipe, tmp_path, splits=small, quiet=True)
    # 256 steps on 4,096 images: far above the 10% of chance
    assert m["val_accuracy"] > 0.80 and m["test_accuracy"] > 0.80
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("dataset", "phase", "params", "macs", "recipe", "seed", "history", "test_accuracy",
                "wall_time_s", "device", "torch_version", "git_commit", "command"):
        assert key in saved
    assert saved["params"] == 1473 and len(saved["history"]) == 4
    assert {"train_loss", "train_acc", "val_acc", "lr", "images_per_s"} <= set(saved["history"][0])
    assert not (tmp_path / "checkpoint.pt").exists()
    model = load_model(tmp_path / "model.pt")
    acc = (model(small.test.x.float() / 255).argmax(1) == small.test.y).float().mean().item()
    assert acc == pytest.approx(m["test_accuracy"], abs=1e-6)


def test_killed_run_resumes_to_the_same_result(tiny, tmp_path):
    recipe = Recipe(epochs=3, batch_size=64, crop_pad=2, cutout=6, mixup_alpha=0.2, swa=True, swa_start=0.5, seed=3)
    phase = get_phase("mnist", "final")
    straight = train(phase, recipe, tmp_path / "a", splits=tiny, quiet=True)

    def kill_after_first_epoch(state):
        if state.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(phase, recipe, tmp_path / "b", splits=tiny, quiet=True, on_epoch_end=kill_after_first_epoch)
    assert (tmp_path / "b" / "checkpoint.pt").exists()
    torch.manual_seed(999)  # the resumed run must not depend on the global RNG at restart
    resumed = train(phase, recipe, tmp_path / "b", splits=tiny, quiet=True, resume=True)
    strip = [{k: v for k, v in h.items() if "time" not in k and k != "images_per_s"} for h in straight["history"]]
    assert strip == [{k: v for k, v in h.items() if "time" not in k and k != "images_per_s"}
                     for h in resumed["history"]]
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    assert torch.equal(_params(load_model(tmp_path / "a/model.pt")), _params(load_model(tmp_path / "b/model.pt")))


def test_same_seed_same_metrics(tiny, tmp_path):
    recipe = Recipe(epochs=1, batch_size=64, crop_pad=2, mixup_alpha=0.4, seed=7)
    a = train(get_phase("mnist", "slim"), recipe, tmp_path / "a", splits=tiny, quiet=True)
    b = train(get_phase("mnist", "slim"), recipe, tmp_path / "b", splits=tiny, quiet=True)
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]
    assert a["test_accuracy"] == b["test_accuracy"]


def test_swa_average_is_the_mean_of_its_snapshots(tiny, tmp_path):
    recipe = Recipe(epochs=4, batch_size=64, swa=True, swa_start=0.5, schedule="constant", lr=0.05)
    snapshots, averaged = [], {}

    def capture(state):
        if state.epoch > 2:  # swa_start 0.5 of 4 epochs: snapshots after epochs 3 and 4
            snapshots.append(_params(state.model))
        averaged["swa"] = _params(state.swa_model.module)

    train(get_phase("mnist", "final"), recipe, tmp_path, splits=tiny, quiet=True, on_epoch_end=capture)
    assert len(snapshots) == 2
    assert torch.allclose(averaged["swa"], torch.stack(snapshots).mean(0), atol=1e-6)
    assert json.loads((tmp_path / "metrics.json").read_text())["final_weights"] == "swa"


def test_ema_tracks_with_its_decay(tiny, tmp_path):
    recipe = Recipe(epochs=1, batch_size=256, ema_decay=0.5, schedule="constant", lr=0.05)
    seen = {}

    def capture(state):
        seen["ema"] = _params(state.ema_model.module)
        seen["model"] = _params(state.model)

    m = train(get_phase("mnist", "final"), recipe, tmp_path, splits=tiny, quiet=True, on_epoch_end=capture)
    assert m["final_weights"] == "ema"
    assert not torch.equal(seen["ema"], seen["model"])  # an average, not a copy
    assert torch.allclose(seen["ema"], seen["model"], atol=0.2)  # decay 0.5 tracks closely


def test_sam_and_kd_run_together(tiny, tmp_path):
    teacher = build(get_phase("mnist", "slim")).eval()
    recipe = Recipe(epochs=1, batch_size=64, sam_rho=0.05, kd_alpha=0.5, kd_temperature=2.0)
    m = train(get_phase("mnist", "final"), recipe, tmp_path, splits=tiny, quiet=True, teacher=teacher)
    assert 0 <= m["test_accuracy"] <= 1 and m["history"][0]["train_loss"] > 0


def test_kd_loss_zero_when_student_is_teacher():
    logits = torch.randn(16, 10)
    assert distillation_loss(logits, logits.clone(), temperature=1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(torch.randn(16, 10), logits, temperature=1.0).item() > 0.01
    # the T^2 factor makes the loss T-independent at high temperature (Hinton et al.)
    s, t = torch.randn(16, 10), torch.randn(16, 10)
    assert distillation_loss(s, t, 20.0).item() == pytest.approx(distillation_loss(s, t, 40.0).item(), rel=0.05)


def test_kd_gradient_pulls_student_to_teacher():
    student = torch.nn.Linear(4, 3)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        teacher.weight.add_(torch.randn_like(teacher.weight))
    x = torch.randn(32, 4)
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    before = distillation_loss(student(x), teacher(x), 2.0).item()
    for _ in range(20):
        opt.zero_grad()
        distillation_loss(student(x), teacher(x).detach(), 2.0).backward()
        opt.step()
    assert distillation_loss(student(x), teacher(x), 2.0).item() < 0.5 * before


def test_soft_cross_entropy_of_one_hot_is_cross_entropy():
    logits, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert torch.allclose(soft_cross_entropy(logits, torch.nn.functional.one_hot(y, 10).float()),
                          torch.nn.functional.cross_entropy(logits, y))


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tiny, tmp_path):
    recipe = Recipe(epochs=3, batch_size=64, schedule="constant", lr=1e-3)
    phase = get_phase("mnist", "final")

    def explode(state):  # after a good epoch, make the next one diverge
        for p in state.model.parameters():
            p.data.fill_(float("inf"))

    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2.*last good checkpoint \(epoch 1\)"):
        train(phase, recipe, tmp_path, splits=tiny, quiet=True, on_epoch_end=explode)
    from tinycnn.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_bf16_autocast_and_channels_last_train(tiny, tmp_path):
    recipe = Recipe(epochs=1, batch_size=64, amp="bf16", channels_last=True)
    m = train(get_phase("mnist", "final"), recipe, tmp_path, splits=tiny, quiet=True)
    assert m["test_accuracy"] >= 0


def test_first_reach():
    h = [{"epoch": 1, "val_acc": 0.5, "train_time_s": 1.0}, {"epoch": 2, "val_acc": 0.9, "train_time_s": 2.0}]
    assert first_reach(h, 0.8) == {"epoch": 2, "train_time_s": 2.0, "val_acc": 0.9}
    assert first_reach(h, 0.95) is None
