"""Data sets: bundled (toy2d, digits, mnist1d), TensorFlow Datasets, OOD sets, minibatches.

``load(name, seed=0)`` returns a :class:`Dataset` with deterministic train/val/test splits;
``load_ood(dataset, kind)`` returns out-of-distribution inputs shaped like it;
:class:`Batches` and :func:`epoch_batches` cut minibatches with explicit-key shuffling
(``Batches(..., process_index=, process_count=)``: each process's share of every batch);
``batch_mesh``, ``global_batches``, ``replicate`` and ``gather`` (``data.sharding``) turn
process-local data into global arrays for runs over several devices and processes.
"""

import os

import numpy as np

from bnn_jax import checks
from bnn_jax.data import bundled
from bnn_jax.data.batching import Batches, epoch_batches
from bnn_jax.data.dataset import Dataset, check_arrays, keep_classes
from bnn_jax.data.ood import make_ood
from bnn_jax.data.sharding import (
    GlobalBatches,
    batch_mesh,
    gather,
    global_array,
    global_batch,
    global_batches,
    replicate,
)
from bnn_jax.data.tfds_loader import TFDS_DATASETS, load_tfds

BUNDLED_DATASETS = {"toy2d": 2, "digits": 10, "mnist1d": 10}
"""Data sets that need no download, and their number of classes."""
DATASETS = (*BUNDLED_DATASETS, *TFDS_DATASETS)
OOD_KINDS = ("patches", "noise", "held_out")

__all__ = [
    "DATASETS",
    "OOD_KINDS",
    "Batches",
    "Dataset",
    "GlobalBatches",
    "batch_mesh",
    "check_arrays",
    "epoch_batches",
    "gather",
    "global_array",
    "global_batch",
    "global_batches",
    "load",
    "load_ood",
    "replicate",
]


