"""MC predictive by local reparameterisation (Kingma et al. 2015) through layer-structured
posteriors (KFAC, EFB, diagonal): exact per-input pre-activation draws, no whole weight samples.

For a Dense layer block ``W = [kernel; bias]`` with posterior ``W = W* + Q_A E Q_G^T``,
``E_ij ~ N(0, 1 / D_ij)`` independent (``predictive.kronecker``), the pre-activation of one
input ``a`` (homogeneous coordinate appended) is ``h = W^T a`` and, given ``a``,

    h ~ N(W*^T a, Q_G diag(w) Q_G^T),   w_j = sum_i ã_i^2 / D_ij,   ã = Q_A^T a,

so ``h = W*^T a + Q_G (sqrt(w) * eps)`` with ``eps ~ N(0, I_cols)``: ``O(rows^2 + rows cols)``
per input instead of a ``rows x cols`` weight sample. Because the posterior is independent
across layer blocks, drawing every layer this way, input after input, gives for each input
exactly the predictive distribution of weight sampling (``laplace_log_probs``); only the
correlation *between* inputs is lost: draws are independent across inputs (no common random
numbers). Blocks where the trick does not apply (Conv layers and Dense layers applied at
several positions share a weight sample across positions) and the other parameters
(norm scales, ...) get one weight draw per input.
"""

import jax
import jax.numpy as jnp

from bnn_jax import tree
from bnn_jax.curvature import blocks
from bnn_jax.curvature.capture import capture, intercept_layers
from bnn_jax.laplace.posterior import Posterior, check_num_samples
from bnn_jax.losses import check_task
from bnn_jax.predictive import kronecker
from bnn_jax.predictive.monte_carlo import check_chunk_size, check_inputs, sample_log_probs
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
      posterior: a fitted ``laplace.Posterior`` with a KFAC, EFB or diagonal curvature.
      x: inputs ``[batch, ...]``.
      key: PRNG key.
      num_samples: ``T >= 1``.
      chunk_size: samples evaluated at once (``None``: all ``T``).

    Example:
      >>> lp = predictive.local_log_probs(post, x, key=key, num_samples=30)
    """
    check_task(posterior.likelihood, "classification", "local_log_probs")
    check_num_samples(num_samples)
    check_chunk_size(chunk_size)
    check_inputs(x)
    if not kronecker.supports(posterior):
        raise ValueError(
            "posterior: local reparameterisation needs a KFAC, EFB or diagonal curvature, got "
            f"{type(posterior.state).__name__}"
        )
    return _local_log_probs(posterior, x, key, num_samples, chunk_size)


def _normal(key, std):
    return jax.random.normal(key, std.shape, std.dtype) * std


@jax.jit(static_argnums=(3, 4))
def _local_log_probs(posterior, x, key, num_samples, chunk_size):
    structure = kronecker.layer_structure(posterior, x)
    bases = kronecker.layer_bases(posterior, structure)
    inv_d, inv_others = kronecker.inverse_precisions(posterior, structure, bases)
    std = [jnp.sqrt(jnp.maximum(d, 0.0)) for d in inv_d]
    std_others = [jnp.sqrt(jnp.maximum(d, 0.0)) for d in inv_others]
    one = jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)
    shapes = jax.eval_shape(lambda xs: capture(posterior.apply_fn, posterior.mean, xs).inputs, one)
    local = {
        block.layer.path: (index, block, q, d)
        for index, (block, q, d) in enumerate(zip(structure.blocks, bases, inv_d, strict=True))
        if block.layer.kind == "dense" and shapes[block.layer.path].shape[1] == 1
    }
    theta = posterior.subset.select(posterior.mean)

    def one_input(input_key, xi):
        weight_key, local_key = jax.random.split(input_key)
        keys = jax.random.split(weight_key, len(std) + len(std_others))
        mats = []
        for block, q, s, k in zip(structure.blocks, bases, std, keys[: len(std)], strict=True):
            if block.layer.path in local:
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
            index, block, q, d = local[layer.path]
            a = inputs
            if block.with_bias:
                a = jnp.concatenate([a, jnp.ones_like(a[..., :1])], axis=-1)
            a_rot = a if q is None else a @ q[0]
            w = (a_rot**2) @ d.astype(a.dtype)
            noise = _normal(jax.random.fold_in(local_key, index), jnp.sqrt(jnp.maximum(w, 0.0)))
            return out + (noise if q is None else noise @ q[1].T).astype(out.dtype)

        with intercept_layers(params, perturb):
            return posterior.apply_fn(params, xi[None])[0]

    def logits_fn(sample_key, inputs):
        input_keys = jax.random.split(sample_key, inputs.shape[0])
        return jax.vmap(one_input)(input_keys, inputs)

    return sample_log_probs(logits_fn, jax.random.split(key, num_samples), x, chunk_size=chunk_size)
