"""Structured channel pruning of a trained network down to a smaller budget (issue 17, item 7).

The pruned network is not a new kind of object: it is the *same phase at a narrower width*,
`budget.fit_width(spec, budget).spec`, so it is built, counted, trained, exported and
reported like any other spec, and "that smaller architecture trained from scratch" is the
same spec trained from a random start — the honest comparison.

Which channels survive is decided per coupled group of a layer's output channels with
Torch-Pruning's dependency graph (Fang et al., "DepGraph", CVPR 2023): pruning a pointwise
conv's output channel also removes that channel from its BatchNorm, the next depthwise conv,
the next conv's inputs, and a squeeze-excite gate's input and output. The library traces
those couplings through the real forward pass (residual adds, SE products, reshapes), which
a hand-written walk over our block kinds would have to re-derive for every kind. Importance
is the group's L1 magnitude (Li et al., "Pruning Filters for Efficient ConvNets"), summed
over every coupled tensor; the least important channels go until each layer has the
narrower spec's width. The copied weights then load into `build(narrow_spec)` unchanged,
and fine-tuning is a normal run started from them (`engine.fit(..., initial_weights=...)`).
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from .budget import WidthFit, deployed_params, fit_width
from .build import build
from .datasets import dataset_info
from .deploy import is_fusable
from .errors import SpecError
from .spec import PhaseSpec


def pruning_target(spec: PhaseSpec, budget: int) -> WidthFit:
    """The narrower phase pruning aims at: the widest width of the same blocks within ``budget``."""
    params = deployed_params(spec)
    if params <= budget:
        raise SpecError(f"phase {spec.name!r} ({params:,} params) already fits {budget:,}; "
                        f"pruning needs a budget below the network's own size")
    return fit_width(spec, budget, max_width=1.0)


def _refuse_fusable(spec: PhaseSpec) -> None:
    """A model file holds the deployed form; a rep* block's fused conv has no training branches
    to load back into `build(spec)`, so such phases cannot be pruned and fine-tuned here."""
    fusable = sorted({type(m).__name__ for m in build(spec).modules() if is_fusable(m)})
    if fusable:
        raise SpecError(f"phase {spec.name!r} has re-parameterised blocks ({', '.join(fusable)}); pruning "
                        f"supports phases whose deployed form is their training form (no rep/repdw/reppw)")


def _group_importance():
    import torch_pruning as tp

    return tp.importance.GroupMagnitudeImportance(p=1)


def _dependency_graph(model: nn.Module, spec: PhaseSpec):
    import torch_pruning as tp

    info = dataset_info(spec.dataset)
    example = torch.zeros(1, info.channels, info.size, info.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library warns about modules it treats as element-wise
        return tp.DependencyGraph().build_dependency(model, example_inputs=example)


def _prune_layer(graph, conv: nn.Conv2d, keep: int) -> None:
    """Remove the ``conv.out_channels - keep`` output channels of least group L1 magnitude."""
    import torch_pruning as tp

    whole = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
    scores = _group_importance()(whole)
    drop = scores.argsort()[:conv.out_channels - keep].tolist()
    graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=drop).prune()


def prune_weights(model: nn.Module, spec: PhaseSpec, target: PhaseSpec) -> dict[str, torch.Tensor]:
    """Weights of ``target`` (``spec`` at a narrower width) cut from the trained ``model``.

    Every full (non-depthwise) conv of ``target`` narrower than its counterpart is pruned
    to its width, in network order; depthwise convs, BatchNorms, SE layers and the head
    follow through the dependency graph. Returns a state dict that loads into `build(target)`.
    """
    _refuse_fusable(spec)
    work = copy.deepcopy(model).cpu().eval()
    graph = _dependency_graph(work, spec)
    convs = dict(work.named_modules())
    for name, narrow in build(target).named_modules():
        if isinstance(narrow, nn.Conv2d) and narrow.groups == 1:
            wide = convs[name]
            if wide.out_channels > narrow.out_channels:
                _prune_layer(graph, wide, narrow.out_channels)
    state = work.state_dict()
    _check_shapes(state, build(target).state_dict(), target)
    return {k: v.detach().clone() for k, v in state.items()}


def _check_shapes(got: dict, want: dict, target: PhaseSpec) -> None:
    wrong = [f"{k}: {tuple(got[k].shape) if k in got else 'missing'} != {tuple(v.shape)}"
             for k, v in want.items() if k not in got or got[k].shape != v.shape]
    if wrong or set(got) != set(want):
        raise SpecError(f"pruning did not reach `{target.arch}`: {'; '.join(wrong[:3]) or 'other tensors'}")


def pruned_model(model: nn.Module, spec: PhaseSpec, target: PhaseSpec) -> nn.Module:
    """`build(target)` holding the pruned weights, in eval mode."""
    narrow = build(target)
    narrow.load_state_dict(prune_weights(model, spec, target))
    return narrow.eval()
