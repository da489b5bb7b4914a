"""How much of a Laplace posterior the data determine: the effective number of parameters.

For a posterior precision ``s C + tau I`` with eigenvalues ``s lam_i + tau`` (``lam_i`` those of
``C``), the effective number of parameters (MacKay 1992) is

    gamma = sum_i s lam_i / (s lam_i + tau) = P - tau tr(Sigma),   Sigma = (s C + tau I)^-1,

the number of directions in which the data, not the prior, set the posterior width: each term
is 1 where the likelihood dominates and 0 where the posterior is the prior. The identity on the
right needs no eigenvalues, so it is exact for every structure whose precision has the form
``s C + tau I``: dense, diagonal, KFAC and EFB with the eigenbasis prior, block-diagonal,
low-rank, partitions. With a layer-wise prior (``tau_l`` on leaf ``l``) it is
``P - sum_l tau_l tr(Sigma_ll)``, the trace of ``I - diag(tau) Sigma``.

For KFAC with the post's per-factor prior, ``(sqrt(s) A + sqrt(tau) I) ⊗ (sqrt(s) G + sqrt(tau)
I) = s A ⊗ G + sqrt(s tau) (A ⊗ I + I ⊗ G) + tau I``, so ``P - tau tr(Sigma)`` counts the cross
terms as data too: it is the number of directions not set by the ``tau I`` term alone (an upper
bound of the eigenbasis prior's gamma at the same ``(s, tau)``).

The prior's share of the posterior variance is ``tr(Sigma) / tr(Sigma_prior)``,
``Sigma_prior = diag(1/tau)``: 1 when the data change nothing (the posterior is the prior, the
failure of a curvature that vanished at a saturated MAP), near 0 when the data determine the
width of every direction. With a scalar ``tau`` it equals ``1 - gamma / P``.

``tr(Sigma)`` comes from the ``layer_precisions`` capability when the curvature declares it
(KFAC, EFB, diagonal: ``sum 1 / D`` over every block's eigenvalues, exact), else from ``P``
structure solves against the unit vectors (exact; ``P <= max_exact``), else from Hutchinson's
estimator with ``num_probes`` Rademacher vectors ``z``, ``E[z^T W Sigma z] = tr(W Sigma)``
(unbiased; its standard error is reported; needs a ``key``).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import checks, tree
from bnn_jax.curvature import layerwise
from bnn_jax.curvature.base import prior_vector
from bnn_jax.curvature.layout import Layout
from bnn_jax.laplace.posterior import Posterior, check_posterior
from bnn_jax.types import Key

__all__ = ["Diagnostics", "diagnostics"]


class Diagnostics(NamedTuple):
    """Posterior diagnostics (see the module docstring).

    Attributes:
      gamma: effective number of parameters ``P - tr(diag(tau) Sigma)``, at least 0 (when the
        posterior is its prior, the difference cancels in float32 to a few ``1e-7 P`` of either
        sign; a negative value is that rounding and is returned as 0).
      num_params: ``P``, the number of selected (random) parameters.
      fraction: ``gamma / P``.
      prior_share: ``tr(Sigma) / tr(diag(1/tau))``.
      method: ``"layer_precisions"``, ``"solves"`` (both exact) or ``"hutchinson"``.
      std_error: standard error of ``gamma`` (0 for the exact methods).
    """

    gamma: float
    num_params: int
    fraction: float
    prior_share: float
    method: str
    std_error: float = 0.0


def _structure_name(posterior: Posterior) -> str:
    return type(posterior.state).__name__


def _traces_layerwise(posterior: Posterior) -> tuple[jax.Array, jax.Array]:
    """``(tr(diag(tau) Sigma), tr(Sigma))`` from the layer precisions' eigenvalues."""
    p = posterior.curvature.layer_precisions(posterior.state, posterior.scale, posterior.prior_prec)
    taus, other_taus = layerwise.prior_parts(p.structure, posterior.prior_prec)
    weighted = trace = jnp.zeros((), posterior.scale.dtype)
    for d, t in zip((*p.blocks, *p.others), (*taus, *other_taus), strict=True):
        inverse = jnp.sum(1.0 / d)
        trace, weighted = trace + inverse, weighted + t * inverse
    return weighted, trace


def _tau_and_solve(posterior: Posterior):
    selected = posterior.subset.select(posterior.mean)
    layout = Layout.of(selected)
    taus = prior_vector(posterior.prior_prec, layout)
    _, unravel = tree.ravel(selected)

    def solve(v):
        out = posterior.curvature.solve(
            posterior.state, unravel(v), posterior.scale, posterior.prior_prec
        )
        return tree.ravel(out)[0]

    return taus, solve


def diagnostics(
    posterior: Posterior,
    *,
    key: Key | None = None,
    num_probes: int = 64,
    max_exact: int = 4096,
) -> Diagnostics:
    """Effective number of parameters, its fraction of ``P`` and the prior's share of the
    posterior variance of ``posterior`` at its ``(scale, prior_prec)``.

    Args:
      posterior: a fitted ``laplace.Posterior`` of any structure.
      key: PRNG key of Hutchinson's probes; required only when the curvature has no
        ``layer_precisions`` capability and ``P > max_exact``.
      num_probes: Hutchinson probes (Rademacher vectors).
      max_exact: largest ``P`` computed exactly by ``P`` structure solves.

    Returns:
      :class:`Diagnostics` (Python numbers).

    Raises:
      ValueError: naming the structure when neither an exact method nor an estimate applies
        (no ``layer_precisions``, ``P > max_exact`` and no ``key``).

    Example:
      >>> d = laplace.diagnostics(post)
      >>> d.fraction < 0.01   # prior-dominated: the data determine almost nothing
    """
    check_posterior(posterior)
    checks.positive_int("num_probes", num_probes, minimum=2)
    checks.positive_int("max_exact", max_exact)
    num = int(sum(np.size(x) for x in jax.tree.leaves(posterior.subset.select(posterior.mean))))
    taus, solve = _tau_and_solve(posterior)
    prior_trace = float(jnp.sum(1.0 / taus))
    std_error = 0.0
    if posterior.curvature.layer_precisions is not None:
        weighted, trace = jax.jit(_traces_layerwise)(posterior)
        method = "layer_precisions"
    elif num <= max_exact:
        eye = jnp.eye(num, dtype=taus.dtype)
        diag = jax.jit(
            lambda: jax.lax.map(solve, eye, batch_size=64)[jnp.arange(num), jnp.arange(num)]
        )()
        weighted, trace = jnp.sum(taus * diag), jnp.sum(diag)
        method = "solves"
    elif key is None:
        raise ValueError(
            f"posterior: the {_structure_name(posterior)} structure has no layer_precisions "
            f"capability and P = {num} > max_exact = {max_exact}; pass key= for Hutchinson's "
            "estimate (or raise max_exact for exact solves)"
        )
    else:
        checks.key("key", key)
        signs = jax.random.rademacher(key, (num_probes, num), dtype=taus.dtype)

        def probe(z):
            sz = solve(z)
            return jnp.stack([jnp.sum(z * taus * sz), jnp.sum(z * sz)])

        values = jax.jit(lambda s: jax.lax.map(probe, s))(signs)
        weighted, trace = jnp.mean(values, axis=0)
        std_error = float(jnp.std(values[:, 0], ddof=1) / np.sqrt(num_probes))
        method = "hutchinson"
    gamma = max(num - float(weighted), 0.0)
    return Diagnostics(gamma, num, gamma / num, float(trace) / prior_trace, method, std_error)
