"""Concrete Dropout (Gal, Hron & Kendall 2017): dropout whose rate ``p`` is learned per layer.

A :class:`ConcreteDropout` layer wraps a ``Dense`` layer (``SpatialConcreteDropout`` a ``Conv``),
drops the wrapped layer's *inputs* with a continuous relaxation of the Bernoulli mask, and sows
the layer's share of the variational objective into the ``"losses"`` collection, which
:func:`bnn_jax.training.train` adds to the minibatch-mean NLL.

Relaxed mask (the binary Concrete distribution at temperature ``t``, ``u ~ U(0, 1)``)::

    drop = sigmoid((log p - log(1 - p) + log u - log(1 - u)) / t),   keep z = 1 - drop,
    x_dropped = x * z / (1 - p).

The notebook's imported copy of the layer dropped the ``- log(1 - p)`` term, which replaces the
logit of ``p`` by ``log p``: its masks then drop units with probability ``p / (1 + p)`` (in the
``t -> 0`` limit), not ``p``, while the regulariser and the ``1/(1-p)`` rescaling use ``p``. Here
the full logit is used (it is the parameter ``p_logit`` itself, so it is exact).

Regulariser of one layer (the reference Keras code, ``yaringal/ConcreteDropout``)::

    R = weight_regularizer * sum(W^2) / (1 - p)
        + dropout_regularizer * K * (p log p + (1 - p) log(1 - p)),

with ``W`` the wrapped layer's ``kernel`` only (its bias is not included, as in the reference
Keras code) and ``K`` the number of units a mask drops: the input features of a ``Dense``
layer, the input channels of a ``Conv`` layer. Reference defaults: ``weight_regularizer=1e-6``,
``dropout_regularizer=1e-5``, initial ``p`` drawn uniformly from ``[init_min, init_max] =
[0.1, 0.1]`` (on the logit scale). Guidance (paper, section 3, and the reference docstring): with
prior length-scale ``l``, model precision ``tau`` (inverse observation noise; 1 for
classification) and ``N`` training examples, ``weight_regularizer = l^2 / (tau N)`` and
``dropout_regularizer = 2 / (tau N)``; the reference suggests dropping the factor 2 for the
cross-entropy loss. These weights assume the minibatch-*mean* NLL, as in ``training.train``.
The regulariser already is the Gaussian prior of the wrapped kernels, so train Concrete Dropout
models with ``prior_prec=0`` (a positive ``prior_prec`` would also shrink ``p_logit`` towards
0, i.e. ``p`` towards 0.5).

Modes: the mask is sampled when ``train`` or ``mc_dropout`` is true (the reference code's
``is_mc_dropout=True`` always samples). With both false the layer is deterministic and returns
the expected output of plain dropout, ``layer(x)`` (no mask, no ``1/(1-p)`` rescaling). The mask
is drawn from the ``"dropout"`` PRNG stream, independently for every example of the batch; the
MC predictive of :mod:`bnn_jax.dropout` evaluates every input with the same mask.
"""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import checks
from bnn_jax.models.mlp import check_widths


def relaxed_keep_mask(p_logit: jax.Array, uniform: jax.Array, temperature: float) -> jax.Array:
    """Relaxed Bernoulli keep mask ``z = 1 - sigmoid((logit p + log u - log(1 - u)) / t)``.

    Args:
      p_logit: ``log p - log(1 - p)``, the logit of the drop probability ``p``.
      uniform: ``u`` in ``(0, 1)``, any shape broadcastable with ``p_logit``.
      temperature: ``t > 0``; as ``t -> 0`` the mask tends to a Bernoulli(1 - p) draw.

    Returns:
      The keep mask, in ``[0, 1]``, differentiable in ``p_logit``.
    """
    noise = jnp.log(uniform) - jnp.log1p(-uniform)
    return jax.nn.sigmoid(-(p_logit + noise) / temperature)


