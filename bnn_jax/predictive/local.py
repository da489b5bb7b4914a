"""MC predictive by local reparameterisation (Kingma et al. 2015) through layer-structured
posteriors (any curvature with the ``layer_precisions`` capability: KFAC, EFB, diagonal, or a
user's own): exact per-input pre-activation draws, no whole weight samples.

For a Dense layer block ``W`` (kernel and/or bias rows, inputs ``blocks.block_inputs``) with
posterior ``W = W* + Q_A E Q_G^T``, ``E_ij ~ N(0, 1 / D_ij)`` independent
(``predictive.kronecker``), the pre-activation of one input ``a`` is ``h = W^T a`` and, given
``a``,

    h ~ N(W*^T a, Q_G diag(w) Q_G^T),   w_j = sum_i ã_i^2 / D_ij,   ã = Q_A^T a,

so ``h = W*^T a + Q_G (sqrt(w) * eps)`` with ``eps ~ N(0, I_cols)``: ``O(rows^2 + rows cols)``
per input instead of a ``rows x cols`` weight sample. Because the posterior is independent
across layer blocks, drawing every layer this way, input after input, gives for each input
exactly the predictive distribution of weight sampling (``laplace_log_probs``); only the
correlation *between* inputs is lost: draws are independent across inputs (no common random
numbers). A layer with several blocks (``blocks.separate_bias()``) adds the noise of each.
Blocks where the trick does not apply (Conv layers and Dense layers applied at
several positions share a weight sample across positions) and the other parameters
(norm scales, ...) get one weight draw per input.
"""

import jax
import jax.numpy as jnp

from bnn_jax import checks, tree
from bnn_jax.curvature import blocks
from bnn_jax.curvature.capture import capture, intercept_layers
from bnn_jax.laplace.posterior import Posterior, check_posterior
from bnn_jax.losses import check_task
from bnn_jax.predictive import kronecker
from bnn_jax.predictive.monte_carlo import check_inputs, sample_log_probs
from bnn_jax.types import Key

__all__ = ["local_log_probs"]


def local_log_probs(
    posterior: Posterior,
    x: jax.Array,
    *,
    key: Key,
    num_samples: int,
    chunk_size: int | None = None,
) -> jax.Array:
    """MC predictive ``[T, batch, C]`` by local reparameterisation (module docstring).

    Per input, the same distribution as ``laplace_log_probs``; draws are independent across
    inputs. Jit-compiled (static ``num_samples``, ``chunk_size``).

    Args:
      posterior: a fitted ``laplace.Posterior`` whose curvature declares the
        ``layer_precisions`` capability (KFAC, EFB, diagonal, ...).
      x: inputs ``[batch, ...]``.
      key: PRNG key.
      num_samples: ``T >= 1``.
      chunk_size: samples evaluated at once (``None``: all ``T``).

    Example:
      >>> lp = predictive.local_log_probs(post, x, key=key, num_samples=30)
    """
    check_posterior(posterior)
    check_task(posterior.likelihood, "classification", "local_log_probs")
    checks.key("key", key)
    checks.positive_int("num_samples", num_samples)
    checks.chunk_size("chunk_size", chunk_size)
    check_inputs(x)
    if not kronecker.supports(posterior):
        raise ValueError(
            "posterior: local reparameterisation needs a curvature with the layer_precisions "
            "capability (kfac, efb, diagonal, ...); this one has none"
        )
    return _local_log_probs(posterior, x, key, num_samples, chunk_size)


def _normal(key, std):
    return jax.random.normal(key, std.shape, std.dtype) * std


@jax.jit(static_argnums=(3, 4))
def _local_log_probs(posterior, x, key, num_samples, chunk_size):
    structure, bases, inv_d, inv_others = kronecker.inverse_precisions(posterior)
    std = [jnp.sqrt(jnp.maximum(d, 0.0)) for d in inv_d]
    std_others = [jnp.sqrt(jnp.maximum(d, 0.0)) for d in inv_others]
    one = jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)
    shapes = jax.eval_shape(lambda xs: capture(posterior.apply_fn, posterior.mean, xs).inputs, one)
    local_layers = {
        block.layer.path
        for block in structure.blocks
        if block.layer.kind == "dense" and shapes[block.layer.path].shape[1] == 1
    }
    local = {}  # layer path -> [(block index, block, basis, 1 / D)]
    for index, (block, q, d) in enumerate(zip(structure.blocks, bases, inv_d, strict=True)):
        if block.layer.path in local_layers:
            local.setdefault(block.layer.path, []).append((index, block, q, d))
    theta = posterior.subset.select(posterior.mean)

    def one_input(input_key, xi):
        weight_key, local_key = jax.random.split(input_key)
        keys = jax.random.split(weight_key, len(std) + len(std_others))
        mats = []
        for block, q, s, k in zip(structure.blocks, bases, std, keys[: len(std)], strict=True):
            if block.layer.path in local_layers:
                mats.append(jnp.zeros_like(s))
            else:
                e = _normal(k, s)
                mats.append(e if q is None else q[0] @ e @ q[1].T)
        others = [_normal(k, s) for k, s in zip(keys[len(std) :], std_others, strict=True)]
        z = blocks.from_blocks(structure, mats, others)
        params = posterior.subset.merge(posterior.mean, tree.tree_add(theta, z))

        def perturb(layer, conv, inputs, out):
            del conv
            if layer.path not in local:
                return out
            for index, block, q, d in local[layer.path]:
                a_rot = blocks.block_inputs(block, inputs)
                a_rot = a_rot if q is None else a_rot @ q[0]
                w = (a_rot**2) @ d.astype(a_rot.dtype)
                std_w = jnp.sqrt(jnp.maximum(w, 0.0))
                noise = _normal(jax.random.fold_in(local_key, index), std_w)
                out = out + (noise if q is None else noise @ q[1].T).astype(out.dtype)
            return out

        with intercept_layers(params, perturb):
            return posterior.apply_fn(params, xi[None])[0]

    def logits_fn(sample_key, inputs):
        input_keys = jax.random.split(sample_key, inputs.shape[0])
        return jax.vmap(one_input)(input_keys, inputs)

    return sample_log_probs(logits_fn, jax.random.split(key, num_samples), x, chunk_size=chunk_size)
