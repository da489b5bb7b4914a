"""Flax (linen) models sharing one calling convention, and helpers to use linen and nnx models as
pure functions (``make_apply_fn``, ``nnx_apply_fn``).

``model.apply(variables, x, train=False, mc_dropout=False, rngs=...)``: ``train`` switches on
dropout and BatchNorm batch statistics; ``mc_dropout`` switches on dropout only.
"""

from bnn_jax.models.concrete_dropout import (
    ConcreteDropout,
    ConcreteDropoutMLP,
    SpatialConcreteDropout,
)
from bnn_jax.models.core import (
    Variables,
    apply,
    init,
    make_apply_fn,
    make_per_example_dropout_apply_fn,
)
from bnn_jax.models.lenet import LeNet5
from bnn_jax.models.mlp import MLP
from bnn_jax.models.nnx import nnx_apply_fn
from bnn_jax.models.resnet import BasicBlock, ResNet

__all__ = [
    "MLP",
    "BasicBlock",
    "ConcreteDropout",
    "ConcreteDropoutMLP",
    "LeNet5",
    "ResNet",
    "SpatialConcreteDropout",
    "Variables",
    "apply",
    "init",
    "make_apply_fn",
    "make_per_example_dropout_apply_fn",
    "nnx_apply_fn",
]
