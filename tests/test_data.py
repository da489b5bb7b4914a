import socket

import jax
import numpy as np
import pytest
import scipy.special
from sklearn.datasets import make_classification

from bnn_jax import data


@pytest.fixture
def no_network(monkeypatch):
    """Fail loudly if anything opens a socket while loading data."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access during data loading")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [("toy2d", (2,), 2), ("digits", (8, 8, 1), 10), ("mnist1d", (40,), 10)],
)
def test_bundled_shapes_dtypes_and_determinism(no_network, name, shape, classes):
    ds = data.load(name, seed=3)
    again = data.load(name, seed=3)
    other = data.load(name, seed=4)
    assert ds.num_classes == classes and ds.input_shape == shape
    for split in ("train", "val", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape[1:] == shape and len(x) == len(y) > 0
        assert y.min() >= 0 and y.max() < classes
        np.testing.assert_array_equal(x, getattr(again, f"x_{split}"))
    assert not np.array_equal(ds.x_train, other.x_train)
    if ds.is_image:
        assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1


def test_generated_split_sizes_are_deterministic_in_the_seed(no_network):
    """mnist1d with a 10,000-input test set (and a chosen validation size), the same for a seed
    and stratified; toy2d's sizes too; fixed data sets refuse split sizes."""
    ds = data.load("mnist1d", seed=3, num_val=1000, num_test=10_000)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (3500, 1000, 10_000)
    again = data.load("mnist1d", seed=3, num_val=1000, num_test=10_000)
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    np.testing.assert_array_equal(ds.y_val, again.y_val)
    assert not np.array_equal(ds.x_test, data.load("mnist1d", seed=4, num_test=10_000).x_test)
    assert np.all(np.bincount(ds.y_test, minlength=10) == 1000)
    rows = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    assert len(np.unique(rows, axis=0)) == len(rows)  # disjoint splits
    assert len(data.load("mnist1d", seed=3, num_train=100, num_test=20).x_test) == 20
    toy = data.load("toy2d", seed=1, num_val=30, num_test=40)
    assert (len(toy.x_val), len(toy.x_test)) == (30, 40)
    with pytest.raises(ValueError, match="num_test: only the generated data sets"):
        data.load("digits", num_test=100)
    with pytest.raises(ValueError, match="num_val: expected an integer >= 10"):
        data.load("mnist1d", num_val=0)


def test_toy2d_follows_the_notebook_recipe():
    ds = data.load("toy2d", seed=7)
    assert len(ds.x_train) == 100
    n = len(ds.x_train) + len(ds.x_val) + len(ds.x_test)
    x, y = make_classification(
        n_samples=n,
        n_classes=2,
        n_features=2,
        n_redundant=1,
        n_informative=1,
        n_clusters_per_class=1,
        class_sep=1,
        random_state=7,
    )
    x[:, 0] = scipy.special.j1(x[:, 0])
    x = (x - x[:100].mean(0)) / x[:100].std(0)
    np.testing.assert_allclose(ds.x_train, x[:100], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds.x_test, x[200:], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ds.y_train, y[:100])
    np.testing.assert_allclose(ds.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(0), 1, atol=1e-5)
    assert len(data.load("toy2d", num_train=40).x_train) == 40


def test_digits_split_is_stratified_and_disjoint():
    ds = data.load("digits", seed=0)
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 1797
    for y in (ds.y_train, ds.y_val, ds.y_test):
        frac = np.bincount(y, minlength=10) / len(y)
        np.testing.assert_allclose(frac, 0.1, atol=0.02)
    flat = lambda a: {row.tobytes() for row in a.reshape(len(a), -1)}
    assert not flat(ds.x_train) & flat(ds.x_test)


def test_held_out_classes_and_ood_sets():
    ds = data.load("digits", classes=(0, 1, 2, 3, 4), seed=1)
    assert ds.num_classes == 5 and set(np.unique(ds.y_train)) == set(range(5))
    held_out = data.load_ood(ds, "held_out")
    full = data.load("digits", seed=1)
    expected = full.x_test[np.isin(full.y_test, [5, 6, 7, 8, 9])]
    np.testing.assert_array_equal(np.sort(held_out.ravel()), np.sort(expected.ravel()))
    for kind in ("patches", "noise"):
        x = data.load_ood(full, kind, num=20, seed=2)
        assert x.shape == (20, 8, 8, 1) and x.dtype == np.float32
        assert x.min() >= 0 and x.max() <= 1
        np.testing.assert_array_equal(x, data.load_ood(full, kind, num=20, seed=2))
    feats = data.load_ood(data.load("toy2d"), "patches", num=5)
    assert feats.shape == (5, 2) and np.all(np.isfinite(feats))


def test_photo_patches_are_not_noise():
    """Photo patches are spatially smooth, unlike uniform noise."""
    ds = data.load("digits")
    roughness = lambda x: np.mean(np.abs(np.diff(x, axis=2)))
    patches, noise = data.load_ood(ds, "patches", num=50), data.load_ood(ds, "noise", num=50)
    assert roughness(patches) < 0.5 * roughness(noise)


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"name: unknown data set 'nope'.*digits"):
        data.load("nope")
    with pytest.raises(ValueError, match="classes"):
        data.load("digits", classes=(0, 10))
    with pytest.raises(ValueError, match="num_train"):
        data.load("digits", num_train=0)
    with pytest.raises(ValueError, match="kind"):
        data.load_ood(data.load("toy2d"), "paintings")
    with pytest.raises(ValueError, match="held-out"):
        data.load_ood(data.load("toy2d"), "held_out")
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="x: expected finite"):
        data.check_arrays(np.where(np.eye(4, 2) > 0, np.nan, x), np.zeros(4, np.int32))
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 2\)"):
        data.check_arrays(x, np.array([0, 1, 2, 0]), num_classes=2)
    with pytest.raises(ValueError, match="batch_size"):
        data.Batches(x, np.zeros(4), 0)


