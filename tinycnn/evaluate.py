"""Accuracy, per-class accuracy and the confusion matrix of a model on a split."""
from __future__ import annotations

import torch
from torch import nn

from .data import Split


def to_float(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 NCHW -> float32 in [0, 1] (the model normalises internally)."""
    x = x.float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 2000, tta: bool = False,
                   channels_last: bool = False) -> torch.Tensor:
    """Logits for uint8 images, in batches; ``tta`` averages with the left-right mirror."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(x), batch_size):
        xb = to_float(x[i:i + batch_size].to(device), channels_last)
        logits = model(xb).float()
        if tta:
            logits = 0.5 * (logits + model(xb.flip(3)).float())
        out.append(logits)
    model.train(was_training)
    return torch.cat(out)


def accuracy(model: nn.Module, split: Split, batch_size: int = 2000, channels_last: bool = False) -> float:
    pred = predict_logits(model, split.x, batch_size, channels_last=channels_last).argmax(1)
    return (pred.cpu() == split.y.cpu()).float().mean().item()


def evaluate(model: nn.Module, split: Split, num_classes: int, batch_size: int = 2000,
             tta: bool = False) -> dict:
    """Overall accuracy, per-class accuracy and the confusion matrix (rows = true class)."""
    pred = predict_logits(model, split.x, batch_size, tta=tta).argmax(1).cpu()
    y = split.y.cpu()
    confusion = torch.bincount(y * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp(min=1)).tolist()
    return {
        "accuracy": (pred == y).float().mean().item(),
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "n": len(y),
        "tta": tta,
    }
