"""Per-example preprocessing by family: fine-grained (ImageNet-style), CIFAR and cluttered MNIST.

`PREPROCESSING[family]` makes a dataset's preprocessing from its registry entry and
`config.dataset`, and says the shape of what it yields (the model's input). A new family is one
`register_preprocessing` call.

Everything here is pure, stateless TensorFlow, meant to run inside `tf.data` maps. A training
example carries `rng`, a shape-[2] int64 seed that `pipeline.create_split` derives from
(seed, process_index, position in the stream); every random choice (crop offset, flip) is a
stateless function of it, so a seed fixes the augmentation and a resumed stream repeats it.

Fine-grained family (`FineGrainedPreprocess`), the paper's recipe on [0, 255] RGB:

* train: resize the shorter side to `resize_size` (256), take a random `image_size` (224)
  square crop, flip left-right with probability 1/2, normalise with the ImageNet mean and std.
  The crop is fused with JPEG decoding: the window that the random crop covers is computed in
  the ORIGINAL pixel grid (side `image_size * shorter / resize_size`, uniform integer offset),
  only that window is decoded (`tf.io.decode_and_crop_jpeg`) and resized to `image_size`.
  That has the distribution of resize-then-crop up to sub-pixel rounding of the offset, and
  resizes 224x224 outputs instead of whole images. libjpeg still entropy-decodes every row
  above the window's bottom edge, so the saving grows with the image: about 5% of the
  per-image time on 500x375 photos, 20% on 1024x768 (benchmarks/input_pipeline.py), more
  with box crops. Non-JPEG images (PNG, GIF, BMP) are decoded whole and cropped.
* eval: decode, resize the shorter side to `resize_size` (longer side
  `floor(resize_size * longer / shorter)`, as torchvision's `Resize`), centre crop
  `image_size` (offset `round((H - image_size) / 2)`, as torchvision's `CenterCrop`).
  With `ten_crop` the image becomes (10, image_size, image_size, 3): crops 0..4 are the
  top-left, top-right, bottom-left, bottom-right and centre crops, crop 5 + i is the
  left-right flip of crop i (torchvision's `TenCrop` has the same ten crops, but orders the
  flipped five by their position in the flipped image). Average the ten log-probabilities.
* `decoded_cache` (config.dataset.images.decoded_cache): the deterministic part, decode,
  region and resize of the shorter side to `resize_size`, rounded to uint8, runs before the
  pipeline's cache (`before_cache`), so each epoch only takes the random `image_size` crop
  (uniform offset, `tf.image.stateless_random_crop`) and flip, or the centre / ten crops, and
  normalises. Resize-then-crop: the training crops are drawn in the resized grid (not fused
  with decoding) and every pixel is rounded once to uint8 (at most 0.5/255 from the uncached
  eval pixels), so a run with it is not the same run as one without it; with it, the cache
  changes nothing (tests/test_fine_grained_data.py). The cache is held in memory
  (`config.dataset.cache`) or in files under `config.dataset.cache_dir` (Food-101).
* `bbox_key`: crop to the dataset's bounding box before anything else (the box is then the
  "image" that gets resized and cropped). TFDS boxes are normalised [ymin, xmin, ymax, xmax];
  several boxes (Stanford Dogs' `objects/bbox`) are merged into their union, so every
  annotated object stays in view; no box at all means the whole image.

Resizing is bilinear with half-pixel centres (the TF2 / PyTorch `align_corners=False`
convention) and, by default, without antialiasing: antialiased resizing roughly halves
throughput. Torchvision's PIL-based `Resize` antialiases, so pixel values differ slightly
from the released PyTorch pipeline when downscaling; `antialias=True` matches PIL's bilinear
filter to within rounding, at that cost.

CIFAR family (`CifarPreprocess`, the released WRN recipe): train pads 4 pixels by reflection
(the authors' `np.pad(..., mode='reflect')`), takes a random 32x32 crop and flips left-right
with probability 1/2; eval only normalises. Mean and std are the dataset's per-channel
statistics on [0, 1] pixels.

Cluttered-MNIST family: uint8 canvases to [0, 1] floats, nothing random (the canvases are random
already) and no standardisation (the network starts with BatchNorm).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from wrna_jax.data.pipeline import Example, PreprocessFn
from wrna_jax.data.registry import IMAGENET_MEAN, IMAGENET_STD, DatasetSpec
from wrna_jax.data.tensorflow_cpu import tf
from wrna_jax.errors import ConfigError
from wrna_jax.registry import Registry

# A [y, x, height, width] int32 pixel window from an image's [height, width].
WindowFn = Callable[[tf.Tensor], tf.Tensor]


def normalise(image: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """[0, 255] pixels -> float32 `(pixel / 255 - mean) / std`, per channel.

    With a static (..., H, W, C) shape the per-channel scale and offset are (H, W, C)
    constants: inside tf.data functions an elementwise op that broadcasts a (C,) vector
    costs about ten times a same-shape one (0.5 ms per 224x224 image here, a quarter of
    the whole training preprocessing).
    """
    scale = 1.0 / (255.0 * np.asarray(std, np.float32))
    offset = -np.asarray(mean, np.float32) / np.asarray(std, np.float32)
    image = tf.cast(image, tf.float32)
    if image.shape.rank is not None and image.shape.rank >= 3 \
            and image.shape[-3:].is_fully_defined():
        shape = image.shape[-3:].as_list()
        scale, offset = np.broadcast_to(scale, shape), np.broadcast_to(offset, shape)
    return image * tf.constant(scale) + tf.constant(offset)


def nested_get(example: Mapping[str, object], key: str) -> tf.Tensor:
    """`example['a']['b']` for key 'a/b' (TFDS nests sequence features such as objects/bbox)."""
    value = example
    for part in key.split("/"):
        value = value[part]
    return value


def nested_features(keys: Sequence[str]) -> dict[str, object]:
    """The `tfds.decode.PartialDecoding` feature spec {'a': {'b': True}} selecting `keys`."""
    spec: dict[str, object] = {}
    for key in keys:
        *parents, leaf = key.split("/")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = True
    return spec


def bbox_window(image_hw: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
    """The [y, x, h, w] pixel window covering the union of `boxes` in an image of `image_hw`.

    `boxes` is [4] or [N, 4] normalised [ymin, xmin, ymax, xmax]. The window is rounded
    outwards, clipped to the image and at least 1x1; with N = 0 it is the whole image.
    """
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    has_box = tf.shape(boxes)[0] > 0
    low = tf.where(has_box, tf.reduce_min(boxes[:, :2], axis=0), 0.0)
    high = tf.where(has_box, tf.reduce_max(boxes[:, 2:], axis=0), 1.0)
    image_hw = tf.cast(image_hw, tf.int32)
    size = tf.cast(image_hw, tf.float32)
    start = tf.cast(tf.floor(tf.clip_by_value(low, 0.0, 1.0) * size), tf.int32)
    start = tf.minimum(start, image_hw - 1)
    end = tf.cast(tf.math.ceil(tf.clip_by_value(high, 0.0, 1.0) * size), tf.int32)
    extent = tf.clip_by_value(end - start, 1, image_hw - start)
    return tf.concat([start, extent], axis=0)


def full_window(image_hw: tf.Tensor) -> tf.Tensor:
    """The [0, 0, h, w] window of the whole image."""
    return tf.concat([tf.zeros([2], tf.int32), tf.cast(image_hw, tf.int32)], axis=0)


def random_crop_window(region: tf.Tensor, image_size: int, resize_size: int,
                       seed: tf.Tensor) -> tf.Tensor:
    """The pixel window of a random `image_size` crop of `region` resized to shorter side
    `resize_size`: a square of side `image_size * shorter / resize_size` (at least 1) at a
    uniformly random integer offset inside `region` ([y, x, h, w])."""
    origin, extent = region[:2], region[2:]
    side = tf.cast(tf.round(tf.cast(tf.reduce_min(extent), tf.float32)
                            * (image_size / resize_size)), tf.int32)
    side = tf.clip_by_value(side, 1, tf.reduce_min(extent))
    offset = tf.random.stateless_uniform([2], seed, minval=0, maxval=tf.int32.max,
                                         dtype=tf.int32) % (extent - side + 1)
    return tf.concat([origin + offset, tf.stack([side, side])], axis=0)


def crop(image: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """`image[y:y + h, x:x + w]` for window [y, x, h, w]."""
    return tf.slice(image, tf.concat([window[:2], [0]], 0), tf.concat([window[2:], [-1]], 0))


def decode_window(image: tf.Tensor, window_fn: WindowFn) -> tf.Tensor:
    """uint8 RGB (h, w, 3) window of `image`, where the window is `window_fn([H, W])`.

    `image` is either encoded bytes (a scalar string: JPEG is decoded only inside the window,
    anything else is decoded whole then cropped) or already decoded uint8 (H, W, C).
    """
    if image.dtype == tf.string:
        def jpeg() -> tf.Tensor:
            window = window_fn(tf.image.extract_jpeg_shape(image)[:2])
            return tf.io.decode_and_crop_jpeg(image, window, channels=3)

        def other() -> tf.Tensor:
            decoded = tf.io.decode_image(image, channels=3, expand_animations=False)
            return crop(decoded, window_fn(tf.shape(decoded)[:2]))

        return tf.cond(tf.io.is_jpeg(image), jpeg, other)
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    return crop(image, window_fn(tf.shape(image)[:2]))


def resize_shorter_side(image: tf.Tensor, size: int, antialias: bool = False) -> tf.Tensor:
    """float32 `image` resized so its shorter side is `size`, the longer
    `floor(size * longer / shorter)` (torchvision's `Resize(size)`); bilinear."""
    hw = tf.shape(image)[:2]
    shorter, longer = tf.reduce_min(hw), tf.reduce_max(hw)
    scaled = (size * longer) // shorter
    new_hw = tf.where(hw[0] <= hw[1], tf.stack([size, scaled]), tf.stack([scaled, size]))
    return tf.image.resize(image, new_hw, method="bilinear", antialias=antialias)


def centre_offset(image_hw: tf.Tensor, size: int) -> tf.Tensor:
    """Top-left [y, x] of the centred `size` square: round((H - size) / 2), half to even as
    torchvision's `CenterCrop`."""
    return tf.cast(tf.round(tf.cast(image_hw - size, tf.float32) / 2.0), tf.int32)


def five_crops(image: tf.Tensor, size: int) -> list[tf.Tensor]:
    """The top-left, top-right, bottom-left, bottom-right and centre `size` squares."""
    hw = tf.shape(image)[:2]
    far = hw - size
    corners = [tf.stack([0, 0]), tf.stack([0, far[1]]), tf.stack([far[0], 0]), far,
               centre_offset(hw, size)]
    return [tf.ensure_shape(crop(image, tf.concat([yx, [size, size]], 0)),
                            [size, size, image.shape[-1]]) for yx in corners]


def ten_crops(crops: Sequence[tf.Tensor]) -> tf.Tensor:
    """(10, size, size, C): the five crops, then their left-right flips in the same order."""
    five = tf.stack(list(crops))
    return tf.concat([five, tf.reverse(five, axis=[2])], axis=0)


def _rng(example: Mapping[str, tf.Tensor], num: int) -> tf.Tensor:
    """`num` independent stateless seeds from the example's `rng`."""
    if "rng" not in example:
        raise KeyError("Training preprocessing needs the per-example seed example['rng']; "
                       "pipeline.create_split(train=True) adds it.")
    return tf.random.experimental.stateless_split(example["rng"], num)


@dataclasses.dataclass(frozen=True)
class FineGrainedPreprocess:
    """Fine-grained train/eval preprocessing (see the module docstring); a `PreprocessFn`.

    `decoders` is the partial decoding to read the builder with: only the image (left encoded,
    so decoding can fuse with cropping), the label and the box are read, which also keeps a
    cache small and skips features such as CUB's segmentation masks.
    """

    train: bool
    image_size: int = 224
    resize_size: int = 256
    bbox_key: str | None = None
    ten_crop: bool = False
    antialias: bool = False
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    decoded_cache: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.image_size <= self.resize_size:
            raise ConfigError(f"image_size={self.image_size}, resize_size={self.resize_size}: "
                              "need 0 < image_size <= resize_size.")
        if self.ten_crop and self.train:
            raise ValueError("ten_crop is an evaluation transform; training takes one crop.")

    @property
    def decoders(self) -> tfds.decode.PartialDecoding:
        keys = ["image", "label"] + ([self.bbox_key] if self.bbox_key else [])
        return tfds.decode.PartialDecoding(nested_features(keys),
                                           decoders={"image": tfds.decode.SkipDecoding()})

    @property
    def before_cache(self) -> Callable[[Example], Example] | None:
        """With `decoded_cache`: the deterministic part, run before the pipeline's cache (the
        image decoded, cut to its region and resized to `resize_size` on the shorter side, as
        uint8), so each epoch only crops, flips and normalises; else None."""
        return self.decode_and_resize if self.decoded_cache else None

    def decode_and_resize(self, example: Mapping[str, tf.Tensor]) -> Example:
        resized = resize_shorter_side(decode_window(example["image"], self.region_fn(example)),
                                      self.resize_size, self.antialias)
        return {"image": tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8), "label": example["label"]}

    def _from_resized(self, example: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """The crop(s) of a `decode_and_resize` image: random crop and flip (train), centre or
        ten crops (eval)."""
        image = example["image"]  # cropped and flipped as uint8, a quarter of the bytes to move
        size = self.image_size
        if self.train:
            crop_seed, flip_seed = tf.unstack(_rng(example, 2))
            image = tf.image.stateless_random_crop(image, [size, size, 3], crop_seed)
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        elif self.ten_crop:
            image = ten_crops(five_crops(image, size))
        else:
            offset = centre_offset(tf.shape(image)[:2], size)
            image = crop(image, tf.concat([offset, [size, size]], 0))
        return tf.cast(image, tf.float32)

    def region_fn(self, example: Mapping[str, tf.Tensor]) -> WindowFn:
        """The window of the image that stands for the whole image (its box, or all of it)."""
        if self.bbox_key is None:
            return full_window
        boxes = nested_get(example, self.bbox_key)
        return lambda image_hw: bbox_window(image_hw, boxes)

    def __call__(self, example: Mapping[str, tf.Tensor]) -> Example:
        region_fn = self.region_fn(example) if not self.decoded_cache else None
        size = self.image_size
        if self.decoded_cache:
            image = self._from_resized(example)
        elif self.train:
            crop_seed, flip_seed = tf.unstack(_rng(example, 2))
            window = decode_window(example["image"], lambda hw: random_crop_window(
                region_fn(hw), size, self.resize_size, crop_seed))
            image = tf.image.resize(window, [size, size], method="bilinear",
                                    antialias=self.antialias)
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        else:
            resized = resize_shorter_side(decode_window(example["image"], region_fn),
                                          self.resize_size, self.antialias)
            if self.ten_crop:
                image = ten_crops(five_crops(resized, size))
            else:
                offset = centre_offset(tf.shape(resized)[:2], size)
                image = crop(resized, tf.concat([offset, [size, size]], 0))
        image = tf.ensure_shape(image, ([10] if self.ten_crop else []) + [size, size, 3])
        return {"image": normalise(image, self.mean, self.std),
                "label": tf.cast(example["label"], tf.int32)}


@dataclasses.dataclass(frozen=True)
class CifarPreprocess:
    """CIFAR train (pad 4 by reflection, random 32x32 crop, flip; as the authors' and Zagoruyko's
    WRN code) / eval (normalise only); a `PreprocessFn`."""

    train: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    padding: int = 4
    image_size: int = 32
    padding_mode: str = "REFLECT"  # tf.pad's mode (numpy's 'reflect'); 'CONSTANT' pads with zeros

    @property
    def decoders(self) -> tfds.decode.PartialDecoding:
        return tfds.decode.PartialDecoding({"image": True, "label": True})

    def __call__(self, example: Mapping[str, tf.Tensor]) -> Example:
        shape = [self.image_size, self.image_size, 3]
        image = tf.ensure_shape(example["image"], shape)
        if self.train:
            crop_seed, flip_seed = tf.unstack(_rng(example, 2))
            pad = self.padding
            padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode=self.padding_mode)
            image = tf.image.stateless_random_crop(padded, shape, crop_seed)
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        return {"image": normalise(image, self.mean, self.std),
                "label": tf.cast(example["label"], tf.int32)}