def test_batches_cover_every_example_once():
    x, y = np.arange(10.0)[:, None], np.arange(10)
    ordered = list(data.Batches(x, y, 4))
    assert [len(b.x) for b in ordered] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b.y for b in ordered]), y)
    shuffled = data.Batches(x, y, 4, key=jax.random.key(0))
    seen = np.concatenate([b.y for b in shuffled])
    assert sorted(seen) == list(range(10)) and not np.array_equal(seen, y)
    np.testing.assert_array_equal(seen, np.concatenate([b.y for b in shuffled]))  # re-iterable
    assert len(data.Batches(x, y, 4, drop_remainder=True)) == 2
    epoch = data.epoch_batches(x, y, 3, jax.random.key(1))
    assert epoch.x.shape == (3, 3, 1) and len(set(np.asarray(epoch.y).ravel())) == 9
    np.testing.assert_array_equal(np.asarray(epoch.x)[..., 0], np.asarray(epoch.y))


@pytest.mark.parametrize(("name", "shape"), [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_loading_with_mock_data(no_network, name, shape):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40):
        ds = data.load(name, seed=0)
    assert ds.x_train.shape[1:] == shape and ds.x_train.dtype == np.float32
    assert len(ds.x_train) + len(ds.x_val) == 40 and len(ds.x_test) == 40
    assert 0 <= ds.x_train.min() and ds.x_train.max() <= 1 and ds.y_train.dtype == np.int32
    assert ds.num_classes == 10


def test_tfds_not_prepared_says_how_to_prepare(no_network, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not prepared(.|\n)*download_and_prepare_kwargs"):
        data.load("fashion_mnist", data_dir=str(tmp_path))


def test_tfds_not_prepared_in_the_default_folder(no_network, tmp_path, monkeypatch):
    # tfds itself raises KeyError("... splits is empty") here; the loader says what to do.
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="'mnist' is not prepared"):
        data.load("mnist")


X4, Y4 = np.zeros((4, 2), np.float32), np.zeros(4, np.int32)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: data.Batches(X4, Y4, 2.5), r"batch_size: expected an integer >= 1, got 2\.5"),
        (lambda: data.Batches(X4, Y4, np.float32(2)), "batch_size: expected an integer"),
        (lambda: data.Batches(X4, Y4, True), "batch_size: expected an integer"),
        (lambda: data.Batches(X4, Y4, None), "batch_size: expected an integer"),
        (lambda: data.Batches(X4, Y4, 2, key=0), "key: expected a PRNG key"),
        (lambda: data.Batches(X4, Y4, 2, key="abc"), "key: expected a PRNG key"),
        (lambda: data.Batches(X4, Y4, 2, drop_remainder="no"), "drop_remainder: expected a bool"),
        (lambda: data.epoch_batches(X4, Y4, 2.0, jax.random.key(0)), "batch_size: expected"),
        (lambda: data.epoch_batches(X4, Y4, 5, jax.random.key(0)), "batch_size: expected at most"),
        (lambda: data.epoch_batches(X4, Y4, 2, None), "key: expected a PRNG key"),
        (lambda: data.load("toy2d", seed=1.5), r"seed: expected an integer seed in \[0, 2\*\*32\)"),
        (lambda: data.load("toy2d", seed=-1), "seed: expected an integer seed"),
        (lambda: data.load("toy2d", seed="0"), "seed: expected an integer seed"),
        (lambda: data.load("toy2d", num_train=10.5), "num_train: expected an integer >= 2"),
        (lambda: data.load("toy2d", num_train=0), "num_train: expected an integer >= 2"),
        (lambda: data.load("toy2d", num_train=1), "num_train: expected an integer >= 2"),
        (lambda: data.load("digits", num_train=0), "num_train: expected an integer >= 1"),
        (lambda: data.load("digits", classes=(0, 1.5)), "classes: expected distinct integer"),
        (lambda: data.load("digits", classes=(1, 1)), "classes: expected distinct integer"),
        (lambda: data.load("digits", classes=3), "classes: expected distinct integer"),
        (lambda: data.load("digits", classes=()), "classes: expected distinct integer"),
        (lambda: data.load("digits", data_dir=3), "data_dir: expected a folder path"),
        (lambda: data.load(None), "name: unknown data set None"),
        (lambda: data.load_ood("toy2d", "noise"), "dataset: expected a data.Dataset"),
        (lambda: data.load_ood(data.load("toy2d"), "noise", num=2.5), "num: expected an integer"),
        (lambda: data.load_ood(data.load("toy2d"), "noise", seed=None), "seed: expected"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_batches_refuse_non_finite_data(bad):
    with pytest.raises(ValueError, match="x: expected finite values"):
        data.Batches(np.where(np.eye(4, 2) > 0, bad, X4), Y4, 2)
    with pytest.raises(ValueError, match="y: expected finite values"):
        data.Batches(X4, np.where(np.arange(4) == 2, bad, 0.0), 2)
