"""The model family of the blog's calibration, OOD and attack studies, with every method fitted.

The post compares networks of growing depth (DenseNet and ResNet families on ImageNet); here the
family is scaled to the bundled data: MLPs of growing depth and width (and optionally LeNet-5).
By default (``num_train="auto"``) the networks are trained on 270 of the 1078 training digits,
without weight decay, until they are overconfident: with all 1078 they reach ~98.5% test
accuracy and an overconfident model's ECE is bounded by its error rate, so on 359 test digits
every method's ECE is ~0.01 and the differences are noise; at ~95% accuracy calibration is
measurable, the regime of the post's ImageNet models. Validation and test splits are unchanged.
For each member: a MAP network ("SGD" in the post) and from it diagonal and KFAC Laplace
posteriors (MC Fisher with one sampled label, the post's choice; (N, tau) searched on the
validation split) and temperature scaling; a network trained with dropout (MC dropout); a
Concrete Dropout network; a deep ensemble. Trained models and fitted curvature are cached by a
hash of their settings.
"""

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnn_jax import calibration, curvature, data, laplace, models
from experiments import common, progress
from experiments import methods as predictors
from experiments.cache import Cache, fingerprint, key_data

METHODS = tuple(predictors.METHODS)
"""Every method of the table (``methods.METHODS``)."""
DEFAULT_METHODS = tuple(m for m in METHODS if m not in predictors.SLOW)
ARCHITECTURES = ("mlp", "lenet")
OBJECTIVES = {
    "nll": calibration.nll,
    "ece": calibration.ece,
    "error_plus_ece": laplace.error_plus_ece,
}


def default_config(quick: bool = False) -> dict:
    """Settings of the family and its methods (shared by the digits studies)."""
    return {
        "dataset": "digits",
        "seed": 0,
        "num_train": "auto",
        "family": [
            {"name": "mlp-1x128", "architecture": "mlp", "widths": [128]},
            {"name": "mlp-2x256", "architecture": "mlp", "widths": [256, 256]},
            {"name": "mlp-3x512", "architecture": "mlp", "widths": [512, 512, 512]},
        ][: 2 if quick else 3],
        "reference": "mlp-2x256",
        "epochs": 30 if quick else 100,
        "batch_size": 64,
        "learning_rate": 3e-3,
        "prior_prec": 0.0,
        "dropout_rate": 0.2,
        "concrete_length_scale": 1e-2,
        "num_members": 3 if quick else 5,
        "num_samples": 10 if quick else 30,
        "chunk_size": 10,
        "fisher_samples": 1,
        "tuning_objective": "nll",
        "prior_prec_grid": [1e-1, 1e4, 6 if quick else 11],
        "scale_grid": [1.0, 100.0, 3 if quick else 5],
        "methods": list(DEFAULT_METHODS),
    }


AUTO_NUM_TRAIN = {"digits": 270}
"""``num_train="auto"``: 270 training digits (see the module docstring), all data otherwise."""

CHOICES = {
    "methods": METHODS,
    "tuning_objective": tuple(OBJECTIVES),
    "dataset": data.DATASETS,
}


def check(config: dict) -> None:
    """Validate the family settings before anything runs (names and choices)."""
    common.check_config(config, default_config(), choices=CHOICES)
    names = [spec["name"] for spec in config["family"]]
    if config["reference"] not in names:
        raise ValueError(
            f"config['reference']: {config['reference']!r} is not a family member {names}"
        )


def check_study(config: dict, defaults: dict, choices: dict | None = None) -> None:
    """Validate the config of a study on the family: its keys (``defaults``: the study's
    ``get_config()``), its choices (``CHOICES`` and ``choices``) and the family settings."""
    common.check_config(config, defaults, choices=CHOICES | (choices or {}))
    check({k: v for k, v in config.items() if k in default_config()})


class Member(NamedTuple):
    """One trained family member: its predictors, what was tuned, and the settings its
    predictors depend on (the cache key of their predictions and attacks)."""

    name: str
    model: object
    variables: dict
    predictors: dict[str, predictors.Predictor]
    posteriors: dict[str, laplace.Posterior]
    tuned: dict[str, dict]
    settings: dict


class Family(NamedTuple):
    """The data set, the fitted members and the folder their stages are cached in."""

    dataset: data.Dataset
    members: list[Member]
    cache_dir: Path


def _model(spec: dict, num_classes: int, dropout_rate: float = 0.0):
    if spec["architecture"] not in ARCHITECTURES:
        raise ValueError(
            f"config['family']: unknown architecture {spec['architecture']!r}; "
            f"expected one of {ARCHITECTURES}"
        )
    if spec["architecture"] == "lenet":
        return models.LeNet5(num_classes, dropout_rate=dropout_rate, conv2_padding="SAME")
    return models.MLP(tuple(spec["widths"]), num_classes, dropout_rate=dropout_rate)


def _train_settings(config, spec, name, **extra):
    keys = ("dataset", "seed", "num_train", "epochs", "batch_size", "learning_rate", "prior_prec")
    scheme = {"keys": predictors.KEY_SCHEME}
    return {k: config[k] for k in keys} | {"spec": spec, "name": name} | scheme | extra


def _train(config, ds, cache, spec, name, model, key, **kwargs):
    return common.train_model(
        cache,
        f"{spec['name']}-{name}",
        _train_settings(config, spec, name),
        model,
        ds,
        key=key,
        optimizer=optax.adam(config["learning_rate"]),
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        **kwargs,
    )


