"""Data: MNIST-1D generation and cache, digits and mini-batches."""

import numpy as np
import pytest

import bnlib
from bnlib import data as D


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_standard_set_is_the_committed_one(cache, monkeypatch):
    """The defaults read the shipped file (no generation, no cache), the same bytes on
    every machine."""
    monkeypatch.setattr(D, "_generate_mnist1d", _must_not_generate)
    d = bnlib.load_mnist1d()
    assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40)
    assert d.x_train.dtype == np.float64 and d.y_train.dtype == np.int64
    assert set(np.unique(d.y_train)) == set(range(10)) and d.num_classes == 10
    assert "Dataset(train (4000, 40), test (1000, 40), 10 classes)" == repr(d)
    assert not cache.exists() or not list(cache.iterdir())
    assert bnlib.load_mnist1d(dtype=np.float32).x_test.dtype == np.float32


def test_a_damaged_committed_file_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "mnist1d.npz"
    raw = bytearray(D.MNIST1D_FILE.read_bytes())
    raw[len(raw) // 2] ^= 1
    copy.write_bytes(bytes(raw))
    monkeypatch.setattr(D, "MNIST1D_FILE", copy)
    with pytest.raises(ValueError, match=r"mnist1d.npz is damaged .*git checkout"):
        bnlib.load_mnist1d()


def test_the_committed_set_is_what_the_generator_gives_under_the_pins(tmp_path):
    """Regenerating the standard set in a pinned child process reproduces the shipped
    file's arrays: exactly on the machine that made it, to the last bits elsewhere
    (glibc's libm picks its code by CPU, which is why the file is shipped)."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url")
    fresh = D._generate_mnist1d(args)
    shipped = D._committed_mnist1d()
    for k in ("y", "y_test"):
        np.testing.assert_array_equal(fresh[k], shipped[k])
    for k in ("x", "x_test"):
        np.testing.assert_allclose(fresh[k], shipped[k], rtol=0, atol=1e-12)


def _must_not_generate(args):
    raise AssertionError("expected a file, not the generator")


def _fake_generator(args):
    """A quick deterministic stand-in for the MNIST-1D generator."""
    rng = np.random.default_rng(args["seed"])
    n = args["num_samples"]
    n_train = int(n * args["train_split"])
    x, y = rng.normal(size=(n, 40)), rng.integers(0, 10, n)
    return {
        "x": x[:n_train],
        "y": y[:n_train],
        "x_test": x[n_train:],
        "y_test": y[n_train:],
    }


def test_other_settings_are_generated_once_and_cached(cache, monkeypatch):
    state = np.random.get_state()
    d = bnlib.load_mnist1d(num_samples=500)  # the real generator, in a child process
    assert d.x_train.shape == (400, 40) and d.x_test.shape == (100, 40)
    assert set(np.unique(d.y_train)) <= set(range(10)) and np.isfinite(d.x_train).all()
    np.testing.assert_array_equal(np.random.get_state()[1], state[1])
    assert len(list(cache.glob("mnist1d_*.npz"))) == 1
    monkeypatch.setattr(D, "_generate_mnist1d", _must_not_generate)
    again = bnlib.load_mnist1d(num_samples=500, dtype=np.float32)
    np.testing.assert_allclose(again.x_train, d.x_train.astype(np.float32))
    np.testing.assert_array_equal(again.y_test, d.y_test)


def test_each_setting_has_its_own_file(cache, monkeypatch):
    monkeypatch.setattr(D, "_generate_mnist1d", _fake_generator)
    a = bnlib.load_mnist1d(num_samples=50)
    assert not np.array_equal(
        bnlib.load_mnist1d(num_samples=50, seed=7).x_train, a.x_train
    )
    bnlib.load_mnist1d(num_samples=50, iid_noise_scale=0.5)
    assert len(list(cache.glob("mnist1d_*.npz"))) == 3


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "foreign file", "swap"])
def test_a_tampered_cache_file_is_caught_and_regenerated(cache, monkeypatch, damage):
    monkeypatch.setattr(D, "_generate_mnist1d", _fake_generator)
    good = bnlib.load_mnist1d(num_samples=50)
    (path,) = cache.glob("mnist1d_*.npz")
    if damage == "flip a byte":
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "foreign file":  # readable arrays, but not the ones checksummed
        with np.load(path) as f:
            arrays = dict(f)
        arrays["x"] = arrays["x"] + 1e-15
        np.savez(path, **arrays)
    else:  # arrays from another setting under this setting's name
        np.savez(
            path, **_fake_generator({"seed": 1, "num_samples": 50, "train_split": 0.8})
        )
    calls = []
    monkeypatch.setattr(
        D, "_generate_mnist1d", lambda args: calls.append(args) or _fake_generator(args)
    )
    again = bnlib.load_mnist1d(num_samples=50)
    assert len(calls) == 1, "the damaged file was used instead of regenerated"
    np.testing.assert_array_equal(again.x_train, good.x_train)
    assert D._read_checked(path) is not None  # and the file is whole again


def test_concurrent_cache_writers_do_not_collide(cache, monkeypatch):
    """Two notebooks generating the same data set at once: each writes its own temporary
    file and renames it into place, so both succeed and no temporary file is left."""
    import threading

    monkeypatch.setattr(D, "_generate_mnist1d", _fake_generator)
    barrier = threading.Barrier(2, timeout=30)
    savez = np.savez_compressed

    def savez_then_wait(file, **arrays):  # both writers overlap for certain
        savez(file, **arrays)
        barrier.wait()

    monkeypatch.setattr(np, "savez_compressed", savez_then_wait)
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
    monkeypatch.setattr(D, "_generate_mnist1d", _fake_generator)

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


# ------------------------------------------------------------------ pinned numerics
def test_the_makefile_exports_the_pins_the_library_knows():
    """`make` exports the pins for every notebook run; bnlib.numerics uses the same
    values for the child process that generates data. The two must agree."""
    import re
    from pathlib import Path

    from bnlib.numerics import PINS

    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    exported = dict(re.findall(r"^export (\w+) := (.+)$", makefile, re.M))
    for name, value in PINS.items():
        assert exported.get(name) == value, f"Makefile exports {name} := {value}?"


def test_the_pin_check_is_quiet_under_a_deliberate_perturbation(monkeypatch):
    from bnlib import numerics

    monkeypatch.setattr(numerics, "pinned_numerics", lambda: {"blas_kernels": False})
    monkeypatch.setattr(numerics, "_is_x86_64", lambda: True)
    monkeypatch.delenv(numerics.PERTURBED, raising=False)
    assert "numerics not pinned (blas_kernels)" in numerics.report_unpinned()
    monkeypatch.setenv(numerics.PERTURBED, "kernels-v2")
    assert numerics.report_unpinned() == ""
    assert numerics.PERTURBED not in numerics.pinned_environment()
