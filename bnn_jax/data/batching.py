"""Minibatches with explicit-key shuffling: a re-iterable for Python loops and a jittable
gather for ``lax.scan`` training epochs."""

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import checks
from bnn_jax.types import Batch, Key


class Batches:
    """Re-iterable minibatches of ``(x, y)``, optionally this process's share of each.

    Iterating yields ``Batch(x, y)`` numpy slices. With ``key`` the order is a permutation drawn
    from it (the same permutation on every iteration: use ``jax.random.fold_in(key, epoch)`` for
    a new order per epoch); without it the data order is kept, which is what curvature
    accumulation wants. The last, smaller batch is kept unless ``drop_remainder``. NaN or
    inf in ``x`` or ``y`` is refused (``ValueError``).

    Multi-process runs (``jax.distributed``): every process builds the same ``Batches`` (same
    data, ``batch_size`` and ``key``) with its ``process_index`` and the ``process_count``;
    global batch ``i`` is then the single-process batch ``i`` and process ``p`` yields its
    rows ``[p b / P, (p + 1) b / P)`` (``b`` the batch's size, ``P`` the process count), in
    process order, as ``jax.make_array_from_process_local_data`` expects
    (``data.global_batches`` makes the global arrays). Only those rows are read, so ``x`` may
    be any random-access array that supports ``len`` and indexing by an integer array (e.g. the
    lazy tfds images of ``data.load(..., lazy=True)``). Every batch must split evenly:
    ``batch_size`` and the last batch's size must be multiples of ``process_count`` (or pass
    ``drop_remainder=True``).

    Example:
        >>> for epoch in range(3):
        ...     for batch in Batches(x, y, 128, key=jax.random.fold_in(key, epoch)):
        ...         state = step(state, batch)
        >>> local = Batches(x, y, 128, process_index=jax.process_index(),
        ...                 process_count=jax.process_count())
    """

    def __init__(
        self,
        x,
        y,
        batch_size: int,
        *,
        key: Key | None = None,
        drop_remainder: bool = False,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(
                f"y: expected as many targets as inputs (> 0), got {len(y)} and {len(x)}"
            )
        if isinstance(x, np.ndarray | jax.Array):  # lazy images are checked when decoded
            checks.finite("x", x)
        checks.finite("y", y)
        if key is not None:
            checks.key("key", key)
        if not isinstance(drop_remainder, bool | np.bool_):
            raise ValueError(f"drop_remainder: expected a bool, got {drop_remainder!r}")
        batch_size = checks.positive_int("batch_size", batch_size)
        process_count = checks.positive_int("process_count", process_count)
        process_index = checks.positive_int("process_index", process_index, minimum=0)
        if process_index >= process_count:
            raise ValueError(
                f"process_index: expected an integer in [0, {process_count}), got {process_index}"
            )
        if batch_size % process_count:
            raise ValueError(
                f"batch_size: expected a multiple of process_count={process_count}, "
                f"got {batch_size}"
            )
        rest = len(x) % batch_size
        if rest % process_count and not drop_remainder:
            raise ValueError(
                f"drop_remainder: the last batch of {rest} examples does not split over "
                f"{process_count} processes; expected drop_remainder=True or a data size "
                f"whose remainder modulo batch_size is a multiple of {process_count}"
            )
        self.x, self.y, self.batch_size = x, y, batch_size
        self.drop_remainder = bool(drop_remainder)
        self.process_index, self.process_count = process_index, process_count
        n = len(x)
        self.order = np.arange(n) if key is None else np.asarray(jax.random.permutation(key, n))

    def __len__(self) -> int:
        full, rest = divmod(len(self.x), self.batch_size)
        return full + (rest > 0 and not self.drop_remainder)

    def __iter__(self) -> Iterator[Batch]:
        for i in range(len(self)):
            idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
            share = len(idx) // self.process_count
            idx = idx[self.process_index * share : (self.process_index + 1) * share]
            yield Batch(self.x[idx], self.y[idx])


def epoch_batches(x: jax.Array, y: jax.Array, batch_size: int, key: Key) -> Batch:
    """A shuffled epoch as one ``Batch`` with a leading ``num_batches`` axis, for ``lax.scan``.

    ``num_batches = n // batch_size``; the ``n mod batch_size`` examples left over by this
    epoch's permutation are skipped (a different set every epoch). Jittable with static
    ``batch_size``.
    """
    batch_size = checks.positive_int("batch_size", batch_size)
    checks.key("key", key)
    n = x.shape[0]
    if n < batch_size:
        raise ValueError(f"batch_size: expected at most the {n} examples of x, got {batch_size}")
    num_batches = n // batch_size
    idx = jax.random.permutation(key, n)[: num_batches * batch_size]
    idx = idx.reshape(num_batches, batch_size)
    return Batch(jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0))