def concrete_regularizer(
    kernel: jax.Array,
    p_logit: jax.Array,
    *,
    input_dim: int,
    weight_regularizer: float,
    dropout_regularizer: float,
) -> jax.Array:
    """Concrete Dropout regulariser ``wr sum(kernel^2) / (1-p) + dr K (p log p + (1-p) log(1-p))``.

    ``K = input_dim``, ``p = sigmoid(p_logit)``; the logarithms are ``log_sigmoid(+-p_logit)``,
    finite for any ``p_logit``.
    """
    p = jax.nn.sigmoid(p_logit)
    weight_term = weight_regularizer * jnp.sum(kernel**2) / jax.nn.sigmoid(-p_logit)
    neg_entropy = p * jax.nn.log_sigmoid(p_logit) + (1 - p) * jax.nn.log_sigmoid(-p_logit)
    return weight_term + dropout_regularizer * input_dim * neg_entropy


def check_settings(module) -> None:
    """Raise ``ValueError`` naming the first Concrete Dropout setting of ``module`` outside its
    range: ``0 <= weight_regularizer, dropout_regularizer < inf``, ``0 < init_min <= init_max
    < 1`` and ``0 < temperature < inf``."""
    checks.nonnegative("weight_regularizer", module.weight_regularizer)
    checks.nonnegative("dropout_regularizer", module.dropout_regularizer)
    if not 0.0 < module.init_min <= module.init_max < 1.0:
        raise ValueError(
            "init_min, init_max: expected 0 < init_min <= init_max < 1, got "
            f"{module.init_min}, {module.init_max}"
        )
    checks.positive("temperature", module.temperature)


def _logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p))


class ConcreteDropout(nn.Module):
    """Concrete Dropout on the inputs of ``layer`` (a ``nn.Dense``), with a learned rate ``p``.

    ``p = sigmoid(p_logit)`` is the parameter ``"p_logit"`` of this module; the wrapped layer's
    parameters live where the layer was constructed (flax's convention for wrappers such as
    ``nn.WeightNorm``). Each call sows the regulariser (module docstring) into
    ``"losses"/"concrete_dropout"`` (overwriting, so passing old ``"losses"`` does not double it).

    Attributes:
      layer: the wrapped module; it must own a ``"kernel"`` parameter.
      weight_regularizer: ``wr >= 0`` (reference default ``1e-6``; guidance ``l^2 / (tau N)``).
      dropout_regularizer: ``dr >= 0`` (reference default ``1e-5``; guidance ``2 / (tau N)``).
      init_min, init_max: range ``0 < init_min <= init_max < 1`` of the initial ``p``.
      temperature: of the relaxed mask (0.1, as in the reference ``ConcreteDropout``).

    Example:
      >>> class Net(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x, *, train=False, mc_dropout=False):
      ...         h = nn.relu(nn.Dense(64)(x))
      ...         return ConcreteDropout(nn.Dense(2), weight_regularizer=1e-4,
      ...                                dropout_regularizer=1e-2)(h, train=train,
      ...                                                          mc_dropout=mc_dropout)
    """

    layer: nn.Module
    weight_regularizer: float = 1e-6
    dropout_regularizer: float = 1e-5
    init_min: float = 0.1
    init_max: float = 0.1
    temperature: float = 0.1

    def noise_shape(self, x: jax.Array) -> tuple[int, ...]:
        """Shape of one mask draw: one unit per input feature and example."""
        return x.shape

    def input_dim(self, x: jax.Array) -> int:
        """``K``: the number of units one example's mask drops (input features)."""
        return x.shape[-1]

    def uniform_noise(self, shape: tuple[int, ...], dtype) -> jax.Array:
        """``u ~ U(tiny, 1)`` from the ``"dropout"`` stream (``log u`` and ``log(1-u)`` finite)."""
        tiny = jnp.finfo(dtype).tiny
        return jax.random.uniform(self.make_rng("dropout"), shape, dtype, minval=tiny)

    def __post_init__(self):
        if not isinstance(self.layer, nn.Module):
            raise ValueError(f"layer: expected a flax module (nn.Dense), got {self.layer!r}")
        check_settings(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False, mc_dropout: bool = False):
        low, high = _logit(self.init_min), _logit(self.init_max)
        p_logit = self.param(
            "p_logit", lambda key: jax.random.uniform(key, (), jnp.float32, low, high)
        )
        if train or mc_dropout:
            dtype = jnp.result_type(x, p_logit)
            uniform = self.uniform_noise(self.noise_shape(x), dtype)
            mask = relaxed_keep_mask(p_logit, uniform, self.temperature)
            x = x * mask / jax.nn.sigmoid(-p_logit)
        out = self.layer(x)
        regularizer = concrete_regularizer(
            self.layer.variables["params"]["kernel"],
            p_logit,
            input_dim=self.input_dim(x),
            weight_regularizer=self.weight_regularizer,
            dropout_regularizer=self.dropout_regularizer,
        )
        self.sow("losses", "concrete_dropout", regularizer, reduce_fn=lambda _, new: new)
        return out


