"""The methods of the toy2d study on one data draw, and what the study measures of each.

- ``map``: the notebook's network (Dense 500 ReLU, Dense 500 ReLU, Dense 2; SGD, batch 32)
  trained with the notebook's weight decay as a Gaussian prior. Keras adds
  ``weight_regularizer ||W||^2`` to the minibatch-mean loss, ``training.train`` adds
  ``prior_prec / (2 N) ||theta||^2``, so ``prior_prec = 2 N weight_regularizer``
  (:func:`prior_prec`).
- ``mc_dropout``: the same network with dropout ``dropout_rate`` and the same prior.
- ``concrete_dropout``: the notebook's layers (``weight_regularizer``, ``dropout_regularizer``);
  ``concrete_dropout_low``: the same with ``dropout_regularizer_low``, small enough for the
  rate to fall. Both report the learned rates after every epoch.
- ``ensemble``: ``num_members`` MAP networks (not in the default list: 5x the training).
- Laplace (``methods.LAPLACE_STRUCTURES`` on the whole network and ``last_layer_laplace``, a
  dense posterior over the last layer): the exact GGN at the MAP with the training prior,
  the prior precision then raised or lowered by the marginal likelihood
  (``laplace.optimize_marglik``), and the linearised predictive with the exact MC link
  (``predictive.glm_mc_log_probs``; not the probit link, whose variance along the
  softmax-invariant direction acts as a hidden temperature). Its draws are linearised
  networks ``f(x; theta*) + J(x)(theta - theta*)`` with ``theta`` from the posterior.
- ``gp``: arc-sine kernel, probit likelihood, Laplace inference, evidence-maximised
  hyperparameters (float64), Houlsby's BALD.

The attacks differentiate a sampled method's mean over its first ``attack_samples`` draws (the
same masks or members; their cost is linear in the count) and are judged by the full
``num_samples`` predictive; the Laplace predictive samples in logit space and is attacked
with all its samples.

A fitted method is a :class:`Fitted`: pure functions of a state plus the state, built by a
:class:`Context` that keeps one model, curvature and kernel per run, so the measurement
(:func:`measure`) compiles once per method and serves every data draw.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnn_jax import attacks, curvature, data, gp, laplace, losses, models, predictive, uncertainty
from bnn_jax import dropout as dropout_lib
from bnn_jax import ensembles as ensembles_lib
from experiments import common, progress
from experiments import methods as predictors

NETWORKS = ("map", "mc_dropout", "concrete_dropout", "concrete_dropout_low", "ensemble")
LAPLACE = (*predictors.LAPLACE_STRUCTURES, "last_layer_laplace")
METHODS = (*NETWORKS, *LAPLACE, "gp")
DETERMINISTIC = ("map",)
"""Methods with a single draw: no posterior draws to show."""


def prior_prec(config: dict) -> float:
    """The notebook's weight decay as a prior precision: ``2 N weight_regularizer``."""
    return 2.0 * config["num_train"] * config["weight_regularizer"]


class Fns(NamedTuple):
    """A method's pure functions of its state (hashable: the static part of :func:`measure`).

    Attributes:
      log_prob_fn: ``(state, x) -> [B, C]``, the predictive (``num_samples`` draws).
      attack_fn: ``(state, x) -> [B, C]``, the predictive the attacks differentiate (the first
        ``attack_samples`` of the same draws; the GP's and MAP's are exact).
      fields: ``(state, x) -> {log_probs, entropy, bald, expected_entropy}`` on a grid.
      draws: ``(state, x) -> [4, B, C]`` log-probabilities of four posterior draws, or None.
    """

    log_prob_fn: Callable
    attack_fn: Callable
    fields: Callable
    draws: Callable | None


class Fitted(NamedTuple):
    fns: Fns
    state: Any
    facts: dict


def _sampled(sample_log_probs: Callable, num: int, attack_num: int, draws: Callable | None) -> Fns:
    """``Fns`` of a method given by ``sample_log_probs(state, x, t) -> [t, B, C]`` (its first
    ``t`` draws): ``num`` draws for the predictive, ``attack_num`` for the attacks."""

    def fields(state, x):
        samples = sample_log_probs(state, x, num)
        return {
            "log_probs": uncertainty.mean_log_probs(samples),
            "entropy": uncertainty.predictive_entropy(samples),
            "bald": uncertainty.bald(samples),
            "expected_entropy": uncertainty.expected_entropy(samples),
        }

    mean = lambda t: lambda state, x: uncertainty.mean_log_probs(sample_log_probs(state, x, t))
    return Fns(mean(num), mean(min(attack_num, num)), fields, draws)


