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


def checked_reference(run_id: str, found: bool, kind: str | None) -> str:
    """``--reference RUN_ID`` once a run store has looked the run up (``found``, its ``collapse.kind`` tag): the
    id, or the error that names what is wrong. One wording for every store."""
    if not found:
        raise UserError(f"--reference {run_id}: no such MLflow run")
    if kind != "reference":  # monitors.core.schema.RunKind.REFERENCE
        raise UserError(f"--reference {run_id}: that run is a {kind or 'non-collapse-monitor'} run, not a reference")
    return run_id


def no_reference(dataset: str) -> ReferenceNotFound:
    """The error of a dataset without a finished reference, saying how to build one."""
    return ReferenceNotFound(f"dataset {dataset!r} has no reference yet: build one from trusted human text with "
                             f"`collapse-monitor reference build --input PATH --dataset {dataset}`")
