"""Errors a user can cause. Each message names the file, record or setting and says what to do.

The CLI maps :class:`UserError` to exit code 2; anything else is a bug and exits 1.
"""


class UserError(Exception):
    """A problem with the user's input, configuration or state, not a bug."""


class ConfigError(UserError):
    """The configuration file or environment holds an invalid value."""


class InputError(UserError):
    """A batch or reference input cannot be read."""


class ReferenceNotFound(UserError):
    """No reference profile exists yet for a dataset."""


class RulesError(UserError):
    """The alert rule suite in expectations/ is malformed."""


class NotRecorded(Exception):
    """A run's results could be written nowhere (MLflow refused them and the local spool could not hold them:
    a full disk). Not a bug and not the user's input: the CLI says which path failed and why, and exits 1."""