def load(
    name: str,
    *,
    seed: int = 0,
    classes: tuple[int, ...] | None = None,
    num_train: int | None = None,
    num_val: int | None = None,
    num_test: int | None = None,
    data_dir: str | None = None,
    lazy: bool = False,
) -> Dataset:
    """Load data set ``name`` with splits determined by ``seed``.

    Args:
      name: one of ``DATASETS``: ``"toy2d"``, ``"digits"``, ``"mnist1d"`` (no download) or the
        tfds names ``"mnist"``, ``"fashion_mnist"``, ``"kmnist"``, ``"cifar10"``,
        ``"svhn_cropped"`` (must be prepared under ``data_dir``; see ``tfds_loader``).
      seed: seed of the generator (toy2d, mnist1d) and of the splits.
      classes: keep only these original classes, relabelled ``0..k-1`` in the given order
        (e.g. ``(0, 1, 2, 3, 4)``; the rest are then available as ``load_ood(ds, "held_out")``).
      num_train: for toy2d the number of generated training points (default 100, at least 2);
        for the other data sets keep only the first ``num_train`` training examples of the
        shuffled split.
      num_val, num_test: generated data sets only (toy2d, mnist1d): the sizes of the validation
        and test splits (toy2d default 100 and 500; mnist1d default 500 and its 1000 test
        signals, else ``3500 + num_val + num_test`` signals generated from ``seed``, e.g.
        ``num_test=10_000`` for intervals that separate methods).
      data_dir: tfds data directory (default ``~/tensorflow_datasets``).
      lazy: tfds sets only: keep the images in the data source, decoded when indexed
        (``x_*`` are ``tfds_loader.RecordImages``; labels are numpy). With
        ``Batches(..., process_index=, process_count=)`` each process of a multi-process run
        then decodes and holds only its share of every batch. Bundled sets are small and
        always in memory (``lazy`` changes nothing for them).

    Example:
      >>> ds = load("digits", seed=0)
      >>> ds.x_train.shape, ds.num_classes
      ((1077, 8, 8, 1), 10)
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"name: unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    seed = checks.seed("seed", seed)
    if num_train is not None:  # toy2d standardises with the training std: 2 points at least
        num_train = checks.positive_int("num_train", num_train, minimum=2 if name == "toy2d" else 1)
    _check_data_dir(data_dir)
    sizes = {}
    for arg, value in (("num_val", num_val), ("num_test", num_test)):
        if value is not None:
            if name not in ("toy2d", "mnist1d"):
                raise ValueError(
                    f"{arg}: only the generated data sets (toy2d, mnist1d) take a split size; "
                    f"{name}'s splits are fixed"
                )
            sizes[arg] = checks.positive_int(arg, value, minimum=10)
    total = BUNDLED_DATASETS.get(name) or TFDS_DATASETS[name]
    if name == "toy2d":
        splits = bundled.toy2d(seed, **({"num_train": num_train} if num_train else {}), **sizes)
    elif name == "digits":
        splits = bundled.digits(seed)
    elif name == "mnist1d":
        splits = bundled.mnist1d(seed, **sizes)
    else:
        splits = load_tfds(name, seed, None if data_dir is None else os.fspath(data_dir), lazy=lazy)
    classes = _check_classes(classes, total)
    if len(classes) < total:
        splits = tuple(keep_classes(x, y, classes) for x, y in splits)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = splits
    if num_train is not None and name != "toy2d":
        if num_train > len(x_train):
            raise ValueError(f"num_train: expected at most {len(x_train)}, got {num_train}")
        x_train, y_train = x_train.take(np.arange(num_train), axis=0), y_train[:num_train]
    return Dataset(
        name, x_train, y_train, x_val, y_val, x_test, y_test, len(classes), classes, seed
    )


def _check_classes(classes, total: int) -> tuple[int, ...]:
    """Distinct integer class ids in ``[0, total)`` (all of them for ``None``)."""
    if classes is None:
        return tuple(range(total))
    message = f"classes: expected distinct integer class ids in [0, {total}), got {classes!r}"
    if isinstance(classes, str) or not hasattr(classes, "__iter__"):
        raise ValueError(message)
    classes = tuple(classes)
    integers = all(isinstance(c, int | np.integer) and not isinstance(c, bool) for c in classes)
    if not (classes and integers and len(set(classes)) == len(classes)):
        raise ValueError(message)
    if not all(0 <= c < total for c in classes):
        raise ValueError(message)
    return tuple(int(c) for c in classes)


def _check_data_dir(data_dir) -> None:
    if data_dir is not None and not isinstance(data_dir, str | os.PathLike):
        raise ValueError(f"data_dir: expected a folder path or None, got {data_dir!r}")


def load_ood(
    dataset: Dataset,
    kind: str,
    *,
    seed: int = 0,
    num: int | None = None,
    data_dir: str | None = None,
) -> np.ndarray:
    """Out-of-distribution inputs for ``dataset``, shaped like its test inputs.

    Args:
      dataset: the in-distribution :class:`Dataset`.
      kind: ``"patches"`` (photo patches), ``"noise"`` or ``"held_out"`` (the test inputs of
        the classes ``dataset`` was loaded without). See :mod:`bnn_jax.data.ood`.
      seed: seed of the patches/noise.
      num: number of inputs (default: as many as ``dataset.x_test``; for ``held_out`` at most
        all held-out test inputs).
      data_dir: tfds data directory, for reloading held-out classes.
    """
    if kind not in OOD_KINDS:
        raise ValueError(f"kind: unknown OOD kind {kind!r}; expected one of {', '.join(OOD_KINDS)}")
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset: expected a data.Dataset, got {type(dataset).__name__}")
    seed = checks.seed("seed", seed)
    num = len(dataset.x_test) if num is None else checks.positive_int("num", num)
    _check_data_dir(data_dir)
    if kind != "held_out":
        return make_ood(dataset, kind, num, seed)
    total = BUNDLED_DATASETS.get(dataset.name) or TFDS_DATASETS[dataset.name]
    rest = tuple(c for c in range(total) if c not in dataset.classes)
    if not rest:
        raise ValueError("dataset: has no held-out classes; load it with classes=(...) first")
    return load(dataset.name, seed=dataset.seed, classes=rest, data_dir=data_dir).x_test[:num]
