"""From `config.dataset` to prepared TFDS builders and per-example preprocessing.

A small registry, `DATASETS`, maps each `config.dataset.name` to its TFDS builder, class count,
default splits, preprocessing family and box feature; training and evaluation ask here, never
TFDS directly. Fields read from `config.dataset` (absent optional ones take the default shown):

* `name`, `data_dir` (TFDS data_dir; None: TFDS's default, ~/tensorflow_datasets),
  `train_split`, `eval_split`, `test_split` (checked against the prepared builder),
* `manual_dir` (None: <data_dir>/downloads/manual): where hand-downloaded source files are
  looked for (the archives of a catalogue dataset, or UEC Food-100 / Adience),
* `fold` (0): the cross-validation fold of UEC Food-100 and Adience,
* fine-grained family: `image_size` (224), `resize_size` (256), `crop_to_bbox` (False),
  `ten_crop` (False), `antialias` (False); see `preprocessing`.

A dataset that is not prepared in `data_dir` is downloaded and prepared; where that is
impossible (no network, missing manual files) `get_builder` stops at once with a
`DatasetUnavailableError` that says which files to get and where to put them.
"""

from __future__ import annotations

import dataclasses
import importlib
import socket
import threading
import types
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from wrna_jax.data import cluttered_mnist, pipeline, preprocessing

FAMILIES = ("fine_grained", "cifar", "cluttered_mnist")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the code needs to know about one dataset beyond what its TFDS builder says.

    `tfds_name` may contain '{fold}', filled from `config.dataset.fold`. `module`, when set, is
    imported before the builder is looked up (it registers a builder outside the TFDS
    catalogue). `bbox_key` names the box feature ('a/b' for nested features) if there is one.
    `image_size` is the model's input side for the family defaults (fine-grained crops take
    `config.dataset.image_size`).
    """

    tfds_name: str
    num_classes: int
    family: str
    train_split: str = "train"
    eval_split: str = "test"
    test_split: str = "test"
    image_size: int = 224
    bbox_key: str | None = None
    mean: tuple[float, ...] = preprocessing.IMAGENET_MEAN
    std: tuple[float, ...] = preprocessing.IMAGENET_STD
    module: str | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family={self.family!r}: must be one of {FAMILIES}.")


DATASETS: Mapping[str, DatasetSpec] = types.MappingProxyType({
    "cluttered_mnist": DatasetSpec("cluttered_mnist", 10, "cluttered_mnist",
                                   eval_split="validation", image_size=40),
    # Fine-grained: no official validation split; the released code evaluated on test.
    "stanford_dogs": DatasetSpec("stanford_dogs", 120, "fine_grained", bbox_key="objects/bbox"),
    "caltech_birds2011": DatasetSpec("caltech_birds2011", 200, "fine_grained", bbox_key="bbox"),
    "cars196": DatasetSpec("cars196", 196, "fine_grained", bbox_key="bbox"),
    "food101": DatasetSpec("food101", 101, "fine_grained", eval_split="validation",
                           test_split="validation"),
    "uec_food100": DatasetSpec("uec_food100/fold{fold}", 100, "fine_grained",
                               module="wrna_jax.data.uec_food100"),
    "adience_age": DatasetSpec("adience/age_fold{fold}", 8, "fine_grained",
                               module="wrna_jax.data.adience"),
    "adience_gender": DatasetSpec("adience/gender_fold{fold}", 2, "fine_grained",
                                  module="wrna_jax.data.adience"),
    "cifar10": DatasetSpec("cifar10", 10, "cifar", image_size=32,
                           mean=preprocessing.CIFAR10_MEAN, std=preprocessing.CIFAR10_STD),
    "cifar100": DatasetSpec("cifar100", 100, "cifar", image_size=32,
                            mean=preprocessing.CIFAR100_MEAN, std=preprocessing.CIFAR100_STD),
})


class DatasetUnavailableError(FileNotFoundError):
    """The dataset is not prepared in data_dir and cannot be prepared here; the message says
    what to download and where to put it."""


def spec(dataset: Mapping[str, Any] | str) -> DatasetSpec:
    """The registry entry of `config.dataset` (or of a dataset name)."""
    name = dataset if isinstance(dataset, str) else dataset["name"]
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset.name {name!r}; valid choices are "
                         f"{', '.join(map(repr, DATASETS))}.")
    return DATASETS[name]


def tfds_name(dataset: Mapping[str, Any]) -> str:
    """The TFDS builder name (with config) of `config.dataset`, e.g. 'uec_food100/fold2'."""
    return spec(dataset).tfds_name.format(fold=int(dataset.get("fold", 0) or 0))


def config_fields(name: str) -> dict[str, Any]:
    """The `config.dataset` fields a config for dataset `name` should set: its name and the
    registry's default splits (e.g. for `config.dataset.update(...)` in a configs/ file)."""
    entry = spec(name)
    return dict(name=name, train_split=entry.train_split, eval_split=entry.eval_split,
                test_split=entry.test_split)


def num_classes(dataset: Mapping[str, Any] | str) -> int:
    """The number of classes of `config.dataset` (the model's `num_classes`)."""
    return spec(dataset).num_classes


