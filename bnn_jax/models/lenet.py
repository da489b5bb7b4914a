"""LeNet-5 (LeCun et al. 1998) with ReLU, max pooling and optional (MC) dropout."""

import flax.linen as nn
import jax

from bnn_jax import checks


class LeNet5(nn.Module):
    """``conv 6@5x5 (pad 2) -> pool -> conv 16@5x5 -> pool -> 120 -> 84 -> num_outputs``.

    Inputs are NHWC images. ``conv2_padding="VALID"`` is the classic 28x28 layout; use
    ``"SAME"`` for small images such as the 8x8 digits, where a valid 5x5 convolution on the
    4x4 pooled map would be empty. Dropout (``dropout_rate``) acts on the inputs of the two
    hidden dense layers' successors, active when ``train`` or ``mc_dropout`` is true. The
    attributes are checked when the model is built.
    """

    num_outputs: int = 10
    dropout_rate: float = 0.0
    conv2_padding: str = "VALID"

    def __post_init__(self):
        checks.positive_int("num_outputs", self.num_outputs)
        checks.rate("dropout_rate", self.dropout_rate)
        if self.conv2_padding not in ("VALID", "SAME"):
            raise ValueError(
                f"conv2_padding: expected 'VALID' or 'SAME', got {self.conv2_padding!r}"
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False, mc_dropout: bool = False):
        if x.ndim != 4:
            raise ValueError(
                f"x: expected NHWC images [batch, height, width, channels], got {x.shape}"
            )
        deterministic = not (train or mc_dropout)
        h = nn.relu(nn.Conv(6, (5, 5), padding=((2, 2), (2, 2)))(x))
        h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = nn.relu(nn.Conv(16, (5, 5), padding=self.conv2_padding)(h))
        h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = h.reshape((h.shape[0], -1))
        for width in (120, 84):
            h = nn.relu(nn.Dense(width)(h))
            h = nn.Dropout(self.dropout_rate, deterministic=deterministic)(h)
        return nn.Dense(self.num_outputs)(h)
