"""Data: IDX reader, MNIST-1D generation and cache, digits, synthetic sets and
mini-batches."""

import gzip
import struct

import numpy as np
import pytest

import bnlib
from bnlib import data as D

_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i2"): 0x0B, np.dtype(">f4"): 0x0D}


def write_idx(path, array, dtype=np.uint8):
    """Write ``array`` as an IDX file (gzipped if the name ends in .gz)."""
    dtype = np.dtype(dtype)
    array = np.asarray(array, dtype=dtype)
    header = bytes([0, 0, _TYPE_CODES[dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)
    return path


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_read_idx_images(tmp_path, name):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    out = bnlib.read_idx(write_idx(tmp_path / name, images))
    assert out.dtype == np.uint8 and out.shape == (5, 4, 3)
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("name", ["labels-idx1-ubyte", "labels-idx1-ubyte.gz"])
def test_read_idx_labels(tmp_path, name):
    labels = np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.uint8)
    out = bnlib.read_idx(write_idx(tmp_path / name, labels))
    assert out.shape == (7,)
    np.testing.assert_array_equal(out, labels)


@pytest.mark.parametrize("dtype", [">i2", ">f4"])
def test_read_idx_big_endian_types_come_back_native(tmp_path, dtype):
    values = np.array([[1, -2, 300], [4, 5, -600]])
    out = bnlib.read_idx(write_idx(tmp_path / "v.idx", values, dtype))
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, values)


def test_read_idx_rejects_a_corrupted_header(tmp_path):
    good = write_idx(tmp_path / "good", np.zeros((2, 3, 3), np.uint8))
    raw = good.read_bytes()
    bad_magic = tmp_path / "bad_magic"
    bad_magic.write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(
        ValueError,
        match=r"not an IDX file \(expected magic 0x00 0x00 <type> "
        r"<ndim>, got 01020803\)",
    ):
        bnlib.read_idx(bad_magic)
    bad_type = tmp_path / "bad_type"
    bad_type.write_bytes(raw[:2] + b"\x42" + raw[3:])
    with pytest.raises(ValueError, match="not an IDX file"):
        bnlib.read_idx(bad_type)
    bad_size = tmp_path / "bad_size"  # header says 2 x 3 x 4, data holds 2 x 3 x 3
    bad_size.write_bytes(raw[:4] + struct.pack(">3I", 2, 3, 4) + raw[16:])
    with pytest.raises(
        ValueError,
        match=r"header promises shape \(2, 3, 4\) \(24 values\), "
        r"file holds 18",
    ):
        bnlib.read_idx(bad_size)
    short_header = tmp_path / "short_header"  # 3 dimensions promised, 1 size present
    short_header.write_bytes(raw[:8])
    with pytest.raises(
        ValueError,
        match=r"header promises 3 dimensions, file ends after 8 "
        r"bytes",
    ):
        bnlib.read_idx(short_header)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(raw[:3])
    with pytest.raises(ValueError, match="not an IDX file"):
        bnlib.read_idx(truncated)


def test_load_mnist_idx(tmp_path):
    rng = np.random.default_rng(1)
    train_x = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    test_x = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    train_y, test_y = rng.integers(0, 10, 6), rng.integers(0, 10, 4)
    write_idx(
        tmp_path / "train-images-idx3-ubyte.gz", train_x
    )  # gzipped and plain mixed
    write_idx(tmp_path / "train-labels-idx1-ubyte", train_y)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", test_x)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", test_y)
    d = bnlib.load_mnist_idx(tmp_path)
    assert d.x_train.shape == (6, 784) and d.x_test.shape == (4, 784)
    assert d.x_train.dtype == np.float64 and d.y_train.dtype == np.int64
    np.testing.assert_allclose(d.x_train, train_x.reshape(6, -1) / 255.0)
    np.testing.assert_array_equal(d.y_train, train_y)
    np.testing.assert_array_equal(d.y_test, test_y)
    assert 0.0 <= d.x_test.min() and d.x_test.max() <= 1.0
    assert bnlib.load_mnist_idx(tmp_path, dtype=np.float32).x_train.dtype == np.float32
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"t10k-labels-idx1-ubyte\[\.gz\] not found"
    ):
        bnlib.load_mnist_idx(tmp_path)


