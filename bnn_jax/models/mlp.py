"""Multi-layer perceptron with optional (MC) dropout."""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax

from bnn_jax import checks


def check_widths(widths, *, minimum_length: int = 0) -> None:
    """``widths``: a sequence of at least ``minimum_length`` hidden widths, integers >= 1."""
    if isinstance(widths, str) or not isinstance(widths, Sequence):
        raise ValueError(f"widths: expected a sequence of integers >= 1, got {widths!r}")
    if len(widths) < minimum_length:
        raise ValueError(f"widths: expected at least {minimum_length} widths, got {widths!r}")
    for i, width in enumerate(widths):
        checks.positive_int(f"widths[{i}]", width)


class MLP(nn.Module):
    """Fully connected network ``x -> [Dense, activation, Dropout] * len(widths) -> Dense``.

    The attributes are checked when the model is built (``ValueError`` naming the attribute):
    widths and ``num_outputs`` integers >= 1, ``dropout_rate`` in ``[0, 1)``.

    Inputs of any shape ``[batch, ...]`` are flattened. Dropout acts on the input of every
    layer after the first (the notebook's placement) and is active when ``train`` or
    ``mc_dropout`` is true; ``mc_dropout=True`` keeps it on at prediction time and needs a
    ``rngs={"dropout": key}``.

    Example:
        >>> model = MLP(widths=(500, 300), num_outputs=10, dropout_rate=0.1)
        >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 784)))
        >>> logits = model.apply(variables, x)                                  # deterministic
        >>> logits = model.apply(variables, x, mc_dropout=True, rngs={"dropout": key})
    """

    widths: Sequence[int]
    num_outputs: int
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    dropout_rate: float = 0.0

    def __post_init__(self):
        check_widths(self.widths)
        checks.positive_int("num_outputs", self.num_outputs)
        if not callable(self.activation):
            raise ValueError(f"activation: expected a function, got {self.activation!r}")
        checks.rate("dropout_rate", self.dropout_rate)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False, mc_dropout: bool = False):
        if x.ndim < 2:
            raise ValueError(f"x: expected shape [batch, features...], got {x.shape}")
        h = x.reshape((x.shape[0], -1))
        for width in self.widths:
            h = self.activation(nn.Dense(width)(h))
            h = nn.Dropout(self.dropout_rate, deterministic=not (train or mc_dropout))(h)
        return nn.Dense(self.num_outputs)(h)
