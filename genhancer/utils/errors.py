"""User-facing errors: one clear message saying what was wrong, where (file, record, key) and how to fix it.

Entry points catch ``UserError`` (see ``genhancer.utils.cli.entry_point``), print the message and return 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: config, paths, data. The message is shown as is."""


class ConfigError(UserError, ValueError):
    """A config file, key or value is wrong."""


class DataError(UserError):
    """A data file or record is missing or malformed."""


class ModelDirError(UserError):
    """A model directory is missing files or is of the wrong kind."""


class TrainingDiverged(UserError):
    """The loss became NaN/inf; the run stopped before applying the update (the message names the last good
    checkpoint)."""