# ------------------------------------------------------------------ MNIST-1D
@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_load_mnist1d_shapes_dtypes_and_cache(cache, monkeypatch):
    state = np.random.get_state()
    d = bnlib.load_mnist1d(num_samples=500)
    assert d.x_train.shape == (400, 40) and d.x_test.shape == (100, 40)
    assert d.y_train.shape == (400,) and d.y_test.shape == (100,)
    assert d.x_train.dtype == np.float64 and d.y_train.dtype == np.int64
    assert set(np.unique(d.y_train)) <= set(range(10)) and d.num_classes == 10
    assert np.all(np.isfinite(d.x_train))
    # the generator seeds numpy's global RNG; the loader restores it
    np.testing.assert_array_equal(np.random.get_state()[1], state[1])
    files = list(cache.glob("mnist1d_*.npz"))
    assert len(files) == 1

    import mnist1d.data

    def no_generation(*args, **kwargs):
        raise AssertionError("the second call must read the cache, not generate")

    monkeypatch.setattr(mnist1d.data, "make_dataset", no_generation)
    again = bnlib.load_mnist1d(num_samples=500, dtype=np.float32)
    assert again.x_train.dtype == np.float32
    np.testing.assert_allclose(again.x_train, d.x_train.astype(np.float32))
    np.testing.assert_array_equal(again.y_test, d.y_test)
    assert "Dataset(train (400, 40), test (100, 40), 10 classes)" == repr(d)


def test_load_mnist1d_is_deterministic(tmp_path, monkeypatch):
    runs = []
    for sub in ("a", "b"):  # two empty caches: generated twice from scratch
        monkeypatch.setenv("BNLIB_CACHE", str(tmp_path / sub))
        runs.append(bnlib.load_mnist1d(num_samples=500))
    np.testing.assert_array_equal(runs[0].x_train, runs[1].x_train)
    np.testing.assert_array_equal(runs[0].y_train, runs[1].y_train)
    other = bnlib.load_mnist1d(num_samples=500, seed=7)
    assert not np.array_equal(other.x_train, runs[0].x_train)
    noisier = bnlib.load_mnist1d(num_samples=500, iid_noise_scale=0.5)
    assert not np.array_equal(noisier.x_train, runs[0].x_train)
    assert (
        len(list((tmp_path / "b").glob("mnist1d_*.npz"))) == 3
    )  # one file per setting


def _fake_generator(monkeypatch, barrier=None):
    """Replace the MNIST-1D generator by a quick deterministic one, and make every cache
    write wait at ``barrier`` after writing its data and before the rename, so that
    concurrent writers overlap for certain."""
    import mnist1d.data

    def make_dataset(args):
        rng = np.random.default_rng(args.seed)
        n_train = int(args.num_samples * args.train_split)
        x = rng.normal(size=(args.num_samples, 40))
        y = rng.integers(0, 10, args.num_samples)
        return {
            "x": x[:n_train],
            "y": y[:n_train],
            "x_test": x[n_train:],
            "y_test": y[n_train:],
        }

    monkeypatch.setattr(mnist1d.data, "make_dataset", make_dataset)
    if barrier is not None:
        savez = np.savez_compressed

        def savez_then_wait(file, **arrays):
            savez(file, **arrays)
            barrier.wait()

        monkeypatch.setattr(np, "savez_compressed", savez_then_wait)


def test_concurrent_cache_writers_do_not_collide(cache, monkeypatch):
    """Two notebooks generating the same data set at once: each writes its own temporary
    file and renames it into place, so both succeed and no temporary file is left."""
    import threading

    _fake_generator(monkeypatch, barrier=threading.Barrier(2, timeout=30))
    results, errors = [None, None], []

    def load(i):
        try:
            results[i] = bnlib.load_mnist1d(num_samples=50)
        except Exception as err:  # reported below, with the thread's exception
            errors.append(err)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    np.testing.assert_array_equal(results[0].x_train, results[1].x_train)
    assert [p.name for p in cache.iterdir()] == [next(cache.glob("mnist1d_*.npz")).name]


