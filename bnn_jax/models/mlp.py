"""Multi-layer perceptron with optional (MC) dropout."""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
    """Fully connected network ``x -> [Dense, activation, Dropout] * len(widths) -> Dense``.

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

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False, mc_dropout: bool = False):
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate: expected a rate in [0, 1), got {self.dropout_rate}")
        if x.ndim < 2:
            raise ValueError(f"x: expected shape [batch, features...], got {x.shape}")
        h = x.reshape((x.shape[0], -1))
        for width in self.widths:
            h = self.activation(nn.Dense(width)(h))
            h = nn.Dropout(self.dropout_rate, deterministic=not (train or mc_dropout))(h)
        return nn.Dense(self.num_outputs)(h)
