"""Kronecker factors of a layer block, their eigenbases, and the two ways to add the prior.

For one layer block (``blocks.Block``) with inputs ``a_nt`` (``rows``: the layer inputs, with
a trailing 1 for a bias in the homogeneous layout) and output gradients ``b_nmt`` (``cols``),
summed over examples ``n``, positions ``t`` and factors ``m``:

    a_sum = sum a a^T,   g_sum = sum b b^T,   positions = sum_n T_n,
    A = a_sum / sqrt(N),   G = sqrt(N) g_sum / positions,   C_block ≈ A ⊗ G

with ``N`` the number of examples seen. For a Dense layer on ``[B, d_in]`` (``T = 1``)
``A ⊗ G = a_sum ⊗ g_sum / N`` is KFAC (Martens & Grosse 2015) for a sum over examples, and
equals the exact block for a single example. For convolutions this is KFC (Grosse & Martens
2016): ``A / sqrt(N)`` sums patch outer products over positions and averages over examples
(their ``Omega``), ``G / sqrt(N)`` averages gradient outer products over positions and examples
(their ``Gamma``), i.e. ``C ≈ N * Omega ⊗ Gamma`` under spatial homogeneity and spatially
uncorrelated derivatives. The symmetric ``sqrt(N)`` split makes the per-factor prior equal to
the post's ``(sqrt(N') Omega + sqrt(tau) I) ⊗ (sqrt(N') Gamma + sqrt(tau) I)`` for
``scale = N' / N``; it does not affect ``A ⊗ G``.

Eigendecompositions ``A = Q_A diag(lam_A) Q_A^T`` and ``G = Q_G diag(lam_G) Q_G^T`` are stored
after ``decompose`` with eigenvalues clamped at 0 (the factors are positive semi-definite;
negative values are rounding errors). A block vector ``V [rows, cols]`` lives in the
eigenbasis ``Q = Q_A ⊗ Q_G`` as ``W = Q_A^T V Q_G`` (``KronBasis.rotate``); a precision that
is diagonal there, ``D [rows, cols]``, gives ``P V = Q_A (D * W) Q_G^T``, ``P^-1 V = Q_A (W /
D) Q_G^T``, samples ``Q_A (Z / sqrt(D)) Q_G^T`` (matrix normal, never a dense ``[P, P]``) and
``log det P = sum log D``.

The prior enters through a ``KronPrior`` (an argument of ``kfac``, ``efb``):
``eigen_prior()`` (exact) or ``per_factor_prior()`` (the post's).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "KronBasis",
    "KronFactor",
    "KronPrior",
    "accumulate",
    "basis",
    "decompose",
    "eigen_prior",
    "normalised",
    "per_factor_prior",
    "prior_of",
    "zeros",
]


class KronFactor(NamedTuple):
    """Accumulators (``a_sum``, ``g_sum``, ``positions``) and, after ``decompose``, the
    eigendecompositions of the normalised factors ``A`` and ``G`` of one layer block."""

    a_sum: jax.Array
    g_sum: jax.Array
    positions: jax.Array
    a_eigenvalues: jax.Array
    a_eigenvectors: jax.Array
    g_eigenvalues: jax.Array
    g_eigenvectors: jax.Array


class KronBasis(NamedTuple):
    """The eigenbasis ``Q = Q_A ⊗ Q_G`` of a block: ``a = Q_A [rows, rows]``, ``g = Q_G
    [cols, cols]``, acting on block matrices ``V [rows, cols]`` (row-major ``vec``)."""

    a: jax.Array
    g: jax.Array

    def rotate(self, v: jax.Array) -> jax.Array:
        """``Q^T vec(V)`` as a matrix: ``Q_A^T V Q_G``."""
        return self.a.T @ v @ self.g

    def unrotate(self, w: jax.Array) -> jax.Array:
        """``Q vec(W)`` as a matrix: ``Q_A W Q_G^T``."""
        return self.a @ w @ self.g.T

    def dense(self) -> jax.Array:
        """``Q_A ⊗ Q_G`` as a ``[rows cols, rows cols]`` matrix (tests and ``to_dense``)."""
        return jnp.kron(self.a, self.g)


class KronPrior(NamedTuple):
    """How the prior precision ``tau`` enters a Kronecker block.

    Attributes:
      precision: ``(S, lam_A, lam_G, scale, tau) -> D [rows, cols]``, the eigenvalues of the
        block's precision in the basis ``Q_A ⊗ Q_G``, given the curvature's eigenvalues ``S``
        there (KFAC: ``S = lam_A lam_G^T``; EFB: re-fitted) and the factors' eigenvalues.
      name: for display only.
    """

    precision: Callable[..., jax.Array]
    name: str


def eigen_prior() -> KronPrior:
    """The exact isotropic prior: precision ``scale C + tau I``, eigenvalues ``D = scale S +
    tau`` (KFAC: ``scale lam_A lam_G^T + tau``)."""

    def precision(s, a_eigenvalues, g_eigenvalues, scale, prior_prec):
        del a_eigenvalues, g_eigenvalues
        return scale * s + prior_prec

    return KronPrior(precision, "eigen")


def per_factor_prior() -> KronPrior:
    """The post's per-factor prior: KFAC's precision ``(sqrt(scale) A + sqrt(tau) I) ⊗
    (sqrt(scale) G + sqrt(tau) I) = scale A ⊗ G + sqrt(scale tau) (A ⊕ G) + tau I`` with
    ``A ⊕ G = A ⊗ I + I ⊗ G``; eigenvalues ``D = scale S + sqrt(scale tau) (lam_A ⊕ lam_G) +
    tau`` (for KFAC ``(sqrt(scale) lam_A + sqrt(tau)) (sqrt(scale) lam_G + sqrt(tau))``; EFB
    keeps its re-fitted ``S`` and adds the same cross term). With one ``tau`` per layer, each
    layer's two factors are damped by ``sqrt(tau_layer) I``."""

    def precision(s, a_eigenvalues, g_eigenvalues, scale, prior_prec):
        cross = a_eigenvalues[:, None] + g_eigenvalues[None, :]
        return scale * s + jnp.sqrt(scale * prior_prec) * cross + prior_prec

    return KronPrior(precision, "per_factor")


