"""Exact parameter counts per phase: a change to any block or ladder must update these on purpose."""
import pytest
import torch

from tinycnn import build, count_macs, count_params, fit_width, get_phase, ladder
from tinycnn.budget import check_budget
from tinycnn.errors import BudgetError, SpecError
from tinycnn.ladders import recipe_for
from tinycnn.spec import PhaseSpec

EXPECTED = {
    "mnist": {"plain": 26_074, "dw": 4_602, "paper": 1_690, "sep": 1_610, "slim": 1_420, "se": 1_497,
              "blur": 1_497, "deep": 1_473, "sam": 1_473, "std": 1_473, "robust": 1_473},
    "cifar10": {"plain": 138_042, "dw": 20_026, "paper": 151_370, "slim": 139_082,
                "se": 138_378, "blur": 138_378, "long": 138_378},
}


@pytest.mark.parametrize("dataset", EXPECTED)
def test_exact_params_per_phase(dataset):
    got = {p.name: count_params(build(p)) for p in ladder(dataset)}
    assert got == EXPECTED[dataset]


def test_finals_fit_their_budgets():
    assert count_params(build(get_phase("mnist", "final"))) <= 1_500
    assert count_params(build(get_phase("cifar10", "final"))) <= 140_000
    check_budget(get_phase("mnist", "final"))
    check_budget(get_phase("cifar10", "final"))


def test_each_phase_is_one_declared_change():
    for dataset in EXPECTED:
        phases = ladder(dataset)
        # every phase changes the network or, keeping it, the recipe it trains with
        assert len({(p.arch, recipe_for(p)) for p in phases}) == len(phases)
        assert all(p.change for p in phases)


def test_params_count_everything_by_hand():
    # conv 1->8 k3 (72) + BN (16) + SE 8->2->8 (16+2 + 16+8) + head 8->10 (80+10)
    model = build(PhaseSpec.from_arch("x", "mnist", "conv_k3_c8_se2 gap"))
    assert count_params(model) == 72 + 16 + (16 + 2) + (16 + 8) + (80 + 10)


def test_separable_conv_drops_the_middle_bn():
    # dw: depthwise 8*9 + BN 16 + pointwise 8*12 + BN 24; sep: the same minus the middle BN (2 per input channel)
    dw = count_params(build(PhaseSpec.from_arch("x", "mnist", "conv_k3_c8 dw_k3_c12 gap")))
    sep_model = build(PhaseSpec.from_arch("x", "mnist", "conv_k3_c8 sep_k3_c12 gap"))
    assert dw - count_params(sep_model) == 2 * 8
    # and nothing non-linear sits between the depthwise and pointwise convs
    sep_block = sep_model.features[1]
    assert isinstance(sep_block[0], torch.nn.Conv2d) and sep_block[0].groups == 8
    assert isinstance(sep_block[1][0], torch.nn.Conv2d) and sep_block[1][0].kernel_size == (1, 1)


def test_macs_hand_checked():
    # conv 1->8, 3x3, 28x28 output: 8*9*784 = 56,448; linear 8->10: 80
    model = build(PhaseSpec.from_arch("x", "mnist", "conv_k3_c8 gap"))
    assert count_macs(model, "mnist") == 8 * 9 * 28 * 28 + 80
    # depthwise 8 ch 3x3 at 28x28 (8*9*784) + pointwise 8->12 (8*12*784)
    model = build(PhaseSpec.from_arch("x", "mnist", "conv_k3_c8 dw_k3_c12 gap"))
    assert count_macs(model, "mnist") == 8 * 9 * 784 + (8 * 9 + 8 * 12) * 784 + 120


@pytest.mark.parametrize("dataset,shape", [("mnist", (2, 1, 28, 28)), ("cifar10", (2, 3, 32, 32))])
def test_forward_shapes_every_phase(dataset, shape):
    x = torch.rand(shape)
    for phase in ladder(dataset):
        assert build(phase)(x).shape == (2, 10), phase.name


def test_blurpool_has_no_params_and_halves():
    from tinycnn.blocks import BlurPool

    bp = BlurPool()
    assert count_params(bp) == 0
    assert bp(torch.rand(1, 3, 28, 28)).shape == (1, 3, 14, 14)
    # odd sizes round down exactly like the nn.MaxPool2d(2) it replaces
    assert bp(torch.rand(1, 3, 7, 7)).shape == torch.nn.MaxPool2d(2)(torch.rand(1, 3, 7, 7)).shape
    # a constant image stays constant: the blur is normalised and reflect-padded (no dark border)
    assert torch.allclose(bp(torch.full((1, 2, 8, 8), 0.7)), torch.full((1, 2, 4, 4), 0.7))


