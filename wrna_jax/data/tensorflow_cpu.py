"""TensorFlow for the input pipelines, kept off the GPUs (they are JAX's): the data modules that
need TensorFlow import it from here (`from wrna_jax.data.tensorflow_cpu import tf`)."""

import tensorflow as tf

try:
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # TensorFlow was already initialised; nothing to do.
    pass

__all__ = ["tf"]
