"""Flash and RAM from the spec: int8 weight bytes and the peak live set of activations."""
import json
from pathlib import Path

import pytest

from tinycnn import get_phase
from tinycnn.memory import int8_weight_bytes, peak_activation_bytes
from tinycnn.spec import PhaseSpec

REPO = Path(__file__).resolve().parents[1]


def test_one_conv_holds_its_input_and_output():
    # 1x28x28 image (784) alive while the conv writes 8x28x28 (6,272); the GAP and head are smaller
    spec = PhaseSpec.from_arch("c", "mnist", "conv_k3_c8 gap")
    assert peak_activation_bytes(spec) == 784 + 6272
    assert int8_weight_bytes(spec) == 9 * 8 + 8 * 10  # conv kernel + head matrix; biases are not int8


def test_a_chain_frees_what_no_later_op_reads():
    # conv 8 -> conv 8 at 28x28: the image is dead once the first conv ran, so two 6,272 maps are the peak
    spec = PhaseSpec.from_arch("cc", "mnist", "conv_k3_c8 conv_k3_c8 gap")
    assert peak_activation_bytes(spec) == 2 * 6272


def test_a_residual_keeps_its_input_alive_across_the_branch():
    plain = PhaseSpec.from_arch("p", "mnist", "conv_k3_c8 dw_k3_c8 gap")
    residual = PhaseSpec.from_arch("r", "mnist", "conv_k3_c8 dw_k3_c8_r gap")
    assert peak_activation_bytes(residual) == peak_activation_bytes(plain) + 6272  # the skip is held


@pytest.mark.parametrize("dataset,run", [("mnist", "sam/seed0"), ("cifar10", "long/seed0")])
def test_int8_weight_bytes_match_the_exported_int8_file(dataset, run):
    export = json.loads((REPO / "experiments/results" / dataset / run / "export.json").read_text())
    assert int8_weight_bytes(get_phase(dataset, "final")) == export["int8"]["int8_weight_bytes"]
