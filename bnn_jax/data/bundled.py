"""Data sets that ship with a package or are generated locally: toy2d, digits, mnist1d."""

import numpy as np
import scipy.special
from sklearn.datasets import load_digits, make_classification

from bnn_jax.data.dataset import stratified_split


def toy2d(seed: int, num_train: int = 100, num_val: int = 100, num_test: int = 500):
    """The notebook's 2D problem: one informative direction bent through the Bessel J1.

    ``make_classification(n_classes=2, n_features=2, n_redundant=1, n_informative=1,
    n_clusters_per_class=1, class_sep=1)`` draws all ``num_train + num_val + num_test`` points in
    one call (so the three splits share the generator's clusters and label noise), the first
    coordinate is replaced by ``J1(x_0)``, and everything is standardised with the training
    mean and standard deviation. Returns ``(x, y)`` triples for train, val and test.
    """
    n = num_train + num_val + num_test
    x, y = make_classification(
        n_samples=n,
        n_classes=2,
        n_features=2,
        n_redundant=1,
        n_informative=1,
        n_clusters_per_class=1,
        class_sep=1,
        random_state=seed,
    )
    x[:, 0] = scipy.special.j1(x[:, 0])
    mean, std = x[:num_train].mean(axis=0), x[:num_train].std(axis=0)
    x = ((x - mean) / std).astype(np.float32)
    y = y.astype(np.int32)
    bounds = [num_train, num_train + num_val]
    return tuple(zip(np.split(x, bounds), np.split(y, bounds), strict=True))


def class_gap(x, y) -> tuple[float, int]:
    """How close two classes come: ``(gap, num_flipped)``.

    A point whose nearest other point carries another label counts as label-flipped (it lies
    inside the other class, as ``make_classification``'s ``flip_y`` puts it); ``gap`` is the
    smallest distance between points of different classes among the others,
    ``min ||x_i - x_j||`` over ``y_i != y_j``, both not flipped (``inf`` when fewer than two
    classes remain). An attack of radius ``eps`` can move a point across a boundary midway
    between the classes only if ``2 eps`` exceeds the gap.

    Example:
      >>> (x, y), _, _ = toy2d(20)
      >>> class_gap(x, y)   # (0.322..., 2)
    """
    x, y = np.asarray(x, np.float64), np.asarray(y)
    if x.ndim != 2 or y.shape != (len(x),) or len(x) < 2:
        raise ValueError(
            f"x, y: expected [n, d] points and [n] labels with n >= 2, got {x.shape} and {y.shape}"
        )
    distance = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    clean = y[distance.argmin(axis=1)] == y
    other = (y[:, None] != y[None]) & clean[:, None] & clean[None]
    gap = float(distance[other].min()) if other.any() else float("inf")
    return gap, int((~clean).sum())


def digits(seed: int):
    """sklearn's bundled 8x8 digits (1797 images) as ``[n, 8, 8, 1]`` in [0, 1], split
    60/20/20 into train/val/test, stratified by class."""
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    y = bunch.target.astype(np.int32)
    parts = stratified_split(y, (0.6, 0.2, 0.2), seed)
    return tuple((x[idx], y[idx]) for idx in parts)


def mnist1d(seed: int, num_val: int | None = None, num_test: int | None = None):
    """MNIST-1D (Greydanus 2020) generated locally with ``mnist1d.data.make_dataset`` (no
    download). By default its 4000 + 1000 signals of length 40, the 4000 split 3500/500 into
    train/val (stratified), the 1000 the test split. With ``num_val`` or ``num_test`` (default
    500 and 1000 when only the other is given) ``3500 + num_val + num_test`` signals are
    generated from ``seed`` (rounded up to whole classes) and split stratified into 3500 /
    ``num_val`` / ``num_test``: a test set as large as an interval needs, the same for a seed.
    Features are float32 ``[n, 40]``, as generated (not rescaled).

    ``make_dataset`` seeds numpy's global generator; its state is restored afterwards so that
    loading data has no side effect on the caller's ``np.random``.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    generated = num_val is not None or num_test is not None
    if generated:
        num_val = 500 if num_val is None else num_val
        num_test = 1000 if num_test is None else num_test
        total = 3500 + num_val + num_test
        args.num_samples, args.train_split = 10 * -(-total // 10), 1.0
    saved = np.random.get_state()  # noqa: NPY002 (mnist1d seeds the global RNG)
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(saved)  # noqa: NPY002
    x, y = raw["x"].astype(np.float32), raw["y"].astype(np.int32)
    if generated:
        n = len(y)
        train, val, test = stratified_split(
            y, (3500 / n, num_val / n, 1 - (3500 + num_val) / n), seed
        )
        return (x[train], y[train]), (x[val], y[val]), (x[test[:num_test]], y[test[:num_test]])
    train, val = stratified_split(y, (0.875, 0.125), seed)
    test = (raw["x_test"].astype(np.float32), raw["y_test"].astype(np.int32))
    return (x[train], y[train]), (x[val], y[val]), test
