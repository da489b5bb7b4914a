"""Every method of the studies seen through one interface, :class:`Predictor`.

A predictor gives (a) predictive samples ``[T, batch, C]`` for the metrics (entropy, BALD,
calibration), (b) the MC-averaged predictive ``log (1/T) sum_t p_t`` that attacks differentiate
(expectation over the same fixed posterior draws), and (c) the predictive of single posterior
draws (one dropout mask, one weight sample, one member): the notebook's FGM target and its
"four draws from the posterior".

``METHODS`` is the one method table of the studies: method name -> builder of its predictor,
given a :class:`Study` (what the study provides: data, cached training, its networks, its
Laplace tuning). Every study (toy2d, and the family behind calibration, OOD, adversarial and
landscape) builds its methods from this table; the library itself never switches on method
names. Adding a curvature structure to every study is one entry of ``LAPLACE_STRUCTURES``
(plus the structure's own module); each method draws its keys from ``method_key(key, name)``,
so no two methods share random numbers and adding a method changes no other method's draws.
"""

import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from bnn_jax import attacks, calibration, curvature, laplace, models, predictive
from bnn_jax import dropout as dropout_lib
from bnn_jax import ensembles as ensembles_lib

LogitsFn = Callable[[Any, jax.Array], jax.Array]


class Predictor(NamedTuple):
    """A posterior predictive (see the module docstring).

    Attributes:
      sample_log_probs: ``x -> [T, batch, C]`` log-probabilities of the posterior draws.
      log_prob_fn: ``x -> [batch, C]``, the MC predictive over the same draws (differentiable).
      draw_log_prob_fn: ``t -> (x -> [batch, C])``, the predictive of draw ``t`` alone.
      num_draws: ``T``.
    """

    sample_log_probs: Callable[[jax.Array], jax.Array]
    log_prob_fn: Callable[[jax.Array], jax.Array]
    draw_log_prob_fn: Callable[[int], Callable[[jax.Array], jax.Array]]
    num_draws: int

    def attack_method(self) -> attacks.Method:
        """The :class:`bnn_jax.attacks.Method` of this predictor (white-box: the attacker
        knows the draws)."""
        return attacks.Method(self.log_prob_fn, self.sample_log_probs)


def from_samples(logits_fn: LogitsFn, samples: Any, *, chunk_size: int | None = None) -> Predictor:
    """A predictor from ``logits_fn(sample, x)`` and a pytree of draws with a leading axis."""
    num_draws = jax.tree.leaves(samples)[0].shape[0]

    @jax.jit
    def sample_log_probs(x):
        return predictive.sample_log_probs(logits_fn, samples, x, chunk_size=chunk_size)

    def draw(t: int):
        sample = jax.tree.map(lambda leaf: leaf[t], samples)
        return attacks.single_sample_log_prob_fn(logits_fn, sample)

    log_prob_fn = attacks.mc_log_prob_fn(logits_fn, samples, chunk_size=chunk_size)
    return Predictor(sample_log_probs, log_prob_fn, draw, num_draws)


def deterministic(apply_fn, params, *, temperature: float = 1.0) -> Predictor:
    """A point estimate (MAP, or MAP with temperature scaling ``softmax(f / T)``): one draw."""
    return from_samples(lambda _, x: apply_fn(params, x) / temperature, jnp.zeros((1,)))


def laplace_posterior(posterior: laplace.Posterior, key, num_samples: int, *, chunk_size=None):
    """MC predictive of a Laplace posterior over ``num_samples`` fixed weight draws (the keys
    are the draws; weights are sampled inside the chunks, so memory stays bounded)."""
    keys = jax.random.split(key, num_samples)
    logits_fn = lambda k, x: posterior.apply_fn(laplace.sample_one(posterior, k), x)
    return from_samples(logits_fn, keys, chunk_size=chunk_size)


def mc_dropout(model, variables, key, num_samples: int, *, chunk_size=None) -> Predictor:
    """MC dropout or Concrete Dropout over ``num_samples`` fixed masks."""
    keys = jax.random.split(key, num_samples)
    return from_samples(
        dropout_lib.make_mask_logits_fn(model, variables), keys, chunk_size=chunk_size
    )


def ensemble(model, stacked_variables, *, chunk_size=None) -> Predictor:
    """A deep ensemble: the members are the draws."""
    return from_samples(
        ensembles_lib.make_member_logits_fn(model), stacked_variables, chunk_size=chunk_size
    )


def map_apply_fn(model, variables):
    """``(apply_fn, params)`` of a trained model in inference mode."""
    return models.make_apply_fn(model, variables), variables["params"]


def _partition(apply_fn, likelihood, fisher, params, x):
    """A dense last layer and a diagonal rest (``curvature.partition``)."""
    last = curvature.subset.last_layer(apply_fn, params, x[:1])
    return curvature.partition(
        [
            curvature.dense(apply_fn, likelihood, fisher=fisher, subset=last),
            curvature.diagonal(
                apply_fn, likelihood, fisher=fisher, subset=curvature.subset.complement(last)
            ),
        ]
    )


LAPLACE_STRUCTURES: dict[str, Callable[..., curvature.Curvature]] = {
    "diag_laplace": lambda f, lik, fisher, params, x: curvature.diagonal(f, lik, fisher=fisher),
    "kfac_laplace": lambda f, lik, fisher, params, x: curvature.kfac(f, lik, fisher=fisher),
    "partition_laplace": _partition,
}
"""Method name -> ``(apply_fn, likelihood, fisher, params, x_example) -> Curvature``."""


