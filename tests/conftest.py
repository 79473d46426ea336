"""Shared fixtures. Tests read the real datasets from ../shared/data when it exists."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# An empty $TINYCNN_DATA counts as unset, as it does for tinycnn.data.resolve_data_dir.
if not os.environ.get("TINYCNN_DATA") and SHARED_DATA.is_dir():
    os.environ["TINYCNN_DATA"] = str(SHARED_DATA)


def data_dir() -> Path:
    return Path(os.environ.get("TINYCNN_DATA") or SHARED_DATA)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    d = data_dir()
    if not (d / "mnist.npz").exists():
        pytest.skip(f"real datasets not found in {d}; set TINYCNN_DATA")
    return d


@pytest.fixture(scope="session")
def mnist_splits(real_data_dir):
    from tinycnn.data import load_splits

    return load_splits("mnist", val_size=5000, data_dir=real_data_dir)
