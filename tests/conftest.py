"""Shared fixtures. Float64 is switched on per test with the ``x64`` fixture, never globally."""

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test body with 64-bit floats (``jax.enable_x64`` context), for tight references."""
    with jax.enable_x64(True):
        yield