def prior_of(prior: KronPrior | None) -> KronPrior:
    """``prior`` (default ``eigen_prior()``); ``ValueError`` for anything else."""
    if prior is None:
        return eigen_prior()
    if not isinstance(prior, KronPrior):
        raise ValueError(
            f"prior: expected kron.eigen_prior() or kron.per_factor_prior(), got {prior!r}"
        )
    return prior


def zeros(rows: int, cols: int, dtype) -> KronFactor:
    """Empty accumulators of a ``[rows, cols]`` block."""
    return KronFactor(
        a_sum=jnp.zeros((rows, rows), dtype),
        g_sum=jnp.zeros((cols, cols), dtype),
        positions=jnp.zeros((), dtype),
        a_eigenvalues=jnp.zeros((rows,), dtype),
        a_eigenvectors=jnp.zeros((rows, rows), dtype),
        g_eigenvalues=jnp.zeros((cols,), dtype),
        g_eigenvectors=jnp.zeros((cols, cols), dtype),
    )


def accumulate(factor: KronFactor, a: jax.Array, b: jax.Array) -> KronFactor:
    """Add a batch: ``a [B, T, rows]``, ``b [M, B, T, cols]``."""
    a2 = a.reshape(-1, a.shape[-1])
    b2 = b.reshape(-1, b.shape[-1])
    dtype = factor.a_sum.dtype
    return factor._replace(
        a_sum=factor.a_sum + (a2.T @ a2).astype(dtype),
        g_sum=factor.g_sum + (b2.T @ b2).astype(dtype),
        positions=factor.positions + a.shape[0] * a.shape[1],
    )


def normalised(factor: KronFactor, num_data: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``A = a_sum / sqrt(N)`` and ``G = sqrt(N) g_sum / positions`` (0 before any data)."""
    n = jnp.maximum(num_data, 1).astype(factor.a_sum.dtype)
    root = jnp.sqrt(n)
    return factor.a_sum / root, factor.g_sum * root / jnp.maximum(factor.positions, 1)


def _eigh(m: jax.Array) -> tuple[jax.Array, jax.Array]:
    values, vectors = jnp.linalg.eigh(0.5 * (m + m.T))
    return jnp.maximum(values, 0.0), vectors


def decompose(factor: KronFactor, num_data: jax.Array) -> KronFactor:
    """Store the eigendecompositions of ``A`` and ``G`` (eigenvalues clamped at 0)."""
    a, g = normalised(factor, num_data)
    (la, qa), (lg, qg) = _eigh(a), _eigh(g)
    return factor._replace(a_eigenvalues=la, a_eigenvectors=qa, g_eigenvalues=lg, g_eigenvectors=qg)


def basis(factor: KronFactor) -> KronBasis:
    """The block's eigenbasis ``Q_A ⊗ Q_G`` (after ``decompose``)."""
    return KronBasis(factor.a_eigenvectors, factor.g_eigenvectors)