class Context:
    """One run's models, curvatures and kernel (built once, shared by every data draw) and
    its cached training. ``config``: the toy2d config; ``cache_dir``: the study's cache."""

    def __init__(self, config: dict, cache_dir: Path):
        self.config, self.cache_dir = config, Path(cache_dir)
        widths, c = tuple(config["widths"]), config
        self.models = {
            "map": models.MLP(widths, 2),
            "mc_dropout": models.MLP(widths, 2, dropout_rate=c["dropout_rate"]),
            **{
                name: models.ConcreteDropoutMLP(
                    widths,
                    2,
                    weight_regularizer=c["weight_regularizer"],
                    dropout_regularizer=c[key],
                )
                for name, key in (
                    ("concrete_dropout", "dropout_regularizer"),
                    ("concrete_dropout_low", "dropout_regularizer_low"),
                )
            },
        }
        self.optimizer = optax.sgd(c["learning_rate"])
        self.kernel, self.gp_likelihood = gp.arcsine_kernel(), gp.probit()
        self._fns: dict = {}
        self._curvatures: dict = {}

    def _memo(self, table: dict, name: str, build: Callable):
        if name not in table:
            table[name] = build()
        return table[name]

    def train(self, ds, name: str, model, key, data_seed: int, **kwargs):
        c = self.config
        settings = {k: c[k] for k in ("num_train", "widths", "learning_rate", "epochs")}
        settings |= {"batch_size": c["batch_size"], "data_seed": data_seed, "keys": "toy2d-v2"}
        return common.train_model(
            self.cache_dir,
            f"toy2d-s{data_seed}-{name}",
            settings,
            model,
            ds,
            key=key,
            optimizer=self.optimizer,
            epochs=c["epochs"],
            batch_size=c["batch_size"],
            **kwargs,
        )

    def fit(self, name: str, ds, data_seed: int, key) -> Fitted:
        """Train (cached) and build method ``name`` on the draw ``ds``."""
        if name == "gp":
            return self._gp(ds)
        if name in LAPLACE:
            return self._laplace(name, ds, data_seed, key)
        return getattr(self, f"_{name}")(ds, data_seed, key)

    def _map_variables(self, ds, data_seed, key):
        model = self.models["map"]
        trained = self.train(
            ds,
            "map",
            model,
            predictors.method_key(key, "map"),
            data_seed,
            prior_prec=prior_prec(self.config),
        )
        return trained.variables

    def _apply(self, name: str) -> Callable:
        model = self.models[name]
        return self._memo(
            self._fns, f"apply-{name}", lambda: lambda p, x: model.apply({"params": p}, x)
        )

    def _map(self, ds, data_seed, key) -> Fitted:
        apply = self._apply("map")

        def build():
            one = lambda state, x, t: jax.nn.log_softmax(apply(state, x))[None]
            return _sampled(one, 1, 1, None)

        fns = self._memo(self._fns, "map", build)
        return Fitted(fns, self._map_variables(ds, data_seed, key)["params"], {})

    def _dropout_fns(self, name: str) -> Fns:
        model, c = self.models[name], self.config

        def build():
            def samples(state, x, t):
                logits_fn = dropout_lib.make_mask_logits_fn(model, state["variables"])
                return predictive.sample_log_probs(logits_fn, state["keys"][:t], x)

            four = lambda state, x: samples(state, x, 4)
            return _sampled(samples, c["num_samples"], c["attack_samples"], four)

        return self._memo(self._fns, name, build)

    def _mc_dropout(self, ds, data_seed, key) -> Fitted:
        train_key, mask_key = jax.random.split(predictors.method_key(key, "mc_dropout"))
        trained = self.train(
            ds,
            "mc_dropout",
            self.models["mc_dropout"],
            train_key,
            data_seed,
            prior_prec=prior_prec(self.config),
        )
        keys = jax.random.split(mask_key, self.config["num_samples"])
        state = {"variables": trained.variables, "keys": keys}
        return Fitted(self._dropout_fns("mc_dropout"), state, {})

    def _concrete(self, name, ds, data_seed, key) -> Fitted:
        train_key, mask_key = jax.random.split(predictors.method_key(key, name))
        rates = lambda v: {k: float(p) for k, p in dropout_lib.concrete_rates(v["params"]).items()}
        # the Concrete layers' regulariser is their prior: no prior_prec (module docstring)
        trained = self.train(ds, name, self.models[name], train_key, data_seed, epoch_metrics=rates)
        keys = jax.random.split(mask_key, self.config["num_samples"])
        state = {"variables": trained.variables, "keys": keys}
        facts = {"rates": {k: v for k, v in trained.history.items() if "concrete" in k}}
        return Fitted(self._dropout_fns(name), state, facts)

    def _concrete_dropout(self, ds, data_seed, key) -> Fitted:
        return self._concrete("concrete_dropout", ds, data_seed, key)

    def _concrete_dropout_low(self, ds, data_seed, key) -> Fitted:
        return self._concrete("concrete_dropout_low", ds, data_seed, key)

    def _ensemble(self, ds, data_seed, key) -> Fitted:
        model = self.models["map"]
        trained = self.train(
            ds,
            "ensemble",
            model,
            predictors.method_key(key, "ensemble"),
            data_seed,
            num_members=self.config["num_members"],
            prior_prec=prior_prec(self.config),
        )

        def build():
            logits_fn = ensembles_lib.make_member_logits_fn(model)
            members = lambda state, t: jax.tree.map(lambda a: a[:t], state)
            samples = lambda state, x, t: predictive.sample_log_probs(
                logits_fn, members(state, t), x
            )
            c, four = self.config, lambda state, x: samples(state, x, 4)
            return _sampled(samples, c["num_members"], c["attack_samples"], four)

        return Fitted(self._memo(self._fns, "ensemble", build), trained.variables, {})

    def _curvature(self, name: str, params, x) -> curvature.Curvature:
        apply, lik, fisher = self._apply("map"), losses.categorical(), curvature.exact_fisher()
        if name == "last_layer_laplace":
            build = lambda: curvature.dense(
                apply, lik, fisher=fisher, subset=curvature.subset.last_layer(apply, params, x)
            )
        else:
            build = lambda: predictors.LAPLACE_STRUCTURES[name](apply, lik, fisher, params, x)
        return self._memo(self._curvatures, name, build)

    def _laplace(self, name, ds, data_seed, key) -> Fitted:
        c = self.config
        params = self._map_variables(ds, data_seed, key)["params"]
        curv = self._curvature(name, params, ds.x_train[:1])
        fit_key, sample_key = jax.random.split(predictors.method_key(key, name))
        tau0 = prior_prec(c)
        posterior = laplace.fit(
            curv,
            params,
            data.Batches(ds.x_train, ds.y_train, len(ds.x_train)),
            key=fit_key,
            prior_prec=tau0,
            progress=progress.current().bars,
        )
        tuned, trace = laplace.optimize_marglik(
            posterior, steps=c["marglik_steps"], learning_rate=0.1
        )
        t = c["num_samples"]

        def build():
            # sampled in logit space (cheap): the attacks differentiate all t samples
            def samples(state, x, num):
                return predictive.glm_mc_log_probs(
                    state["posterior"], x, key=state["key"], num_samples=num
                )

            def draws(state, x):
                post = state["posterior"]
                f = lambda p: post.apply_fn(p, x)

                def one(k):
                    delta = jax.tree.map(jnp.subtract, laplace.sample_one(post, k), post.mean)
                    mean, tangent = jax.jvp(f, (post.mean,), (delta,))
                    return jax.nn.log_softmax(mean + tangent)

                return jax.lax.map(one, jax.random.split(state["key"], 4))

            return _sampled(samples, t, t, draws)

        facts = {
            "prior_prec_training": tau0,
            "prior_prec": float(tuned.prior_prec),
            "log_marglik": np.asarray([trace.log_marglik[0], trace.log_marglik[-1]]),
        }
        state = {"posterior": tuned, "key": sample_key}
        return Fitted(self._memo(self._fns, name, build), state, facts)

    def _gp(self, ds) -> Fitted:
        kernel, lik = self.kernel, self.gp_likelihood
        with jax.enable_x64(True):
            x, y = np.asarray(ds.x_train, np.float64), ds.y_train
            fit = gp.optimize_hyperparameters(kernel, kernel.init(), x, y, likelihood=lik)
            posterior = gp.fit(kernel, fit.params, x, y, likelihood=lik)
        hyper = {k.removeprefix("log_"): float(jnp.exp(v)) for k, v in fit.params._asdict().items()}
        facts = {
            "objective_before": float(fit.initial_objective),
            "objective_after": float(fit.final_objective),
            "hyperparameters": hyper,
        }

        def build():
            def log_prob_fn(state, x):
                mean, var = gp.latent_predictive(kernel, state["posterior"], x)
                return gp.predictive_log_probs(lik, mean, var)

            def fields(state, x):
                mean, var = gp.latent_predictive(kernel, state["posterior"], x)
                entropy, bald = gp.predictive_entropy(lik, mean, var), gp.houlsby_bald(mean, var)
                return {
                    "log_probs": gp.predictive_log_probs(lik, mean, var),
                    "entropy": entropy,
                    "bald": bald,
                    "expected_entropy": entropy - bald,
                }

            def draws(state, x):
                f = gp.latent_function_samples(
                    kernel, state["posterior"], x, key=state["key"], num_samples=4
                )
                return jnp.stack([jax.nn.log_sigmoid(-f), jax.nn.log_sigmoid(f)], axis=-1)

            return Fns(log_prob_fn, log_prob_fn, fields, draws)

        key = jax.random.key(int(self.config["seed"]))
        state = {"posterior": posterior, "key": jax.random.fold_in(key, len(ds.x_train))}
        return Fitted(self._memo(self._fns, "gp", build), state, facts)


