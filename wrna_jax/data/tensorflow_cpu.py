"""TensorFlow for the input pipelines, kept off the GPUs (they are JAX's) and imported with its
C++ start-up lines off the console (`console.import_tensorflow`, at the verbosity of the command
line): the data modules that need TensorFlow import it from here
(`from wrna_jax.data.tensorflow_cpu import tf`), so nothing else loads it."""

import sys

from wrna_jax import console

console.import_tensorflow(console.verbosity_in(sys.argv))

import tensorflow as tf  # noqa: E402

try:
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # TensorFlow was already initialised; nothing to do.
    pass

__all__ = ["tf"]
