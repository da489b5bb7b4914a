"""Input checks at the library's public boundaries: one rule per kind of argument.

Every check raises ``ValueError`` naming the argument and what was expected. Values that are
traced (inside ``jit``/``vmap``/``grad``) cannot be inspected: checks of values skip them and
only check what is static (shapes, dtypes, Python types), so a public function may call them
both eagerly and under a transformation. The same holds for global arrays of a multi-process
run (``jax.distributed``) that this process does not hold whole: a batch sharded over the
processes is skipped (no process could read it without a collective), a replicated value is
checked, identically in every process.

Example:
  >>> checks.positive_int("num_samples", 30)
  30
  >>> checks.key("key", jax.random.key(0))
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "chunk_size",
    "concrete",
    "finite",
    "is_readable",
    "is_traced",
    "key",
    "nonnegative",
    "positive",
    "positive_int",
    "rate",
    "seed",
]


def is_traced(value: Any) -> bool:
    """Whether ``value`` is an abstract value (a tracer) whose numbers cannot be read."""
    return isinstance(value, jax.core.Tracer)


def is_readable(value: Any) -> bool:
    """Whether this process can read ``value``'s numbers on the host: not traced, and not a
    global array spanning other processes' devices unless it is replicated."""
    if is_traced(value):
        return False
    if isinstance(value, jax.Array):
        return value.is_fully_addressable or value.is_fully_replicated
    return True


def concrete(value: Any) -> np.ndarray | None:
    """``value`` as a numpy array, or ``None`` when it cannot be read here (``is_readable``:
    traced, or sharded over several processes)."""
    return np.asarray(value) if is_readable(value) else None


def positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer (Python or numpy, not bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def seed(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is an integer (Python or numpy, not bool) in ``[0, 2**32)``,
    the range every seeded generator accepts (``jax.random.key``, numpy, scikit-learn)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < 2**32:
        raise ValueError(f"{name}: expected an integer seed in [0, 2**32), got {value!r}")
    return int(value)


def rate(name: str, value: Any) -> float:
    """``value`` as a ``float`` if it is a real number (not bool) in ``[0, 1)``, e.g. a dropout
    rate."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name}: expected a rate in [0, 1), got {value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: expected a rate in [0, 1), got {value!r}")
    return float(value)


def chunk_size(name: str, value: Any) -> int | None:
    """``None`` (no chunking) or an integer >= 1."""
    return None if value is None else positive_int(name, value)


def key(name: str, value: Any) -> None:
    """A JAX PRNG key: a typed key array (``jax.random.key``) or a raw ``uint32[2]`` key
    (``jax.random.PRNGKey``); not an integer seed, a string or ``None``."""
    if isinstance(value, jax.Array) or is_traced(value):
        dtype = value.dtype
        if jnp.issubdtype(dtype, jax.dtypes.prng_key):
            return
        if dtype == jnp.uint32 and value.shape[-1:] == (2,):
            return
    raise ValueError(
        f"{name}: expected a PRNG key from jax.random.key(seed), got {_describe(value)}"
    )


def positive(name: str, value: Any) -> None:
    """A finite number (or array of numbers) ``> 0``; traced values are not checked."""
    v = concrete(value)
    if v is not None and not (_is_numeric(v) and np.all(np.isfinite(v)) and np.all(v > 0)):
        raise ValueError(f"{name}: expected a finite value > 0, got {_describe(value)}")


def nonnegative(name: str, value: Any) -> None:
    """A finite number (or array of numbers) ``>= 0``; traced values are not checked."""
    v = concrete(value)
    if v is not None and not (_is_numeric(v) and np.all(np.isfinite(v)) and np.all(v >= 0)):
        raise ValueError(f"{name}: expected a finite value >= 0, got {_describe(value)}")


def finite(name: str, value: Any) -> None:
    """An array without NaN or inf; traced values are not checked."""
    v = concrete(value)
    if v is not None and _is_numeric(v) and not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: expected finite values, got NaN or inf")


def _is_numeric(v: np.ndarray) -> bool:
    return np.issubdtype(v.dtype, np.number) and not np.issubdtype(v.dtype, np.bool_)


def _describe(value: Any) -> str:
    if isinstance(value, jax.Array | np.ndarray) and np.ndim(value) > 0:
        return f"an array of shape {tuple(np.shape(value))} and dtype {value.dtype}"
    return repr(value)
