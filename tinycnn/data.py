"""Datasets as whole uint8 tensors: an ``.npz`` cache, torchvision download as fallback.

The cache format is the one of ``shared/data/README.md``: keys x_train, y_train, x_test,
y_test; images uint8 NHWC, labels uint8 class indices. Everything downstream sees uint8
NCHW tensors so a whole dataset fits on any device (MNIST 47 MB, CIFAR-10 184 MB) and
batches are sliced there, with no DataLoader in the hot loop.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .datasets import DatasetInfo, dataset_info
from .errors import DataError

DEFAULT_DATA_DIR = Path.home() / ".cache" / "tinycnn"
_KEYS = ("x_train", "y_train", "x_test", "y_test")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given, else ``$TINYCNN_DATA``, else ``~/.cache/tinycnn``."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("TINYCNN_DATA")
    return Path(env).expanduser() if env else DEFAULT_DATA_DIR


@dataclass(frozen=True)
class Split:
    """Images uint8 (N, C, H, W) and labels int64 (N,), on one device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.x.to(device), self.y.to(device))

    def subset(self, n: int) -> "Split":
        return Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class Dataset:
    info: DatasetInfo
    train: Split
    test: Split


@dataclass(frozen=True)
class Splits:
    """Train (the part used for fitting), val (carved from the official train set), test."""

    info: DatasetInfo
    train: Split
    val: Split
    test: Split

    def to(self, device: torch.device | str) -> "Splits":
        return Splits(self.info, self.train.to(device), self.val.to(device), self.test.to(device))


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """Load ``name`` from ``<data_dir>/<name>.npz``; download and cache it if missing."""
    info = dataset_info(name)
    root = resolve_data_dir(data_dir)
    path = root / f"{info.name}.npz"
    if not path.exists():
        if not download:
            raise DataError(_missing_message(info, path, "download disabled"))
        _download_to_cache(info, root, path)
    arrays = _read_npz(path, info)
    return Dataset(
        info=info,
        train=Split(_to_nchw(arrays["x_train"]), torch.from_numpy(arrays["y_train"].astype(np.int64))),
        test=Split(_to_nchw(arrays["x_test"]), torch.from_numpy(arrays["y_test"].astype(np.int64))),
    )


def train_val_split(n: int, val_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic, disjoint (train_idx, val_idx) over ``range(n)``.

    The permutation depends only on (n, seed), never on the global RNG, so every run and
    every machine carves the same validation set and the test set stays untouched.
    """
    if not 0 <= val_size < n:
        raise DataError(f"validation size must be in [0, {n}), got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def load_splits(name: str, val_size: int = 5000, data_dir: str | os.PathLike | None = None,
                split_seed: int = 0, download: bool = True) -> Splits:
    ds = load_dataset(name, data_dir, download)
    tr, va = train_val_split(len(ds.train), val_size, split_seed)
    return Splits(ds.info, Split(ds.train.x[tr], ds.train.y[tr]), Split(ds.train.x[va], ds.train.y[va]), ds.test)


def _to_nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _read_npz(path: Path, info: DatasetInfo) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in _KEYS if k not in f.files]
            if missing:
                raise DataError(f"{path} lacks keys {missing}; a tinycnn cache has {list(_KEYS)}")
            arrays = {k: f[k] for k in _KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} is not a readable .npz file ({e}); delete it to re-download, "
                        f"or replace it with the file described in the README") from e
    shape = (info.size, info.size, info.channels)
    expect = {"x_train": (info.train_size, *shape), "y_train": (info.train_size,),
              "x_test": (info.test_size, *shape), "y_test": (info.test_size,)}
    for key, want in expect.items():
        a = arrays[key]
        if a.shape != want or a.dtype != np.uint8:
            raise DataError(f"{path}: {key} is {a.dtype} {a.shape}, expected uint8 {want} (NHWC)")
    for key in ("y_train", "y_test"):
        if arrays[key].max() >= info.num_classes:
            raise DataError(f"{path}: {key} has label {arrays[key].max()}, expected < {info.num_classes}")
    return arrays


def _missing_message(info: DatasetInfo, path: Path, why: str) -> str:
    return (f"{info.name} not found at {path} and could not be downloaded ({why}). "
            f"Put {info.name}.npz (keys {', '.join(_KEYS)}; uint8 NHWC images) in {path.parent}, "
            f"or point --data-dir / $TINYCNN_DATA at a folder that has it")


def _download_to_cache(info: DatasetInfo, root: Path, path: Path) -> None:
    """Fetch through torchvision, then write the npz cache atomically."""
    try:
        import torchvision

        raw = root / "torchvision"
        cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[info.name]
        parts = {}
        for train, suffix in ((True, "train"), (False, "test")):
            ds = cls(str(raw), train=train, download=True)
            x = np.asarray(ds.data, dtype=np.uint8)
            if x.ndim == 3:  # MNIST comes as (N, H, W)
                x = x[..., None]
            parts[f"x_{suffix}"] = x
            parts[f"y_{suffix}"] = np.asarray(ds.targets, dtype=np.uint8)
    except Exception as e:  # network, disk, or torchvision errors all mean "no data"
        raise DataError(_missing_message(info, path, f"{type(e).__name__}: {e}")) from e
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **parts)
    os.replace(tmp, path)