def test_width_solver_fits_and_is_maximal():
    phase = get_phase("mnist", "final")
    fit = fit_width(phase, 1000)
    assert fit.params <= 1000 and count_params(build(fit.spec)) == fit.params
    bigger = count_params(build(phase.scaled(round(fit.width + 0.01, 2))))
    assert bigger > 1000
    # the shipped final is at width 1.0 and the next grid point would break the budget
    assert fit_width(phase, count_params(build(phase))).width >= 1.0


def test_width_solver_can_round_widths_to_a_multiple():
    final = get_phase("mnist", "final")
    fit = fit_width(final, 1_500, multiple=8)
    widths = [b.out for b in fit.spec.blocks if b.out]
    assert widths and all(w % 8 == 0 for w in widths)
    assert fit.params <= 1_500 and count_params(build(fit.spec)) == fit.params
    # maximal: every wider multiplier either keeps the same widths or breaks the budget
    for i in range(1, 60):
        wider = final.scaled(round(fit.width + 0.01 * i, 2), 8)
        assert wider.arch == fit.spec.arch or count_params(build(wider)) > 1_500
    # multiple=1 is plain rounding, as before
    assert final.scaled(1.0, 1) == final.scaled(1.0) and final.scaled(1.0).arch == final.arch
    with pytest.raises(SpecError, match="multiple must be >= 1"):
        final.scaled(1.0, 0)


def test_budget_errors_are_clear():
    with pytest.raises(BudgetError, match="over the budget of 1,500 by 190"):
        check_budget(get_phase("mnist", "paper"))
    with pytest.raises(BudgetError, match="cannot fit"):
        fit_width(get_phase("mnist", "final"), 10)
    with pytest.raises(SpecError, match="accepted: plain, dw, paper"):
        get_phase("mnist", "tiny")


def test_a_phase_can_change_only_the_recipe():
    from tinycnn.ladders import previous_phase
    from tinycnn.recipe import load_recipe
    final, deep = get_phase("mnist", "final"), get_phase("mnist", "deep")
    assert final.name == "sam" and final.arch == deep.arch
    assert recipe_for(final) == "sam" and load_recipe("mnist", recipe_for(final)).sam_rho == 0.05
    assert recipe_for(deep) == "default" and recipe_for(get_phase("cifar10", "blur")) == "default"
    cifar_final = get_phase("cifar10", "final")
    assert cifar_final.name == "long" and cifar_final.arch == get_phase("cifar10", "blur").arch
    long_recipe = load_recipe("cifar10", recipe_for(cifar_final))
    assert (long_recipe.epochs, long_recipe.cutout) == (40, 8)
    # distillation's "previous" teacher is the previous *network*, not the same one
    assert previous_phase(final).name == "blur" and previous_phase(deep).name == "blur"
    assert previous_phase(cifar_final).name == "se"
    assert previous_phase(get_phase("mnist", "plain")) is None


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_phase_records_name_their_network_and_an_existing_recipe(dataset):
    from tinycnn.ladders import phases, recipe_for
    from tinycnn.recipe import recipe_names

    records = phases(dataset)
    assert [r.spec for r in records] == list(ladder(dataset))
    for r in records:
        assert r.spec.name == r.name and r.spec.change == r.change
        assert r.recipe in recipe_names(dataset) and recipe_for(r.spec) == r.recipe
    final = [r for r in records if r.spec == get_phase(dataset, "final")][0]
    assert final.recipe != "default"  # both finals change only the recipe of the phase before


def test_a_variant_after_the_final_is_not_what_final_names(monkeypatch):
    """A phase listed in AFTER_FINAL stays in the ladder but `final` (export, prune, reports)
    keeps naming the phase before it."""
    from tinycnn import ladders

    assert ladders.get_phase("mnist", "final").name == "sam"  # std and robust come after it
    last, before = ladders.ladder("cifar10")[-1], ladders.ladder("cifar10")[-2]
    assert ladders.final_phase("cifar10") == ladders.get_phase("cifar10", "final") == last
    monkeypatch.setitem(ladders.AFTER_FINAL, "cifar10", frozenset({last.name}))
    assert ladders.final_phase("cifar10").name == before.name
    assert ladders.get_phase("cifar10", "final").name == before.name
    assert ladders.get_phase("cifar10", last.name) == last  # still reachable by its name
