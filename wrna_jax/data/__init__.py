"""Input data: the dataset registry, TFDS builders, preprocessing and tf.data pipelines.

`input.create_input(config.dataset)` is the one entry point of training and evaluation: it
prepares the dataset (`registry` says what it is, `prepare` downloads or generates it) and gives
its batches (`preprocessing` by family, `pipeline` for sharded, deterministic, resumable
tf.data streams). `canvases` generates Cluttered MNIST with numpy and `cluttered_mnist` stores it
as a TFDS dataset; `uec_food100` and `adience` build datasets from manual downloads (`manual`).

This package imports no TensorFlow itself (the registry and `canvases` work without it); the
modules that need it take it from `tensorflow_cpu`, which keeps it off the GPUs.
"""