def _accuracy(log_probs, y):
    return jnp.mean(jnp.argmax(log_probs, -1) == y)


@jax.jit(static_argnames=("fns", "bim_steps"))
def _measure(fns: Fns, state, arrays: dict, *, bim_steps: int) -> dict:
    lp = lambda x: fns.log_prob_fn(state, x)
    target = lambda x: fns.attack_fn(state, x)
    x, y = arrays["x_train"], arrays["y_train"]
    bim = lambda eps, step: attacks.bim(
        target, x, eps=eps, eps_iter=step, steps=bim_steps, norm="l2"
    )
    fgm = lambda eps: attacks.fgm(target, x, eps=eps, norm="l2")
    x_fgm, x_bim = fgm(arrays["fgm_eps"]), bim(arrays["bim_eps"], arrays["bim_step"])
    sweep = arrays["sweep_eps"]
    step_ratio = arrays["bim_step"] / arrays["bim_eps"]
    return {
        "test_log_probs": lp(arrays["x_test"]),
        "train_log_probs": lp(x),
        "fgm": x_fgm,
        "bim": x_bim,
        "fgm_log_probs": lp(x_fgm),
        "bim_log_probs": lp(x_bim),
        "sweep_fgm_accuracy": jax.vmap(lambda e: _accuracy(lp(fgm(e)), y))(sweep),
        "sweep_bim_accuracy": jax.vmap(lambda e: _accuracy(lp(bim(e, e * step_ratio)), y))(sweep),
        "circle_max_prob": jnp.exp(jnp.max(lp(arrays["circle"]), axis=-1)),
        **fns.fields(state, arrays["grid"]),
    }


