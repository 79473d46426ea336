import os
import pickle

import pytest
import torch

from tinycnn import build, count_params, get_phase, load_model, save_model
from tinycnn.checkpoint import atomic_save, load_checkpoint, save_checkpoint
from tinycnn.errors import CheckpointError


def test_model_round_trip_without_knowing_the_architecture(tmp_path):
    model = build(get_phase("cifar10", "final"))
    model.train()(torch.rand(8, 3, 32, 32))  # move BN running stats away from defaults
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert not loaded.training and loaded.spec == model.spec
    assert count_params(loaded) == count_params(model)
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(loaded(x), model.eval()(x), atol=1e-6)
    # opening it never needs code: plain torch.load with weights_only works
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw["spec"]["arch"] == model.spec.arch


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_malicious_pickle_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.pt", "wb") as f:
        pickle.dump({"format": "tinycnn-model", "x": _Evil()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="not a tinycnn-model file: it contains objects other than tensors"):
        load_model("evil.pt")
    assert not (tmp_path / "PWNED").exists()


def test_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="no file at"):
        load_model(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path / "bad.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a tinycnn-model file"):
        load_model(tmp_path / "other.pt")
    save_checkpoint({"epoch": 1}, tmp_path / "ck.pt")
    with pytest.raises(CheckpointError, match="not a tinycnn-model file"):
        load_model(tmp_path / "ck.pt")
    assert load_checkpoint(tmp_path / "ck.pt")["epoch"] == 1


def test_weights_that_do_not_match_spec(tmp_path):
    model = build(get_phase("mnist", "final"))
    save_model(model, tmp_path / "m.pt")
    obj = torch.load(tmp_path / "m.pt", weights_only=True)
    obj["spec"]["arch"] = get_phase("mnist", "slim").arch
    torch.save(obj, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path / "m.pt")


def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    atomic_save({"v": 1}, tmp_path / "f.pt")

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_save({"v": Unsaveable()}, tmp_path / "f.pt")
    assert torch.load(tmp_path / "f.pt")["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["f.pt"]  # no temp files left behind


def test_model_file_holds_the_deployed_network_and_reloads_to_the_same_outputs(tmp_path):
    """A re-parameterisable phase is saved fused (the counted form) and loads as such;
    its outputs equal the trained form's in eval mode."""
    from tinycnn import build, count_params, load_model, save_model
    from tinycnn.budget import phase_cost
    from tinycnn.spec import PhaseSpec

    spec = PhaseSpec.from_arch("rep", "mnist", "rep_k3_c8 max repdw_k3 reppw_c12 gap")
    torch.manual_seed(0)
    trained = build(spec).eval()
    for m in trained.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    save_model(trained, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    x = torch.rand(4, 1, 28, 28)
    assert loaded.info["form"] == "deployed"
    assert count_params(loaded) == phase_cost(spec).params < count_params(trained)
    assert torch.allclose(loaded(x), trained(x), atol=1e-5)
