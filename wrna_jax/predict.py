"""Predictions for image files (`predict.py`): the top-k classes with their names and
probabilities, the gates' weight of every hypothesis, and one PNG per image with the attention
masks of every module and head over it; all of it also as predictions.json.

The model comes from a run's checkpoint (`--workdir`, `--checkpoint`) or from a checkpoint of
the authors' PyTorch code (`released`: the model settings are read from the file,
`weights/released.py`). Images are preprocessed as the config's evaluation preprocesses its
split with the config's feed (fine-grained: shorter side to `resize_size`, centre crop; no
bounding box), so a prediction is what `eval.py` computes for that image. Class names are the
prepared TFDS dataset's when it is in `config.dataset.data_dir`, else the class indices. Without
TensorFlow, images are decoded with Pillow and resized with `jax.image.resize` (bilinear,
half-pixel centres, as TensorFlow's; it may round a pixel to the other uint8 level than
TensorFlow does) before the device feed's centre crop.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from wrna_jax import feeds, parallel, plots, validation, workdir
from wrna_jax.data import arrays, device_preprocessing
from wrna_jax.data.registry import dataset_spec
from wrna_jax.errors import ConfigError, MissingFileError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def image_paths(inputs: Sequence[str]) -> list[str]:
    """The image files named or found (sorted, not recursively) in the named folders."""
    if not inputs:
        raise ConfigError("no images: name image files or folders after the flags, e.g. "
                          "predict.py --config=... --workdir=... photo.jpg photos/")
    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, n) for n in os.listdir(item) if n.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise MissingFileError(f"{item}: no {'/'.join(IMAGE_SUFFIXES)} files in this folder.")
            paths += found
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise MissingFileError(f"{item}: no such image file or folder.")
    return paths


def class_names(config: ml_collections.ConfigDict, num_classes: int) -> list[str]:
    """The label names of the TFDS dataset when it is prepared in `config.dataset.data_dir`
    (nothing is downloaded or generated), else '0', '1', ..."""
    spec = dataset_spec(config.dataset)
    names = None
    if not spec.prepare and spec.host_feed and feeds.tensorflow_installed():  # TFDS knows the names
        try:
            import tensorflow_datasets as tfds

            from wrna_jax.data import tensorflow_cpu  # noqa: F401  (TensorFlow quietly, before TFDS loads it)

            if spec.module:
                importlib.import_module(spec.module)
            builder = tfds.builder(spec.builder_name(config.dataset), data_dir=config.dataset.data_dir)
            if builder.is_prepared():
                names = builder.info.features["label"].names
        except Exception:  # not prepared or not readable here: the indices are still useful
            names = None
    return list(names) if names and len(names) == num_classes else [str(i) for i in range(num_classes)]


def preprocess(config: ml_collections.ConfigDict, path: str) -> np.ndarray:
    """The image file as the config's evaluation preprocesses an image of its dataset (the host
    pipeline's where TensorFlow is installed, else the device feed's)."""
    spec = dataset_spec(config.dataset)
    dataset = config.dataset.copy_and_resolve_references()
    if "images" in dataset:
        dataset.images.update(crop_to_bbox=False, ten_crop=False)  # a photo has no box
    if not feeds.tensorflow_installed():
        return _on_device(spec, dataset, _decode_without_tensorflow(spec, dataset, path))
    from wrna_jax.data import preprocessing
    from wrna_jax.data.tensorflow_cpu import tf

    with open(path, "rb") as f:
        encoded = f.read()
    device = feeds.choose(config) == "device"
    try:
        if device and spec.family == "fine_grained":
            images = dataset.images
            decode = preprocessing.FineGrainedPreprocess(
                train=False, image_size=images.image_size, resize_size=images.resize_size,
                antialias=images.antialias, decoded_cache=True)
            resized = decode.decode_and_resize({"image": tf.constant(encoded), "label": tf.constant(0)})
            return _on_device(spec, dataset, resized["image"].numpy())
        if device:
            channels = 1 if spec.family == "cluttered_mnist" else 3
            return _on_device(spec, dataset, tf.io.decode_image(encoded, channels=channels,
                                                                 expand_animations=False).numpy())
        if spec.family == "fine_grained":
            image = tf.constant(encoded)
        else:
            channels = 1 if spec.family == "cluttered_mnist" else 3
            image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
        fn = preprocessing.preprocessing(spec.family).make(spec, dataset, False, False)
        return fn({"image": image, "label": tf.constant(0, tf.int64)})["image"].numpy()
    except tf.errors.InvalidArgumentError as error:
        raise ConfigError(f"{path}: not an image that can be read ({error.message.splitlines()[0]}).") from None


def _decode_without_tensorflow(spec: Any, dataset: ml_collections.ConfigDict, path: str) -> np.ndarray:
    """uint8 (H, W, C), decoded with Pillow; fine-grained images resized to shorter side
    `resize_size` (torchvision's sizes, bilinear with half-pixel centres as TensorFlow's)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            decoded = np.asarray(image.convert("L" if spec.family == "cluttered_mnist" else "RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise ConfigError(f"{path}: not an image that can be read ({error}).") from None
    if decoded.ndim == 2:
        decoded = decoded[..., None]
    if spec.family != "fine_grained":
        return decoded
    images = dataset.images
    h, w = decoded.shape[:2]
    short = images.resize_size
    size = (short, short * w // h) if h <= w else (short * h // w, short)
    resized = jax.image.resize(decoded.astype(np.float32), (*size, decoded.shape[2]), "bilinear",
                               antialias=images.antialias)
    return np.asarray(jnp.clip(jnp.round(resized), 0, 255)).astype(np.uint8)


def _on_device(spec: Any, dataset: ml_collections.ConfigDict, decoded: np.ndarray) -> np.ndarray:
    """The device feed's evaluation preprocessing of one decoded (and, fine-grained, resized) image."""
    fn = device_preprocessing.DEVICE_PREPROCESSING[spec.family]
    if spec.family != "fine_grained":
        one = arrays.ImageArrays.uniform(decoded[None], np.zeros(1))
        settings = dict(image_size=None, ten_crops=False)
    else:
        images = dataset.images
        long = arrays.long_side(images.resize_size, images.max_aspect_ratio)
        one = arrays.stack([(decoded, 0)], (images.resize_size, long, decoded.shape[2]), 1, long=long,
                           image_size=images.image_size)
        settings = dict(image_size=images.image_size, ten_crops=False)
    return np.asarray(fn(jnp.asarray(one.images), jnp.asarray(one.sizes), jnp.asarray(one.transposed), None,
                         mean=spec.mean, std=spec.std, **settings)[0])


def load_model(config: ml_collections.ConfigDict, input_shape: tuple[int, ...], *, workdir_path: str | None,
               which: str = "best", released: str | None = None) -> tuple[Any, Any, ml_collections.ConfigDict, str]:
    """(model, variables, config, description) of a run's checkpoint or a released file."""
    if released:
        from wrna_jax.weights.released import load_released

        gate_fn = config.attention.gate_fn or "softmax"
        model, variables, config = load_released(released, config, gate_fn=gate_fn)
        return model, variables, config, f"released checkpoint {released}"
    from wrna_jax.evaluate import Restorer
    from wrna_jax.models import create_model

    validation.check_config(config)
    workdir.check_run_exists(workdir_path)
    model = create_model(config)
    restorer = Restorer(config, workdir_path, which)
    try:
        step, variables = restorer.variables(model, input_shape, parallel.create_mesh(1))
    finally:
        restorer.close()
    return model, variables, config, f"{workdir_path} step {step}"


def predict(config: ml_collections.ConfigDict, inputs: Sequence[str], output_dir: str, *,
            workdir_path: str | None = None, which: str = "best", released: str | None = None,
            top_k: int = 5) -> list[dict[str, Any]]:
    """Predicts every image of `inputs`, writes <output_dir>/<name>_attention.png per image and
    predictions.json; returns the predictions."""
    paths = image_paths(inputs)
    if top_k < 1:
        raise ConfigError(f"--top_k={top_k}: use 1 or more.")
    workdir.check_writable(output_dir, "--output_dir")
    images = np.stack([preprocess(config, p) for p in paths])
    model, variables, config, source = load_model(config, images.shape[1:], workdir_path=workdir_path,
                                                  which=which, released=released)
    names = class_names(config, model.num_classes)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    predictions = []
    for start in range(0, len(paths), config.eval_batch_size):
        batch = images[start:start + config.eval_batch_size]
        out = jax.device_get(apply(variables, batch))
        probs = np.exp(np.asarray(out.log_probs, np.float64))
        for i, path in enumerate(paths[start:start + len(batch)]):
            best = np.argsort(-probs[i], kind="stable")[:min(top_k, len(names))]
            stem = os.path.splitext(os.path.basename(path))[0]
            figure = os.path.join(output_dir, f"{stem}_attention.png")
            masks = {name: np.asarray(m)[i:i + 1] for name, m in out.masks.items()}
            if masks:
                plots.plot_attention_masks(batch[i:i + 1], masks, None, np.asarray([best[0]]), figure,
                                           class_names=names)
            predictions.append({
                "image": os.path.abspath(path),
                "top": [{"class": int(c), "name": names[c], "probability": float(probs[i, c])} for c in best],
                "gates": {name: float(g) for name, g in zip(model.hypothesis_names, np.asarray(out.gates)[i])},
                "attention_png": figure if masks else None,
            })
    with open(os.path.join(output_dir, "predictions.json"), "w") as f:
        json.dump({"model": source, "predictions": predictions}, f, indent=2)
    return predictions
