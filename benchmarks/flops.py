"""Analytic floating-point operation counts of each benchmarked stage (for GFLOP/s).

Only the matrix products are counted (a multiply-add is 2 flops); activations, pooling,
softmax, random numbers and other elementwise work are left out, so GFLOP/s is a lower bound
of the arithmetic done and its fraction of the 2048^3 matmul rate says how close a stage
comes to the machine's limit. XLA's own cost analysis is not used: it counts the body of a
``lax.scan``/``while`` loop once, not once per iteration.

Each Dense/Conv layer ``l`` is described by ``k`` (inputs per position: ``d_in``, or
``kh kw c_in`` for a convolution), ``c`` (outputs), ``T`` (positions: 1 for a Dense layer on
``[B, d_in]``, output locations for a convolution) and ``r = k + 1`` (with the bias row):

- forward, ``B`` inputs: ``F(B) = sum_l 2 B T k c``;
- backward to the layer outputs (input gradients of every layer after the first):
  ``G(B) = sum_{l > 1} 2 B T k c``; a training step's weight gradients cost another ``F``;
- conv patches are strided slices (``bnn_jax.curvature.patches``): no products;
- training epoch on ``N`` examples: ``2 F(N) + G(N)``;
- KFAC accumulation: ``F(N) + G(N) + sum_l 2 N T (r^2 + c^2)`` (one MC sample);
  finalize: ``9 n^3`` per factor of size ``n`` (symmetric eigendecomposition with
  eigenvectors, Golub & Van Loan);
- diagonal: ``F(N) + G(N) + sum_l 2 N T r c`` (squared products or chunked
  per-example gradients, one per position);
- MC predictive with weight samples, ``S`` samples: ``S (sum_l 2 r c (r + c) + F(B))`` (each
  sample ``Q_A Z Q_G^T``, then a forward pass);
- local reparameterisation: per sample and input, a Dense layer costs
  ``2 r^2 + 4 r c + 2 c^2`` (rotation into the eigenbasis, the variance and mean products,
  rotation of the noise back) and a Conv layer a weight draw ``2 r c (r + c)`` plus ``2 T k c``;
- the Kronecker predictives' set-up (``predictive.kronecker.inverse_precisions``, once per
  call of the local and GLM predictives): ``1 / D`` per layer from one structure solve of a
  probe rotated into and out of the eigenbases, four rotations ``Q_A M Q_G^T`` of
  ``2 r c (r + c)`` each: ``8 r c (r + c)`` (``kronecker_setup``; not in the two formulas
  here, which count the per-input work; for KFAC ``1 / D`` is ``1 / (s lam_A lam_G + tau)``);
- GLM probit, ``C`` outputs: ``F(B) + C G(B) + sum_l 2 B T (r^2 + C c^2)`` (rotations
  into the eigenbases) ``+ 2 B (r c + C^2 c)`` per Dense layer or ``2 B C T r c + 2 B C^2 r c``
  per Conv layer (the covariance contractions);
- MC dropout, ``S`` masks: ``S F(B)`` for a loop of single passes; vmapped over the masks,
  the layers before the first dropout see no mask and run once: ``F_pre(B) + S F_post(B)``.
"""

from typing import NamedTuple

import jax

from bnn_jax.curvature import capture, find_layers


class LayerShape(NamedTuple):
    kind: str
    k: int
    c: int
    positions: int

    @property
    def r(self) -> int:
        return self.k + 1


def layer_shapes(apply_fn, params, input_shape) -> list[LayerShape]:
    """The Dense/Conv layers of ``apply_fn`` with their positions per input."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jax.numpy.float32)
    layers = find_layers(apply_fn, params, x)
    inputs = jax.eval_shape(lambda xs: capture(apply_fn, params, xs).inputs, x)
    return [
        LayerShape(layer.kind, layer.in_features, layer.out_features, inputs[layer.path].shape[1])
        for layer in layers
    ]


def forward(layers, batch: int) -> float:
    return sum(2.0 * batch * ly.positions * ly.k * ly.c for ly in layers)


def backward_to_outputs(layers, batch: int) -> float:
    return sum(2.0 * batch * ly.positions * ly.k * ly.c for ly in layers[1:])


def train_epoch(layers, num_data: int) -> float:
    return 2 * forward(layers, num_data) + backward_to_outputs(layers, num_data)


def _captured(layers, num_data: int) -> float:
    return forward(layers, num_data) + backward_to_outputs(layers, num_data)


def kfac_accumulate(layers, num_data: int) -> float:
    factors = sum(2.0 * num_data * ly.positions * (ly.r**2 + ly.c**2) for ly in layers)
    return _captured(layers, num_data) + factors


def kfac_finalize(layers) -> float:
    return sum(9.0 * (ly.r**3 + ly.c**3) for ly in layers)


def diagonal(layers, num_data: int) -> float:
    squares = sum(2.0 * num_data * ly.positions * ly.r * ly.c for ly in layers)
    return _captured(layers, num_data) + squares


def weight_samples(layers, num_samples: int) -> float:
    return num_samples * sum(2.0 * ly.r * ly.c * (ly.r + ly.c) for ly in layers)


def mc_predictive(layers, num_samples: int, batch: int) -> float:
    return weight_samples(layers, num_samples) + num_samples * forward(layers, batch)


def local_predictive(layers, num_samples: int, batch: int) -> float:
    per_input = 0.0
    for ly in layers:
        if ly.kind == "dense" and ly.positions == 1:
            per_input += 2.0 * ly.r**2 + 4.0 * ly.r * ly.c + 2.0 * ly.c**2
        else:
            per_input += 2.0 * ly.r * ly.c * (ly.r + ly.c) + 2.0 * ly.positions * ly.k * ly.c
    return num_samples * batch * per_input


def kronecker_setup(layers) -> float:
    """Products of the Kronecker predictives' ``1 / D`` from a probe and a solve."""
    return sum(8.0 * ly.r * ly.c * (ly.r + ly.c) for ly in layers)


def glm_probit(layers, batch: int, num_outputs: int) -> float:
    total = forward(layers, batch) + num_outputs * backward_to_outputs(layers, batch)
    for ly in layers:
        t, r, c, n = ly.positions, ly.r, ly.c, num_outputs
        total += 2.0 * batch * t * (r**2 + n * c**2)
        if ly.kind == "dense" and t == 1:
            total += 2.0 * batch * (r * c + n**2 * c)
        else:
            total += 2.0 * batch * n * t * r * c + 2.0 * batch * n**2 * r * c
    return total


def mc_dropout(layers, num_samples: int, batch: int, *, shared: int = 0) -> float:
    """``S`` forward passes, of which the first ``shared`` layers (before any dropout) once."""
    return forward(layers[:shared], batch) + num_samples * forward(layers[shared:], batch)
