"""Input data: the dataset registry, TFDS builders, preprocessing, tf.data pipelines and the
device feed's arrays.

The host feed (`wrna_jax/feeds.py`) reads `input.create_input(config.dataset)`: it prepares the
dataset (`registry` says what it is, `prepare` downloads or generates it) and gives its batches
(`preprocessing` by family, `pipeline` for sharded, deterministic, resumable tf.data streams).
The device feed reads `array_sources` (prepared `arrays`, or numpy-generated: `canvases` for
Cluttered MNIST, `synthetic`) and augments with `device_preprocessing` in the `order` of its
stream. `cluttered_mnist` stores the canvases as a TFDS dataset; `uec_food100`, `adience` and
`stanford_cars` build datasets from manual downloads (`manual`).

This package imports no TensorFlow itself (the registry, the arrays and `canvases` work without
it); the modules that need it take it from `tensorflow_cpu`, which keeps it off the GPUs.
Importing it registers the project's datasets (`catalogue`).
"""

from wrna_jax.data import catalogue  # noqa: F401  (registers the datasets)
