"""Timing harness: bnn_jax side by side with laplace-torch 0.3 and the machine's matmul limit
(``python -m benchmarks.run``; see ``benchmarks/README.md``)."""
