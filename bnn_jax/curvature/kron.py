"""Kronecker-factor accumulators and eigenbasis algebra shared by ``kfac`` and ``efb``.

For one layer block with inputs ``a_nt`` (``rows``, homogeneous coordinate included) and
output gradients ``b_nmt`` (``cols``), summed over examples ``n``, positions ``t`` and
factors ``m``:

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
after ``finalize`` with eigenvalues clamped at 0 (the factors are positive semi-definite;
negative values are rounding errors). A block vector ``V [rows, cols]`` lives in the
eigenbasis as ``W = Q_A^T V Q_G``; a precision diagonal in that basis, ``D [rows, cols]``,
gives ``solve: Q_A (W / D) Q_G^T``, ``sample: Q_A (Z / sqrt(D)) Q_G^T`` (matrix normal, never a
dense ``[P, P]``) and ``log_det: sum log D``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bnn_jax.curvature.blocks import Block

PRIORS = ("eigen", "per_factor")


class KronFactor(NamedTuple):
    """Accumulators (``a_sum``, ``g_sum``, ``positions``) and, after ``finalize``, the
    eigendecompositions of the normalised factors ``A`` and ``G`` of one layer block."""

    a_sum: jax.Array
    g_sum: jax.Array
    positions: jax.Array
    a_eigenvalues: jax.Array
    a_eigenvectors: jax.Array
    g_eigenvalues: jax.Array
    g_eigenvectors: jax.Array


def check_prior(prior: str) -> None:
    if prior not in PRIORS:
        raise ValueError(f"prior: expected one of {PRIORS}, got {prior!r}")


def zeros(block: Block, dtype) -> KronFactor:
    r, c = block.rows, block.cols
    return KronFactor(
        a_sum=jnp.zeros((r, r), dtype),
        g_sum=jnp.zeros((c, c), dtype),
        positions=jnp.zeros((), dtype),
        a_eigenvalues=jnp.zeros((r,), dtype),
        a_eigenvectors=jnp.zeros((r, r), dtype),
        g_eigenvalues=jnp.zeros((c,), dtype),
        g_eigenvectors=jnp.zeros((c, c), dtype),
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
    a, g = normalised(factor, num_data)
    (la, qa), (lg, qg) = _eigh(a), _eigh(g)
    return factor._replace(a_eigenvalues=la, a_eigenvectors=qa, g_eigenvalues=lg, g_eigenvectors=qg)


def kron_eigenvalues(factor: KronFactor, scale, prior_prec, prior: str) -> jax.Array:
    """Precision eigenvalues ``[rows, cols]`` of ``A ⊗ G`` with the prior:
    ``"eigen"``: ``scale lam_A lam_G + tau``;
    ``"per_factor"``: ``(sqrt(scale) lam_A + sqrt(tau)) (sqrt(scale) lam_G + sqrt(tau))``."""
    la, lg = factor.a_eigenvalues, factor.g_eigenvalues
    if prior == "eigen":
        return scale * jnp.outer(la, lg) + prior_prec
    rs, rt = jnp.sqrt(scale), jnp.sqrt(prior_prec)
    return jnp.outer(rs * la + rt, rs * lg + rt)


def to_eigenbasis(factor: KronFactor, v: jax.Array) -> jax.Array:
    return factor.a_eigenvectors.T @ v @ factor.g_eigenvectors


def from_eigenbasis(factor: KronFactor, w: jax.Array) -> jax.Array:
    return factor.a_eigenvectors @ w @ factor.g_eigenvectors.T


def solve(factor: KronFactor, v: jax.Array, precision: jax.Array) -> jax.Array:
    return from_eigenbasis(factor, to_eigenbasis(factor, v) / precision)


def eigenbasis(factor: KronFactor) -> jax.Array:
    """``Q_A ⊗ Q_G`` as a dense matrix (tests and ``to_dense`` only)."""
    return jnp.kron(factor.a_eigenvectors, factor.g_eigenvectors)
