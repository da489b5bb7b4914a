"""CIFAR-style ResNet (He et al. 2016, section 4.2) with BatchNorm, scaled by depth and width."""

import flax.linen as nn
import jax

from bnn_jax import checks


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and an identity (or 1x1 projection) shortcut."""

    features: int
    strides: int = 1

    def __post_init__(self):
        checks.positive_int("features", self.features)
        checks.positive_int("strides", self.strides)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool):
        norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)
        h = nn.Conv(self.features, (3, 3), strides=self.strides, use_bias=False)(x)
        h = nn.relu(norm()(h))
        h = nn.Conv(self.features, (3, 3), use_bias=False)(h)
        h = norm()(h)
        if x.shape[-1] != self.features or self.strides != 1:
            x = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(x)
            x = norm()(x)
        return nn.relu(h + x)


class ResNet(nn.Module):
    """ResNet-(6n+2): a 3x3 stem, three stages of ``n`` basic blocks with ``width, 2 width,
    4 width`` channels (stride 2 between stages), global average pooling, optional dropout and
    a dense classifier. ``depth`` must be ``6n + 2`` (8, 14, 20, 32, ...).

    BatchNorm uses batch statistics when ``train`` is true (pass ``mutable=["batch_stats"]``)
    and running averages otherwise; ``mc_dropout`` turns on only the dropout before the
    classifier, so BatchNorm stays in inference mode for MC prediction. The attributes are
    checked when the model is built.
    """

    depth: int = 8
    width: int = 16
    num_outputs: int = 10
    dropout_rate: float = 0.0

    def __post_init__(self):
        depth = checks.positive_int("depth", self.depth)
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"depth: expected 6n + 2 with n >= 1 (8, 14, 20, ...), got {depth}")
        checks.positive_int("width", self.width)
        checks.positive_int("num_outputs", self.num_outputs)
        checks.rate("dropout_rate", self.dropout_rate)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False, mc_dropout: bool = False):
        if x.ndim != 4:
            raise ValueError(
                f"x: expected NHWC images [batch, height, width, channels], got {x.shape}"
            )
        blocks_per_stage = (self.depth - 2) // 6
        h = nn.Conv(self.width, (3, 3), use_bias=False)(x)
        h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(h))
        for stage in range(3):
            for block in range(blocks_per_stage):
                strides = 2 if stage > 0 and block == 0 else 1
                h = BasicBlock(self.width * 2**stage, strides)(h, train=train)
        h = h.mean(axis=(1, 2))
        h = nn.Dropout(self.dropout_rate, deterministic=not (train or mc_dropout))(h)
        return nn.Dense(self.num_outputs)(h)
