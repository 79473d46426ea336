"""Parameter groups, optimisers, learning-rate schedules and Lookahead: one owner, `Optimization`.

Schedules are pure functions ``lr_factor(step, total_steps, steps_per_epoch, cfg)``
returning a multiplier of the base lr, stepped once per batch through ``LambdaLR``:
easy to test at known steps, and resumable (LambdaLR's state is just the step count).
Each function receives its slice of the recipe (`OptimizerConfig`, `ScheduleConfig`),
never the whole recipe.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .errors import RecipeError

OPTIMIZERS = ("sgd", "adamw", "radam")
SCHEDULES = ("constant", "cosine", "step", "clr", "onecycle")


def _require(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise RecipeError(f"invalid recipe: {message}")


@dataclass(frozen=True)
class OptimizerConfig:
    optimizer: str = "sgd"
    lr: float = 0.1  # the effective lr (after the linear scaling rule, if any)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    no_bias_decay: bool = True
    lookahead: bool = False

    def __post_init__(self) -> None:
        _require([(self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
                  (self.lr > 0, "lr must be > 0"),
                  (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
                  (self.weight_decay >= 0, "weight_decay must be >= 0")])


@dataclass(frozen=True)
class ScheduleConfig:
    schedule: str = "onecycle"
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    step_milestones: tuple[float, ...] = (0.5, 0.75)
    step_gamma: float = 0.1
    clr_half_epochs: float = 2.0
    clr_mode: str = "triangular"
    onecycle_pct: float = 0.25
    onecycle_div: float = 25.0
    onecycle_final_div: float = 1e4

    def __post_init__(self) -> None:
        _require([(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
                  (self.clr_mode in ("triangular", "triangular2"), "clr_mode must be triangular or triangular2"),
                  (0 < self.onecycle_pct < 1, "onecycle_pct must be in (0, 1)"),
                  (self.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
                  (0 <= self.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]"),
                  (self.clr_half_epochs > 0, "clr_half_epochs must be > 0"),
                  (self.onecycle_div > 0 and self.onecycle_final_div > 0, "onecycle divisors must be > 0"),
                  (all(0 < m < 1 for m in self.step_milestones), "step_milestones must be fractions in (0, 1)")])


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


def make_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.no_bias_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    import torch_optimizer  # radam, from torch-optimizer as the mission asks

    return torch_optimizer.RAdam(groups, lr=cfg.lr)


class Lookahead:
    """Lookahead (Zhang et al. 2019): every k steps, pull the fast weights halfway back to
    slow weights. A post-step hook on the base optimiser, with the exact arithmetic of
    torch-optimizer's ``Lookahead``, whose wrapper cannot ``state_dict()`` under torch 2.14
    (it never calls ``Optimizer.__init__``), so it could not be checkpointed or resumed."""

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        self.k, self.alpha, self.counter = k, alpha, 0
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.slow: list[torch.Tensor] | None = None
        optimizer.register_step_post_hook(lambda *_: self._after_step())

    @torch.no_grad()
    def _after_step(self) -> None:
        if self.counter == 0:
            if self.slow is None:
                self.slow = [p.detach().clone() for p in self.params]
            for fast, slow in zip(self.params, self.slow):
                fast.mul_(self.alpha).add_(slow, alpha=1.0 - self.alpha)
                slow.copy_(fast)
        self.counter = (self.counter + 1) % self.k

    def state_dict(self) -> dict:
        return {"counter": self.counter, "slow": self.slow}

    def load_state_dict(self, state: dict) -> None:
        self.counter, self.slow = state["counter"], state["slow"]


class Optimization:
    """The optimiser, its per-step lr schedule and Lookahead, built and checkpointed together
    (modded-nanogpt's TrainingManager): the engine steps them, never builds them."""

    def __init__(self, model: nn.Module, opt: OptimizerConfig, sched: ScheduleConfig,
                 total_steps: int, steps_per_epoch: int) -> None:
        self.optimizer = make_optimizer(model, opt)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, total_steps, steps_per_epoch, sched))
        self.lookahead = Lookahead(self.optimizer) if opt.lookahead else None

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "lookahead": self.lookahead.state_dict() if self.lookahead else None}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.lookahead is not None:
            self.lookahead.load_state_dict(state["lookahead"])


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (0-based)."""
    s = cfg.schedule
    if s == "onecycle":
        return _onecycle(step, total_steps, cfg)
    if s == "clr":
        return _triangular(step, steps_per_epoch, cfg)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / warmup
    if s == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    if s == "cosine":
        floor = cfg.min_lr_ratio
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    # step decay: gamma for every milestone (a fraction of all steps) already passed
    passed = sum(step >= m * total_steps for m in cfg.step_milestones)
    return cfg.step_gamma**passed


def _onecycle(step: int, total: int, r: ScheduleConfig) -> float:
    """Smith's one-cycle with linear ramps, matching torch's OneCycleLR(anneal_strategy='linear')."""
    start = 1.0 / r.onecycle_div
    end = start / r.onecycle_final_div
    peak_step = float(r.onecycle_pct * total) - 1
    last_step = total - 1
    if step <= peak_step:
        return start + (1.0 - start) * (step / peak_step if peak_step > 0 else 1.0)
    t = min(1.0, (step - peak_step) / (last_step - peak_step))
    return 1.0 + (end - 1.0) * t


def _triangular(step: int, steps_per_epoch: int, r: ScheduleConfig) -> float:
    """Smith's cyclical lr (2017): linear between min_lr_ratio and 1, half-cycle in epochs."""
    half = max(1, int(round(r.clr_half_epochs * steps_per_epoch)))
    cycle = step // (2 * half)
    x = abs(step / half - 2 * cycle - 1)
    amplitude = (1 - r.min_lr_ratio) * max(0.0, 1 - x)
    if r.clr_mode == "triangular2":
        amplitude /= 2**cycle
    return r.min_lr_ratio + amplitude
