"""wrna_jax: painless attention for CNNs (Wide Residual Networks with Attention) in JAX/Flax."""

__version__ = "0.1.0"