def cluttered_mnist_builder(dataset: Mapping[str, Any], num_distractors: int | None = None,
                            **sizes: int) -> tfds.core.DatasetBuilder:
    """The prepared cluttered-MNIST builder of `dataset` (optionally with another D or sizes)."""
    fields = dict(num_distractors=dataset["num_distractors"], num_train=dataset["num_train"],
                  num_validation=dataset["num_validation"], num_test=dataset["num_test"])
    fields.update(sizes)
    if num_distractors is not None:
        fields["num_distractors"] = num_distractors
    config = cluttered_mnist.make_config(seed=int(dataset.get("seed", 0)),
                                         source=dataset["source"], **fields)
    return pipeline.load_builder("cluttered_mnist", dataset["data_dir"], {"config": config})


def get_builder(dataset: Mapping[str, Any]) -> tfds.core.DatasetBuilder:
    """The prepared builder for `config.dataset`, downloaded or generated when needed.

    Raises `DatasetUnavailableError` (what to download, where to) when the data are neither
    prepared nor obtainable, and ValueError when a configured split does not exist; both
    before any model work.
    """
    entry = spec(dataset)
    if entry.family == "cluttered_mnist":
        builder = cluttered_mnist_builder(dataset)
    else:
        if entry.module:
            importlib.import_module(entry.module)
        builder = prepare_builder(tfds_name(dataset), dataset.get("data_dir"),
                                  dataset.get("manual_dir"))
    check_splits(dataset, builder)
    return builder


def check_splits(dataset: Mapping[str, Any], builder: tfds.core.DatasetBuilder) -> None:
    """Fails clearly when `config.dataset.{train,eval,test}_split` is not a split of `builder`
    (TFDS slicing such as 'train[:90%]' is allowed)."""
    entry = spec(dataset)
    for field in ("train_split", "eval_split", "test_split"):
        split = dataset.get(field)
        if split is None:
            continue
        try:
            builder.info.splits[split]
        except (KeyError, ValueError) as error:
            raise ValueError(
                f"config.dataset.{field}={split!r} is not a split of {builder.name} (it has "
                f"{', '.join(sorted(builder.info.splits))}); the usual choice for "
                f"{dataset['name']} is {getattr(entry, field)!r}.") from error


def prepare_builder(name: str, data_dir: str | None, manual_dir: str | None = None, *,
                    probe_timeout: float = 5.0) -> tfds.core.DatasetBuilder:
    """The TFDS builder `name`, prepared in `data_dir` (downloading it when needed).

    Files already in `manual_dir` (default <data_dir>/downloads/manual) under the names TFDS
    expects are used instead of downloading them. Before downloading, the hosts of the other
    files are probed (TCP connect, `probe_timeout` seconds; skipped behind a proxy): TFDS
    itself retries an unreachable host for minutes. Unreachable hosts, download failures and
    missing manual files all become a `DatasetUnavailableError`.
    """
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    manual = epath.Path(manual_dir).expanduser() if manual_dir else (
        epath.Path(builder.data_dir_root) / "downloads" / "manual")
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        try:
            builder.download_and_prepare(download_config=download_config)
        except (FileNotFoundError, AssertionError) as error:
            raise DatasetUnavailableError(
                _manual_message(builder, manual, error)) from error
        return builder

    files = _source_files(builder)
    needed = {filename: urls for filename, urls in files.items()
              if not (manual / filename).exists()}
    unreachable = _unreachable_hosts((url for urls in needed.values() for url in urls),
                                     probe_timeout)
    blocked = {filename: urls for filename, urls in needed.items()
               if all(_host(url) in unreachable for url in urls)}
    if blocked:
        reasons = "; ".join(f"{host[0]}: {why}" for host, why in sorted(unreachable.items()))
        raise DatasetUnavailableError(_download_message(builder, manual, files, blocked,
                                                        f"cannot reach {reasons}"))
    try:
        builder.download_and_prepare(download_config=download_config)
    except (OSError, tfds.download.DownloadError,
            tfds.download.download_manager.NonMatchingChecksumError) as error:
        raise DatasetUnavailableError(_download_message(
            builder, manual, files, needed, f"{type(error).__name__}: {error}")) from error
    return builder


def _source_files(builder: tfds.core.DatasetBuilder) -> dict[str, list[str]]:
    """The files the builder downloads: file name -> the URLs it can come from."""
    files: dict[str, list[str]] = {}
    for url, info in (builder.url_infos or {}).items():
        filename = info.filename or urllib.parse.urlparse(url).path.rsplit("/", 1)[-1]
        files.setdefault(filename, []).append(url)
    return files


def _host(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlparse(url)
    return parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)


