"""The shared argument checks: what each accepts, what it refuses, and that traced values pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnn_jax import checks


@pytest.mark.parametrize("good", [jax.random.key(0), jax.random.PRNGKey(0)])
def test_key_accepts_typed_and_raw_keys(good):
    checks.key("key", good)
    jax.jit(lambda k: checks.key("key", k))(good)


@pytest.mark.parametrize("bad", [0, "abc", None, jnp.ones(3), np.zeros(2, np.uint32)])
def test_key_refuses_seeds_strings_and_arrays(bad):
    with pytest.raises(ValueError, match="key: expected a PRNG key"):
        checks.key("key", bad)


def test_positive_int():
    assert checks.positive_int("n", np.int64(3)) == 3
    assert checks.positive_int("n", 0, minimum=0) == 0
    for bad in (2.5, True, 0, "3", None):
        with pytest.raises(ValueError, match="n: expected an integer >= 1"):
            checks.positive_int("n", bad)


def test_chunk_size():
    assert checks.chunk_size("chunk_size", None) is None
    assert checks.chunk_size("chunk_size", 4) == 4
    with pytest.raises(ValueError, match="chunk_size"):
        checks.chunk_size("chunk_size", 0)


@pytest.mark.parametrize(
    ("check", "bad"),
    [
        (checks.positive, 0.0),
        (checks.positive, -1.0),
        (checks.positive, float("nan")),
        (checks.positive, "x"),
        (checks.nonnegative, -1e-3),
        (checks.nonnegative, float("inf")),
        (checks.finite, jnp.array([1.0, jnp.nan])),
    ],
)
def test_value_checks_refuse(check, bad):
    with pytest.raises(ValueError, match="tau: expected"):
        check("tau", bad)


def test_value_checks_skip_traced_values():
    @jax.jit
    def f(x):
        checks.positive("tau", x)
        checks.nonnegative("tau", x)
        checks.finite("tau", x)
        return x

    assert float(f(-1.0)) == -1.0
    checks.nonnegative("tau", 0.0)
    checks.positive("tau", jnp.ones(3))


def test_seed():
    assert checks.seed("seed", np.uint32(2**32 - 1)) == 2**32 - 1
    assert checks.seed("seed", 0) == 0
    for bad in (-1, 2**32, 1.0, True, None, "0"):
        with pytest.raises(ValueError, match=r"seed: expected an integer seed in \[0, 2\*\*32\)"):
            checks.seed("seed", bad)


def test_rate():
    assert checks.rate("p", 0) == 0.0 and checks.rate("p", np.float32(0.5)) == 0.5
    for bad in (1.0, -0.1, float("nan"), True, "0.1", None):
        with pytest.raises(ValueError, match=r"p: expected a rate in \[0, 1\)"):
            checks.rate("p", bad)
