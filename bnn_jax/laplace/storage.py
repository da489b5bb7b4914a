"""Saving and loading fitted posteriors: msgpack (``flax.serialization``), atomic, never pickle.

A posterior is arrays (the curvature state, ``scale``, ``prior_prec``, ``train_nll``) and
functions (the curvature, its model and likelihood). :func:`save` writes the arrays with
what is needed to check them on the way back; :func:`load` rebuilds the state's structure
from the curvature you pass (``curvature.init`` on the saved input shape) and the MAP
``params`` you pass, and refuses, naming what differs:

- a file that is not a saved posterior (``path``);
- ``params`` with other leaves, shapes, dtypes or values than the MAP it was fitted at
  (a SHA-256 of the parameters is stored);
- a ``curvature`` of another structure (state type), other state shapes or dtypes, other
  options (the log-determinant at the saved ``(scale, prior_prec)`` is recomputed), or another
  model or likelihood (outputs and output Hessian at a fixed probe input are recomputed).

The file holds ``format``, ``version``, ``structure`` (the state's type name), ``inputs``
(shape and dtype of one example), ``state`` (numbered leaves) with ``state_leaves`` (their
paths, shapes, dtypes), ``scale``, ``prior_prec`` (numbered leaves; ``prior_kind`` says scalar
or per leaf), ``train_nll``, ``params`` (leaf descriptions and digest) and ``checks``.

Example:
  >>> laplace.save("kfac.msgpack", post)
  >>> post = laplace.load("kfac.msgpack", curvature.kfac(apply_fn, lik, fisher=fisher), params)
"""

import hashlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from bnn_jax import io
from bnn_jax.curvature.base import Curvature, is_scalar_prior
from bnn_jax.laplace.posterior import Posterior, as_prior, check_posterior
from bnn_jax.types import Params

__all__ = ["load", "save"]

FORMAT = "bnn_jax.laplace.Posterior"
VERSION = 1


def _describe(tree: Any) -> list[str]:
    """``"path shape dtype"`` of every leaf."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [
        f"{jax.tree_util.keystr(path)} {tuple(np.shape(leaf))} {np.dtype(leaf.dtype)}"
        for path, leaf in flat
    ]


def _digest(params: Params) -> str:
    """SHA-256 of the parameters' leaf descriptions and bytes."""
    h = hashlib.sha256()
    for line, leaf in zip(_describe(params), jax.tree.leaves(params), strict=True):
        h.update(line.encode())
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def _numbered(tree: Any) -> dict[str, np.ndarray]:
    return {str(i): np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(tree))}


def _probe(posterior: Posterior, inputs: jax.ShapeDtypeStruct) -> tuple[jax.Array, jax.Array]:
    """Outputs and output Hessian of the model at the MAP on a fixed input: a fingerprint of
    ``apply_fn`` and the likelihood."""
    if jnp.issubdtype(inputs.dtype, jnp.floating):
        x = jax.random.normal(jax.random.key(0), inputs.shape, inputs.dtype)
    else:
        x = jnp.zeros(inputs.shape, inputs.dtype)
    outputs = posterior.apply_fn(posterior.mean, x)
    return outputs, posterior.likelihood.hessian(outputs)


def save(path, posterior: Posterior, *, overwrite: bool = False) -> Path:
    """Write ``posterior`` to ``path`` (msgpack, atomically; ``FileExistsError`` if ``path``
    exists and ``overwrite`` is false). The MAP parameters are not stored, only their digest:
    pass them to :func:`load`."""
    check_posterior(posterior)
    if posterior.inputs is None:
        raise ValueError(
            "posterior: it has no input shape (posterior.inputs; laplace.fit sets it), which "
            "load needs to rebuild the curvature state"
        )
    outputs, hessian = _probe(posterior, posterior.inputs)
    scalar = is_scalar_prior(posterior.prior_prec)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "structure": type(posterior.state).__name__,
        "inputs": {
            "shape": list(posterior.inputs.shape),
            "dtype": str(np.dtype(posterior.inputs.dtype)),
        },
        "state": _numbered(posterior.state),
        "state_leaves": _describe(posterior.state),
        "scale": np.asarray(posterior.scale),
        "prior_kind": "scalar" if scalar else "per_leaf",
        "prior_prec": _numbered(posterior.prior_prec),
        "train_nll": np.asarray(posterior.train_nll),
        "params": {"leaves": _describe(posterior.mean), "digest": _digest(posterior.mean)},
        "checks": {
            "log_det": np.asarray(
                posterior.curvature.log_det(posterior.state, posterior.scale, posterior.prior_prec)
            ),
            "outputs": np.asarray(outputs),
            "hessian": np.asarray(hessian),
        },
    }
    try:
        data = serialization.msgpack_serialize(payload)
    except (TypeError, ValueError) as err:
        raise ValueError(f"posterior: its curvature state cannot be saved ({err})") from None
    return io.write_bytes_atomic(path, data, overwrite=overwrite)