def test_a_failed_cache_write_leaves_no_file(cache, monkeypatch):
    _fake_generator(monkeypatch)

    def disk_full(file, **arrays):
        file.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        bnlib.load_mnist1d(num_samples=50)
    assert list(cache.iterdir()) == []  # neither a cache file nor a temporary one


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLIB_CACHE", str(tmp_path / "x" / "y"))
    assert D.cache_dir() == tmp_path / "x" / "y" and (tmp_path / "x" / "y").is_dir()


# ------------------------------------------------------------------ other sets
def test_load_digits():
    d = bnlib.load_digits()
    assert d.x_train.shape == (1348, 64) and d.x_test.shape == (449, 64)
    assert d.x_train.dtype == np.float64 and d.y_train.dtype == np.int64
    assert 0.0 <= d.x_train.min() and d.x_train.max() == 1.0
    assert d.num_classes == 10
    again = bnlib.load_digits()
    np.testing.assert_array_equal(again.x_test, d.x_test)
    other = bnlib.load_digits(seed=1, test_fraction=0.5, dtype=np.float32)
    assert other.x_test.shape == (898, 64) and other.x_test.dtype == np.float32
    assert len(np.unique(np.concatenate([d.x_train, d.x_test]), axis=0)) == len(
        np.unique(np.concatenate([other.x_train, other.x_test]), axis=0)
    )


def test_make_gaussian_classes():
    d = bnlib.make_gaussian_classes(n_train=100, n_test=50, dim=3, num_classes=4, rng=0)
    assert d.x_train.shape == (100, 3) and d.x_test.shape == (50, 3)
    assert d.y_train.dtype == np.int64 and set(np.unique(d.y_train)) <= set(range(4))
    e = bnlib.make_gaussian_classes(
        n_train=100,
        n_test=50,
        dim=3,
        num_classes=4,
        rng=0,
        shift=10.0,
        scale=3.0,
        dtype=np.float32,
    )
    assert e.x_train.dtype == np.float32
    np.testing.assert_allclose(e.x_train, 3.0 * d.x_train + 10.0, rtol=1e-6)
    np.testing.assert_array_equal(e.y_train, d.y_train)
    assert d.astype(np.float32).x_test.dtype == np.float32


# ------------------------------------------------------------------ mini-batches
def test_minibatches_cover_the_data_once_in_a_seeded_order():
    x, y = np.arange(23)[:, None] * np.ones((1, 2)), np.arange(23)
    batches = list(bnlib.minibatches(x, y, 5, rng=0))
    assert [len(yb) for _, yb in batches] == [5, 5, 5, 5, 3]
    seen = np.concatenate([yb for _, yb in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(23))
    assert not np.array_equal(seen, np.arange(23))  # shuffled
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0], yb)  # x and y stay paired
    again = np.concatenate([yb for _, yb in bnlib.minibatches(x, y, 5, rng=0)])
    np.testing.assert_array_equal(again, seen)
    other = np.concatenate([yb for _, yb in bnlib.minibatches(x, y, 5, rng=1)])
    assert not np.array_equal(other, seen)


def test_minibatches_drop_last_and_no_shuffle():
    x, y = np.arange(23), np.arange(23)
    batches = list(bnlib.minibatches(x, y, 5, rng=0, drop_last=True))
    assert [len(yb) for _, yb in batches] == [5, 5, 5, 5]
    assert len(np.unique(np.concatenate([yb for _, yb in batches]))) == 20
    ordered = list(bnlib.minibatches(x, y, 10, shuffle=False))
    np.testing.assert_array_equal(ordered[0][1], np.arange(10))
    np.testing.assert_array_equal(ordered[-1][1], np.arange(20, 23))
    with pytest.raises(
        ValueError, match=r"x and y must have the same length, got 23 and 22"
    ):
        list(bnlib.minibatches(x, y[:-1], 5))