def preprocess_cluttered_mnist(example: Mapping[str, tf.Tensor]) -> Example:
    """uint8 canvas -> float32 (H, W, 1) in [0, 1]; label -> int32."""
    return {"image": tf.cast(example["image"], tf.float32) / 255.0,
            "label": tf.cast(example["label"], tf.int32)}


# The families -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """A family's preprocessing.

    make(spec, config.dataset, train, ten_crop) -> the per-example function; `ten_crop` overrides
      the dataset's own setting for evaluation (validation during training uses one crop).
    shape(spec, config.dataset, builder) -> (H, W, C) of one preprocessed image (of one crop).
    """

    make: Callable[[DatasetSpec, Mapping[str, Any], bool, bool | None], PreprocessFn]
    shape: Callable[[DatasetSpec, Mapping[str, Any], Any], tuple[int, ...]]


PREPROCESSING: Registry[Preprocessing] = Registry("preprocessing family")


def register_preprocessing(family: str, preprocessing: Preprocessing) -> Preprocessing:
    return PREPROCESSING.add(family, preprocessing)


def preprocessing(family: str) -> Preprocessing:
    return PREPROCESSING[family]


def _stored_shape(spec: DatasetSpec, dataset: Mapping[str, Any], builder: Any) -> tuple[int, ...]:
    return tuple(builder.info.features["image"].shape)


def _fine_grained(spec: DatasetSpec, dataset: Mapping[str, Any], train: bool, ten_crop: bool | None) -> PreprocessFn:
    images = dataset["images"]
    if images["crop_to_bbox"] and spec.bbox_key is None:
        raise ConfigError(f"{spec.name} has no bounding boxes: set config.dataset.images.crop_to_bbox=False.")
    ten_crop = images["ten_crop"] if ten_crop is None else ten_crop
    return FineGrainedPreprocess(
        train=train, image_size=images["image_size"], resize_size=images["resize_size"],
        bbox_key=spec.bbox_key if images["crop_to_bbox"] else None, ten_crop=bool(ten_crop) and not train,
        antialias=images["antialias"], mean=spec.mean, std=spec.std,
        decoded_cache=bool(images.get("decoded_cache", False)))


register_preprocessing("fine_grained", Preprocessing(
    make=_fine_grained,
    shape=lambda spec, dataset, builder: (dataset["images"]["image_size"],) * 2 + (3,)))
register_preprocessing("cifar", Preprocessing(
    make=lambda spec, dataset, train, ten_crop: CifarPreprocess(train=train, mean=spec.mean, std=spec.std),
    shape=_stored_shape))
register_preprocessing("cluttered_mnist", Preprocessing(
    make=lambda spec, dataset, train, ten_crop: preprocess_cluttered_mnist, shape=_stored_shape))
