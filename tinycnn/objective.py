"""What a training step minimises: cross-entropy on probability targets, or distillation
wrapping it (timm's ClassificationTask: an objective returns the loss and the logits).

An objective is called as ``objective(forward, x, targets) -> (loss, logits)``, where
``forward`` is the model (under autocast, if any) and ``targets`` are probability vectors
(smoothed and/or mixed by the augmentation). Each objective also knows its *chance loss*,
the loss of predicting every class equally: a loss far above it means divergence.

A batch may hold several *views* of each image (AugMix's JSD loss: clean, AugMix, AugMix,
concatenated along the batch) for B targets. Only `JensenShannon` accepts such a batch; it
returns the clean view's logits, so the epoch's accuracy counts every image once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import RecipeError

Forward = Callable[[torch.Tensor], torch.Tensor]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against probability targets (smoothed and/or mixed)."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.: T^2 * KL(softmax(teacher/T) || softmax(student/T)); T^2 keeps the
    gradient scale independent of T."""
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, 1), F.log_softmax(teacher.float() / t, 1),
                    reduction="batchmean", log_target=True) * t * t


class CrossEntropy:
    """Soft-target cross-entropy: label smoothing and Mixup/CutMix arrive in the targets."""

    def __call__(self, forward: Forward, x: torch.Tensor, targets: torch.Tensor):
        logits = forward(x)
        return soft_cross_entropy(logits, targets), logits

    def chance_loss(self, num_classes: int) -> float:
        return math.log(num_classes)


@dataclass(frozen=True)
class DistillConfig:
    kd_teacher: str = ""  # a model file, a phase name, or "previous"; resolved by the pipeline
    kd_temperature: float = 4.0
    kd_alpha: float = 0.5  # weight of the distillation term

    def __post_init__(self) -> None:
        if not (0 <= self.kd_alpha <= 1 and self.kd_temperature > 0):
            raise RecipeError("invalid recipe: kd_alpha must be in [0, 1] and kd_temperature > 0")


class Distillation:
    """(1 - alpha) * base objective + alpha * T^2 KL(teacher || student) at temperature T.

    The teacher's logits are computed once per batch (no grad, full precision) and reused
    when the stepper evaluates the same batch twice (SAM's second pass).
    """

    def __init__(self, base: CrossEntropy, teacher: nn.Module, cfg: DistillConfig) -> None:
        self.base, self.teacher, self.cfg = base, teacher.eval(), cfg
        self._cached: tuple[torch.Tensor, torch.Tensor] | None = None

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self._cached is None or self._cached[0] is not x:
            with torch.no_grad():
                self._cached = (x, self.teacher(x))
        return self._cached[1]

    def __call__(self, forward: Forward, x: torch.Tensor, targets: torch.Tensor):
        teacher = self.teacher_logits(x)
        loss, logits = self.base(forward, x, targets)
        a = self.cfg.kd_alpha
        return (1 - a) * loss + a * distillation_loss(logits, teacher, self.cfg.kd_temperature), logits

    def chance_loss(self, num_classes: int) -> float:
        # KL(teacher || uniform) <= ln K, scaled by T^2
        a, t = self.cfg.kd_alpha, self.cfg.kd_temperature
        return (1 - a) * self.base.chance_loss(num_classes) + a * t * t * math.log(num_classes)


def js_divergence(logits: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Jensen-Shannon divergence among the softmaxes of ``logits`` (each (B, K)), averaged
    over the batch: mean_i KL(p_i || M), M the mean of the p_i, as timm's JsdCrossEntropy
    computes it (M clamped to [1e-7, 1] before the log)."""
    probs = [F.softmax(z.float(), dim=1) for z in logits]
    log_mixture = torch.clamp(torch.stack(probs).mean(0), 1e-7, 1).log()
    return sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probs) / len(probs)


@dataclass(frozen=True)
class ConsistencyConfig:
    augmix_jsd: bool = False  # the batch holds 3 views (clean, AugMix, AugMix) of each image
    augmix_jsd_weight: float = 12.0  # lambda of the JSD term (the AugMix paper's 12)

    def __post_init__(self) -> None:
        if self.augmix_jsd_weight < 0:
            raise RecipeError("invalid recipe: augmix_jsd_weight must be >= 0")


class JensenShannon:
    """AugMix's loss (Hendrycks et al. 2020; timm's JsdCrossEntropy): the base objective on
    the clean view + lambda * JS(p_clean, p_aug1, p_aug2).

    Why: the consistency term asks for the same prediction on an image and on two strongly
    augmented versions of it, which the paper found buys most of AugMix's corruption
    robustness. One forward pass over all views (as the paper and timm do, so BatchNorm's
    statistics see the augmented views too); the base objective (cross-entropy, or
    distillation around it) sees the clean view only, and its logits are returned so the
    epoch's accuracy counts each image once. Predicting every class equally gives JS = 0,
    so the chance loss is the base's.
    """

    def __init__(self, base, weight: float, views: int = 3) -> None:
        self.base, self.weight, self.views = base, weight, views
        self._clean: tuple[torch.Tensor, torch.Tensor] | None = None

    def clean_view(self, x: torch.Tensor, b: int) -> torch.Tensor:
        """``x[:b]``, the same tensor object for the same ``x`` (distillation caches its
        teacher's logits by the object; SAM evaluates a batch twice)."""
        if self._clean is None or self._clean[0] is not x:
            self._clean = (x, x[:b])
        return self._clean[1]

    def __call__(self, forward: Forward, x: torch.Tensor, targets: torch.Tensor):
        b = targets.shape[0]
        if x.shape[0] != self.views * b:
            raise ValueError(f"a JSD batch holds {self.views} views of each of {b} images, "
                             f"got {x.shape[0]} images")
        parts = forward(x).chunk(self.views)
        loss, clean = self.base(lambda _: parts[0], self.clean_view(x, b), targets)
        return loss + self.weight * js_divergence(parts), clean

    def chance_loss(self, num_classes: int) -> float:
        return self.base.chance_loss(num_classes)


def make_objective(teacher: nn.Module | None, cfg: DistillConfig,
                   consistency: ConsistencyConfig = ConsistencyConfig()):
    base = CrossEntropy() if teacher is None else Distillation(CrossEntropy(), teacher, cfg)
    return JensenShannon(base, consistency.augmix_jsd_weight) if consistency.augmix_jsd else base
