"""Per-example preprocessing inside compiled code, on prepared arrays (`data/arrays.py`): what
`data/preprocessing.py` does in tf.data, for the device feed. Imports no TensorFlow.

`DEVICE_PREPROCESSING[family](images, sizes, transposed, keys, ...)` turns a gathered batch of
uint8 arrays into the model's float32 input:

* fine-grained: train takes an `image_size` square at an offset drawn uniformly over each
  image's own stored region ([0, h - s] x [0, w - s]) and flips it left-right with probability
  1/2, as the decoded cache does on the host (`tf.image.stateless_random_crop` on the resized
  image); eval takes the centre crop (offset round((h - s) / 2), half to even, as torchvision's
  CenterCrop) or the ten crops (five crops, then their flips, `preprocessing.ten_crops`' order).
  Crops are taken in the stored (transposed) grid and transposed back, so offsets and flips are
  those of the image as it was. Normalised with the same per-channel scale and offset as
  `preprocessing.normalise`.
* cifar: reflection-pad 4, random 32 x 32 crop, flip (train); normalise.
* cluttered_mnist: x / 255 exactly as the host computes it (nothing random).

Random choices are drawn from `keys`, one per example, which the feed derives from (seed,
position of the example in the training stream), so a seed fixes the augmentation and a resumed
run repeats it. The host feed draws with TensorFlow's stateless RNG instead, so the two feeds
draw different crops with the same distribution (tests/test_feeds.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from wrna_jax.registry import Registry

# The 256 values of x / 255 as IEEE float32 division gives them (XLA compiles x / 255 as
# x * (1 / 255), which is one ulp off for some values).
_INTENSITIES = np.arange(256, dtype=np.float32) / np.float32(255)


def normalise(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """uint8 [0, 255] -> float32 (pixel / 255 - mean) / std per channel, computed as
    `preprocessing.normalise` computes it (pixel x scale + offset)."""
    scale = jnp.asarray(1.0 / (255.0 * np.asarray(std, np.float32)), jnp.float32)
    offset = jnp.asarray(-np.asarray(mean, np.float32) / np.asarray(std, np.float32), jnp.float32)
    return images.astype(jnp.float32) * scale + offset


def original_shape(sizes: jax.Array, transposed: jax.Array) -> jax.Array:
    """(B, 2) height and width of each image as it was (before the layout transposed it)."""
    return jnp.where(transposed[:, None], sizes[:, ::-1], sizes)


def crop(images: jax.Array, transposed: jax.Array, offsets: jax.Array, flips: jax.Array, size: int) -> jax.Array:
    """(B, size, size, C) crops at `offsets` (B, 2: y, x in the original orientation), flipped
    left-right where `flips`."""

    def one(image, transposed, offset, flip):
        stored = jnp.where(transposed, offset[::-1], offset)
        window = jax.lax.dynamic_slice(image, (stored[0], stored[1], 0), (size, size, image.shape[-1]))
        window = jnp.where(transposed, jnp.swapaxes(window, 0, 1), window)
        return jnp.where(flip, window[:, ::-1], window)

    return jax.vmap(one)(images, transposed, offsets.astype(jnp.int32), flips)


def random_offsets(keys: jax.Array, shapes: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """Per example: an offset uniform over [0, H - size] x [0, W - size] of its original
    (H, W) and a left-right flip with probability 1/2."""

    def one(key, shape):
        crop_key, flip_key = jax.random.split(key)
        offset = jax.random.randint(crop_key, (2,), 0, shape - size + 1)
        return offset, jax.random.bernoulli(flip_key)

    return jax.vmap(one)(keys, shapes)


def centre_offsets(shapes: jax.Array, size: int) -> jax.Array:
    """round((H - size) / 2), round((W - size) / 2), half to even."""
    return jnp.round((shapes - size) / 2).astype(jnp.int32)


def ten_crop(images: jax.Array, transposed: jax.Array, shapes: jax.Array, size: int) -> jax.Array:
    """(B, 10, size, size, C): top-left, top-right, bottom-left, bottom-right and centre crops,
    then the same five flipped."""
    far = shapes - size
    zero = jnp.zeros_like(far[:, 0])
    corners = [jnp.stack([zero, zero], 1), jnp.stack([zero, far[:, 1]], 1), jnp.stack([far[:, 0], zero], 1),
               far, centre_offsets(shapes, size)]
    crops = [crop(images, transposed, offsets, jnp.full(len(images), flip), size)
             for flip in (False, True) for offsets in corners]
    return jnp.stack(crops, axis=1)


def fine_grained(images: jax.Array, sizes: jax.Array, transposed: jax.Array, keys: jax.Array | None, *,
                 image_size: int, ten_crops: bool, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """The fine-grained family (module docstring); `keys` None for evaluation."""
    shapes = original_shape(sizes, transposed)
    if keys is not None:
        offsets, flips = random_offsets(keys, shapes, image_size)
        return normalise(crop(images, transposed, offsets, flips, image_size), mean, std)
    if ten_crops:
        return normalise(ten_crop(images, transposed, shapes, image_size), mean, std)
    no_flip = jnp.zeros(len(images), bool)
    return normalise(crop(images, transposed, centre_offsets(shapes, image_size), no_flip, image_size), mean, std)


def cifar(images: jax.Array, sizes: jax.Array, transposed: jax.Array, keys: jax.Array | None, *,
          image_size: int, ten_crops: bool, mean: Sequence[float], std: Sequence[float], padding: int = 4) -> jax.Array:
    """CIFAR: reflection pad, random crop and flip for training (`preprocessing.CifarPreprocess`)."""
    if keys is not None:
        padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="reflect")
        shapes = jnp.tile(jnp.asarray(padded.shape[1:3], jnp.int32), (len(images), 1))
        offsets, flips = random_offsets(keys, shapes, images.shape[1])
        images = crop(padded, jnp.zeros(len(images), bool), offsets, flips, images.shape[1])
    return normalise(images, mean, std)


def cluttered_mnist(images: jax.Array, sizes: jax.Array, transposed: jax.Array, keys: jax.Array | None,
                    **_: object) -> jax.Array:
    """uint8 canvases -> float32 in [0, 1], the host's x / 255 bit for bit."""
    return jnp.asarray(_INTENSITIES)[images]


DevicePreprocessFn = Callable[..., jax.Array]
DEVICE_PREPROCESSING: Registry[DevicePreprocessFn] = Registry("preprocessing family on the device")
for _family, _fn in (("fine_grained", fine_grained), ("cifar", cifar), ("cluttered_mnist", cluttered_mnist)):
    DEVICE_PREPROCESSING.add(_family, _fn)
