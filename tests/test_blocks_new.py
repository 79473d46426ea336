"""The block kinds of issue #15: residual `_r`, ir (MBConv), fir (fused MBConv), cnx (ConvNeXt),
rep/repdw/reppw (RepVGG / MobileOne), and deployment (fusing, BN folding, what the budget counts).

Parameter counts are written out by hand: a change to a block must change these on purpose.
"""
import copy
import itertools

import pytest
import torch
from torch import nn

from tinycnn import build, count_macs, count_params, fit_width, ladder
from tinycnn.blocks import LayerScale, RepConv, Residual
from tinycnn.budget import check_budget, deployed_params, phase_cost
from tinycnn.build import _build_block
from tinycnn.datasets import dataset_info
from tinycnn.deploy import deploy, reparameterize
from tinycnn.errors import BudgetError, SpecError
from tinycnn.phases_table import phase_rows, phases_markdown
from tinycnn.spec import _GRAMMAR_HELP, BLOCK_KINDS, PhaseSpec, output_size, parse_block

STEM = "conv_k3_c8"  # 8 channels into the block under test


def _block(arch: str, dataset: str = "mnist", index: int = 1) -> nn.Module:
    return build(PhaseSpec.from_arch("x", dataset, arch)).features[index]


def _deployed_count(module: nn.Module) -> int:
    return count_params(reparameterize(copy.deepcopy(module)))


# 1. exact parameter counts, training form and deployed (rep* fused) form

BN = 2  # a BatchNorm's affine parameters per channel
COUNTS = {  # block after an 8-channel stem -> (training-time params, deployed params)
    # _r is free: the same count as the block without it
    "conv_k3_c8_r": (9 * 8 * 8 + BN * 8,) * 2,
    "dw_k3_c8_r": (9 * 8 + BN * 8 + 8 * 8 + BN * 8,) * 2,
    "sep_k3_c8_se2_r": (9 * 8 + 8 * 8 + BN * 8 + (8 * 2 + 2) + (2 * 8 + 8),) * 2,
    "pw_c8_r": (8 * 8 + BN * 8,) * 2,
    # ir, expanded width 32: expand 1x1 + BN, depthwise 3x3 + BN, SE at 32 (32->2->32), project 1x1 + BN
    "ir_k3_e4_c8_se2": (8 * 32 + BN * 32 + 9 * 32 + BN * 32 + (32 * 2 + 2) + (2 * 32 + 32)
                        + 32 * 8 + BN * 8,) * 2,
    # e1: no expand conv, depthwise 5x5 on the 8 input channels
    "ir_k5_e1_c16_s2_nr6": (25 * 8 + BN * 8 + 8 * 16 + BN * 16,) * 2,
    # fir: one dense 3x3 expanding 8 -> 32 + BN, project 1x1 + BN
    "fir_k3_e4_c8": (9 * 8 * 32 + BN * 32 + 32 * 8 + BN * 8,) * 2,
    "fir_k3_e2_c12_s2_se3_nhs": (9 * 8 * 16 + BN * 16 + (16 * 3 + 3) + (3 * 16 + 16) + 16 * 12 + BN * 12,) * 2,
    # cnx on 8 channels: depthwise 7x7 + BN, 1x1 8->32 (+bias), 1x1 32->8 (+bias), layer scale 8
    "cnx_k7_e4": (49 * 8 + BN * 8 + (8 * 32 + 32) + (32 * 8 + 8) + 8,) * 2,
    # mixed kernels split 8 channels 4 + 4
    "cnx_k3k7_e4_nge": (9 * 4 + 49 * 4 + BN * 8 + (8 * 32 + 32) + (32 * 8 + 8) + 8,) * 2,
    "cnx_k3k5k7_e2": (9 * 4 + 25 * 2 + 49 * 2 + BN * 8 + (8 * 16 + 16) + (16 * 8 + 8) + 8,) * 2,  # 8 = 4+2+2
    # rep: 3x3 + BN, 1x1 + BN (+ identity BN when c = input and stride 1); fused: one 3x3 with bias
    "rep_k3_c16": (9 * 8 * 16 + BN * 16 + 8 * 16 + BN * 16, 9 * 8 * 16 + 16),
    "rep_k3_c8": (9 * 8 * 8 + BN * 8 + 8 * 8 + BN * 8 + BN * 8, 9 * 8 * 8 + 8),
    "rep_k5_c8_s2_nsw": (25 * 8 * 8 + BN * 8 + 8 * 8 + BN * 8, 25 * 8 * 8 + 8),
    # repdw on 8 channels: the same branches, depthwise
    "repdw_k3": (9 * 8 + BN * 8 + 8 + BN * 8 + BN * 8, 9 * 8 + 8),
    "repdw_k5_s2": (25 * 8 + BN * 8 + 8 + BN * 8, 25 * 8 + 8),
    # reppw: 1x1 + BN (+ identity BN)
    "reppw_c16": (8 * 16 + BN * 16, 8 * 16 + 16),
    "reppw_c8_nhs": (8 * 8 + BN * 8 + BN * 8, 8 * 8 + 8),
}


