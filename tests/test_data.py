"""Datasets: digits, the CIFAR-10 python layout (with a refusing unpickler), image folders."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from codesign.data import (
    augment_batch,
    batches,
    load_cifar10,
    load_dataset,
    load_digits,
    load_imagefolder,
)
from codesign.errors import CodesignError


def write_cifar(root, n_train=40, n_test=20):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for name, n in (("data_batch_1", n_train // 2), ("data_batch_2", n_train // 2), ("test_batch", n_test)):
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n)),
             b"batch_label": b"x"}
        d[b"labels"] = [int(v) for v in d[b"labels"]]
        (root / name).write_bytes(pickle.dumps(d))
    return root


def test_digits_split_is_stratified_and_normalised():
    d = load_digits()
    assert d.input_shape == (1, 1, 8, 8) and d.num_classes == 10
    assert len(d.y_train) + len(d.y_test) == 1797 and abs(len(d.y_test) - 359) <= 10
    assert torch.bincount(d.y_test).min() >= 30
    assert abs(float(d.x_train.mean())) < 1e-4 and abs(float(d.x_train.std()) - 1) < 1e-2


def test_cifar_python_layout(tmp_path):
    root = write_cifar(tmp_path / "cifar-10-batches-py")
    for where in (root, tmp_path):  # the folder or its parent
        d = load_cifar10(where)
        assert d.input_shape == (1, 3, 32, 32) and len(d.y_train) == 40 and len(d.y_test) == 20 and d.augment


def test_cifar_refuses_pickles_that_run_code(tmp_path):
    root = write_cifar(tmp_path / "c")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    (root / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(CodesignError, match="only plain arrays are read"):
        load_cifar10(root)


def test_cifar_errors(tmp_path):
    with pytest.raises(CodesignError, match="does not exist"):
        load_cifar10(tmp_path / "nope")
    with pytest.raises(CodesignError, match="no CIFAR-10 python batches"):
        load_cifar10(tmp_path)
    root = write_cifar(tmp_path / "c")
    (root / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(CodesignError, match="is not a CIFAR-10 python batch"):
        load_cifar10(root)


def test_imagefolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / split / c / f"{i}.png")
    d = load_imagefolder(tmp_path, image_size=16)
    assert d.classes == ["cat", "dog"] and d.input_shape == (1, 3, 16, 16) and len(d.y_train) == 8
    with pytest.raises(CodesignError, match="needs train/<class>/"):
        load_imagefolder(tmp_path / "train" / "cat")


def test_dataset_errors():
    with pytest.raises(CodesignError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(CodesignError, match="needs --data-dir"):
        load_dataset("cifar10")


def test_batches_are_seeded_and_augmentation_keeps_shape():
    x, y = torch.randn(10, 3, 8, 8), torch.arange(10)
    a = [yb.tolist() for _, yb in batches(x, y, 4, torch.Generator().manual_seed(1))]
    b = [yb.tolist() for _, yb in batches(x, y, 4, torch.Generator().manual_seed(1))]
    assert a == b and sorted(sum(a, [])) == list(range(10))
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # every output is a shifted/flipped crop of its padded input: its non-zero values come from it
    assert all(set(out[i].flatten().tolist()) - {0.0} <= set(x[i].flatten().tolist()) for i in range(10))
