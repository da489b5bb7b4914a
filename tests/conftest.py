"""Shared fixtures. Float64 is switched on per test with the ``x64`` fixture, never globally.

The suite is dominated by XLA compilation of many small programs, so tests compile with cheap
backend optimisation (about a third less CPU time; results are unaffected at the tolerances
used). Set ``XLA_FLAGS`` yourself to override. Must run before jax is imported.
"""

import os

os.environ.setdefault(
    "XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test body with 64-bit floats (``jax.enable_x64`` context), for tight references."""
    with jax.enable_x64(True):
        yield
