"""Per-process shares of the loaders and the global-array helpers, in one process: the shares
of every batch, concatenated in process order, are the single-process batch; lazy tfds images
read only the rows asked for and equal the eager ones."""

import socket

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnn_jax import checks, data
from bnn_jax.data.tfds_loader import RecordImages
from bnn_jax.types import Batch


@pytest.fixture
def no_network(monkeypatch):
    """Fail loudly if anything opens a socket while loading data."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access during data loading")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("key", [None, jax.random.key(3)])
@pytest.mark.parametrize("process_count", [2, 3])
def test_process_shares_concatenate_to_the_single_process_batches(key, process_count):
    n, batch_size = 30, 12  # last batch of 6 splits over 2 and 3 processes
    x, y = np.arange(2.0 * n).reshape(n, 2), np.arange(n)
    single = list(data.Batches(x, y, batch_size, key=key))
    shares = [
        list(data.Batches(x, y, batch_size, key=key, process_index=p, process_count=process_count))
        for p in range(process_count)
    ]
    assert all(len(s) == len(single) == 3 for s in shares)
    for i, batch in enumerate(single):
        parts = [s[i] for s in shares]
        assert {len(p.y) for p in parts} == {len(batch.y) // process_count}
        np.testing.assert_array_equal(np.concatenate([p.x for p in parts]), batch.x)
        np.testing.assert_array_equal(np.concatenate([p.y for p in parts]), batch.y)


def test_process_shares_that_do_not_split_evenly_are_refused():
    x, y = np.zeros((10, 1)), np.zeros(10, np.int32)
    with pytest.raises(ValueError, match="batch_size: expected a multiple of process_count=4"):
        data.Batches(x, y, 6, process_index=0, process_count=4)
    with pytest.raises(ValueError, match="drop_remainder"):
        data.Batches(x, y, 4, process_index=0, process_count=4)  # last batch of 2
    dropped = data.Batches(x, y, 4, process_index=3, process_count=4, drop_remainder=True)
    assert [len(b.x) for b in dropped] == [1, 1]
    with pytest.raises(ValueError, match=r"process_index: expected an integer in \[0, 2\)"):
        data.Batches(x, y, 2, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="process_count: expected an integer >= 1"):
        data.Batches(x, y, 2, process_index=0, process_count=0)


def test_global_arrays_in_one_process():
    mesh = data.batch_mesh()
    x, y = np.arange(8.0).reshape(4, 2), np.arange(4, dtype=np.int32)
    batch = data.global_batch(Batch(x, y), mesh)
    assert batch.x.sharding.spec == jax.sharding.PartitionSpec("batch")
    np.testing.assert_array_equal(data.gather(batch.x), x)
    batches = data.global_batches(data.Batches(x, y, 2), mesh)
    assert len(batches) == 2
    np.testing.assert_array_equal(np.concatenate([data.gather(b.y) for b in batches]), y)
    params = data.replicate({"w": np.ones((2, 3), np.float32)}, mesh)
    assert params["w"].is_fully_replicated
    total = jax.jit(lambda p, b: jnp.sum(b.x @ p["w"]))(params, batch)
    np.testing.assert_allclose(data.gather(total), 3 * x.sum())


def test_checks_read_what_this_process_holds():
    assert checks.is_readable(np.ones(2)) and checks.is_readable(jnp.ones(2))
    seen = []
    jax.jit(lambda a: seen.append(checks.is_readable(a)) or a)(1.0)
    assert seen == [False]
    assert checks.concrete(jnp.arange(3)).tolist() == [0, 1, 2]


@pytest.mark.parametrize("classes", [None, (1, 3, 5)])
def test_lazy_tfds_images_equal_the_eager_ones(no_network, classes):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40):
        eager = data.load("mnist", seed=0, classes=classes)
        lazy = data.load("mnist", seed=0, classes=classes, lazy=True)
        assert not isinstance(lazy.x_train, np.ndarray)
        assert lazy.x_train.shape == eager.x_train.shape and lazy.x_train.dtype == np.float32
        np.testing.assert_array_equal(lazy.y_train, eager.y_train)
        for split in ("x_train", "x_val", "x_test"):
            np.testing.assert_array_equal(np.asarray(getattr(lazy, split)), getattr(eager, split))
        rows = np.array([3, 0, 2])
        np.testing.assert_array_equal(lazy.x_train[rows], eager.x_train[rows])
        np.testing.assert_array_equal(lazy.x_train[1], eager.x_train[1])
        share = data.Batches(
            lazy.x_train, lazy.y_train, 4, process_index=1, process_count=2, drop_remainder=True
        )
        first = next(iter(share))
        np.testing.assert_array_equal(first.x, eager.x_train[2:4])
        # a process decodes only the records of its share
        reads = []

        class Counting:
            def __getitem__(self, i):
                reads.append(i)
                return lazy.x_train.source[i]

        counted = RecordImages(Counting(), lazy.x_train.indices, lazy.x_train.shape[1:])
        share = data.Batches(
            counted, lazy.y_train, 4, process_index=1, process_count=2, drop_remainder=True
        )
        next(iter(share))
        assert reads == list(lazy.x_train.indices[2:4])


def test_readme_several_gpus_snippet_runs():
    import re
    from pathlib import Path

    from bnn_jax import curvature, laplace, losses, models, predictive

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Accelerators and several hosts", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    model = models.MLP((8,), 3)
    variables = models.init(model, jax.random.key(0), (4,))
    apply_fn, lik = models.make_apply_fn(model, variables), losses.categorical()
    rng = np.random.default_rng(0)
    namespace = {
        "data": data, "laplace": laplace, "predictive": predictive, "key": jax.random.key(1),
        "x": rng.random((1024, 4), dtype=np.float32), "y": rng.integers(0, 3, 1024),
        "x_test": rng.random((8, 4), dtype=np.float32), "params": variables["params"],
        "apply_fn": apply_fn, "lik": lik,
        "curv": curvature.diagonal(apply_fn, lik, fisher=curvature.exact_fisher()),
    }  # fmt: skip
    exec(block, namespace)
    assert namespace["log_probs"].shape == (8, 3) and isinstance(namespace["log_probs"], np.ndarray)