class Study(NamedTuple):
    """What a study gives the method builders.

    Attributes:
      config: the study's config (``num_samples``, ``chunk_size``, ``prior_prec``,
        ``num_members``, ``dropout_rate`` are read).
      dataset: a ``bnn_jax.data.Dataset``.
      train: ``(name, model, key, **train_kwargs) -> TrainResult``, cached by the study.
      network: ``dropout_rate -> model``, the study's MAP architecture.
      concrete: ``() -> (model, facts_fn)``: the Concrete Dropout network and
        ``facts_fn(train_result) -> dict`` of what the study reports about it.
      laplace: ``(name, curvature_builder, apply_fn, params, key) -> (posterior, facts)``:
        fit and tune a Laplace posterior the study's way.
      cached: ``(name, compute) -> value``: a JSON-able stage result cached by the study
        (default: computed every time).
    """

    config: dict
    dataset: Any
    train: Callable[..., Any]
    network: Callable[[float], Any]
    concrete: Callable[[], tuple[Any, Callable[[Any], dict]]]
    laplace: Callable[..., tuple[laplace.Posterior, dict]]
    cached: Callable[[str, Callable[[], Any]], Any] = lambda name, compute: compute()


class Built(NamedTuple):
    """A built method: its ``predictor``, the ``facts`` a study reports (tuned values,
    learned rates) and, for Laplace methods, the ``posterior``."""

    predictor: Predictor
    facts: dict
    posterior: laplace.Posterior | None = None


KEY_SCHEME = "method_key"
"""Part of every cache entry's settings: entries from before per-method keys are not reused."""


def method_key(key, name: str):
    """The key of method ``name``: ``fold_in(key, crc32(name))``, independent of the other
    methods and of which methods run."""
    return jax.random.fold_in(key, zlib.crc32(name.encode()))


def map_network(study: Study, key):
    """``(model, TrainResult)`` of the MAP network that every method starting from it shares
    (trained with ``method_key(key, "map")``; the study's ``train`` caches it)."""
    model = study.network(0.0)
    trained = study.train(
        "map", model, method_key(key, "map"), prior_prec=study.config["prior_prec"]
    )
    return model, trained


def _build_map(study: Study, key) -> Built:
    model, trained = map_network(study, key)
    return Built(deterministic(*map_apply_fn(model, trained.variables)), {})


def _build_temperature(study: Study, key) -> Built:
    model, trained = map_network(study, key)
    apply_fn, params = map_apply_fn(model, trained.variables)
    ds = study.dataset
    temperature = study.cached(
        "temperature",
        lambda: float(
            calibration.fit_temperature(apply_fn(params, jnp.asarray(ds.x_val)), ds.y_val)
        ),
    )
    return Built(
        deterministic(apply_fn, params, temperature=temperature), {"temperature": temperature}
    )


def _laplace_builder(name: str):
    def build(study: Study, key) -> Built:
        model, trained = map_network(study, key)
        apply_fn, params = map_apply_fn(model, trained.variables)
        fit_key, sample_key = jax.random.split(method_key(key, name))
        structure = LAPLACE_STRUCTURES[name]
        posterior, facts = study.laplace(name, structure, apply_fn, params, fit_key)
        config = study.config
        predictor = laplace_posterior(
            posterior, sample_key, config["num_samples"], chunk_size=config.get("chunk_size")
        )
        return Built(predictor, facts, posterior)

    return build


def _build_mc_dropout(study: Study, key) -> Built:
    config = study.config
    train_key, mask_key = jax.random.split(method_key(key, "mc_dropout"))
    model = study.network(config["dropout_rate"])
    trained = study.train("mc_dropout", model, train_key, prior_prec=config["prior_prec"])
    predictor = mc_dropout(
        model,
        trained.variables,
        mask_key,
        config["num_samples"],
        chunk_size=config.get("chunk_size"),
    )
    return Built(predictor, {})


def _build_concrete(study: Study, key) -> Built:
    config = study.config
    train_key, mask_key = jax.random.split(method_key(key, "concrete_dropout"))
    model, facts_fn = study.concrete()
    rates = lambda v: {k: float(p) for k, p in dropout_lib.concrete_rates(v["params"]).items()}
    trained = study.train("concrete_dropout", model, train_key, epoch_metrics=rates)
    predictor = mc_dropout(
        model,
        trained.variables,
        mask_key,
        config["num_samples"],
        chunk_size=config.get("chunk_size"),
    )
    return Built(predictor, facts_fn(trained))


def _build_ensemble(study: Study, key) -> Built:
    config = study.config
    model = study.network(0.0)
    trained = study.train(
        "ensemble",
        model,
        method_key(key, "ensemble"),
        num_members=config["num_members"],
        prior_prec=config["prior_prec"],
    )
    return Built(ensemble(model, trained.variables, chunk_size=config.get("chunk_size")), {})


METHODS: dict[str, Callable[[Study, Any], Built]] = {
    "map": _build_map,
    **{name: _laplace_builder(name) for name in LAPLACE_STRUCTURES},
    "mc_dropout": _build_mc_dropout,
    "concrete_dropout": _build_concrete,
    "ensemble": _build_ensemble,
    "temperature": _build_temperature,
}
"""The method table: name -> ``builder(study, key) -> Built``."""

SLOW = ("partition_laplace",)
"""Methods in the table but not in the studies' default lists (a dense last-layer block)."""


def build(study: Study, names, key) -> dict[str, Built]:
    """Every method of ``names`` (in that order) from the table, for one study."""
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; expected names from {list(METHODS)}")
    return {name: METHODS[name](study, key) for name in names}
