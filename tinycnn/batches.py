"""Batches sliced on the device from whole uint8 tensors: no DataLoader, no per-sample Python.

Like airbench's CifarLoader: the epoch's shuffle is one ``randperm`` on the device, a
batch is an index slice converted to float in [0, 1] (the model normalises inside).
The ragged last batch is dropped: BatchNorm dislikes tiny batches.
"""
from __future__ import annotations

from typing import Iterator

import torch

from .data import Split


def to_float(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 NCHW -> float32 in [0, 1] (the model normalises internally)."""
    x = x.float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class TrainBatches:
    """Shuffled full batches of one split, reshuffled at every ``iter()``."""

    def __init__(self, split: Split, batch_size: int, channels_last: bool = False) -> None:
        self.split, self.batch_size, self.channels_last = split, batch_size, channels_last

    def __len__(self) -> int:
        return len(self.split) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y, _ in self.indexed():
            yield x, y

    def indexed(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The same epoch with each batch's indices into the split, (x, y, index): ops keyed
        by image (the alternating flip) need them."""
        perm = torch.randperm(len(self.split), device=self.split.x.device)
        for step in range(len(self)):
            idx = perm[step * self.batch_size:(step + 1) * self.batch_size]
            yield to_float(self.split.x[idx], self.channels_last), self.split.y[idx], idx


def plain_batches(split: Split, batch_size: int = 512, channels_last: bool = False) -> Iterator[torch.Tensor]:
    """Every image in order, un-augmented (for recomputing BatchNorm statistics)."""
    for i in range(0, len(split), batch_size):
        yield to_float(split.x[i:i + batch_size], channels_last)
