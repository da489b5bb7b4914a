"""Studies composed from the bnn_jax library; each module has ``main(config, out_dir) -> dict``."""
