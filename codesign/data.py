"""Datasets for search and training, as in-memory tensors (the datasets codesign searches on are
small; a search on 2 CPU cores cannot stream ImageNet anyway).

- ``digits``: scikit-learn's handwritten digits (1,797 8x8 grey images, 10 classes), shipped with
  scikit-learn, so the default search runs offline. Split 80/20 into train/test (stratified, fixed).
- ``cifar10``: the official "CIFAR-10 python version" folder (``data_batch_1..5``, ``test_batch``;
  the folder itself or its parent holding ``cifar-10-batches-py``). Random crop (pad 4) and
  horizontal flip augment training batches.
- ``imagefolder``: ``DIR/train/<class>/*.png|jpg`` and ``DIR/test/<class>/...`` (or only class
  folders, split 80/20), resized to ``image_size`` squares; needs Pillow.

Images are normalised per channel with the training set's mean and std.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import CodesignError

DATASETS = ("digits", "cifar10", "imagefolder")


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32, normalised
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    augment: bool = False  # random crop + flip on training batches
    source: str = ""
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1,) + tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        return {"dataset": self.name, "source": self.source, "train": len(self.y_train), "test": len(self.y_test),
                "input_shape": list(self.input_shape), "classes": self.num_classes, "augment": self.augment}


def _normalise(x_train: np.ndarray, x_test: np.ndarray):
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32), \
        mean.ravel().tolist(), std.ravel().tolist()


def _split(n: int, labels: np.ndarray, test_fraction: float, seed: int):
    """Stratified index split, fixed by seed."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        test += idx[: max(1, int(round(len(idx) * test_fraction)))].tolist()
    mask = np.zeros(n, bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _make(name, xtr, ytr, xte, yte, classes, augment, source) -> Dataset:
    if len(ytr) == 0 or len(yte) == 0:
        raise CodesignError(f"{source}: {len(ytr)} training and {len(yte)} test images; a {name} dataset needs "
                            "images in both")
    xtr, xte, mean, std = _normalise(xtr.astype(np.float32), xte.astype(np.float32))
    return Dataset(name, torch.from_numpy(xtr), torch.from_numpy(np.asarray(ytr, np.int64)),
                   torch.from_numpy(xte), torch.from_numpy(np.asarray(yte, np.int64)),
                   list(classes), augment, source, mean, std)


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images / 16.0).reshape(-1, 1, 8, 8)
    tr, te = _split(len(x), d.target, 0.2, 0)
    return _make("digits", x[tr], d.target[tr], x[te], d.target[te], [str(c) for c in range(10)], False,
                 "sklearn.datasets.load_digits")


class _ArraysOnly(pickle.Unpickler):
    """Unpickles the CIFAR batch dicts (bytes, lists, ints, numpy arrays) and nothing else: a
    data folder is user input, and a pickle can otherwise run arbitrary code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise CodesignError(f"CIFAR-10 batch refers to {module}.{name}; only plain arrays are read")


def _cifar_batch(path: Path):
    try:
        with open(path, "rb") as f:
            d = _ArraysOnly(f, encoding="bytes").load()
        data = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d[b"labels"], np.int64)
    except CodesignError:
        raise
    except Exception as exc:
        raise CodesignError(f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if len(labels) != len(data):
        raise CodesignError(f"{path}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise CodesignError(f"{path}: labels must be the 10 CIFAR-10 classes 0..9, found {labels.min()}..{labels.max()}")
    return data, labels


def load_cifar10(data_dir: str | Path) -> Dataset:
    root = Path(data_dir)
    if not root.is_dir():
        raise CodesignError(f"--data-dir {root} does not exist; point it at the CIFAR-10 python folder "
                            "(the one holding data_batch_1 ... test_batch)")
    if not (root / "test_batch").exists() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    trains = sorted(root.glob("data_batch_*"))
    if not trains or not (root / "test_batch").exists():
        raise CodesignError(f"{root} holds no CIFAR-10 python batches (data_batch_1 ... and test_batch expected)")
    parts = [_cifar_batch(p) for p in trains]
    xtr = np.concatenate([p[0] for p in parts]) / 255.0
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = _cifar_batch(root / "test_batch")
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return _make("cifar10", xtr, ytr, xte / 255.0, yte, classes, True, str(root))


def load_imagefolder(data_dir: str | Path, image_size: int = 32) -> Dataset:
    try:
        from PIL import Image
    except ImportError:
        raise CodesignError("--data imagefolder needs Pillow: pip install pillow") from None
    root = Path(data_dir)
    if not root.is_dir():
        raise CodesignError(f"--data-dir {root} does not exist")

    def read(folder: Path, classes: list[str]):
        present = {p.name for p in folder.iterdir() if p.is_dir()}
        if set(classes) != present:
            missing, extra = sorted(set(classes) - present), sorted(present - set(classes))
            raise CodesignError(f"{folder} must hold the class folders of {root / 'train'}: "
                                + "; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                                            + ([f"unknown {', '.join(extra)}"] if extra else [])))
        xs, ys = [], []
        for ci, c in enumerate(classes):
            for f in sorted((folder / c).iterdir()):
                if f.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".gif"):
                    continue
                try:
                    with Image.open(f) as im:
                        im = im.convert("RGB").resize((image_size, image_size))
                        xs.append(np.asarray(im, np.float32).transpose(2, 0, 1) / 255.0)
                        ys.append(ci)
                except (OSError, ValueError, Image.DecompressionBombError) as exc:  # truncated or not an image
                    raise CodesignError(f"{f} is not a readable image ({type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        if not xs:
            raise CodesignError(f"{folder} has no images in its class folders (png/jpg/bmp/gif)")
        return np.stack(xs), np.asarray(ys)

    if (root / "train").is_dir():
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        if not classes:
            raise CodesignError(f"{root}/train has no class folders")
        xtr, ytr = read(root / "train", classes)
        if (root / "test").is_dir():
            xte, yte = read(root / "test", classes)
        else:
            tr, te = _split(len(xtr), ytr, 0.2, 0)
            xtr, ytr, xte, yte = xtr[tr], ytr[tr], xtr[te], ytr[te]
    else:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if len(classes) < 2:
            raise CodesignError(f"{root}: an image folder needs train/<class>/ or at least two <class>/ folders")
        x, y = read(root, classes)
        tr, te = _split(len(x), y, 0.2, 0)
        xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]
    return _make("imagefolder", xtr, ytr, xte, yte, classes, True, str(root))


def load_dataset(name: str = "digits", data_dir: str | Path | None = None, image_size: int = 32) -> Dataset:
    """A dataset by name (see the module docstring); errors say what to pass."""
    if name == "digits":
        return load_digits()
    if name in ("cifar10", "imagefolder"):
        if not data_dir:
            raise CodesignError(f"--data {name} needs --data-dir PATH")
        return load_cifar10(data_dir) if name == "cifar10" else load_imagefolder(data_dir, image_size)
    raise CodesignError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def augment_batch(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding ``pad`` and random horizontal flip, per image."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator | None = None,
            augment: bool = False, drop_last: bool = False):
    """Mini-batches in a random order drawn from ``gen`` (None: in order)."""
    n = len(y)
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    stop = n - (n % batch_size if drop_last else 0)
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size]
        xb = x[idx]
        if augment and gen is not None:
            xb = augment_batch(xb, gen)
        yield xb, y[idx]
