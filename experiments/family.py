"""The model family of the blog's calibration, OOD and attack studies, every method fitted over
several seeds of the whole pipeline.

**Data.** MNIST-1D (Greydanus 2020), generated locally: 3,500 training, 1,000 validation and
10,000 test signals (``data.load("mnist1d", num_val=, num_test=)``), photo patches and noise as
OOD sets. Each seed draws its own data, split, initialisation and MC draws (``num_seeds`` seeds
from ``seed``), so every headline number comes with an interval over seeds.

**A real MAP.** Every network is trained with a Gaussian prior, weight decay ``tau0 / (2 N)
||theta||^2`` on the mean loss (``prior_prec = tau0 = 1``), with Adam (learning rate 1e-3,
batch 64) for 60 epochs; the Laplace posteriors start from the same ``tau0``. Why these values
(measured, 3 seeds): with ``tau0 = 1`` the wider MAP networks are overconfident as the post's
are (mlp-2x256: ECE 0.190 [0.167, 0.213] on 10,000 test inputs, mlp-3x256: 0.202; test accuracy
0.64-0.68) while their curvature still holds information (``gamma / P`` at ``tau0`` 0.02-0.97
by member and structure); with Adam 1e-3 the small mlp-1x128 fits less and is only mildly
overconfident (ECE 0.063 [0.043, 0.082]), which leaves little for any method to remove.
Without weight decay the widest members interpolate until the softmax saturates, the GGN at
the MAP vanishes (``gamma / P`` 0.000) and every tuned "posterior" is isotropic
weight noise ``N(theta*, I / tau)``: the failure this protocol replaces. ``tau0 = 10`` removes
most of the overconfidence (temperature 1.4), ``tau0 = 100`` underfits. A learning rate of 3e-3
left one seed in three unconverged; 1e-3 converges on all. Bundled digits are the wrong data for
these claims: at 98% accuracy the MAP is not overconfident (ECE 0.007).

**Methods** (per member and seed): the MAP ("SGD" in the post), temperature scaling on the
validation split, MC dropout, Concrete Dropout, a deep ensemble, and for every Laplace structure
the recipes of :mod:`experiments.recipes` side by side (the post's MC predictive with a searched
``(s, tau)``, Laplace Redux, the centred-probit GLM search), with their diagnostics. Trained
networks, fitted posteriors and every seed's results are cached by a hash of their settings.

**Members and time.** The default family is mlp-1x128, mlp-2x256 and a LeNet-5 for the 1D
signals (:class:`LeNet1D`: MAP accuracy 0.800 [0.795, 0.805] and ECE 0.111, against 0.580 and
0.637 for the two MLPs); ``quick`` runs mlp-1x128 alone. The MLPs run every recipe; the LeNet-5
runs Redux and the GLM search only (a member's ``"recipes"``): the post's MC search and MC
attacks are about 60% of a member's Laplace cost, and on XLA:CPU a LeNet-5 forward pass costs
three times an MLP-2x256's. Measured on the idle 2-core machine: the default job 9 min 43 s
wall, 15.2 CPU-minutes (LeNet-5 seeds 81 / 47 / 48 s, mlp-2x256 77 / 53 / 49 s: the first seed
compiles). The deep member mlp-3x256 (Redux and the GLM search only) is opt-in by config
(``MEMBERS``): it would add about 4 CPU-minutes.
"""

from pathlib import Path
from typing import NamedTuple

import flax.linen as nn
import numpy as np
import optax

from bnn_jax import data, laplace, models
from experiments import common, progress, protocol, recipes
from experiments import methods as predictors

MEMBERS = (
    {"name": "mlp-1x128", "architecture": "mlp", "widths": [128]},
    {"name": "mlp-2x256", "architecture": "mlp", "widths": [256, 256]},
    {"name": "lenet1d", "architecture": "lenet1d", "recipes": ["redux", "glm"]},
    {"name": "mlp-3x256", "architecture": "mlp", "widths": [256, 256, 256],
     "recipes": ["redux", "glm"]},
)  # fmt: skip
"""The family: the first three by default (the LeNet-5 with Redux and the GLM search only), the
first alone with ``quick``; the deep member mlp-3x256 (Redux and the GLM search only) by config
(``"family": list(MEMBERS)``)."""
OTHER_METHODS = ("map", "temperature", "mc_dropout", "concrete_dropout", "ensemble")
"""The methods besides the Laplace recipes (``methods.METHODS`` names)."""
ARCHITECTURES = ("mlp", "lenet1d")
OOD_SETS = ("patches", "noise")