def _unreachable_hosts(urls: Iterable[str], timeout: float) -> dict[tuple[str, int], str]:
    """The hosts of `urls` that refuse or time out a TCP connection, with the reason.

    All hosts are probed concurrently in daemon threads, so a hanging DNS lookup costs at most
    `timeout` seconds. Behind an HTTP(S) proxy nothing is probed (the proxy decides).
    """
    if urllib.request.getproxies():
        return {}
    hosts = {_host(url) for url in urls}
    reasons: dict[tuple[str, int], str] = {host: f"no answer within {timeout:g} s"
                                           for host in hosts}
    lock = threading.Lock()

    def probe(host: tuple[str, int]) -> None:
        try:
            socket.create_connection(host, timeout=timeout).close()
            outcome = None
        except OSError as error:
            outcome = f"{type(error).__name__}: {error}"
        with lock:
            if outcome is None:
                reasons.pop(host)
            else:
                reasons[host] = outcome

    threads = [threading.Thread(target=probe, args=(host,), daemon=True) for host in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    with lock:
        return dict(reasons)


def _download_message(builder: tfds.core.DatasetBuilder, manual: epath.Path,
                      files: Mapping[str, list[str]], missing: Mapping[str, list[str]],
                      reason: str) -> str:
    """What to do when a catalogue dataset is not prepared and cannot be downloaded here."""
    sizes = {info.filename: info.size for info in (builder.url_infos or {}).values()}
    lines = [
        f"Dataset {_full_name(builder)!r} (version {builder.version}) is not prepared in "
        f"data_dir {builder.data_dir_root} (no {builder.data_dir}) and cannot be downloaded "
        f"here ({reason}). Either:",
        "  1. prepare it where there is internet access:",
        f"       python -c \"import tensorflow_datasets as tfds; tfds.builder("
        f"'{_full_name(builder)}', data_dir='DIR').download_and_prepare()\"",
        f"     and copy DIR/{_relative_data_path(builder)} to {builder.data_dir}, or",
        f"  2. download these files by hand into {manual} (config.dataset.manual_dir; default "
        f"<data_dir>/downloads/manual) and run again, which prepares the dataset offline:",
    ]
    for filename in sorted(files):
        size = f" ({sizes[filename]})" if sizes.get(filename) else ""
        have = "" if filename in missing else "  [already there]"
        lines.append(f"       {filename}{size} from {' or '.join(files[filename])}{have}")
    return "\n".join(lines)


def _manual_message(builder: tfds.core.DatasetBuilder, manual: epath.Path,
                    error: BaseException) -> str:
    """What to do when a manual-download dataset's files are missing."""
    instructions = builder.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()
    return (f"Dataset {_full_name(builder)!r} is not prepared in data_dir "
            f"{builder.data_dir_root} and its manual download is not in {manual} "
            f"(config.dataset.manual_dir; default <data_dir>/downloads/manual): {error}"
            + ("" if instructions in str(error) else f"\n{instructions}"))


def _full_name(builder: tfds.core.DatasetBuilder) -> str:
    """'name/config' for builders with configs, else 'name'."""
    config = builder.builder_config
    return f"{builder.name}/{config.name}" if config else builder.name


def _relative_data_path(builder: tfds.core.DatasetBuilder) -> str:
    return str(epath.Path(builder.data_dir).relative_to(epath.Path(builder.data_dir_root)))


def preprocess_fn(dataset: Mapping[str, Any], train: bool,
                  ten_crop: bool | None = None) -> pipeline.PreprocessFn:
    """Per-example preprocessing for training (`train`) or evaluation.

    `ten_crop` overrides `config.dataset.ten_crop` (e.g. centre-crop validation during
    training, ten-crop in the final evaluation); it never applies to training.
    """
    entry = spec(dataset)
    if entry.family == "cluttered_mnist":
        return pipeline.preprocess_cluttered_mnist  # Randomised at generation: no augmentation.
    if ten_crop is None:
        ten_crop = bool(dataset.get("ten_crop", False))
    crop_to_bbox = bool(dataset.get("crop_to_bbox", False))
    if entry.family == "cifar":
        if ten_crop or crop_to_bbox:
            raise ValueError(f"{dataset['name']}: ten_crop and crop_to_bbox apply to the "
                             "fine-grained datasets only.")
        return preprocessing.CifarPreprocess(train=train, mean=entry.mean, std=entry.std)
    if crop_to_bbox and entry.bbox_key is None:
        raise ValueError(f"{dataset['name']} has no bounding boxes: set "
                         "config.dataset.crop_to_bbox=False.")
    return preprocessing.FineGrainedPreprocess(
        train=train, image_size=int(dataset.get("image_size") or entry.image_size),
        resize_size=int(dataset.get("resize_size") or 256),
        bbox_key=entry.bbox_key if crop_to_bbox else None, ten_crop=ten_crop and not train,
        antialias=bool(dataset.get("antialias", False)), mean=entry.mean, std=entry.std)


def input_shape(dataset: Mapping[str, Any], builder: tfds.core.DatasetBuilder | None) -> tuple[int, ...]:
    """The (H, W, C) of one preprocessed image (of one crop, with ten-crop evaluation).

    Fine-grained images take `config.dataset.image_size`; the others have the stored shape.
    """
    entry = spec(dataset)
    if entry.family == "fine_grained":
        side = int(dataset.get("image_size") or entry.image_size)
        return (side, side, 3)
    if builder is None:
        raise ValueError("input_shape(config.dataset, builder): the builder is needed for "
                         f"{dataset['name']}.")
    return tuple(builder.info.features["image"].shape)
