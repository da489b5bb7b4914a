"""Timing harness: bnn_jax side by side with laplace-torch 0.3 and the machine's matmul limit
(``python -m benchmarks.run``), with laplax (``benchmarks.laplax_side``), on accelerators
(``benchmarks.device``) and as cost curves (``benchmarks.curves``); see
``benchmarks/README.md``."""
