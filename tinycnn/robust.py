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
from .evaluate import fraction_correct, predict_logits


def _generator(seed: int, name: str, severity: int, device: torch.device) -> torch.Generator:
    key = zlib.crc32(f"{name}:{severity}".encode()) + 1_000_003 * int(seed)
    return torch.Generator(device=device).manual_seed(key % (2 ** 63))


# Corrupted sets are generated in chunks of GENERATE images (the chunk fixes the random numbers
# drawn, so it is part of the benchmark's definition) and classified in batches of EVAL_BATCH:
# with 1,000-image batches glibc hands each batch's activations back to the OS and the next
# batch page-faults them in again (MNIST final, one family: 3.0 s with 1,000, 1.2 s with 250).
GENERATE = 1000
EVAL_BATCH = 250


@torch.no_grad()
def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, channels_last: bool, eval_batch: int) -> int:
    correct = 0
    for i in range(0, len(x), eval_batch):
        xb = x[i:i + eval_batch]
        xb = xb.contiguous(memory_format=torch.channels_last) if channels_last else xb
        correct += int((model(xb).argmax(1) == y[i:i + eval_batch]).sum())
    return correct


@torch.no_grad()
def corrupted_accuracy(model: nn.Module, split: Split, dataset: str, name: str, severity: int,
                       seed: int = 0, batch: int = GENERATE, channels_last: bool = False,
                       eval_batch: int = EVAL_BATCH) -> float:
    """Accuracy on ``split`` with corruption ``name`` at ``severity`` applied: generated
    ``batch`` images at a time (which fixes the draws), classified ``eval_batch`` at a time."""
    family = FAMILIES[dataset][name]
    device = next(model.parameters()).device
    g = _generator(seed, name, severity, device)
    correct = 0
    for i in range(0, len(split), batch):
        x = to_float(split.x[i:i + batch].to(device))
        x = family(x, severity, g).mul_(255).round_().div_(255)
        correct += _correct(model, x, split.y[i:i + batch].to(device), channels_last, eval_batch)
    return correct / max(len(split), 1)


def subset(split: Split, n: int, seed: int = 0) -> Split:
    """``n`` images drawn at random (seeded, kept in their order) for a quicker estimate;
    the first n would not do: MNIST's test set puts its two writer populations in halves."""
    if n <= 0 or n >= len(split):
        return split
    keep = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return Split(split.x[keep], split.y[keep])


def _per_corruption(model: nn.Module, dataset: str, split: Split, clean: float, seed: int,
                    batch: int, channels_last: bool, eval_batch: int) -> dict:
    rows = {}
    for name, severities in SEVERITIES[dataset].items():
        per = {str(s): corrupted_accuracy(model, split, dataset, name, s, seed, batch, channels_last, eval_batch)
               for s in severities}
        accuracy = sum(per.values()) / len(per)
        rows[name] = {"accuracy": accuracy, "drop": clean - accuracy, "severities": per}
    return rows


def robustness(model: nn.Module, dataset: str, split: Split, seed: int = 0, batch: int = GENERATE,
               channels_last: bool | None = None, eval_batch: int = EVAL_BATCH) -> dict:
    """Clean accuracy, accuracy per corruption (and per severity), their mean and the drop.

    ``corruptions[name]`` is the family's accuracy averaged over its severities; ``mean`` is the
    mean over families (for CIFAR-10, over all 15 x 5 sets), ``drop`` = clean - mean.
    ``channels_last`` (default: for colour images) only changes speed: CIFAR-10's final
    classifies 2.3x faster in NHWC on this CPU, MNIST's no faster; the model is put back in
    NCHW afterwards. ``eval_batch`` (images per forward pass) only changes speed too.
    """
    info = dataset_info(dataset)
    if info.name not in FAMILIES:
        raise SpecError(f"no corruption benchmark for {info.name}; accepted: {', '.join(FAMILIES)}")
    if len(split) == 0:
        raise SpecError("the split to corrupt is empty")
    nhwc = split.x.shape[1] > 1 if channels_last is None else channels_last
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        if nhwc:
            model.to(memory_format=torch.channels_last)
        pred = predict_logits(model, split.x, eval_batch, channels_last=nhwc).argmax(1).cpu()
        clean = fraction_correct(pred, split.y)
        rows = _per_corruption(model, info.name, split, clean, seed, batch, nhwc, eval_batch)
    finally:
        if nhwc:
            model.to(memory_format=torch.contiguous_format)
        model.train(was_training)
    mean = sum(r["accuracy"] for r in rows.values()) / len(rows)
    worst = sorted(rows, key=lambda k: rows[k]["accuracy"])[:3]
    return {"dataset": info.name, "n": len(split), "seed": seed, "clean": clean, "mean": mean,
            "drop": clean - mean, "worst": worst, "corruptions": rows,
            "benchmark": "CIFAR-10-C-style, 15 families x 5 severities" if info.name == "cifar10"
            else "MNIST-C-style, 14 families at MNIST-C's severities (spatter, canny_edges left out)",
            "seconds": round(time.perf_counter() - start, 2)}