def default_config(quick: bool = False) -> dict:
    """Settings of the family and its methods (shared by the calibration, OOD, attack and
    landscape studies). ``quick``: one member, smaller evaluation sets, coarser grids."""
    return {
        "dataset": "mnist1d",
        "seed": 0,
        "num_seeds": 3,
        "num_train": None,
        "num_val": 1000,
        "num_test": 2000 if quick else 10_000,
        "num_ood": 500 if quick else 2000,
        "ood_sets": list(OOD_SETS),
        "family": [dict(m) for m in MEMBERS[: 1 if quick else 3]],
        "reference": "mlp-1x128" if quick else "mlp-2x256",
        "epochs": 60,
        "batch_size": 64,
        "learning_rate": 1e-3,
        "prior_prec": 1.0,
        "dropout_rate": 0.2,
        "concrete_length_scale": 1e-2,
        "num_members": 3 if quick else 5,
        "num_samples": 30,
        "glm_mc_samples": 30 if quick else 100,
        "chunk_size": 10,
        "fisher_samples": 1,
        "structures": list(recipes.STRUCTURES),
        "recipes": list(recipes.RECIPES),
        "prior_prec_grid": [1e-2, 1e4, 7 if quick else 13],
        "scale_grid": [0.1, 1.0, 10.0],
        "search_grow": 2 if quick else 4,
        "search_chunk": 13,
        "marglik_steps": 100,
        "methods": list(OTHER_METHODS),
        "fgsm_eps": [0.0, 0.05, 0.1] if quick else [0.0, 0.02, 0.04, 0.06, 0.08, 0.1],
        "attack_num": 300 if quick else 1000,
        "num_bins": 10,
    }


CHOICES = {
    "methods": OTHER_METHODS,
    "structures": recipes.STRUCTURES,
    "recipes": recipes.RECIPES,
    "ood_sets": OOD_SETS,
    "dataset": data.DATASETS,
}


def check(config: dict) -> None:
    """Validate the family settings before anything runs (names, choices, sizes)."""
    common.check_config(config, default_config(), choices=CHOICES)
    names = [spec["name"] for spec in config["family"]]
    if config["reference"] not in names:
        raise ValueError(
            f"config['reference']: {config['reference']!r} is not a family member {names}"
        )
    for spec in config["family"]:
        if spec.get("architecture") not in ARCHITECTURES:
            raise ValueError(
                f"config['family']: unknown architecture {spec.get('architecture')!r}; "
                f"expected one of {ARCHITECTURES}"
            )
        for recipe in spec.get("recipes", []):
            if recipe not in recipes.RECIPES:
                raise ValueError(
                    f"config['family']: {spec['name']}: unknown recipe {recipe!r}; expected "
                    f"one of {recipes.RECIPES}"
                )
    for name in ("num_seeds", "num_val", "num_test", "num_ood", "attack_num", "epochs"):
        if isinstance(config[name], bool) or not isinstance(config[name], int) or config[name] < 1:
            raise ValueError(f"config[{name!r}]: expected a positive integer, got {config[name]!r}")
    if "map" not in config["methods"] or "temperature" not in config["methods"]:
        raise ValueError("config['methods']: the verdicts compare with 'map' and 'temperature'")


def check_study(config: dict, defaults: dict, choices: dict | None = None) -> None:
    """Validate the config of a study on the family: its keys (``defaults``: the study's
    ``get_config()``), its choices and the family settings."""
    common.check_config(config, defaults, choices=CHOICES | (choices or {}))
    check({k: v for k, v in config.items() if k in default_config()})


def seeds(config: dict) -> list[int]:
    """The seeds of the whole pipeline: ``seed, seed + 1, ...`` (``num_seeds`` of them)."""
    return [config["seed"] + i for i in range(config["num_seeds"])]


class LeNet1D(nn.Module):
    """LeNet-5 for 1D signals ``[n, length]``: Conv(6, 5) - ReLU - AvgPool(2) - Conv(16, 5) -
    ReLU - AvgPool(2) - Dense 120 - Dense 84 - Dense ``num_classes`` (``nn.Conv`` with 1D
    kernels on ``[n, length, 1]``; ``dropout_rate`` before each hidden Dense). With
    ``concrete``, Concrete Dropout (``weight_regularizer``, ``dropout_regularizer``) wraps every
    Dense after the first, as in ``models.ConcreteDropoutMLP``."""

    num_classes: int
    dropout_rate: float = 0.0
    concrete: bool = False
    weight_regularizer: float = 1e-6
    dropout_regularizer: float = 1e-5

    @nn.compact
    def __call__(self, x, train: bool = False, mc_dropout: bool = False):
        h = x[..., None]
        for features in (6, 16):
            h = nn.avg_pool(nn.relu(nn.Conv(features, (5,), padding="SAME")(h)), (2,), (2,))
        h = h.reshape(h.shape[0], -1)
        for i, width in enumerate((120, 84, self.num_classes)):
            if self.concrete and i > 0:
                regs = {"weight_regularizer": self.weight_regularizer,
                        "dropout_regularizer": self.dropout_regularizer}  # fmt: skip
                h = models.ConcreteDropout(nn.Dense(width), **regs)(
                    h, train=train, mc_dropout=mc_dropout
                )
            else:
                if i < 2:
                    h = nn.Dropout(self.dropout_rate, deterministic=not (train or mc_dropout))(h)
                h = nn.Dense(width)(h)
            h = nn.relu(h) if i < 2 else h
        return h


