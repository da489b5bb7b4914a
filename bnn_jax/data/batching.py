"""Minibatches with explicit-key shuffling: a re-iterable for Python loops and a jittable
gather for ``lax.scan`` training epochs."""

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import checks
from bnn_jax.types import Batch, Key


class Batches:
    """Re-iterable minibatches of ``(x, y)``.

    Iterating yields ``Batch(x, y)`` numpy slices. With ``key`` the order is a permutation drawn
    from it (the same permutation on every iteration: use ``jax.random.fold_in(key, epoch)`` for
    a new order per epoch); without it the data order is kept, which is what curvature
    accumulation wants. The last, smaller batch is kept unless ``drop_remainder``. NaN or
    inf in ``x`` or ``y`` is refused (``ValueError``).

    Example:
        >>> for epoch in range(3):
        ...     for batch in Batches(x, y, 128, key=jax.random.fold_in(key, epoch)):
        ...         state = step(state, batch)
    """

    def __init__(self, x, y, batch_size: int, *, key: Key | None = None, drop_remainder=False):
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(
                f"y: expected as many targets as inputs (> 0), got {len(y)} and {len(x)}"
            )
        checks.finite("x", x)
        checks.finite("y", y)
        self.batch_size = checks.positive_int("batch_size", batch_size)
        if key is not None:
            checks.key("key", key)
        if not isinstance(drop_remainder, bool | np.bool_):
            raise ValueError(f"drop_remainder: expected a bool, got {drop_remainder!r}")
        self.x, self.y = x, y
        self.drop_remainder = bool(drop_remainder)
        n = len(x)
        self.order = np.arange(n) if key is None else np.asarray(jax.random.permutation(key, n))

    def __len__(self) -> int:
        full, rest = divmod(len(self.x), self.batch_size)
        return full + (rest > 0 and not self.drop_remainder)

    def __iter__(self) -> Iterator[Batch]:
        for i in range(len(self)):
            idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
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