def _read(path) -> dict:
    data = Path(path).read_bytes()
    try:
        saved = serialization.msgpack_restore(data)
    except Exception as err:  # msgpack raises several unrelated types for damaged files
        raise ValueError(f"path: {path} is not a saved posterior (cannot decode: {err})") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ValueError(f"path: {path} is not a saved posterior (no {FORMAT!r} marker)")
    if saved.get("version") != VERSION:
        raise ValueError(
            f"path: {path} is a posterior of format version {saved.get('version')}; this "
            f"version of bnn_jax reads version {VERSION}"
        )
    return saved


def _first_difference(saved: list[str], expected: list[str]) -> str:
    for i, (a, b) in enumerate(zip(saved, expected, strict=False)):
        if a != b:
            return f"leaf {i}: saved {a!r}, expected {b!r}"
    return f"{len(saved)} leaves saved, {len(expected)} expected"


def load(path, curvature: Curvature, params: Params) -> Posterior:
    """Read a posterior written by :func:`save`, for ``curvature`` at the MAP ``params``.

    Args:
      path: the file.
      curvature: a curvature built like the saved one (same factory, model, likelihood,
        subset and options).
      params: the MAP parameters the posterior was fitted at.

    Returns:
      The :class:`Posterior`, with predictions identical to the saved one's.

    Raises:
      ValueError: naming ``path``, ``params`` or ``curvature`` and what differs (module
        docstring).
    """
    if not isinstance(curvature, Curvature):
        raise ValueError(f"curvature: expected a curvature.Curvature, got {curvature!r}")
    saved = _read(path)
    if saved["params"]["leaves"] != _describe(params):
        raise ValueError(
            f"params: not the parameters of the posterior in {path} (their leaves differ, "
            f"{_first_difference(saved['params']['leaves'], _describe(params))})"
        )
    if saved["params"]["digest"] != _digest(params):
        raise ValueError(
            f"params: their values differ from the MAP the posterior in {path} was fitted at"
        )
    spec = saved["inputs"]
    inputs = jax.ShapeDtypeStruct(tuple(spec["shape"]), np.dtype(spec["dtype"]))
    template = jax.eval_shape(lambda p: curvature.finalize(curvature.init(p, inputs)), params)
    if type(template).__name__ != saved["structure"]:
        raise ValueError(
            f"curvature: {path} holds a {saved['structure']} posterior; this curvature builds "
            f"a {type(template).__name__}"
        )
    if saved["state_leaves"] != _describe(template):
        raise ValueError(
            f"curvature: the state in {path} does not fit this curvature's "
            f"({_first_difference(saved['state_leaves'], _describe(template))})"
        )
    leaves = [jnp.asarray(saved["state"][str(i)]) for i in range(len(saved["state"]))]
    state = jax.tree.unflatten(jax.tree.structure(template), leaves)
    selected = curvature.subset.select(params)
    taus = [jnp.asarray(saved["prior_prec"][str(i)]) for i in range(len(saved["prior_prec"]))]
    if saved["prior_kind"] == "scalar":
        prior = taus[0]
    else:
        prior = jax.tree.unflatten(jax.tree.structure(selected), taus)
    posterior = Posterior(
        mean=params,
        state=state,
        scale=jnp.asarray(saved["scale"]),
        prior_prec=as_prior(prior, selected, taus[0].dtype),
        train_nll=jnp.asarray(saved["train_nll"]),
        curvature=curvature,
        inputs=inputs,
    )
    checks = saved["checks"]
    log_det = float(curvature.log_det(state, posterior.scale, posterior.prior_prec))
    if not np.isclose(log_det, float(checks["log_det"]), rtol=1e-6, atol=1e-6):
        raise ValueError(
            f"curvature: the state in {path} gives log det {log_det:.8g} with this curvature "
            f"but {float(checks['log_det']):.8g} with the one it was saved with: it was built "
            "with other options (e.g. prior=, bias=, subset=)"
        )
    outputs, hessian = _probe(posterior, inputs)
    for name, value in (("outputs", outputs), ("hessian", hessian)):
        if np.shape(value) != np.shape(checks[name]) or not np.allclose(
            value, checks[name], rtol=1e-5, atol=1e-6
        ):
            raise ValueError(
                f"curvature: its apply_fn and likelihood give other {name} at these parameters "
                f"than the ones the posterior in {path} was saved with"
            )
    return posterior