@pytest.mark.parametrize("text", COUNTS)
def test_exact_params_per_block_kind(text):
    block = _block(f"{STEM} {text} gap")
    assert (count_params(block), _deployed_count(block)) == COUNTS[text]


def test_mixed_kernels_split_like_timm():
    # 9 channels between kernels 3 and 7: the first group takes the remainder (5 + 4)
    block = _block("conv_k3_c9 cnx_k3k7_e1 gap")
    assert count_params(block) == 9 * 5 + 49 * 4 + BN * 9 + (9 * 9 + 9) + (9 * 9 + 9) + 9


def test_whole_phase_counts_the_fused_form():
    spec = PhaseSpec.from_arch("x", "mnist", "conv_k3_c8 rep_k3_c8 repdw_k3 gap")
    stem, head = 9 * 8 + BN * 8, 8 * 10 + 10
    train = stem + (9 * 64 + 64 + 3 * BN * 8) + (9 * 8 + 8 + 3 * BN * 8) + head
    deployed = stem + (9 * 64 + 8) + (9 * 8 + 8) + head
    cost = phase_cost(spec)
    assert (cost.train_params, cost.params) == (train, deployed) == (count_params(build(spec)), deployed_params(spec))


# 2. the block strings: round trip, canonical order, refusals that list the grammar

