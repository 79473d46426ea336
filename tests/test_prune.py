"""Structured pruning: the right channels go, the result is the narrower spec, fine-tuning starts from it."""
from dataclasses import replace

import pytest
import torch

from tinycnn import build, count_params, get_phase, save_model
from tinycnn.budget import deployed_params
from tinycnn.engine import new_state
from tinycnn.errors import SpecError
from tinycnn.prune import prune_weights, pruned_model, pruning_target
from tinycnn.recipe import Recipe
from tinycnn.spec import PhaseSpec

from test_cli import run

FINAL = "conv_k3_c8 sep_k3_c10 sep_k3_c10 blur sep_k3_c11 sep_k3_c12 blur sep_k3_c14_se2 gap"


def _trained_looking(spec: PhaseSpec, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm affine terms, and running statistics measured on random images (as
    training would leave them), so the output depends on the input and on every channel."""
    torch.manual_seed(seed)
    model = build(spec)
    info_channels = model.features[0][0].in_channels
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.1, 0.3)
            m.momentum = None  # cumulative average over the calibration passes
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand(32, info_channels, 32 if info_channels == 3 else 28, 32 if info_channels == 3 else 28))
    return model.eval()


def _kill_channels(model, block: int, channels: list[int]) -> None:
    """Make ``channels`` of block ``block``'s output exactly zero after its ReLU, and unread by
    the next block: the only channels an L1 criterion may remove without changing the output."""
    sep = model.features[block]
    conv, bn = sep[1][0], sep[1][1]
    conv.weight.data[channels] = 0
    bn.weight.data[channels], bn.bias.data[channels] = 0, 0
    nxt = model.features[block + 1]
    nxt[0].weight.data[channels] = 0  # the next depthwise conv's filters for those channels
    nxt[1][0].weight.data[:, channels] = 0  # and its pointwise conv's inputs


def test_pruning_removes_the_dead_channels_and_keeps_the_output_exactly():
    spec = PhaseSpec.from_arch("deep", "mnist", FINAL)
    model = _trained_looking(spec)
    _kill_channels(model, 1, [2, 5, 7])  # block 2 (sep_k3_c10) loses 3 of its 10 channels
    blocks = list(spec.blocks)
    blocks[1] = replace(blocks[1], out=7)
    target = replace(spec, blocks=tuple(blocks))
    narrow = pruned_model(model, spec, target)
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(narrow(x), model(x), atol=1e-5)
        alive = [c for c in range(10) if c not in (2, 5, 7)]
        assert torch.equal(narrow.features[1][1][0].weight, model.features[1][1][0].weight[alive])


def test_keeping_the_wrong_channels_would_show():
    """The exactness above is not automatic: dropping live channels changes the output."""
    spec = PhaseSpec.from_arch("deep", "mnist", FINAL)
    model = _trained_looking(spec)
    blocks = list(spec.blocks)
    blocks[1] = replace(blocks[1], out=7)
    narrow = pruned_model(model, spec, replace(spec, blocks=tuple(blocks)))
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        assert not torch.allclose(narrow(x), model(x), atol=1e-3)


@pytest.mark.parametrize("budget", [1200, 700])
def test_pruned_weights_are_the_width_solved_spec(budget):
    spec = PhaseSpec.from_arch("deep", "mnist", FINAL)
    target = pruning_target(spec, budget)
    state = prune_weights(_trained_looking(spec), spec, target.spec)
    narrow = build(target.spec)
    narrow.load_state_dict(state)  # strict: every tensor has the narrow spec's shape
    assert count_params(narrow) == deployed_params(target.spec) == target.params <= budget


def test_a_cifar_phase_with_plain_convs_and_se_prunes_too():
    spec = get_phase("cifar10", "final")
    target = pruning_target(spec, 40_000)
    narrow = pruned_model(_trained_looking(spec), spec, target.spec)
    assert count_params(narrow) == target.params <= 40_000


def test_budget_at_or_above_the_size_and_rep_blocks_are_refused():
    spec = PhaseSpec.from_arch("deep", "mnist", FINAL)
    with pytest.raises(SpecError, match="already fits 1,500"):
        pruning_target(spec, 1500)
    rep = PhaseSpec.from_arch("r", "mnist", "rep_k3_c16 rep_k3_c16 gap")
    with pytest.raises(SpecError, match="re-parameterised blocks"):
        prune_weights(build(rep), rep, pruning_target(rep, 1000).spec)


def test_fine_tuning_starts_from_the_given_weights_and_so_does_ema():
    spec = PhaseSpec.from_arch("deep", "mnist", FINAL)
    start = _trained_looking(spec, seed=3).state_dict()
    state = new_state(spec, Recipe(ema_decay=0.99), 10, torch.device("cpu"), initial_weights=start)
    for key, value in start.items():
        assert torch.equal(state.model.state_dict()[key], value)
    ema = state.averager.final(state.model, [])[0]  # EMA copied the model when it was made
    for key, value in start.items():
        assert torch.equal(ema.state_dict()[key], value)


@pytest.mark.slow
def test_prune_command_fine_tunes_and_records_where_it_came_from(tmp_path, real_data_dir):
    spec = PhaseSpec.from_arch("deep", "mnist", FINAL)
    parent = tmp_path / "parent.pt"
    save_model(_trained_looking(spec), parent)
    out = tmp_path / "pruned"
    r = run("prune", str(parent), "--budget", "700", "--set", "epochs=1", "--set", "train_subset=512",
            "--out", str(out), "--quiet", "--threads", "1")
    assert r.returncode == 0, r.stderr
    import json
    m = json.loads((out / "metrics.json").read_text())
    assert m["params"] <= 700 and m["arch"] == pruning_target(spec, 700).spec.arch
    assert m["initial_weights"]["arch"] == FINAL and m["initial_weights"]["params"] == 1473
    r = run("prune", str(parent), "--budget", "5000", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "already fits 5,000" in " ".join(r.stderr.split()) and "Traceback" not in r.stderr
