"""The corruption benchmark: accuracy of a model on corrupted copies of a split.

Corrupted images are generated on the fly (`corruptions`), batch by batch, deterministic
from ``seed``: each (corruption, severity) has its own generator, seeded from ``seed`` and
its name, so a result does not depend on which other corruptions ran. Corrupted images are
rounded to 8-bit levels, as the stored CIFAR-10-C / MNIST-C files are. CIFAR-10 runs every
family at severities 1..5; MNIST runs each MNIST-C family once, at the severity MNIST-C's
own script uses (`corruptions.MNIST_C_SEVERITY`: picked per family by its authors).
"""
from __future__ import annotations

import time
import zlib

import torch
from torch import nn

from .batches import to_float
from .corruptions import FAMILIES, SEVERITIES
from .data import Split
from .datasets import dataset_info
from .errors import SpecError
from .evaluate import predict_logits


def _generator(seed: int, name: str, severity: int, device: torch.device) -> torch.Generator:
    key = zlib.crc32(f"{name}:{severity}".encode()) + 1_000_003 * int(seed)
    return torch.Generator(device=device).manual_seed(key % (2 ** 63))


@torch.no_grad()
def corrupted_accuracy(model: nn.Module, split: Split, dataset: str, name: str, severity: int,
                       seed: int = 0, batch: int = 1000) -> float:
    """Accuracy on ``split`` with corruption ``name`` at ``severity`` applied, batch by batch."""
    family = FAMILIES[dataset][name]
    device = next(model.parameters()).device
    g = _generator(seed, name, severity, device)
    correct = 0
    for i in range(0, len(split), batch):
        x = to_float(split.x[i:i + batch].to(device))
        x = family(x, severity, g).mul_(255).round_().div_(255)
        correct += (model(x).argmax(1) == split.y[i:i + batch].to(device)).sum().item()
    return correct / max(len(split), 1)


def robustness(model: nn.Module, dataset: str, split: Split, seed: int = 0, batch: int = 1000) -> dict:
    """Clean accuracy, accuracy per corruption (and per severity), their mean and the drop.

    ``corruptions[name]`` is the family's accuracy averaged over its severities; ``mean`` is the
    mean over families (for CIFAR-10, over all 15 x 5 sets), ``drop`` = clean - mean.
    """
    info = dataset_info(dataset)
    if info.name not in FAMILIES:
        raise SpecError(f"no corruption benchmark for {info.name}; accepted: {', '.join(FAMILIES)}")
    if len(split) == 0:
        raise SpecError("the split to corrupt is empty")
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    pred = predict_logits(model, split.x, batch).argmax(1).cpu()
    clean = (pred == split.y.cpu()).float().mean().item()
    rows = {}
    for name, severities in SEVERITIES[info.name].items():
        per = {str(s): corrupted_accuracy(model, split, info.name, name, s, seed, batch) for s in severities}
        rows[name] = {"accuracy": sum(per.values()) / len(per), "drop": clean - sum(per.values()) / len(per),
                      "severities": per}
    model.train(was_training)
    mean = sum(r["accuracy"] for r in rows.values()) / len(rows)
    worst = sorted(rows, key=lambda k: rows[k]["accuracy"])[:3]
    return {"dataset": info.name, "n": len(split), "seed": seed, "clean": clean, "mean": mean,
            "drop": clean - mean, "worst": worst, "corruptions": rows,
            "benchmark": "CIFAR-10-C-style, 15 families x 5 severities" if info.name == "cifar10"
            else "MNIST-C-style, 14 families at MNIST-C's severities (spatter, canny_edges left out)",
            "seconds": round(time.perf_counter() - start, 2)}