class SpatialConcreteDropout(ConcreteDropout):
    """Concrete Dropout of whole input channels of a ``nn.Conv`` (one mask per channel and
    example, shared over the spatial positions), for inputs ``[batch, ..., channels]``.

    ``K`` in the regulariser is the number of input channels (the reference
    ``SpatialConcreteDropout``). The reference Keras code uses temperature 2/3 for this variant;
    the default here is 0.1 like the dense layer: pass ``temperature=2/3`` to match it.
    """

    def noise_shape(self, x: jax.Array) -> tuple[int, ...]:
        """One mask value per example and input channel: ``[batch, 1, ..., 1, channels]``."""
        return (x.shape[0], *(1 for _ in x.shape[1:-1]), x.shape[-1])


class ConcreteDropoutMLP(nn.Module):
    """The notebook's network: ``Dense(widths[0])`` and activation, then Concrete Dropout around
    every further ``Dense`` (``widths[1:]``, each followed by the activation) and around the
    output ``Dense(num_outputs)``.

    The notebook used ``widths=(500, 500)``, ``num_outputs=2``, ReLU,
    ``weight_regularizer=1e-3`` and ``dropout_regularizer=1``; the defaults here are the
    reference code's. Parameters: ``dense_0 .. dense_L`` (the last is the output layer) and
    ``concrete_dropout_1 .. concrete_dropout_L`` holding ``p_logit`` (read them with
    :func:`bnn_jax.dropout.concrete_rates`).

    Example:
      >>> model = ConcreteDropoutMLP((500, 500), 2, weight_regularizer=1e-3,
      ...                            dropout_regularizer=1.0)
      >>> result = training.train(model, x, y, key=key, epochs=500, batch_size=32,
      ...                         epoch_metrics=lambda v: dropout.concrete_rates(v["params"]))
    """

    widths: Sequence[int] = (500, 500)
    num_outputs: int = 2
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    weight_regularizer: float = 1e-6
    dropout_regularizer: float = 1e-5
    init_min: float = 0.1
    init_max: float = 0.1
    temperature: float = 0.1

    def __post_init__(self):
        check_widths(self.widths, minimum_length=1)
        checks.positive_int("num_outputs", self.num_outputs)
        if not callable(self.activation):
            raise ValueError(f"activation: expected a function, got {self.activation!r}")
        check_settings(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False, mc_dropout: bool = False):
        if x.ndim < 2:
            raise ValueError(f"x: expected shape [batch, features...], got {x.shape}")
        h = x.reshape((x.shape[0], -1))
        h = self.activation(nn.Dense(self.widths[0], name="dense_0")(h))
        sizes = (*self.widths[1:], self.num_outputs)
        for i, size in enumerate(sizes, start=1):
            wrapped = ConcreteDropout(
                nn.Dense(size, name=f"dense_{i}"),
                weight_regularizer=self.weight_regularizer,
                dropout_regularizer=self.dropout_regularizer,
                init_min=self.init_min,
                init_max=self.init_max,
                temperature=self.temperature,
                name=f"concrete_dropout_{i}",
            )
            h = wrapped(h, train=train, mc_dropout=mc_dropout)
            if i < len(sizes):
                h = self.activation(h)
        return h
