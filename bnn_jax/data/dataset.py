"""The ``Dataset`` container, input validation and deterministic splitting."""

from typing import NamedTuple

import jax
import numpy as np


class Dataset(NamedTuple):
    """Train/validation/test arrays of one data set, as numpy.

    Images are NHWC float32 in [0, 1]; feature data (toy2d, mnist1d) is float32 ``[n, d]``;
    labels are int32 in ``[0, num_classes)``. ``classes`` lists the original class ids kept
    (label ``i`` is original class ``classes[i]``) and ``seed`` the seed of the split, so the
    complementary (held-out) classes can be reloaded as an OOD set.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    classes: tuple[int, ...]
    seed: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch axis."""
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        """True for NHWC image data."""
        return self.x_train.ndim == 4


def check_arrays(x, y, *, num_classes: int | None = None, x_name="x", y_name="y") -> None:
    """Raise ``ValueError`` for non-finite inputs, mismatched lengths or labels out of range."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{x_name}: expected a non-empty array [n, ...], got shape {x.shape}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{y_name}: expected {x.shape[0]} targets to match {x_name}, got {y.shape[0]}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{x_name}: expected finite values, found NaN or inf")
    if np.issubdtype(y.dtype, np.integer):
        if num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(
                f"{y_name}: expected labels in [0, {num_classes}), got range [{y.min()}, {y.max()}]"
            )
    elif not np.all(np.isfinite(y)):
        raise ValueError(f"{y_name}: expected finite values, found NaN or inf")


def permutation(seed: int, n: int, *, stream: int = 0) -> np.ndarray:
    """A deterministic permutation of ``range(n)`` from ``seed`` (and a stream id)."""
    key = jax.random.fold_in(jax.random.key(seed), stream)
    return np.asarray(jax.random.permutation(key, n))


def stratified_split(
    y: np.ndarray, fractions: tuple[float, ...], seed: int
) -> tuple[np.ndarray, ...]:
    """Index arrays splitting ``y`` into parts of the given fractions, each class split alike.

    Every class is shuffled with ``seed`` and cut at the cumulative fractions, so each part
    holds (to rounding) the same class proportions. Returns sorted-then-shuffled index arrays.
    """
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    cuts = np.cumsum(fractions)[:-1]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[permutation(seed, idx.size, stream=int(c) + 1)]
        bounds = np.round(cuts * idx.size).astype(int)
        for part, chunk in zip(parts, np.split(idx, bounds), strict=True):
            part.append(chunk)
    out = []
    for i, part in enumerate(parts):
        idx = np.concatenate(part)
        out.append(idx[permutation(seed, idx.size, stream=1000 + i)])
    return tuple(out)


def keep_classes(x, y, classes: tuple[int, ...]):
    """Restrict ``(x, y)`` to ``classes`` and relabel them ``0..len(classes)-1`` in that order."""
    mapping = np.full(int(max(classes)) + 1, -1, np.int32)
    mapping[list(classes)] = np.arange(len(classes), dtype=np.int32)
    rows = np.flatnonzero(np.isin(y, classes))
    return x.take(rows, axis=0), mapping[y[rows]]  # lazy inputs (tfds RecordImages) stay lazy
