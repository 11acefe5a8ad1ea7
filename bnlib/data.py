"""Data sets that need no network, and a seeded mini-batch iterator.

* MNIST-1D (Greydanus 2020), generated locally by the ``mnist1d`` package's
  generator and cached on disk;
* scikit-learn's bundled 8x8 digits;
* synthetic Gaussian classes;
* a reader for MNIST IDX files, for readers who have them.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import pathlib
import tempfile
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Dataset",
    "minibatches",
    "load_mnist1d",
    "load_digits",
    "make_gaussian_classes",
    "read_idx",
    "load_mnist_idx",
    "cache_dir",
]


@dataclass
class Dataset:
    """Train/test split: x arrays (N, ...) float, y arrays (N,) int."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max()) + 1)

    def astype(self, dtype) -> Dataset:
        return Dataset(
            self.x_train.astype(dtype),
            self.y_train,
            self.x_test.astype(dtype),
            self.y_test,
        )

    def __repr__(self):
        return (
            f"Dataset(train {self.x_train.shape}, test {self.x_test.shape}, "
            f"{self.num_classes} classes)"
        )


def minibatches(x, y, batch_size, rng=None, shuffle=True, drop_last=False):
    """Yield ``(x_batch, y_batch)`` pairs covering the data once, in an order drawn
    from ``rng``."""
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x and y must have the same length, got {n} and {len(y)}")
    order = np.random.default_rng(rng).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        yield x[idx], y[idx]


def cache_dir() -> pathlib.Path:
    """Where generated data is cached: ``$BNLIB_CACHE`` or ``~/.cache/bnlib``."""
    path = pathlib.Path(
        os.environ.get("BNLIB_CACHE", pathlib.Path.home() / ".cache" / "bnlib")
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_mnist1d(
    num_samples=5000, seed=42, train_split=0.8, dtype=np.float64, **overrides
):
    """MNIST-1D: 10 classes of length-40 signals, generated locally and cached.

    Uses ``mnist1d.data.make_dataset`` (the generator, never its download path) with
    the package's default arguments; any of them can be overridden by keyword, e.g.
    ``iid_noise_scale=0.1``. The default (5000 samples, seed 42) gives the standard
    4000/1000 split. Returns a :class:`Dataset` with x of shape (N, 40).
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args(as_dict=True)
    args.update(
        num_samples=num_samples, seed=seed, train_split=train_split, **overrides
    )
    key = "_".join(f"{k}={args[k]}" for k in sorted(args) if k != "url")
    path = cache_dir() / f"mnist1d_{abs(hash_str(key)):016x}.npz"
    if not path.exists():
        state = (
            np.random.get_state()
        )  # the generator seeds numpy's global RNG; restore it
        try:
            raw = make_dataset(_ObjectView(args))
        finally:
            np.random.set_state(state)
        _save_npz_atomic(
            path, x=raw["x"], y=raw["y"], x_test=raw["x_test"], y_test=raw["y_test"]
        )
    with np.load(path) as f:
        return Dataset(
            f["x"].astype(dtype),
            f["y"].astype(np.int64),
            f["x_test"].astype(dtype),
            f["y_test"].astype(np.int64),
        )


def _save_npz_atomic(path, **arrays):
    """Write ``arrays`` to the .npz file ``path`` so that no reader sees a partial file.

    The data goes to a temporary file with a unique name in the same directory
    (``tempfile.mkstemp``), which ``os.replace`` then renames to ``path`` in one atomic
    step. Two processes writing the same cache file at once therefore never share a
    temporary file; the last rename wins, and both wrote the same data. On any error
    the temporary file is removed.
    """
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class _ObjectView:
    def __init__(self, d):
        self.__dict__ = d


def hash_str(s: str) -> int:
    """A stable 64-bit hash of a string (Python's hash() is salted per process)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little")


def load_digits(test_fraction=0.25, seed=0, dtype=np.float64):
    """scikit-learn's bundled 8x8 digits (1797 images, no download), flattened to
    (N, 64) and scaled to [0, 1], split at random with ``seed``."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    x, y = (d.data / 16.0).astype(dtype), d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    te, tr = order[:n_test], order[n_test:]
    return Dataset(x[tr], y[tr], x[te], y[te])


def make_gaussian_classes(
    n_train=1000,
    n_test=500,
    dim=2,
    num_classes=3,
    spread=1.0,
    shift=0.0,
    scale=1.0,
    rng=None,
    dtype=np.float64,
):
    """Gaussian blobs: class k centred at a random point, covariance ``spread`` * I.

    ``shift`` and ``scale`` transform all inputs (``scale * x + shift``), which is how a
    chapter simulates inputs that are far from zero mean and unit variance.
    """
    rng = np.random.default_rng(rng)
    centres = rng.normal(0.0, 3.0, (num_classes, dim))

    def sample(n):
        y = rng.integers(0, num_classes, n)
        x = centres[y] + spread * rng.normal(size=(n, dim))
        return (scale * x + shift).astype(dtype), y.astype(np.int64)

    return Dataset(*sample(n_train), *sample(n_test))


_IDX_TYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST format), optionally gzipped, into an array.

    Format: two zero bytes, a type code, the number of dimensions d, then d
    big-endian uint32 sizes, then the data in row-major order.
    """
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(
            f"{path}: not an IDX file (expected magic 0x00 0x00 <type> <ndim>, "
            f"got {raw[:4].hex()})"
        )
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(
            f"{path}: header promises {ndim} dimensions, file ends after "
            f"{len(raw)} bytes"
        )
    shape = tuple(int(n) for n in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(
            f"{path}: header promises shape {shape} ({int(np.prod(shape))} values), "
            f"file holds {data.size}"
        )
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def load_mnist_idx(directory, dtype=np.float64):
    """MNIST from the four standard IDX files in ``directory`` (gzipped or not).

    Returns a :class:`Dataset` with x flattened to (N, 784) and scaled to [0, 1].
    """
    directory = pathlib.Path(directory)

    def find(stem):
        for name in (stem, stem + ".gz"):
            if (directory / name).exists():
                return directory / name
        raise FileNotFoundError(f"{stem}[.gz] not found in {directory}")

    def images(stem):
        a = read_idx(find(stem))
        return (a.reshape(len(a), -1) / 255.0).astype(dtype)

    return Dataset(
        images("train-images-idx3-ubyte"),
        read_idx(find("train-labels-idx1-ubyte")).astype(np.int64),
        images("t10k-images-idx3-ubyte"),
        read_idx(find("t10k-labels-idx1-ubyte")).astype(np.int64),
    )
