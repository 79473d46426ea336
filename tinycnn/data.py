"""Datasets as whole uint8 tensors: an ``.npz`` cache, torchvision download as fallback.

``<name>.npz`` is looked for in ``--data-dir`` alone when given, else in ``$TINYCNN_DATA``,
``~/.cache/tinycnn`` and ``<repository>/../shared/data``, first hit wins; a download (into
``$TINYCNN_DATA`` or ``~/.cache/tinycnn``) is the last resort, so offline checkouts beside
the shared data folder work without one.

The cache format is the one of ``shared/data/README.md``: keys x_train, y_train, x_test,
y_test; images uint8 NHWC, labels uint8 class indices. Everything downstream sees uint8
NCHW tensors so a whole dataset fits on any device (MNIST 47 MB, CIFAR-10 184 MB) and
batches are sliced there, with no DataLoader in the hot loop.
"""
from __future__ import annotations

import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .datasets import DatasetInfo, dataset_info
from .errors import DataError

_KEYS = ("x_train", "y_train", "x_test", "y_test")


def shared_data_dir() -> Path:
    """``<repository root>/../shared/data``: a checkout beside the project's shared data folder."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Where a download goes: ``data_dir`` if given, else ``$TINYCNN_DATA``, else ``~/.cache/tinycnn``."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("TINYCNN_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tinycnn"


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders looked in, in order: an explicit ``data_dir`` alone, else the cache then the shared folder."""
    if data_dir:
        return [resolve_data_dir(data_dir)]
    dirs = [resolve_data_dir(), Path.home() / ".cache" / "tinycnn", shared_data_dir()]
    return list(dict.fromkeys(dirs))  # $TINYCNN_DATA may name one of the others


def find_dataset_file(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first ``<dir>/<name>.npz`` on the search path, or None if no folder holds it."""
    return next((d / f"{name}.npz" for d in search_dirs(data_dir) if (d / f"{name}.npz").is_file()), None)


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
    """Load ``name`` from the first ``<name>.npz`` on the search path; download and cache it if none."""
    info = dataset_info(name)
    path = find_dataset_file(info.name, data_dir)
    if path is None:
        if not download:
            raise DataError(_missing_message(info, data_dir, "download disabled"))
        path = _download_to_cache(info, data_dir)
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


def _missing_message(info: DatasetInfo, data_dir: str | os.PathLike | None, why: str) -> str:
    places = [str(d / f"{info.name}.npz") for d in search_dirs(data_dir)]
    return (f"{info.name} not found at {', '.join(places)} and could not be downloaded ({why}). "
            f"Put {info.name}.npz (keys {', '.join(_KEYS)}; uint8 NHWC images) in {resolve_data_dir(data_dir)}, "
            f"or point --data-dir / $TINYCNN_DATA at a folder that has it")


def _download_to_cache(info: DatasetInfo, data_dir: str | os.PathLike | None) -> Path:
    """Fetch through torchvision, then write the npz cache atomically; a failure leaves no new folders."""
    root = resolve_data_dir(data_dir)
    raw = root / "torchvision"
    new_top = _topmost_missing(raw)
    try:
        parts = _fetch_torchvision(info, raw)
    except Exception as e:  # network, disk, or torchvision errors all mean "no data"
        _remove_new_dirs(raw, new_top)
        raise DataError(_missing_message(info, data_dir, _one_line(e))) from e
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{info.name}.npz"
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **parts)
    os.replace(tmp, path)
    return path


def _fetch_torchvision(info: DatasetInfo, raw: Path) -> dict[str, np.ndarray]:
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[info.name]
    parts = {}
    for train, suffix in ((True, "train"), (False, "test")):
        ds = cls(str(raw), train=train, download=True)
        x = np.asarray(ds.data, dtype=np.uint8)
        parts[f"x_{suffix}"] = x[..., None] if x.ndim == 3 else x  # MNIST comes as (N, H, W)
        parts[f"y_{suffix}"] = np.asarray(ds.targets, dtype=np.uint8)
    return parts


def _topmost_missing(path: Path) -> Path | None:
    """The highest folder on the way to ``path`` that does not exist yet (what an attempt may create)."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            break
        missing = p
    return missing


def _remove_new_dirs(raw: Path, new_top: Path | None) -> None:
    """Undo a failed download: drop the raw folder it made, then the empty folders above it.

    A raw folder that existed before is kept: it may hold an earlier partial download.
    """
    if new_top is None:
        return
    shutil.rmtree(raw, ignore_errors=True)
    for p in (raw.parent, *raw.parent.parents):
        if not p.is_relative_to(new_top) or not p.is_dir() or any(p.iterdir()):
            break
        p.rmdir()


def _one_line(e: Exception) -> str:
    """torchvision's errors span lines (one per mirror tried); keep the first and the last."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = " ... ".join(dict.fromkeys(lines[:1] + lines[-1:]))
    return f"{type(e).__name__}: {text}"
