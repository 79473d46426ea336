"""What a microcontroller developer checks first: flash for the int8 weights, and RAM for the
activations — both computed from the spec, no training needed.

* int8 weight bytes: one byte per weight of every conv and linear layer of the deployed
  network (re-parameterised branches fused, BatchNorm folded into the convs: `deploy`), the
  tensors an int8 export stores as int8 (biases become int32, and scales are extra).
* peak activation bytes: the largest set of activation tensors that must be alive at once
  during one forward pass at int8 (one byte per element), a *lower bound* for any memory
  plan that runs the ops in this order. Lifetimes come from the ops the deployed network
  actually executes (a dispatch-mode trace of one image): a tensor lives from the op that
  makes it to the last op that reads it; the input image counts, weights do not. In-place
  ops and views share their input's buffer.
* planned arena bytes: the same lifetimes placed in one static arena by `arena.plan` (TFLM's
  greedy-by-size planner), what `--ram-budget` checks for `phases`, `fit` and `search`
  (issue 22, item 5); the C export plans its int8 ONNX graph with the same planner.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from . import arena
from .arena import Tensor
from .build import build
from .datasets import dataset_info
from .deploy import deploy
from .spec import PhaseSpec


def int8_weight_bytes(spec: PhaseSpec) -> int:
    """Bytes of int8 weights: every conv/linear weight of the deployed network, one byte each."""
    return sum(p.numel() for p in deploy(build(spec)).parameters() if p.ndim > 1)


class _OpTrace(TorchDispatchMode):
    """Record, per executed op, the buffers it reads and the buffers it creates."""

    def __init__(self, ignore: set[int]) -> None:
        super().__init__()
        self.ignore, self.ops, self.size, self.keep = ignore, [], {}, []

    def _keys(self, tensors) -> list[int]:
        keys = []
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
                key = t.untyped_storage().data_ptr()
                if key not in self.ignore:
                    keys.append(key)
                    self.size.setdefault(key, t.untyped_storage().nbytes() // t.element_size())
        return keys

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.keep.append(out)  # no buffer is freed during the trace, so no address is reused
        self.ops.append((self._keys(tree_leaves((args, kwargs))), self._keys(tree_leaves(out))))
        return out


def activation_lifetimes(model: nn.Module, x: torch.Tensor) -> list[Tensor]:
    """Every activation buffer of one forward pass of ``model`` on ``x``: elements (= int8
    bytes) and the ops that first write and last read it (the input is written before op 0)."""
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    trace = _OpTrace(weights)
    with torch.no_grad(), trace:
        model(x)
    first, last = {trace_key: -1 for trace_key in trace._keys([x])}, {}
    for i, (reads, writes) in enumerate(trace.ops):
        for key in writes:
            first.setdefault(key, i)
        for key in reads + writes:
            last[key] = i
    return [Tensor(f"t{n}", trace.size[k], first[k] + 1, last.get(k, first[k]) + 1) for n, k in enumerate(first)]


def peak_live_elements(model: nn.Module, x: torch.Tensor) -> int:
    """The largest number of activation elements alive at once when ``model`` runs on ``x``."""
    return arena.lower_bound(arena.buffers(activation_lifetimes(model, x)))


def _deployed_with_input(spec: PhaseSpec) -> tuple[nn.Module, torch.Tensor]:
    info = dataset_info(spec.dataset)
    return deploy(build(spec)), torch.zeros(1, info.channels, info.size, info.size)


def planned_arena_bytes(spec: PhaseSpec) -> int:
    """Bytes of one static int8 arena holding every activation of the deployed network, placed
    by `arena.plan` (TFLM's greedy-by-size planner) from the spec's own op trace: the RAM a
    `--ram-budget` checks, no training needed. The C export plans its ONNX graph the same way."""
    return arena.plan(activation_lifetimes(*_deployed_with_input(spec))).arena_bytes


def peak_activation_bytes(spec: PhaseSpec) -> int:
    """Lower bound of activation RAM at int8 for one image through the deployed network."""
    return peak_live_elements(*_deployed_with_input(spec))
