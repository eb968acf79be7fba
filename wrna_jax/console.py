"""What train.py, eval.py and predict.py show on the console: their own output (progress,
results, `error: ...` lines) and the warnings that ask something of the user. The libraries' INFO
logging (absl, orbax, TFDS, clu, JAX) and TensorFlow's C++ start-up lines show only with
`--verbosity=1` (`-v 1`; `-v 2` adds DEBUG).

Three sources, three switches (`wrna_jax/cli.py` sets the last; `wrna_jax/data/tensorflow_cpu.py`,
the one importer of TensorFlow, the first two):
- TensorFlow's C++ start-up lines ("oneDNN custom operations are on", "All log messages before
  absl::InitializeLog() ...") are written to file descriptor 2 while `tensorflow` is imported,
  before any Python logging exists and whatever TF_CPP_MIN_LOG_LEVEL says: `import_tensorflow`
  imports it with that descriptor captured, and writes what it caught only if the import fails.
- Later TensorFlow C++ logging obeys TF_CPP_MIN_LOG_LEVEL, set (unless the user set it) to hide
  INFO.
- Python logging (absl's handler under `app.run`) gets a filter on the console handler only:
  records below WARNING, and the WARNINGs of orbax and TFDS (notices such as "Given directory is
  read only" or "Using custom data configuration" that need no action), are dropped unless
  asked for. Logger levels are left as absl sets them, so other handlers see everything.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Sequence

from absl import logging as absl_logging

# Libraries whose WARNINGs are notices, not requests: shown from --verbosity=1 (their ERRORs always).
CHATTY_LIBRARIES = (f"{os.sep}orbax{os.sep}", f"{os.sep}tensorflow_datasets{os.sep}")


def verbosity_in(argv: Sequence[str]) -> int:
    """The --verbosity/-v value in `argv` (0 when absent or unreadable), read before the flags are
    parsed: what TensorFlow prints at import time depends on it."""
    value = None
    for i, arg in enumerate(argv):
        for name in ("--verbosity", "-v"):
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def import_tensorflow(verbosity: int) -> None:
    """Imports TensorFlow, with its C++ start-up lines kept off the console unless `verbosity`
    >= 1 (they are replayed if the import fails). Sets TF_CPP_MIN_LOG_LEVEL=1 (INFO hidden) for
    its later C++ logging unless the user set it."""
    if verbosity >= 1:
        import tensorflow  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            caught.seek(0)
            sys.stderr.write(caught.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class ConsoleFilter(logging.Filter):
    """Passes the records the console shows at `verbosity` (see the module docstring)."""

    def __init__(self, verbosity: int):
        super().__init__()
        self.verbosity = verbosity

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbosity >= 2:
            return True
        if self.verbosity == 1:
            return record.levelno >= logging.INFO
        if record.levelno >= logging.ERROR:
            return True
        return (record.levelno >= logging.WARNING
                and not any(part in (record.pathname or "") for part in CHATTY_LIBRARIES))


def configure(verbosity: int) -> None:
    """Puts the console filter for `verbosity` on absl's handler (replacing an earlier one)."""
    handler = absl_logging.get_absl_handler()
    for old in [f for f in handler.filters if isinstance(f, ConsoleFilter)]:
        handler.removeFilter(old)
    handler.addFilter(ConsoleFilter(verbosity))