def _laplace(config, ds, cache, spec, method, structure, apply_fn, params, key):
    """Fit ``structure`` at the MAP and choose (N, tau) on the validation split."""
    result = common.tuned_laplace(
        config,
        ds,
        cache,
        f"{spec['name']}-{method}",
        _train_settings(config, spec, method, fisher_samples=config["fisher_samples"]),
        apply_fn,
        params,
        structure=structure,
        fisher=curvature.mc_fisher(num_samples=config["fisher_samples"]),
        batch_size=256,
        objective=OBJECTIVES[config["tuning_objective"]],
        key=key,
    )
    posterior = result.posterior
    tuned = {
        "scale": float(posterior.scale),
        "prior_prec": float(posterior.prior_prec),
        "N": float(posterior.scale) * len(ds.x_train),
        "objective": float(result.value[result.best]),
    }
    return posterior, tuned


def _concrete(config, ds, spec):
    """Concrete Dropout around every hidden Dense layer after the first, with the guidance
    ``wr = l^2 / (tau N)``, ``dr = 2 / (tau N)`` (tau = 1: the model precision of a classifier)."""
    if spec["architecture"] != "mlp":
        raise ValueError("config['methods']: concrete_dropout is built for the MLP family members")
    n = len(ds.x_train)
    model = models.ConcreteDropoutMLP(
        tuple(spec["widths"]),
        ds.num_classes,
        weight_regularizer=config["concrete_length_scale"] ** 2 / n,
        dropout_regularizer=2.0 / n,
    )
    final = lambda result: {
        "rates": {k: float(v[-1]) for k, v in result.history.items() if "concrete" in k}
    }
    return model, final


def fit_member(config: dict, ds: data.Dataset, spec: dict, cache: Path, key) -> Member:
    """Train and fit every method of ``config["methods"]`` for one family member, from the
    method table ``methods.METHODS``."""
    # what every predictor of this member depends on: the family settings but the other
    # members and methods, this member's spec and key
    settings = {k: v for k, v in config.items() if k in default_config()}
    settings = {k: v for k, v in settings.items() if k not in ("family", "reference", "methods")}
    settings |= {"spec": spec, "key": key_data(key)}
    trained: dict = {}

    def train(name, model, train_key, **kwargs):
        if name not in trained:  # the MAP is shared by several methods
            trained[name] = _train(config, ds, cache, spec, name, model, train_key, **kwargs)
        return trained[name]

    study = predictors.Study(
        config,
        ds,
        train,
        network=lambda rate: _model(spec, ds.num_classes, rate),
        concrete=lambda: _concrete(config, ds, spec),
        laplace=lambda *args: _laplace(config, ds, cache, spec, *args),
        cached=lambda name, compute: Cache(cache).json(f"{spec['name']}-{name}", settings, compute),
    )
    built = predictors.build(study, config["methods"], key)
    model, map_result = predictors.map_network(study, key)
    return Member(
        spec["name"],
        model,
        map_result.variables,
        {name: b.predictor for name, b in built.items()},
        {name: b.posterior for name, b in built.items() if b.posterior is not None},
        {name: b.facts for name, b in built.items() if b.facts},
        settings,
    )


def fit_family(config: dict, out_dir) -> Family:
    """Load the data set and fit every member of ``config["family"]`` (cached under
    ``out_dir/cache``)."""
    names = [spec["name"] for spec in config["family"]]
    if config["reference"] not in names:
        raise ValueError(
            f"config['reference']: {config['reference']!r} is not a family member {names}"
        )
    num_train = config["num_train"]
    if num_train == "auto":
        num_train = AUTO_NUM_TRAIN.get(config["dataset"])
    ds = data.load(config["dataset"], seed=config["seed"], num_train=num_train)
    key, cache = jax.random.key(config["seed"]), Path(out_dir) / "cache"
    members = []
    for i, spec in enumerate(config["family"]):
        with progress.current().stage(f"fit {spec['name']}"):
            members.append(fit_member(config, ds, spec, cache, jax.random.fold_in(key, i)))
    return Family(ds, members, cache)


def reference(family: Family, config: dict) -> Member:
    """The member whose numbers stand for each method in ``metrics["methods"]``."""
    return next(m for m in family.members if m.name == config["reference"])


def predict(family: Family, inputs: dict[str, np.ndarray]) -> dict:
    """Predictive samples ``{member: {method: {set name: [T, n, C] numpy}}}`` of every method on
    every named input set (computed once and shared by the calibration and OOD studies; cached
    by the member's settings, the method and the inputs' fingerprint)."""
    cache, prints = Cache(family.cache_dir), {name: fingerprint(x) for name, x in inputs.items()}
    total = sum(len(m.predictors) for m in family.members) * len(inputs)
    bar = progress.current().bar(total=total, desc="predictions")
    out: dict = {}
    for member in family.members:
        for method, p in member.predictors.items():
            for name, x in inputs.items():
                settings = member.settings | {"method": method, "inputs": prints[name]}
                compute = lambda p=p, x=x: {"log_probs": p.sample_log_probs(jnp.asarray(x))}
                found = cache.stage(f"{member.name}-{method}-predict", settings, compute)
                out.setdefault(member.name, {}).setdefault(method, {})[name] = found["log_probs"]
                bar.update()
    bar.close()
    return out
