"""Parameter and MAC counting, budget checks, and a width solver for any budget.

What is deployed is what is counted, and the deployed network is the *trained
architecture with its re-parameterised branches fused*: a rep/repdw/reppw block (RepVGG,
MobileOne) counts its single fused conv and that conv's bias, not the two or three
conv+BN branches it trains with. Every other block counts as trained, BatchNorm included:
`deployed_params` equals `count_params` of the built model for every kind but rep*.

Folding BN into the conv before it (`deploy.fold_batchnorms`) is a separate export step
and is NOT counted, on purpose. It would lower every count by one parameter per BN
channel (2 affine parameters become 1 bias), including every phase of both ladders: the
exact counts the tests assert (1,473; 138,378), the budgets they are checked against and
the committed results would all move, for a change in how the same function is computed,
not in the network. Re-parameterisation is different: the multi-branch block *is* a
training device whose deployed architecture is one conv (issue #15: "a re-parameterised
block counts its fused form"). `PhaseCost.train_params` keeps the training-time count beside it.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (part of torch, so nothing
to pin): it counts the FLOPs of convolutions and matrix multiplies as 2 per
multiply-add, so MACs = FLOPs / 2. Normalisation, BN, ReLU, pooling and the SE gate's
elementwise product are not counted: they are a few percent of a conv's cost and are
not multiply-adds of weights. `phase_cost` counts the MACs of the deployed (fused) form.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .build import build
from .datasets import dataset_info
from .deploy import reparameterize
from .errors import BudgetError, SpecError
from .ladders import ladder
from .spec import PhaseSpec


def count_params(model: nn.Module) -> int:
    """Every trainable and frozen parameter: weights, biases, BN affine, SE, head.

    Buffers (BN running stats, the normalisation constants, the blur filter) are state,
    not parameters, and are not counted.
    """
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, dataset: str) -> int:
    """Multiply-accumulates of one forward pass on a single image of ``dataset``."""
    info = dataset_info(dataset)
    x = torch.zeros(1, info.channels, info.size, info.size)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


@dataclass(frozen=True)
class PhaseCost:
    params: int  # deployed: re-parameterised blocks fused (what the budget counts)
    macs: int  # of the deployed form
    budget: int
    train_params: int  # the model as trained: equal to params unless the phase has rep* blocks

    @property
    def within_budget(self) -> bool:
        return self.params <= self.budget

    @property
    def over_by(self) -> int:
        return max(0, self.params - self.budget)


def require_positive_budget(budget: int, what: str = "budget", unit: str = "parameters") -> int:
    """A budget of zero or less fits nothing; saying so beats printing "over by" for every phase."""
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or not budget >= 1:
        raise BudgetError(f"{what} must be a positive number of {unit}, got {budget}")
    return budget


def phase_cost(spec: PhaseSpec, budget: int | None = None) -> PhaseCost:
    budget = require_positive_budget(budget if budget is not None else dataset_info(spec.dataset).budget)
    model = build(spec)
    train_params = count_params(model)
    deployed = reparameterize(model)
    return PhaseCost(params=count_params(deployed), macs=count_macs(deployed, spec.dataset), budget=budget,
                     train_params=train_params)


def check_budget(spec: PhaseSpec, budget: int | None = None) -> PhaseCost:
    """Raise BudgetError if ``spec`` has more parameters than ``budget``."""
    cost = phase_cost(spec, budget)
    if not cost.within_budget:
        trained = f" deployed ({cost.train_params:,} while training)" if cost.train_params != cost.params else ""
        in_ladder = any(p.name == spec.name and p.arch == spec.arch for p in ladder(spec.dataset))
        fix = (f"try `tinycnn fit {spec.dataset} --phase {spec.name} --budget {cost.budget}`" if in_ladder
               else "narrow its blocks (smaller c) or raise the budget")  # `fit --phase` takes ladder phases only
        raise BudgetError(
            f"phase {spec.name!r} ({spec.dataset}) has {cost.params:,} parameters{trained}, "
            f"over the budget of {cost.budget:,} by {cost.over_by:,}; {fix}"
        )
    return cost


def deployed_params(spec: PhaseSpec) -> int:
    """Parameters of ``spec`` as deployed, re-parameterised blocks fused (the module
    docstring says why BN is still counted): what every budget check counts."""
    # The meta device allocates no memory and runs no initialiser: counting a CIFAR
    # phase takes ~1 ms instead of ~40 ms, which keeps the width solver interactive.
    with torch.device("meta"):
        return count_params(reparameterize(build(spec)))


def _refuse_unreachable(spec: PhaseSpec, budget: int, max_width: float, params: int) -> None:
    """If even the widest multiplier fits, "the widest that fits" would be a silent cap, not a fit."""
    if params <= budget:
        raise BudgetError(
            f"budget {budget:,} is larger than phase {spec.name!r} ({spec.dataset}) can use at up to "
            f"x{max_width} ({params:,} params there); a bigger max_width or another phase is needed"
        )


@dataclass(frozen=True)
class WidthFit:
    width: float
    spec: PhaseSpec
    params: int  # deployed


MIN_STEP = 1e-6  # the grid's widths are rounded to 6 decimals: a finer step makes width 0


def fit_width(spec: PhaseSpec, budget: int, step: float = 0.01, max_width: float = 8.0,
              multiple: int = 1, ram_budget: int | None = None) -> WidthFit:
    """The widest multiplier on a ``step`` grid whose scaled phase fits ``budget``, with
    every width rounded to a multiple of ``multiple`` (see `PhaseSpec.scaled`), and, given
    ``ram_budget``, whose planned int8 activation arena fits that many bytes too.

    Counts are `deployed_params`. Parameters grow with width, but rounding widths to
    integers makes the growth only *nearly* monotone. So: bisect for the boundary, then
    scan a window of grid points above it from the top down and take the widest that fits.
    """
    require_positive_budget(budget)
    if not MIN_STEP <= step <= max_width:  # also nan; widths are rounded to 6 decimals
        raise SpecError(f"need {MIN_STEP:g} <= step <= max_width, got step={step}, max_width={max_width}")

    def params_at(i: int) -> int:
        return deployed_params(spec.scaled(round(i * step, 6), multiple))

    n_steps = int(round(max_width / step))
    if params_at(1) > budget:
        raise BudgetError(
            f"phase {spec.name!r} cannot fit {budget:,} parameters at any width "
            f"(narrowest, x{step}, has {params_at(1):,}); choose a larger budget or a smaller phase"
        )
    _refuse_unreachable(spec, budget, round(n_steps * step, 6), params_at(n_steps))
    lo, hi = 1, n_steps  # invariant: params_at(lo) fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if params_at(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    window = 10  # rounding never moves the boundary by more than a few grid steps
    for i in range(min(n_steps, lo + window), lo, -1):
        if params_at(i) <= budget:
            lo = i
            break
    if ram_budget is not None:
        lo = _widest_within_ram(spec, lo, step, multiple, ram_budget)
    width = round(lo * step, 6)
    return WidthFit(width, spec.scaled(width, multiple), params_at(lo))


def _widest_within_ram(spec: PhaseSpec, hi: int, step: float, multiple: int, ram_budget: int) -> int:
    """The widest grid point <= ``hi`` whose planned arena fits ``ram_budget`` bytes. Activation
    bytes grow with every width (a sum of channels x pixels), so a bisection finds it."""
    from .memory import planned_arena_bytes

    require_positive_budget(ram_budget, "RAM budget", "bytes")

    def arena_at(i: int) -> int:
        return planned_arena_bytes(spec.scaled(round(i * step, 6), multiple))

    if arena_at(hi) <= ram_budget:
        return hi
    if arena_at(1) > ram_budget:
        raise BudgetError(f"phase {spec.name!r} needs {arena_at(1):,} B of activation RAM (planned int8 arena) even "
                          f"at its narrowest (x{step}), over the RAM budget of {ram_budget:,} B; raise --ram-budget "
                          f"or choose a phase that downsamples earlier")
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if arena_at(mid) <= ram_budget else (lo, mid - 1)
    return lo
