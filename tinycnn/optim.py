"""Parameter groups, optimisers, learning-rate schedules and SAM.

Schedules are pure functions ``lr_factor(step, total_steps, steps_per_epoch, recipe)``
returning a multiplier of the base lr, stepped once per batch through ``LambdaLR``:
easy to test at known steps, and resumable (LambdaLR's state is just the step count).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .recipe import Recipe


def param_groups(model: nn.Module, weight_decay: float, no_bias_decay: bool) -> list[dict]:
    """Decay only weight matrices and conv kernels (ndim > 1).

    Biases and BatchNorm/SE affine parameters (ndim <= 1) get no decay: shrinking them
    toward zero does not regularise capacity, it only fights the normalisation (the
    "no bias decay" trick of Jia et al. 2018 / He et al. 2019's bag of tricks).
    """
    if not no_bias_decay:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe.weight_decay, recipe.no_bias_decay)
    lr = recipe.effective_lr
    if recipe.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum,
                                                     nesterov=recipe.nesterov and recipe.momentum > 0)
    elif recipe.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr)
    else:  # radam, from torch-optimizer as the mission asks
        import torch_optimizer

        opt = torch_optimizer.RAdam(groups, lr=lr)
    if recipe.lookahead:
        import torch_optimizer

        opt = torch_optimizer.Lookahead(opt, k=5, alpha=0.5)
    return opt


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, recipe: Recipe) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (0-based)."""
    s = recipe.schedule
    if s == "onecycle":
        return _onecycle(step, total_steps, recipe)
    if s == "clr":
        return _triangular(step, steps_per_epoch, recipe)
    warmup = int(round(recipe.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / warmup
    if s == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    if s == "cosine":
        floor = recipe.min_lr_ratio
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    # step decay: gamma for every milestone (a fraction of all steps) already passed
    passed = sum(step >= m * total_steps for m in recipe.step_milestones)
    return recipe.step_gamma**passed


def _onecycle(step: int, total: int, r: Recipe) -> float:
    """Smith's one-cycle with linear ramps, matching torch's OneCycleLR(anneal_strategy='linear')."""
    start = 1.0 / r.onecycle_div
    end = start / r.onecycle_final_div
    peak_step = float(r.onecycle_pct * total) - 1
    last_step = total - 1
    if step <= peak_step:
        return start + (1.0 - start) * (step / peak_step if peak_step > 0 else 1.0)
    t = min(1.0, (step - peak_step) / (last_step - peak_step))
    return 1.0 + (end - 1.0) * t


def _triangular(step: int, steps_per_epoch: int, r: Recipe) -> float:
    """Smith's cyclical lr (2017): linear between min_lr_ratio and 1, half-cycle in epochs."""
    half = max(1, int(round(r.clr_half_epochs * steps_per_epoch)))
    cycle = step // (2 * half)
    x = abs(step / half - 2 * cycle - 1)
    amplitude = (1 - r.min_lr_ratio) * max(0.0, 1 - x)
    if r.clr_mode == "triangular2":
        amplitude /= 2**cycle
    return r.min_lr_ratio + amplitude


class SAM:
    """Sharpness-aware minimisation (Foret et al. 2021), wrapping any base optimiser.

    ``ascend()`` moves the weights to w + e(w), where e = rho * g / ||g|| (adaptive SAM
    scales by |w|, Kwon et al. 2021); the caller then recomputes the loss and gradient at
    that point, and ``descend()`` restores the exact original weights before the base
    optimiser steps with the new gradient. BatchNorm: running statistics are updated only
    by the first forward pass; the second (perturbed) pass runs with momentum 0 so the
    running mean/var are not updated twice per step (see ``bn_frozen``).
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05, adaptive: bool = False) -> None:
        self.base = base
        self.rho = rho
        self.adaptive = adaptive
        self._backup: dict[torch.Tensor, torch.Tensor] = {}

    def _params(self):
        for group in self.base.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    yield p

    @torch.no_grad()
    def ascend(self) -> None:
        params = list(self._params())
        scaled = [(p.abs() if self.adaptive else 1.0) * p.grad for p in params]
        norm = torch.norm(torch.stack([s.norm(2) for s in scaled]), 2)
        scale = self.rho / (norm + 1e-12)
        for p, s in zip(params, scaled):
            self._backup[p] = p.detach().clone()
            p.add_(s * (p.abs() if self.adaptive else 1.0) * scale)

    @torch.no_grad()
    def descend(self) -> None:
        for p, w in self._backup.items():
            p.copy_(w)
        self._backup.clear()


class bn_frozen:
    """Context manager: BatchNorm layers normalise with batch stats but keep running stats."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __enter__(self):
        self.saved = [m.momentum for m in self.layers]
        for m in self.layers:
            m.momentum = 0.0
        return self

    def __exit__(self, *exc):
        for m, mom in zip(self.layers, self.saved):
            m.momentum = mom
        return False
