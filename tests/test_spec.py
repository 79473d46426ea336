import pytest

from tinycnn.errors import SpecError
from tinycnn.spec import BlockSpec, PhaseSpec, format_arch, parse_arch, parse_block


@pytest.mark.parametrize("text", ["conv_k3_c16", "conv_k5_c8_s2", "dw_k3_c12_se2", "sep_k3_c12_se2", "pw_c8",
                                  "pw_c8_se2", "max", "blur", "drop_p10", "sep_k3_c12_se2_nsw", "conv_k3_c8_nhs"])
def test_block_strings_round_trip(text):
    assert str(parse_block(text)) == text


def test_parse_block_fields():
    b = parse_block("dw_k5_c12_s2_se3")
    assert b == BlockSpec(kind="dw", out=12, kernel=5, stride=2, se=3)
    assert parse_block("pw_c8").kernel == 1
    assert parse_block("sep_k3_c8_nsw").act == "sw" and parse_block("sep_k3_c8").act == "re"
    assert str(parse_block("sep_k3_c8_nre")) == "sep_k3_c8"  # ReLU is the default, not printed


@pytest.mark.parametrize("bad", ["dense_c8", "conv_k3", "conv_k3_c8_x4", "max_c8", "pw_k3_c8",
                                 "conv_k4_c8", "conv_k3_c8_s3", "drop_p0", "conv_k3_c8_c9", "",
                                 "sep_k3_c8_ngelu", "max_nsw", "conv_k3_c8_nsw_nhs"])
def test_bad_block_strings_name_the_grammar(bad):
    with pytest.raises(SpecError, match="accepted|kernel|stride|dropout|option"):
        parse_block(bad)


def test_arch_needs_head_and_conv():
    blocks, head = parse_arch("conv_k3_c8 max gap")
    assert head == "gap" and format_arch(blocks, head) == "conv_k3_c8 max gap"
    with pytest.raises(SpecError, match="head"):
        parse_arch("conv_k3_c8 max")
    with pytest.raises(SpecError, match="no conv"):
        parse_arch("max gap")


def test_unknown_dataset_is_rejected():
    with pytest.raises(SpecError, match="accepted: mnist, cifar10"):
        PhaseSpec.from_arch("x", "svhn", "conv_k3_c8 gap")


def test_scaled_multiplies_widths_and_se():
    s = PhaseSpec.from_arch("x", "mnist", "conv_k3_c8 dw_k3_c12_se2 max gap").scaled(1.5)
    assert s.arch == "conv_k3_c12 dw_k3_c18_se3 max gap"
    assert PhaseSpec.from_arch("x", "mnist", "conv_k3_c2 gap").scaled(0.1).arch == "conv_k3_c1 gap"


def test_dict_round_trip_is_plain_types():
    s = PhaseSpec.from_arch("x", "cifar10", "conv_k3_c8 blur dw_k3_c16_se4 gap", change="c")
    d = s.to_dict()
    assert all(isinstance(v, str) for v in d.values())
    assert PhaseSpec.from_dict(d) == s


def test_activation_option_changes_the_layers_not_the_param_count():
    from torch import nn
    from tinycnn import build, count_params
    relu = PhaseSpec.from_arch("a", "mnist", "conv_k3_c8 sep_k3_c10 dw_k3_c12 pw_c8 gap")
    silu = PhaseSpec.from_arch("b", "mnist", "conv_k3_c8_nsw sep_k3_c10_nsw dw_k3_c12_nsw pw_c8_nsw gap")
    m_relu, m_silu = build(relu), build(silu)
    assert count_params(m_relu) == count_params(m_silu)
    kinds = lambda m: [type(x).__name__ for x in m.modules() if isinstance(x, (nn.ReLU, nn.SiLU))]
    assert set(kinds(m_relu)) == {"ReLU"} and kinds(m_silu) == ["SiLU"] * 5  # dw has two


def test_every_spec_activation_has_a_layer():
    from tinycnn.blocks import ACTIVATION_LAYERS
    from tinycnn.spec import ACTIVATIONS
    assert set(ACTIVATION_LAYERS) == set(ACTIVATIONS)
