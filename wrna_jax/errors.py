"""Errors that are the user's to fix: a config value, a flag, a file, the workdir.

Their messages say what is wrong and how to fix it. `train.py`, `eval.py` and
`python -m wrna_jax.convert` print them as one line `error: ...` and exit with status 2
(`wrna_jax/cli.py`); any other exception is a bug and keeps its traceback. Each class also
derives from the built-in exception it refines, so `except ValueError` still catches a config
error.
"""


class UserError(Exception):
    """A problem with the user's input; the message names it and the fix."""


class ConfigError(UserError, ValueError):
    """A config field or command-line flag has a value that cannot work."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the run needs does not exist."""


class BadFileError(UserError, ValueError):
    """A file the user gave (weights, a manual download) is not what it should be."""


class WorkdirError(UserError, OSError):
    """The workdir (or output directory) is in use by another run, or cannot be written."""


class DamagedCheckpointError(UserError, RuntimeError):
    """No intact checkpoint is left to resume from or evaluate (the damaged ones are named)."""


class TrainingDivergedError(UserError, FloatingPointError):
    """The loss, gradients or statistics became NaN or infinite; the message names the
    checkpoint that is kept."""


class MissingDependencyError(UserError, ImportError):
    """An optional package this input needs (torch for .pth files) is not installed."""
