"""Input data: TFDS builders, the dataset registry, preprocessing and tf.data pipelines.

`datasets` maps `config.dataset` to a prepared builder and its preprocessing; `pipeline` turns
a builder into sharded, deterministic, resumable batches; `preprocessing` holds the
fine-grained and CIFAR augmentations; `cluttered_mnist`, `uec_food100` and `adience` are TFDS
builders (generated locally, or read from a manual download, with helpers in `manual`).
Nothing in this package imports JAX.
"""

import tensorflow as tf

try:
    tf.config.set_visible_devices([], "GPU")  # Input pipelines run on the CPU; GPUs are JAX's.
except RuntimeError:  # TensorFlow was already initialised; nothing to do.
    pass