ROUND_TRIP = [
    "conv_k3_c16_r", "conv_k3_c16_se4_r_nsw", "dw_k5_c8_r", "sep_k3_c8_se2_r_nhs", "pw_c8_r", "pw_c8_se2_r_nr6",
    "ir_k3_e4_c16", "ir_k5_e1_c16_s2", "ir_k7_e6_c24_s2_se8_nhs", "ir_k3_e8_c8_nr6", "fir_k3_e4_c16",
    "fir_k5_e2_c24_s2_se4_nsw", "cnx_k7_e4", "cnx_k3_e1_nge", "cnx_k3k7_e4", "cnx_k3k5k7_e2_nhs",
    "rep_k3_c16", "rep_k5_c8_s2_nsw", "repdw_k3", "repdw_k5_s2_nr6", "reppw_c16", "reppw_c8_nge",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_new_block_strings_round_trip(text):
    block = parse_block(text)
    assert str(block) == text and parse_block(str(block)) == block


def test_every_valid_combination_round_trips():
    """Property-style: every option combination the grammar accepts prints and parses back."""
    grid = [["k3", "k5", "k3k7", ""], ["e1", "e4", ""], ["c8", ""], ["s2", ""], ["se2", ""], ["r", ""],
            ["nhs", "nge", ""]]
    accepted = 0
    for kind in BLOCK_KINDS:
        for options in itertools.product(*grid):
            text = "_".join([kind, *(o for o in options if o)])
            try:
                block = parse_block(text)
            except SpecError:
                continue
            accepted += 1
            assert parse_block(str(block)) == block, text
            assert str(parse_block(str(block))) == str(block), text
    assert accepted > 150


def test_options_in_any_order_print_in_one():
    assert str(parse_block("ir_nhs_se4_c16_e4_k5_s2")) == "ir_k5_e4_c16_s2_se4_nhs"
    assert str(parse_block("conv_r_c8_k3")) == "conv_k3_c8_r"
    assert parse_block("cnx_k3k7_e4").kernels == (3, 7) and parse_block("cnx_k7_e4").kernel == 7


@pytest.mark.parametrize("arch", [
    "conv_k3_c8 conv_k3_c8_r ir_k3_e4_c8_se2_nhs fir_k3_e2_c12_s2 cnx_k3k7_e4 gap",
    "rep_k3_c8 rep_k3_c8 repdw_k3 repdw_k3_s2 reppw_c12 reppw_c12_nhs gap",
    "conv_k3_c8 ir_k3_e1_c8 blur cnx_k7_e2_nge drop_p10 pw_c8_r_nsw gap",
])
def test_arch_round_trips(arch):
    spec = PhaseSpec.from_arch("x", "cifar10", arch)
    assert spec.arch == arch and PhaseSpec.from_arch("y", "cifar10", spec.arch).blocks == spec.blocks
    assert PhaseSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("bad,why", [
    ("ir_k3_c16", "expansion ratio e1..e8"), ("ir_k3_e9_c16", "expansion ratio e1..e8"),
    ("cnx_k7", "expansion ratio"), ("ir_k3_e4", "output width"),
    ("ir_k9_e4_c16", "kernel size k3 or k5 or k7"), ("ir_k4_e4_c16", "odd"), ("cnx_k1_e4", "k3 or k5 or k7"),
    ("rep_k1_c8", "odd k >= 3"), ("repdw_k1", "odd k >= 3"), ("reppw_k3_c8", "option 'k' does not apply"),
    ("cnx_k7_e4_c16", "keeps its input's channels"), ("repdw_k3_c8", "keeps its input's channels"),
    ("cnx_k7k3_e4", "smallest first"), ("cnx_k3k3_e4", "once each"), ("conv_k3k7_c8", "apply only to cnx"),
    ("ir_k3_e4_c8_r", "option 'r' does not apply"), ("cnx_k7_e4_r", "option 'r' does not apply"),
    ("rep_k3_c8_r", "option 'r' does not apply"), ("cnx_k7_e4_s2", "option 's' does not apply"),
    ("rep_k3_c8_se2", "option 'se' does not apply"), ("conv_k3_c8_e4", "option 'e' does not apply"),
    ("conv_k3_c8_r_r", "given twice"), ("conv_k3_c8_nfoo", "unknown activation nfoo"),
    ("conv_k3_c8_rr", "bad option 'rr'"), ("max_r", "option 'r' does not apply"),
])
def test_bad_new_tokens_name_the_grammar(bad, why):
    with pytest.raises(SpecError, match=why) as e:
        parse_block(bad)
    if "odd" not in why:
        assert "accepted blocks:" in str(e.value) and "ir_k3_e4_c16" in str(e.value)


def test_the_grammar_help_shows_every_kind_and_activation():
    for kind in BLOCK_KINDS:
        assert f"{kind}_" in _GRAMMAR_HELP or f" {kind}," in _GRAMMAR_HELP, kind
    for act in ("nre", "nr6", "nsw", "nhs", "nge"):
        assert act in _GRAMMAR_HELP


def test_residual_refused_where_shapes_cannot_match():
    with pytest.raises(SpecError, match=r"'conv_k3_c8_s2_r'.*stride 2 shrinks the height and width"):
        parse_block("conv_k3_c8_s2_r")
    with pytest.raises(SpecError, match=r"block 2 of 2 \('conv_k3_c16_r'\) adds its input to its output "
                                        r"\(_r\), but receives 8x28x28 and returns 16x28x28.*use c8 or drop _r"):
        PhaseSpec.from_arch("x", "mnist", "conv_k3_c8 conv_k3_c16_r gap")
    # the first block receives the dataset's channels
    with pytest.raises(SpecError, match=r"block 1 of 1 \('pw_c8_r'\).*receives 3x32x32 and returns 8x32x32"):
        PhaseSpec.from_arch("x", "cifar10", "pw_c8_r gap")
    assert PhaseSpec.from_arch("x", "cifar10", "pw_c3_r pw_c8 max pw_c8_r gap")  # shapes match: accepted


def test_checks_that_need_the_input_channels():
    with pytest.raises(SpecError, match=r"'ir_k3_e2_c8_se17'.*se17 must be 1\.\.16 .*e2 x 8 input channels"):
        PhaseSpec.from_arch("x", "mnist", "conv_k3_c8 ir_k3_e2_c8_se17 gap")
    assert PhaseSpec.from_arch("x", "mnist", "conv_k3_c8 ir_k3_e2_c8_se16 gap")  # SE squeezes 16, not c8
    with pytest.raises(SpecError, match=r"splits 2 channels among 3 kernels"):
        PhaseSpec.from_arch("x", "mnist", "conv_k3_c2 cnx_k3k5k7_e4 gap")


def test_skips_are_added_exactly_where_the_shapes_match():
    def skip(arch):
        return isinstance(_block(arch), Residual)
    assert skip(f"{STEM} ir_k3_e4_c8 gap") and skip(f"{STEM} fir_k3_e4_c8 gap")
    assert not skip(f"{STEM} ir_k3_e4_c16 gap") and not skip(f"{STEM} ir_k3_e4_c8_s2 gap")
    assert not skip(f"{STEM} fir_k3_e4_c8_s2 gap")
    assert skip(f"{STEM} cnx_k7_e4 gap") and skip(f"{STEM} conv_k3_c8_r gap") and not skip(f"{STEM} conv_k3_c8 gap")
    block = _block(f"{STEM} sep_k3_c8_r gap").eval()
    x = torch.rand(2, 8, 6, 6)
    assert torch.equal(block(x), x + block.body(x))


def test_scaling_follows_the_channels():
    spec = PhaseSpec.from_arch("x", "mnist", "conv_k3_c8 cnx_k7_e4 ir_k3_e2_c8_se16 repdw_k3 reppw_c12 gap")
    assert spec.scaled(1.5).arch == "conv_k3_c12 cnx_k7_e4 ir_k3_e2_c12_se24 repdw_k3 reppw_c18 gap"
    assert spec.out_channels == 12 and spec.scaled(1.5).out_channels == 18


# 3. activations are torch's own modules (custom autograd activations break ONNX export, timm #730)

def test_activations_and_gates_are_torch_modules():
    def types(text):
        return {type(m) for m in _block(f"{STEM} {text} gap").modules()}
    assert {nn.Hardswish, nn.Hardsigmoid} <= types("ir_k3_e4_c8_se2_nhs")
    assert nn.Sigmoid in types("ir_k3_e4_c8_se2") and nn.Hardsigmoid not in types("ir_k3_e4_c8_se2")
    assert nn.Hardsigmoid in types("fir_k3_e4_c8_se2_nhs") and nn.Sigmoid in types("fir_k3_e4_c8_se2_nsw")
    assert nn.ReLU6 in types("ir_k3_e4_c8_nr6") and nn.GELU in types("cnx_k7_e4_nge")
    assert nn.ReLU in types("cnx_k7_e4") and nn.GELU not in types("cnx_k7_e4")
    # the projection of ir/fir is linear: its last module is a BatchNorm
    project = _block(f"{STEM} ir_k3_e4_c16 gap").project
    assert isinstance(project[-1], nn.BatchNorm2d)


def test_layer_scale_starts_small():
    gamma = _block(f"{STEM} cnx_k7_e4 gap").body.scale.gamma
    assert gamma.shape == (8,) and torch.allclose(gamma, torch.full((8,), 0.1))


# 4. spatial sizes and MACs

@pytest.mark.parametrize("h", [1, 2, 3, 5, 7, 8, 14, 28])
def test_size_formula_matches_the_new_modules(h):
    texts = ["conv_k3_c2_r", "pw_c2_r", "ir_k3_e2_c3_s2", "ir_k7_e1_c2", "fir_k5_e2_c3_s2_se2", "cnx_k7_e2",
             "cnx_k3k7_e1", "rep_k3_c3_s2", "rep_k5_c2", "repdw_k3_s2", "repdw_k5", "reppw_c3"]
    for text in texts:
        block = parse_block(text)
        layer, _ = _build_block(block, 2)
        assert layer.eval()(torch.rand(1, 2, h, h)).shape[-2:] == (output_size(block, h),) * 2, text


def test_macs_hand_checked_for_new_kinds():
    px, head = 28 * 28, 80
    stem = 8 * 9 * px
    ir = build(PhaseSpec.from_arch("x", "mnist", f"{STEM} ir_k3_e4_c8_se2 gap"))
    assert count_macs(ir, "mnist") == stem + (8 * 32 + 32 * 9 + 32 * 8) * px + (32 * 2 + 2 * 32) + head
    cnx = build(PhaseSpec.from_arch("x", "mnist", f"{STEM} cnx_k3k7_e4 gap"))
    assert count_macs(cnx, "mnist") == stem + (4 * 9 + 4 * 49 + 8 * 32 + 32 * 8) * px + head
    spec = PhaseSpec.from_arch("x", "mnist", f"{STEM} rep_k3_c8 gap")
    assert count_macs(build(spec), "mnist") == stem + (9 * 64 + 64) * px + head  # trains with both convs
    assert phase_cost(spec).macs == stem + 9 * 64 * px + head  # deploys with one


@pytest.mark.parametrize("text", COUNTS)
def test_macs_count_every_kind(text):
    stem_only = count_macs(build(PhaseSpec.from_arch("x", "cifar10", f"{STEM} gap")), "cifar10")
    spec = PhaseSpec.from_arch("x", "cifar10", f"{STEM} {text} gap")
    assert count_macs(build(spec), "cifar10") >= phase_cost(spec).macs > stem_only


# 5. deployment: fused and folded outputs equal the trained model's

def _randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN running stats and affine, random layer scales: folding an identity BN proves nothing."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.5)
            elif isinstance(m, LayerScale):
                m.gamma.copy_(torch.randn(m.gamma.shape, generator=g))
    return model.eval()


def _deploy_gap(spec: PhaseSpec) -> tuple[float, nn.Module]:
    info = dataset_info(spec.dataset)
    torch.manual_seed(0)
    model = _randomise_norms(build(spec))
    deployed = deploy(model)
    x = torch.rand(4, info.channels, info.size, info.size)
    with torch.no_grad():
        logits = model(x)
        assert logits.std() > 0.05  # logits of order one: an absolute 1e-5 means something
        return (logits - deployed(x)).abs().max().item(), deployed


DEPLOY_CASES = [f"{STEM} {text} gap" for text in COUNTS] + [
    "conv_k3_c8_se2 dw_k3_c12 sep_k3_c12_se2 pw_c8 blur sep_k3_c8_r max dw_k3_c8_se2_r gap",
    "rep_k3_c8 rep_k3_c8 rep_k3_c16_s2 repdw_k3 repdw_k5_s2 reppw_c16 reppw_c24 gap",
    "conv_k3_c16 ir_k3_e1_c16 ir_k5_e6_c24_s2_se8_nhs fir_k3_e4_c24_se4_nsw cnx_k3k5k7_e2_nge cnx_k7_e4 gap",
]


@pytest.mark.parametrize("arch", DEPLOY_CASES)
@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_deploy_matches_the_trained_model_for_every_kind(dataset, arch):
    spec = PhaseSpec.from_arch("x", dataset, arch)
    gap, deployed = _deploy_gap(spec)
    assert gap < 1e-5, gap
    leftover = [type(m).__name__ for m in deployed.modules() if isinstance(m, (nn.BatchNorm2d, RepConv, LayerScale))]
    assert not leftover and not deployed.training
    # export folds on top of the counted (fused) form: a BN's 2 params per channel become 1 bias,
    # and a layer scale (1 per channel) goes into the conv before it
    fused = reparameterize(build(spec))
    bn = sum(m.num_features for m in fused.modules() if isinstance(m, nn.BatchNorm2d))
    ls = sum(m.gamma.numel() for m in fused.modules() if isinstance(m, LayerScale))
    assert count_params(deployed) == deployed_params(spec) - bn - ls


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_deploy_matches_every_ladder_phase(dataset):
    for phase in ladder(dataset):
        gap, deployed = _deploy_gap(phase)
        assert gap < 1e-5, (phase.name, gap)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
        assert deployed_params(phase) == count_params(build(phase))  # no rep*: the count is unchanged


def test_deploy_leaves_the_model_alone():
    model = _randomise_norms(build(PhaseSpec.from_arch("x", "mnist", f"{STEM} rep_k3_c8 cnx_k3k7_e2 gap")))
    before = copy.deepcopy(model.state_dict())
    model.train()
    deploy(model)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("text,groups", [("rep_k3_c8", 1), ("rep_k3_c16_s2", 1), ("repdw_k5", 8),
                                         ("repdw_k3_s2", 8), ("reppw_c8", 1), ("reppw_c12", 1)])
def test_fuse_is_one_conv_with_bias(text, groups):
    block = _randomise_norms(_block(f"{STEM} {text} gap"))
    fused = block.fuse()
    conv = fused[0]
    assert isinstance(conv, nn.Conv2d) and conv.bias is not None and conv.groups == groups and len(fused) == 2
    x = torch.rand(2, 8, 9, 9)
    with torch.no_grad():
        assert (block(x) - fused(x)).abs().max() < 1e-5


# 6. the budget counts the deployed network

def test_budget_tools_count_the_fused_form():
    spec = PhaseSpec.from_arch("x", "mnist", "conv_k3_c8 rep_k3_c8 rep_k3_c12 repdw_k3 reppw_c12 gap")
    cost = phase_cost(spec, budget=1_500)
    assert cost.params == deployed_params(spec) < cost.train_params == count_params(build(spec))
    with pytest.raises(BudgetError, match=rf"has {cost.params:,} parameters deployed "
                                          rf"\({cost.train_params:,} while training\)"):
        check_budget(spec, budget=cost.params - 1)
    check_budget(spec, budget=cost.params)  # fits on its fused count, though training has more
    fit = fit_width(spec, 3_000)
    assert fit.params == deployed_params(fit.spec) <= 3_000 < count_params(build(fit.spec))


def test_phase_table_shows_train_params_only_when_they_differ():
    rep = PhaseSpec.from_arch("r", "mnist", "conv_k3_c8 rep_k3_c8 gap", change="rep")
    plain = PhaseSpec.from_arch("p", "mnist", "conv_k3_c8 conv_k3_c8 gap", change="plain")
    rows = phase_rows("mnist", phases=[rep, plain])
    # stem 72 + 16, head 80 + 10; rep_k3_c8 trains as 576 + 16 + 64 + 16 + 16, deploys as 576 + 8
    assert [(r["params"], r["train_params"]) for r in rows] == [(88 + 584 + 90, 88 + 688 + 90),
                                                                (88 + 592 + 90, 88 + 592 + 90)]
    table = phases_markdown("mnist", phases=[rep, plain])
    assert table.splitlines()[0] == "| phase | change | params | train params | MACs | int8 weights | peak RAM (int8) | arena (int8) | ≤ 1,500 |"
    assert "| `r` | rep | 762 | 866 |" in table
    assert "train params" not in phases_markdown("mnist", phases=[plain])
    assert "train params" not in phases_markdown("mnist") and "train params" not in phases_markdown("cifar10")
