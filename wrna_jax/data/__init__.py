"""Input data: the Cluttered Translated MNIST TFDS builder and tf.data input pipelines.

`cluttered_mnist` holds the dataset (a pure numpy generator plus a TFDS builder that registers
as `cluttered_mnist`); `pipeline` turns any prepared TFDS builder into sharded, deterministic,
resumable batches. Nothing in this package imports JAX.
"""
