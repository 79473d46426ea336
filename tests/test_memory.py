"""Flash and RAM from the spec: int8 weight bytes and the peak live set of activations."""
import json
from pathlib import Path

import pytest

from tinycnn import get_phase
from tinycnn.budget import deployed_params, fit_width
from tinycnn.errors import BudgetError
from tinycnn.memory import int8_weight_bytes, peak_activation_bytes, planned_arena_bytes
from tinycnn.phases_table import budget_status, phase_rows
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


# --- the planned arena and --ram-budget (issue 22, item 5) ---------------------------------------

def test_planned_arena_is_at_least_the_peak_and_close_to_it_for_the_finals():
    for dataset in ("mnist", "cifar10"):
        spec = get_phase(dataset, "final")
        peak, arena = peak_activation_bytes(spec), planned_arena_bytes(spec)
        assert peak <= arena <= 1.1 * peak


@pytest.mark.parametrize("ram", [6_000, 8_000, 12_000])
def test_width_solver_fits_the_ram_budget_and_no_wider_grid_point_does(ram):
    spec = get_phase("mnist", "final")
    fit = fit_width(spec, 1500, ram_budget=ram)
    assert planned_arena_bytes(fit.spec) <= ram and fit.params <= 1500
    wider = spec.scaled(round(fit.width + 0.01, 6))
    assert planned_arena_bytes(wider) > ram or deployed_params(wider) > 1500
    assert fit.width < fit_width(spec, 1500).width  # the RAM budget, not the parameters, decided


def test_a_ram_budget_nothing_fits_names_both_figures():
    with pytest.raises(BudgetError, match=r"needs [\d,]+ B of activation RAM .* over the RAM budget of 500 B"):
        fit_width(get_phase("mnist", "final"), 1500, ram_budget=500)
    with pytest.raises(BudgetError, match="RAM budget must be a positive number of bytes"):
        fit_width(get_phase("mnist", "final"), 1500, ram_budget=0)


def test_phases_rows_report_ram_over_budget():
    rows = {r["phase"]: r for r in phase_rows("mnist", ram_budget=10_000)}
    final = rows["sam"]
    assert final["arena_bytes"] == planned_arena_bytes(get_phase("mnist", "final"))
    assert not final["within_budget"] and final["ram_over_by"] == final["arena_bytes"] - 10_000
    assert budget_status(final) == f"RAM over by {final['ram_over_by']:,} B"
    assert all(r["within_budget"] == (r["over_by"] == 0) for r in phase_rows("mnist", ram_budget=10**6))
