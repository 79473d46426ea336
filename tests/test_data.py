import numpy as np
import pytest
import torch

from tinycnn.data import load_dataset, resolve_data_dir, train_val_split
from tinycnn.errors import DataError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_real_files(real_data_dir):
    ds = load_dataset("mnist", real_data_dir, download=False)
    assert ds.train.x.shape == (60000, 1, 28, 28) and ds.train.x.dtype == torch.uint8
    assert ds.test.x.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.train.y).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(ds.test.y).tolist() == MNIST_TEST_COUNTS
    assert ds.test.y[:5].tolist() == [7, 2, 1, 0, 4]
    assert abs(ds.train.x.float().mean().item() / 255 - 0.1307) < 1e-3


def test_cifar10_real_files(real_data_dir):
    ds = load_dataset("cifar10", real_data_dir, download=False)
    assert ds.train.x.shape == (50000, 3, 32, 32) and ds.test.x.shape == (10000, 3, 32, 32)
    assert torch.bincount(ds.train.y).tolist() == [5000] * 10
    assert torch.bincount(ds.test.y).tolist() == [1000] * 10
    assert ds.test.y[:5].tolist() == [3, 8, 8, 0, 6]


def test_split_is_disjoint_and_deterministic():
    tr, va = train_val_split(1000, 100, seed=0)
    assert len(va) == 100 and len(tr) == 900
    assert set(tr.tolist()).isdisjoint(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(1000))
    tr2, va2 = train_val_split(1000, 100, seed=0)
    torch.manual_seed(123)  # the global RNG must not matter
    assert torch.equal(va, va2) and torch.equal(tr, tr2)
    assert not torch.equal(train_val_split(1000, 100, seed=1)[1], va)


def test_splits_carve_val_from_train(mnist_splits):
    assert len(mnist_splits.train) == 55000 and len(mnist_splits.val) == 5000
    assert len(mnist_splits.test) == 10000


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYCNN_DATA", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir("/x") == __import__("pathlib").Path("/x")
    monkeypatch.delenv("TINYCNN_DATA")
    assert resolve_data_dir().name == "tinycnn"


def test_missing_file_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match=f"not found at {tmp_path}/mnist.npz"):
        load_dataset("mnist", tmp_path, download=False)


def test_offline_download_fails_clearly(tmp_path, monkeypatch):
    import torchvision

    def no_network(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", no_network)
    with pytest.raises(DataError, match="could not be downloaded.*network unreachable.*TINYCNN_DATA"):
        load_dataset("mnist", tmp_path, download=True)


def test_corrupt_npz(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset("mnist", tmp_path)


def test_wrong_shape_npz(tmp_path):
    z = np.zeros
    np.savez(tmp_path / "mnist.npz", x_train=z((60000, 28, 28), np.uint8), y_train=z(60000, np.uint8),
             x_test=z((10000, 28, 28, 1), np.uint8), y_test=z(10000, np.uint8))
    with pytest.raises(DataError, match=r"x_train is uint8 \(60000, 28, 28\), expected uint8 \(60000, 28, 28, 1\)"):
        load_dataset("mnist", tmp_path)
    np.savez(tmp_path / "mnist.npz", x_train=z((5, 28, 28, 1), np.uint8))
    with pytest.raises(DataError, match="lacks keys"):
        load_dataset("mnist", tmp_path)
