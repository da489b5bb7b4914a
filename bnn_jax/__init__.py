"""bnn_jax: a functional JAX library for Bayesian neural networks.

Import the submodules you need, e.g. ``from bnn_jax import laplace, predictive``.
"""

__version__ = "0.1.0"