@jax.jit(static_argnames=("fns",))
def _display(fns: Fns, state, arrays: dict) -> dict:
    lp = lambda x: fns.log_prob_fn(state, x)
    out = {
        "input_grad": attacks.input_gradient(lambda x: fns.attack_fn(state, x), arrays["grid"]),
        "zoom_log_probs": lp(arrays["zoom_grid"]),
        "wide_max_prob": jnp.exp(jnp.max(lp(arrays["wide_grid"]), axis=-1)),
    }
    if fns.draws is not None:
        out["draws"] = fns.draws(state, arrays["draw_grid"])
    return out


def measure(method: Fitted, arrays: dict, *, bim_steps: int, display: bool, x64: bool) -> dict:
    """What the study needs of one fitted method on one draw, as NumPy arrays: predictions
    on the test and training points, FGM and BIM (L2, against ``fns.attack_fn`` with its
    predicted class, as the notebook's cleverhans calls; the attacked points judged by the
    full predictive) at the notebook's eps and over ``sweep_eps`` (BIM's step a fixed
    fraction of eps), the maximum probability on the far circle and the grid fields; with
    ``display`` also the input gradient of ``fns.attack_fn`` (quiver), the
    predictive on the zoomed and wide grids and four draws. ``arrays`` are float32; with
    ``x64`` (the GP) everything is evaluated in float64."""
    if x64:
        with jax.enable_x64(True):
            arrays = {
                k: jnp.asarray(
                    v, jnp.float64 if np.issubdtype(np.asarray(v).dtype, np.floating) else v.dtype
                )
                for k, v in arrays.items()
            }
            out = _measure(method.fns, method.state, arrays, bim_steps=bim_steps)
            if display:
                out |= _display(method.fns, method.state, arrays)
            return jax.tree.map(lambda a: np.asarray(a, np.float32), out)
    out = _measure(method.fns, method.state, arrays, bim_steps=bim_steps)
    if display:
        out |= _display(method.fns, method.state, arrays)
    return jax.tree.map(np.asarray, out)
