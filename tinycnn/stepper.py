"""One optimisation step: forward under autocast, backward, clipping, the update.

``stepper.step(objective, x, targets) -> (loss, logits)`` is all the epoch loop sees.
`Stepper` is the plain step (with the fp16 GradScaler and gradient clipping inside);
`SAMStepper` adds sharpness-aware minimisation's second pass. Schedules and weight
averaging are not here: they act after the step (`optim.Optimization`, `averaging`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from .errors import RecipeError

AMP_MODES = ("none", "bf16", "fp16")
# "perturbed": the update uses only the gradient at w + e (Foret et al.). "sum": the plain and
# the perturbed gradients added, which is what the engine did until #14 (it never cleared the
# first gradient); the committed `sam` runs trained so, and their recipe keeps it to reproduce.
SAM_GRADIENTS = ("perturbed", "sum")


@dataclass(frozen=True)
class StepConfig:
    amp: str = "none"
    grad_clip: float = 0.0
    sam_rho: float = 0.0  # 0 disables SAM
    sam_adaptive: bool = False
    sam_gradient: str = "perturbed"

    def __post_init__(self) -> None:
        for ok, message in [
            (self.amp in AMP_MODES, f"amp must be one of {', '.join(AMP_MODES)}"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0 disables clipping)"),
            (self.sam_rho >= 0, "sam_rho must be >= 0"),
            (self.sam_gradient in SAM_GRADIENTS, f"sam_gradient must be one of {', '.join(SAM_GRADIENTS)}"),
            (not (self.sam_rho and self.amp == "fp16"), "SAM with fp16 is not supported; use amp=bf16"),
        ]:
            if not ok:
                raise RecipeError(f"invalid recipe: {message}")


def autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class Stepper:
    """zero_grad -> backward -> (extra pass) -> clip -> optimiser step."""

    def __init__(self, model: nn.Module, forward: nn.Module, optimizer: torch.optim.Optimizer,
                 cfg: StepConfig, device: torch.device) -> None:
        self.model, self.fwd, self.optimizer, self.cfg, self.device = model, forward, optimizer, cfg, device
        # fp16 needs loss scaling on a GPU; bf16 has fp32's range and needs none
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" and device.type == "cuda" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.cfg.amp):
            return self.fwd(x)

    def step(self, objective, x: torch.Tensor, targets: torch.Tensor):
        loss, logits = objective(self.forward, x, targets)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        self.extra_pass(objective, x, targets)
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return loss, logits

    def extra_pass(self, objective, x: torch.Tensor, targets: torch.Tensor) -> None:
        """Nothing for a plain step; SAM's perturbed pass."""


class SAMStepper(Stepper):
    """Sharpness-aware minimisation (Foret et al. 2021): the update uses the gradient at
    the worst nearby point w + e(w), found from the first pass's gradient."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sam = SAM(self.optimizer, self.cfg.sam_rho, self.cfg.sam_adaptive)

    def extra_pass(self, objective, x: torch.Tensor, targets: torch.Tensor) -> None:
        self.sam.ascend()
        if self.cfg.sam_gradient == "perturbed":
            self.optimizer.zero_grad(set_to_none=True)
        with bn_frozen(self.model):
            objective(self.forward, x, targets)[0].backward()
        self.sam.descend()


def make_stepper(model: nn.Module, forward: nn.Module, optimizer: torch.optim.Optimizer,
                 cfg: StepConfig, device: torch.device) -> Stepper:
    cls = SAMStepper if cfg.sam_rho else Stepper
    return cls(model, forward, optimizer, cfg, device)


class SAM:
    """SAM's weight moves around any base optimiser.

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