def network(spec: dict, num_classes: int, dropout_rate: float = 0.0):
    """The member's network (``dropout_rate`` for MC dropout)."""
    if spec["architecture"] == "lenet1d":
        return LeNet1D(num_classes, dropout_rate)
    return models.MLP(tuple(spec["widths"]), num_classes, dropout_rate=dropout_rate)


def concrete(config: dict, ds, spec: dict):
    """Concrete Dropout around every hidden Dense layer after the first (and the output layer),
    with the guidance ``wr = l^2 / (tau N)``, ``dr = 2 / (tau N)`` (tau = 1: the model precision
    of a classifier)."""
    n = len(ds.x_train)
    regs = {
        "weight_regularizer": config["concrete_length_scale"] ** 2 / n,
        "dropout_regularizer": 2.0 / n,
    }
    if spec["architecture"] == "lenet1d":
        model = LeNet1D(ds.num_classes, concrete=True, **regs)
    else:
        model = models.ConcreteDropoutMLP(tuple(spec["widths"]), ds.num_classes, **regs)
    final = lambda result: {
        "rates": {k: float(v[-1]) for k, v in result.history.items() if "concrete" in k.lower()}
    }
    return model, final


def load_data(config: dict, seed: int) -> tuple[data.Dataset, dict]:
    """The data set of one seed and its evaluation sets (``"test"``, ``"val"``: the validation
    split the best recipe is chosen on, and the OOD sets)."""
    sizes = {}
    if config["dataset"] in ("mnist1d", "toy2d"):
        sizes = {"num_val": config["num_val"], "num_test": config["num_test"]}
    ds = data.load(config["dataset"], seed=seed, num_train=config["num_train"], **sizes)
    sets = {"test": ds.x_test[: config["num_test"]], "val": ds.x_val}
    for name in config["ood_sets"]:
        sets[name] = data.load_ood(ds, name, seed=seed, num=config["num_ood"])
    return ds, sets


class Member(NamedTuple):
    """One family member at the first seed (what the landscape study reads): its network, MAP
    ``variables``, the ``posteriors`` ``{"diag_laplace", "kfac_laplace"}`` fitted at the
    training prior, and the settings its cached stages depend on."""

    name: str
    model: object
    variables: dict
    posteriors: dict[str, laplace.Posterior]
    settings: dict


class Family(NamedTuple):
    """The first seed's data set and members, every seed's results per member
    (``results[member][i]``, :func:`experiments.protocol.run_seed`), the first seed's arrays
    for the figures, and the cache folder."""

    dataset: data.Dataset
    members: list[Member]
    results: dict[str, list[dict]]
    arrays: dict[str, dict]
    cache_dir: Path


def fit_family(config: dict, out_dir) -> Family:
    """Every member of ``config["family"]`` over every seed (cached under ``out_dir/cache``)."""
    check({k: v for k, v in config.items() if k in default_config()})
    cache, archs, datasets = Path(out_dir) / "cache", {}, {}
    members, results, arrays, first = [], {}, {}, None
    for spec in config["family"]:
        for i, seed in enumerate(seeds(config)):
            with progress.current().stage(f"fit {spec['name']} seed {seed}"):
                run = protocol.run_seed(config, spec, seed, cache, archs, datasets)
            results.setdefault(spec["name"], []).append(run.result)
            if i == 0:
                first = first or run.dataset
                arrays[spec["name"]] = run.arrays
                members.append(
                    Member(spec["name"], run.model, run.variables, run.posteriors, run.settings)
                )
    return Family(first, members, results, arrays, cache)


def reference(family: Family, config: dict) -> Member:
    """The reference member (first seed): the landscape study's network."""
    return next(m for m in family.members if m.name == config["reference"])


def train_settings(config: dict, spec: dict, seed: int) -> dict:
    """What a member's trained networks depend on."""
    keys = ("dataset", "num_train", "num_val", "num_test", "epochs", "batch_size")
    keys += ("learning_rate", "prior_prec")
    return {k: config[k] for k in keys} | {"spec": spec, "seed": seed}


def optimizer(config: dict):
    return optax.adam(config["learning_rate"])


def study_for(config: dict, ds, spec: dict, train) -> predictors.Study:
    """The method table's view of one member and seed (MC dropout, Concrete Dropout, the
    ensemble are built by ``methods.METHODS``)."""

    def no_laplace(*args):
        raise ValueError("config['methods']: Laplace posteriors come from config['recipes']")

    return predictors.Study(
        config,
        ds,
        train,
        network=lambda rate: network(spec, ds.num_classes, rate),
        concrete=lambda: concrete(config, ds, spec),
        laplace=no_laplace,
    )


def metric_values(family: Family, member: str, method: str, key, ood_set=None) -> np.ndarray:
    """One number per seed: ``key`` of ``method``'s scores (``"auroc"`` with ``ood_set``)."""
    values = []
    for run in family.results[member]:
        entry = run["methods"][method]
        values.append(entry[key][ood_set] if ood_set else entry[key])
    return np.asarray(values, float)
