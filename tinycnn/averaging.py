"""Weight averaging: none, an exponential moving average (EMA), or SWA.

An averager is told of every step and every epoch end, says whether the main lr schedule
still runs, and finally hands over the weights to keep. SWA owns everything of its own:
the averaged copy, SWALR (which takes over the lr once averaging starts) and the
recomputation of BatchNorm statistics for the averaged weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn, update_bn

from .errors import RecipeError

_KEYS = ("swa_model", "swa_scheduler", "ema_model")  # checkpoint keys, as written since round 1


@dataclass(frozen=True)
class AveragingConfig:
    swa: bool = False
    swa_start: float = 0.75  # fraction of epochs after which snapshots are averaged
    swa_lr: float = 0.0  # 0: keep the scheduled lr at swa_start; else SWALR anneals to it
    ema_decay: float = 0.0  # 0 disables; e.g. 0.999
    ema_warmup: bool = False  # decay min(ema_decay, (1 + n) / (10 + n)) after n updates (timm's ModelEmaV3)

    def __post_init__(self) -> None:
        for ok, message in [(0 < self.swa_start < 1, "swa_start must be a fraction in (0, 1)"),
                            (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)"),
                            (self.swa_lr >= 0, "swa_lr must be >= 0"),
                            (not (self.swa and self.ema_decay), "choose SWA or EMA, not both")]:
            if not ok:
                raise RecipeError(f"invalid recipe: {message}")


class NoAveraging:
    """The last weights are the final weights."""

    def main_schedule_active(self, epoch: int) -> bool:
        return True

    def on_step(self, model: nn.Module) -> None:
        pass

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        pass

    def final(self, model: nn.Module, plain_batches: Iterable[torch.Tensor]) -> tuple[nn.Module, str]:
        return model, "last"

    def state_dict(self) -> dict:
        return dict.fromkeys(_KEYS)

    def load_state_dict(self, state: dict) -> None:
        pass


def warmup_ema_multi_avg_fn(decay: float):
    """EMA whose decay grows as (1 + n) / (10 + n) up to ``decay``: early on, the average
    follows the fast-moving weights instead of remembering the random init for ~1/(1-decay)
    steps (1,000 at 0.999: several epochs of a tiny CIFAR-10 net at batch 128)."""

    @torch.no_grad()
    def update(ema_params, current_params, num_averaged):
        n = float(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        for ema, cur in zip(ema_params, current_params):
            if ema.is_floating_point():
                ema.lerp_(cur, 1 - d)
            else:  # BatchNorm's num_batches_tracked
                ema.copy_(cur)

    return update


class EMA(NoAveraging):
    """w_ema <- decay * w_ema + (1 - decay) * w after every step, BN buffers included."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False) -> None:
        avg = warmup_ema_multi_avg_fn(decay) if warmup else get_ema_multi_avg_fn(decay)
        self.averaged = AveragedModel(model, multi_avg_fn=avg, use_buffers=True)

    def on_step(self, model: nn.Module) -> None:
        self.averaged.update_parameters(model)

    def final(self, model, plain_batches):
        return self.averaged.module, "ema"

    def state_dict(self) -> dict:
        return {**super().state_dict(), "ema_model": self.averaged.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state["ema_model"])


class SWA(NoAveraging):
    """Stochastic weight averaging (Izmailov et al. 2018): the mean of the weights at the
    end of each epoch from ``start_epoch`` on, optionally at a constant SWALR lr."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: AveragingConfig, epochs: int) -> None:
        self.averaged = AveragedModel(model)
        self.scheduler = (SWALR(optimizer, swa_lr=cfg.swa_lr, anneal_epochs=1, anneal_strategy="cos")
                          if cfg.swa_lr > 0 else None)
        self.start_epoch = int(cfg.swa_start * epochs)

    def main_schedule_active(self, epoch: int) -> bool:
        return not (epoch >= self.start_epoch and self.scheduler is not None)  # SWALR takes over

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        if epoch >= self.start_epoch:
            self.averaged.update_parameters(model)
            if self.scheduler is not None:
                self.scheduler.step()

    def final(self, model, plain_batches):
        # BN statistics of an averaged model must be recomputed: the average of running stats
        # is not the running stats of the average. Plain (un-augmented) training batches.
        update_bn(plain_batches, self.averaged)
        return self.averaged.module, "swa"

    def state_dict(self) -> dict:
        return {**super().state_dict(), "swa_model": self.averaged.state_dict(),
                "swa_scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state["swa_model"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["swa_scheduler"])


def make_averager(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: AveragingConfig, epochs: int):
    if cfg.swa:
        return SWA(model, optimizer, cfg, epochs)
    if cfg.ema_decay:
        return EMA(model, cfg.ema_decay, cfg.ema_warmup)
    return NoAveraging()
