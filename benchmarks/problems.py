"""The benchmark problems: synthetic MNIST-shaped data, the two models, a trained MAP and fitted
posteriors, shared by the cases (``benchmarks.cases``) and the torch baseline.

Data: ``x ~ U[0, 1]`` images ``[n, 28, 28, 1]`` float32 and labels ``argmax(x W)`` of a fixed
random linear teacher ``W [784, 10]`` (learnable, so training means something), all from
``numpy.random.default_rng(seed)``.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import models

MODELS = ("mlp", "lenet")
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
# Dense/Conv layers ahead of the first dropout (MLP: Dense_0; LeNet: both convs and Dense_0):
# vmapped over masks they do not depend on, they run once for all MC-dropout samples
LAYERS_BEFORE_DROPOUT = {"mlp": 1, "lenet": 3}


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run (the issue's defaults; ``quick``/tests shrink them).

    Attributes:
      num_train, num_test: synthetic training and test inputs.
      batch_size: training and curvature-fit minibatch size.
      num_samples: MC samples ``T`` of the predictives (Laplace and dropout).
      chunk_size: MC samples drawn and evaluated at once (``lax.map``), per model: 1 for
        LeNet-5, whose batched-weight convolutions XLA:CPU runs slowly (see
        ``predictive.laplace_log_probs``).
      small_inputs: inputs of the interactive MC-predictive case.
      glm_inputs: inputs of the GLM probit case.
      marglik_steps: Adam steps of the marginal-likelihood tuning.
      train_epochs: epochs trained before fitting (the MAP both sides use).
      memory_samples: ``T`` values of the peak-memory measurement.
      mlp_widths: hidden widths of the MLP.
      dropout_rate: rate of the MC-dropout variant of each model.
      models: which of ``MODELS`` to run.
      repeats: timed repeats after the warm-up (the median is reported).
      budget_s: a case stops repeating once its timed repeats took this long (at least one).
      baseline: run laplace-torch in a subprocess.
      baseline_memory_gb: address-space limit of that subprocess (a baseline asking for more
        fails with an out-of-memory error that is recorded).
      baseline_timeout_s: the subprocess is stopped (and the reason recorded) after this.
      baseline_diag_backends: laplace-torch backends timed for the diagonal fit. The
        curvlinops ones build per-example Jacobians and fail for want of memory at these
        sizes after 7-17 s each (recorded in the full run); ``--quick`` skips them.
      seed: data, initialisation and PRNG seed.
    """

    num_train: int = 10_000
    num_test: int = 1_000
    batch_size: int = 500
    num_samples: int = 30
    chunk_size: dict[str, int] = dataclasses.field(default_factory=lambda: {"mlp": 10, "lenet": 1})
    small_inputs: int = 10
    glm_inputs: int = 100
    marglik_steps: int = 100
    train_epochs: int = 2
    memory_samples: tuple[int, ...] = (30, 1000)
    mlp_widths: tuple[int, ...] = (500, 300)
    dropout_rate: float = 0.5
    models: tuple[str, ...] = MODELS
    repeats: int = 5
    budget_s: float = 10.0
    baseline: bool = True
    baseline_memory_gb: float = 12.0
    baseline_timeout_s: float = 480.0
    baseline_diag_backends: tuple[str, ...] = (
        "default",
        "curvlinops_mc",
        "backpack",
        "backpack_mc",
    )
    seed: int = 0


def quick_config() -> Config:
    """Every case and baseline on less data and fewer repeats (the ``--quick`` run)."""
    return Config(
        num_train=1_000,
        num_test=100,
        glm_inputs=10,
        repeats=1,
        budget_s=1.0,
        baseline_diag_backends=("backpack", "backpack_mc"),
    )


def make_data(config: Config) -> dict[str, np.ndarray]:
    """``x_train [n, 28, 28, 1]``, ``y_train [n]`` (int32), ``x_test`` (float32)."""
    rng = np.random.default_rng(config.seed)
    teacher = rng.standard_normal((int(np.prod(IMAGE_SHAPE)), NUM_CLASSES)).astype(np.float32)
    n = config.num_train + config.num_test
    x = rng.random((n, *IMAGE_SHAPE), dtype=np.float32)
    y = np.argmax((x.reshape(n, -1) - 0.5) @ teacher, axis=1).astype(np.int32)
    return {
        "x_train": x[: config.num_train],
        "y_train": y[: config.num_train],
        "x_test": x[config.num_train :],
    }


def make_model(name: str, config: Config, *, dropout: bool = False):
    """The issue's models: ``mlp`` 784-500-300-10 (ReLU) and ``lenet`` (LeNet-5 on 28x28)."""
    rate = config.dropout_rate if dropout else 0.0
    if name == "mlp":
        return models.MLP(tuple(config.mlp_widths), NUM_CLASSES, dropout_rate=rate)
    if name == "lenet":
        return models.LeNet5(NUM_CLASSES, dropout_rate=rate, conv2_padding="VALID")
    raise ValueError(f"model: expected one of {MODELS}, got {name!r}")


def init_variables(name: str, config: Config):
    model = make_model(name, config)
    return models.init(model, jax.random.key(config.seed), IMAGE_SHAPE)


def to_numpy(params) -> dict[str, np.ndarray]:
    """Flax params as ``{"Dense_0/kernel": array, ...}`` (what the torch baseline loads)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(str(k.key) for k in path): np.asarray(leaf) for path, leaf in flat}


def float32(x) -> jax.Array:
    return jnp.asarray(x, jnp.float32)
