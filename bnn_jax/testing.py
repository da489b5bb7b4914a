"""A conformance kit for curvature structures: one call checks a ``Curvature`` against dense
float64 references and reports what fails, in words.

``check_curvature(factory, model_or_apply_fn, x=..., key=...)`` builds the curvature with
``factory(apply_fn, likelihood)``, fits it on ``(x, y)`` in float64 and checks, with
``P = precision_mvp(., s, tau)`` assembled column by column:

- ``fit``: ``init``/``update``/``finalize`` run and leave a finite state; the curvature carries
  the ``apply_fn`` and likelihood it was built for; ``sample`` returns the selected parameters;
- ``to_dense``: symmetric positive semi-definite, equal to the columns of
  ``precision_mvp(., 1, 0)``;
- ``prior``: ``P = s C + tau I`` (skip with ``isotropic_prior=False``, e.g. for
  ``kron.per_factor_prior()``, whose prior enters differently); with ``layer_prior`` the
  prior-dependent checks run again at a layer-wise prior, ``P = s C + diag(tau)``;
- ``solve``: ``solve(P v) = v``; ``log_det``: equals ``slogdet(P)``;
- ``sample``: the covariance of ``num_samples`` draws is ``P^-1`` within Monte Carlo error
  (5 standard errors per entry) and their mean 0;
- ``batches``: two half batches give the curvature of the full batch (build the structure
  with ``exact_fisher()`` or ``empirical_fisher()`` for the kit: MC Fisher targets depend on
  how the data are batched);
- ``jit``: jitted ``update``/``finalize`` equal eager ones;
- ``layer_precisions`` (when declared): the capability rebuilds ``P`` block by block, its
  bases are ``kron.KronBasis`` or ``None`` with ``D [rows, cols]``, and the linearised
  predictive through it equals the generic Jacobian path;
- ``expected`` (when given): ``to_dense`` equals ``expected(G)`` for the exact GGN ``G`` of
  the data (e.g. ``lambda g: np.diag(np.diag(g))`` for a diagonal built with
  ``exact_fisher()``).

Example:
  >>> report = testing.check_curvature(
  ...     lambda f, lik: curvature.kfac(f, lik, fisher=curvature.exact_fisher()),
  ...     models.MLP((4,), 3), x=np.random.randn(6, 3), key=jax.random.key(0))
  >>> print(report)        # one line per check; raises AssertionError listing any failure
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bnn_jax import checks, losses
from bnn_jax.curvature import blocks
from bnn_jax.curvature.base import Curvature, check_finite
from bnn_jax.curvature.kron import KronBasis
from bnn_jax.curvature.layout import Layout
from bnn_jax.types import Batch

__all__ = ["CheckResult", "ConformanceReport", "check_curvature", "exact_ggn"]


class CheckResult(NamedTuple):
    """One check: its ``name``, whether it ``passed``, and a sentence saying what was seen."""

    name: str
    passed: bool
    message: str


class ConformanceReport(NamedTuple):
    """All checks of :func:`check_curvature`."""

    results: tuple[CheckResult, ...]

    @property
    def failures(self) -> list[str]:
        return [f"{r.name}: {r.message}" for r in self.results if not r.passed]

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        return "\n".join(
            f"{'ok  ' if r.passed else 'FAIL'} {r.name}: {r.message}" for r in self.results
        )


def _model(model_or_apply_fn, params, x, key):
    """``(apply_fn, params)`` in float64."""
    to64 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), t)
    if isinstance(model_or_apply_fn, nn.Module):
        variables = to64(model_or_apply_fn.init(key, x[:1]))
        state = {k: v for k, v in variables.items() if k != "params"}
        model = model_or_apply_fn

        def apply_fn(p, inputs):
            return model.apply({"params": p, **state}, inputs)

        return apply_fn, variables["params"]
    if params is None:
        raise ValueError("params: expected the parameters with an apply_fn, got None")
    return model_or_apply_fn, to64(params)


def _columns(fn, size, dtype):
    """``[size, size]`` matrix whose column ``i`` is ``fn(e_i)`` (flat in and out)."""
    return jax.vmap(fn, out_axes=1)(jnp.eye(size, dtype=dtype))


def _compare(name, got, expected, tol, what):
    err = float(np.max(np.abs(np.asarray(got) - np.asarray(expected)), initial=0.0))
    if err <= tol:
        return CheckResult(name, True, f"{what} (max deviation {err:.1e})")
    return CheckResult(name, False, f"{what} is violated: max deviation {err:.2e} > {tol:.1e}")


def _capability_precision(p, size, dtype):
    """Dense ``P`` rebuilt from ``LayerPrecisions``; ``None`` and a message if malformed."""
    out = np.zeros((size, size), dtype)
    block_idx, other_idx = blocks.dense_indices(p.structure)
    for block, q, d, idx in zip(p.structure.blocks, p.bases, p.blocks, block_idx, strict=True):
        if d.shape != (block.rows, block.cols):
            return None, f"D of block {block.layer.path} has shape {d.shape}, not [rows, cols]"
        if q is None:
            out[np.ix_(idx, idx)] = np.diag(np.asarray(d).ravel())
        elif isinstance(q, KronBasis):
            dense_q = np.asarray(q.dense())
            out[np.ix_(idx, idx)] = (dense_q * np.asarray(d).ravel()) @ dense_q.T
        else:
            return None, f"the basis of block {block.layer.path} is neither None nor a KronBasis"
    for d, idx in zip(p.others, other_idx, strict=True):
        out[idx, idx] = np.asarray(d).ravel()
    return out, ""


def check_curvature(
    factory: Callable[..., Curvature],
    model_or_apply_fn: Any,
    *,
    x,
    key: jax.Array,
    y=None,
    params=None,
    likelihood: losses.Likelihood | None = None,
    scale: float = 3.0,
    prior_prec: float = 0.5,
    num_samples: int = 10_000,
    isotropic_prior: bool = True,
    layer_prior: Callable[[tuple[str, ...]], float] | None = None,
    expected: Callable[[np.ndarray], np.ndarray] | None = None,
    raise_on_failure: bool = True,
) -> ConformanceReport:
    """Check a curvature structure against dense float64 references (module docstring).

    Args:
      factory: ``factory(apply_fn, likelihood) -> Curvature``, e.g.
        ``lambda f, lik: curvature.kfac(f, lik, fisher=curvature.exact_fisher())``.
      model_or_apply_fn: a flax.linen module (initialised here from ``key``) or an
        ``apply_fn(params, x)`` (then pass ``params``).
      x: a few inputs ``[n, ...]`` (``n >= 2``; keep the model tiny: ``P x P`` matrices).
      key: PRNG key (initialisation, targets, MC Fisher, samples).
      y: targets; default: drawn from the likelihood at the model's outputs.
      params: the parameters of an ``apply_fn``.
      likelihood: default ``losses.categorical()``.
      scale, prior_prec: the ``(s, tau)`` at which the precision is checked.
      num_samples: draws for the sample covariance check.
      isotropic_prior: check ``P = s C + diag(tau)`` (off for priors that enter differently).
      layer_prior: ``path -> tau`` for each selected leaf: repeat the prior-dependent checks
        (``prior``, ``solve``, ``log_det``, ``sample``, ``layer_precisions``) with this
        layer-wise prior (``laplace.layerwise_prior``).
      expected: ``G -> expected to_dense`` from the exact GGN ``G`` (``tree.ravel`` order of
        the selected parameters); ``None`` skips the check.
      raise_on_failure: raise ``AssertionError`` with every failure instead of returning.

    Returns:
      A :class:`ConformanceReport` (``report.ok``, ``report.failures``, ``print(report)``).
    """
    checks.key("key", key)
    checks.positive_int("num_samples", num_samples)
    likelihood = losses.categorical() if likelihood is None else likelihood
    with jax.enable_x64(True):
        report = _run(
            factory, model_or_apply_fn, x, key, y, params, likelihood, scale, prior_prec,
            num_samples, isotropic_prior, layer_prior, expected,
        )  # fmt: skip
    if raise_on_failure and not report.ok:
        raise AssertionError("curvature conformance failed:\n" + "\n".join(report.failures))
    return report


def _fit(curv, params, batches, key, jit=True):
    update = jax.jit(curv.update) if jit else curv.update
    finalize = jax.jit(curv.finalize) if jit else curv.finalize
    state = curv.init(params, batches[0].x)
    for _ in range(curv.num_passes):
        for i, batch in enumerate(batches):
            state = update(state, params, batch, jax.random.fold_in(key, i))
        state = finalize(state)
    return state


def _run(
    factory, model, x, key, y, params, lik, scale, tau, num_samples, isotropic, layer_prior,
    expected,
):  # fmt: skip
    init_key, y_key, fit_key, sample_key = jax.random.split(key, 4)
    x = jnp.asarray(x, jnp.float64)
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"x: expected at least two inputs [n, ...], got shape {x.shape}")
    apply_fn, params = _model(model, params, x, init_key)
    outputs = apply_fn(params, x)
    y = lik.sample(y_key, outputs, 1)[0] if y is None else jnp.asarray(y)
    batch = Batch(x, y)
    curv = factory(apply_fn, lik)
    results = []
    add = results.append
    try:
        state = _fit(curv, params, [batch], fit_key)
        check_finite(state)
    except Exception as err:  # the remaining checks need a fitted state
        add(CheckResult("fit", False, f"init/update/finalize failed: {err!r}"))
        return ConformanceReport(tuple(results))
    theta = curv.subset.select(params)
    flat, unravel = ravel_pytree(theta)
    size, dtype = flat.size, flat.dtype
    carries = curv.apply_fn is apply_fn and curv.likelihood is lik
    draw = jax.eval_shape(curv.sample, state, sample_key, scale, tau)
    pairs = zip(jax.tree.leaves(draw), jax.tree.leaves(theta), strict=False)
    same = jax.tree.structure(draw) == jax.tree.structure(theta) and all(
        a.shape == b.shape for a, b in pairs
    )
    add(
        CheckResult(
            "fit",
            carries and same,
            "fits; carries its apply_fn and likelihood; samples the selected parameters"
            if carries and same
            else "the curvature does not carry the apply_fn/likelihood it was built for"
            if not carries
            else "sample does not return a pytree shaped like subset.select(params)",
        )
    )
    flat_fn = lambda fn: lambda e: ravel_pytree(fn(unravel(e)))[0]
    dense, plain = (
        np.asarray(a)
        for a in jax.jit(
            lambda state: (
                curv.to_dense(state),
                _columns(flat_fn(lambda v: curv.precision_mvp(state, v, 1.0, 0.0)), size, dtype),
            )
        )(state)
    )
    tol = 1e-9 * max(1.0, float(np.max(np.abs(dense))) * scale)
    eig = np.linalg.eigvalsh(0.5 * (dense + dense.T))
    psd = np.allclose(dense, dense.T, atol=tol) and eig.min() >= -tol
    add(
        CheckResult(
            "to_dense",
            psd,
            "symmetric positive semi-definite"
            if psd
            else f"not symmetric positive semi-definite (smallest eigenvalue {eig.min():.2e})",
        )
    )
    add(_compare("to_dense", plain, dense, tol, "to_dense == precision_mvp(., 1, 0) columns"))
    priors = [("", tau, np.full(size, tau))]
    if layer_prior is not None:
        layout = Layout.of(theta)
        values = [float(layer_prior(path)) for path in layout.paths]
        tree = jax.tree.unflatten(jax.tree.structure(theta), [jnp.asarray(v) for v in values])
        pairs = zip(values, layout.sizes, strict=True)
        vector = np.concatenate([np.full(n, v) for v, n in pairs])
        priors.append((" (layer-wise prior)", tree, vector))
    for label, prior, vector in priors:
        ctx = _Context(curv, state, params, x, scale, prior, vector, dense, size, dtype, label)
        results.extend(_prior_checks(ctx, flat_fn, isotropic, sample_key, num_samples))
    if x.shape[0] >= 2:
        half = x.shape[0] // 2
        halves = [
            jax.tree.map(lambda a, s=s: a[s], batch) for s in (slice(0, half), slice(half, None))
        ]
        split = jax.jit(curv.to_dense)(_fit(curv, params, halves, fit_key))
        add(_compare("batches", split, dense, tol, "two half batches == the full batch"))
    eager = jax.jit(curv.to_dense)(_fit(curv, params, [batch], fit_key, jit=False))
    add(_compare("jit", eager, dense, tol, "eager update/finalize == jitted"))
    if expected is not None:
        ggn = exact_ggn(apply_fn, lik, params, batch, subset=curv.subset)
        add(_compare("expected", dense, expected(ggn), tol, "to_dense == expected(exact GGN)"))
    return ConformanceReport(tuple(results))


class _Context(NamedTuple):
    curv: Curvature
    state: Any
    params: Any
    x: jax.Array
    scale: float
    prior: Any  # a scalar or a per-leaf pytree
    vector: np.ndarray  # the prior as a flat [P] vector
    dense: np.ndarray
    size: int
    dtype: Any
    label: str


def _prior_checks(ctx: _Context, flat_fn, isotropic, sample_key, num_samples):
    """The checks that depend on the prior: ``P`` against ``s C + diag(tau)``, ``solve``,
    ``log_det``, samples and the capability."""
    curv, scale, prior, label = ctx.curv, ctx.scale, ctx.prior, ctx.label

    @jax.jit
    def operators(state, prior):
        prec = _columns(
            flat_fn(lambda v: curv.precision_mvp(state, v, scale, prior)), ctx.size, ctx.dtype
        )
        inv = _columns(flat_fn(lambda v: curv.solve(state, v, scale, prior)), ctx.size, ctx.dtype)
        return prec, inv, curv.log_det(state, scale, prior)

    prec, inv, log_det = (np.asarray(a) for a in operators(ctx.state, prior))
    tol = 1e-9 * max(1.0, float(np.max(np.abs(prec))))
    out = []
    if isotropic:
        expected = scale * ctx.dense + np.diag(ctx.vector)
        what = f"precision_mvp(., s, tau) == s C + diag(tau){label}"
        out.append(_compare("prior", prec, expected, tol, what))
    what = f"solve(precision_mvp(v)) == v{label}"
    out.append(_compare("solve", inv @ prec, np.eye(ctx.size), 1e-8, what))
    sign, ref_log_det = np.linalg.slogdet(prec)
    ok = sign > 0 and abs(log_det - ref_log_det) <= 1e-9 * max(1.0, abs(ref_log_det))
    message = f"log_det {log_det:.10g} vs slogdet {ref_log_det:.10g} (sign {sign:+.0f}){label}"
    out.append(CheckResult("log_det", bool(ok), message))
    out.append(_sample_check(curv, ctx.state, sample_key, scale, prior, num_samples, prec, label))
    if curv.layer_precisions is not None:
        out.extend(_capability_checks(ctx, prec, tol))
    return out


def _sample_check(curv, state, key, scale, tau, num_samples, prec, label=""):
    cov = np.linalg.inv(prec)
    draw = lambda k: ravel_pytree(curv.sample(state, k, scale, tau))[0]
    z = np.asarray(jax.jit(jax.vmap(draw))(jax.random.split(key, num_samples)))
    empirical = z.T @ z / num_samples
    sd = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / num_samples)
    worst = float(np.max(np.abs(empirical - cov) / sd))
    mean = float(np.max(np.abs(z.mean(0)) / np.sqrt(np.diag(cov) / num_samples)))
    ok = worst < 5.0 and mean < 5.0
    message = (
        f"sample covariance within {worst:.1f} and mean within {mean:.1f} standard errors of "
        f"P^-1 and 0{label}"
    )
    return CheckResult("sample", ok, message + ("" if ok else " (limit 5)"))


def _capability_checks(ctx: _Context, prec, tol):
    from bnn_jax import laplace, predictive  # the predictives are what the capability serves

    curv = ctx.curv
    p = jax.jit(curv.layer_precisions)(ctx.state, ctx.scale, ctx.prior)
    rebuilt, problem = _capability_precision(p, prec.shape[0], prec.dtype)
    if rebuilt is None:
        return [CheckResult("layer_precisions", False, problem + ctx.label)]
    what = f"Q diag(D) Q^T per block == P{ctx.label}"
    out = [_compare("layer_precisions", rebuilt, prec, tol, what)]
    post = laplace.Posterior(
        mean=ctx.params,
        state=ctx.state,
        scale=jnp.asarray(ctx.scale),
        prior_prec=jax.tree.map(jnp.asarray, ctx.prior),
        train_nll=jnp.zeros(()),
        curvature=curv,
    )
    inputs = ctx.x[: min(4, ctx.x.shape[0])]
    fast = jax.jit(predictive.kronecker.functional_covariance)(post, inputs)
    generic = jax.jit(predictive.jacobian_covariance)(post, inputs)
    scale_f = max(1.0, float(np.max(np.abs(generic))))
    what = f"linearised covariance through the capability == Jacobian rows and solve{ctx.label}"
    out.append(_compare("layer_precisions", fast, generic, 1e-8 * scale_f, what))
    return out


def exact_ggn(apply_fn, likelihood, params, batch: Batch, *, subset=None) -> np.ndarray:
    """The exact GGN ``sum_n J_n^T H_n J_n`` of ``batch`` over the selected parameters
    (``tree.ravel`` order), from the full Jacobian: the dense reference for tiny models."""
    theta = params if subset is None else subset.select(params)
    merge = (lambda p, t: t) if subset is None else subset.merge
    flat, unravel = ravel_pytree(theta)

    @jax.jit
    def ggn(flat, x):
        f = lambda w: apply_fn(merge(params, unravel(w)), x)
        jac = jax.jacobian(f)(flat)  # [B, K, P]
        return jnp.einsum("bkp,bkl,blq->pq", jac, likelihood.hessian(f(flat)), jac)

    return np.asarray(ggn(flat, jnp.asarray(batch.x)))
