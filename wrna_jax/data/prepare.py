"""Prepared TFDS builders for `config.dataset`: downloaded, read from a manual download, or
generated here, with a `DatasetUnavailableError` that says what to do where that is impossible.

Fields read from `config.dataset`: `name` (the registry entry), `data_dir` (TFDS data_dir; None:
TFDS's default, ~/tensorflow_datasets), `manual_dir` (None: <data_dir>/downloads/manual: where
hand-downloaded source files are looked for), `fold` (datasets with folds), the splits.
"""

from __future__ import annotations

import importlib
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from wrna_jax.data import holdout
from wrna_jax.data.registry import dataset_spec
from wrna_jax.data.tensorflow_cpu import tf  # noqa: F401  (TFDS below runs on the CPU)
from wrna_jax.errors import ConfigError, MissingFileError

SPLIT_FIELDS = ("train_split", "eval_split", "test_split")


class DatasetUnavailableError(MissingFileError):
    """The dataset is not prepared in data_dir and cannot be prepared here; the message says
    what to download and where to put it."""


def get_builder(dataset: Mapping[str, Any], **overrides: Any) -> tfds.core.DatasetBuilder:
    """The prepared builder for `config.dataset`, downloaded or generated when needed.

    `overrides` go to the dataset's own `prepare` function (generated datasets: e.g. another
    number of distractors). Raises `DatasetUnavailableError` (what to download, where to) when
    the data are neither prepared nor obtainable, and ValueError when a configured split does
    not exist; both before any model work.
    """
    spec = dataset_spec(dataset)
    if spec.prepare:
        module, function = spec.prepare.split(":")
        builder = getattr(importlib.import_module(module), function)(dataset, **overrides)
    else:
        if overrides:
            raise ConfigError(f"{spec.name} is prepared by TFDS: it takes no overrides ({sorted(overrides)}).")
        if spec.module:
            importlib.import_module(spec.module)
        try:
            builder = prepare_builder(spec.builder_name(dataset), dataset["data_dir"], dataset["manual_dir"])
        except DatasetUnavailableError as error:
            if spec.unavailable_hint:
                raise DatasetUnavailableError(f"{error}\n{spec.unavailable_hint}") from error
            raise
    check_splits(dataset, builder)
    return builder


def check_splits(dataset: Mapping[str, Any], builder: tfds.core.DatasetBuilder) -> None:
    """Fails clearly when a configured split (or its registry default) is not a split of
    `builder` (TFDS slicing such as 'train[:90%]' is allowed)."""
    spec = dataset_spec(dataset)
    for field in SPLIT_FIELDS:
        split = spec.split(dataset, field)
        if split == holdout.HELD_OUT:
            if holdout.protocol(dataset) != "holdout":
                raise ConfigError(f"config.dataset.{field}={split!r} exists only with "
                                  "config.dataset.validation.protocol='holdout'.")
            continue
        try:
            builder.info.splits[split]
        except (KeyError, ValueError) as error:
            raise ConfigError(
                f"config.dataset.{field}={split!r} is not a split of {builder.name} (it has "
                f"{', '.join(sorted(builder.info.splits))}); the usual choice for "
                f"{spec.name} is {getattr(spec, field)!r}.") from error


def prepare_builder(name: str, data_dir: str | None, manual_dir: str | None = None, *,
                    probe_timeout: float = 5.0) -> tfds.core.DatasetBuilder:
    """The TFDS builder `name`, prepared in `data_dir` (downloading it when needed).

    Files already in `manual_dir` (default <data_dir>/downloads/manual) under the names TFDS
    expects are used instead of downloading them. Before downloading, the hosts of the other
    files are probed (TCP connect, `probe_timeout` seconds; skipped behind a proxy): TFDS itself
    retries an unreachable host for minutes before failing, and there is no TFDS option to ask
    whether a host is reachable, hence this probe. Unreachable hosts, download failures and
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
