"""What train.py and eval.py share: their flags, and how they end.

A user error (`wrna_jax.errors.UserError`, a flag that does not parse, an unknown config field,
a config file that cannot be loaded) ends the command with one line `error: ...` on stderr and
exit status 2, before any long work; any other exception is a bug and keeps its traceback.
`invoke` is the same path without absl's `app.run`, for tests. Both apply the XLA:CPU defaults
(wrna_jax/xla_flags.py) before JAX starts and the console's quiet default (wrna_jax/console.py:
the libraries' INFO logging only with --verbosity=1). TensorFlow is imported only by the modules
that need it (the host feed, dataset preparation), through `wrna_jax/data/tensorflow_cpu.py`,
which keeps its C++ start-up lines off the console: a run on the device feed never loads it.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from wrna_jax import console, xla_flags
from wrna_jax.errors import ConfigError, UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report a process ended by SIGINT

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The run's directory: checkpoints, logs and figures.")
config_flags.DEFINE_config_file("config", None, "The configuration file (configs/*.py[:argument]); "
                                "override any field with --config.FIELD=VALUE.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def define_checkpoint_flags(output_default: str) -> None:
    """--checkpoint and --output_dir, for the scripts that read a run (eval.py, predict.py);
    defined once however many of them are imported (tests import both)."""
    if "checkpoint" not in FLAGS:
        flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number of the run in --workdir.")
    if "output_dir" not in FLAGS:
        flags.DEFINE_string("output_dir", None, f"Where to write the results (default {output_default}).")


def _forget_overrides() -> None:
    """Unparses every flag and drops the `--config.FIELD` flags the last parse defined."""
    FLAGS.unparse_flags()
    for name in [name for name in FLAGS if name.startswith("config.")]:
        delattr(FLAGS, name)


def _parse_argv(argv: Sequence[str]) -> list[str]:
    """absl's parse with `sys.argv` set to `argv`: ml_collections reads the overrides there."""
    saved, sys.argv = sys.argv, list(argv)
    try:
        return FLAGS(list(argv))
    finally:
        sys.argv = saved


def _unknown_field(argv: Sequence[str]) -> str | None:
    """The message for the first `--config.a.b=...` that names no field of the config file."""
    plain = [arg for arg in argv if not arg.startswith("--config.")]
    try:
        _forget_overrides()
        _parse_argv(plain)
        config = FLAGS.config
    except Exception:  # The config itself does not load: nothing to compare with.
        return None
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        parts = arg[len("--config."):].split("=", 1)[0].split(".")
        node = config
        for depth, part in enumerate(parts):
            if isinstance(node, ml_collections.ConfigDict) and part in node:
                node = node[part]
                continue
            section = ".".join(["config", *parts[:depth]])
            fields = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            close = difflib.get_close_matches(part, fields, n=3)
            hint = (f"did you mean {', '.join(f'{section}.{name}' for name in close)}?" if close
                    else f"{section} has the fields {', '.join(fields)}." if fields
                    else f"{section} is a value, not a section.")
            return (f"{arg.split('=', 1)[0]}: {section} has no field {part!r}; {hint} "
                    "Every field and its default is in configs/default.py.")
    return None


def _last_line(text: str) -> str:
    """The last non-empty line of a multi-line message (ml_collections appends the cause)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else str(text)


def parse_flags(argv: Sequence[str], positional: bool = False) -> list[str]:
    """absl's flag parsing, with every failure raised as a ConfigError that names the flag;
    arguments after the flags are refused unless `positional` (they are returned after the
    program name)."""
    config_arg = next((arg for arg in argv if arg.startswith("--config=")), "--config")
    try:
        remaining = _parse_argv(argv)
        FLAGS.config.keys()  # a config file that failed to load raises only when first read
    except (AttributeError, KeyError) as error:
        raise ConfigError(_unknown_field(argv) or _last_line(error)) from None
    except flags.Error as error:
        if isinstance(error.__cause__, (AttributeError, KeyError)):
            raise ConfigError(_unknown_field(argv) or _last_line(error)) from None
        raise ConfigError(f"{config_arg}: {_last_line(error)}" if "config file" in str(error)
                          else str(error)) from None
    except SyntaxError as error:  # the config file is not valid Python
        raise ConfigError(f"{config_arg}: the config file is not valid Python: {error.msg} (line "
                          f"{error.lineno} of {error.filename}); fix that line.") from None
    except (OSError, ValueError, TypeError) as error:  # the config file failed to load
        raise ConfigError(f"{config_arg}: {_last_line(error)}") from None
    if len(remaining) > 1 and not positional:
        raise ConfigError(f"unexpected arguments {remaining[1:]}: every setting is a flag "
                          "(--workdir=DIR, --config.FIELD=VALUE).")
    return remaining


def report(error: UserError) -> int:
    """Prints `error: <message>` on stderr; returns the exit status for user errors."""
    sys.stderr.write(f"error: {error}\n")
    sys.stderr.flush()
    return EXIT_USER_ERROR


def invoke(main: Callable[..., Any], argv: Sequence[str], positional: bool = False) -> int:
    """Parses `argv` and runs `main()` (`main(arguments)` with `positional`): its exit status (0
    for None), or 2 after printing a user error. Flags keep their values until the next call
    (tests call it repeatedly)."""
    xla_flags.apply_cpu_defaults()
    _forget_overrides()
    try:
        remaining = parse_flags(argv, positional)
        console.configure(FLAGS.verbosity)
        return int((main(remaining[1:]) if positional else main()) or 0)
    except UserError as error:
        return report(error)


def run(main: Callable[..., Any], positional: bool = False) -> None:
    """A script's entry point: absl's `app.run` (logging, --help) around `invoke`'s handling."""
    xla_flags.apply_cpu_defaults()

    def parse(argv: list[str]) -> list[str]:
        try:
            return parse_flags(argv, positional)
        except UserError as error:
            sys.exit(report(error))

    def guarded(argv: list[str]) -> None:
        console.configure(FLAGS.verbosity)
        try:
            sys.exit(int((main(argv[1:]) if positional else main()) or 0))
        except UserError as error:
            sys.exit(report(error))
        except KeyboardInterrupt:  # Ctrl-C before or after the training loop, which saves itself
            sys.stderr.write("Interrupted.\n")
            sys.exit(EXIT_INTERRUPTED)

    app.run(guarded, flags_parser=parse)
