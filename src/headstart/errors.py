"""One family of exceptions. Every message says what is wrong, where, and how to fix it.

The CLI prints ``str(error)`` as a single line (no traceback unless ``--debug``), so a message
must stand on its own: name the file, row or argument, what was expected, and the fix.
"""

from __future__ import annotations


class HeadstartError(Exception):
    """Base class for every error headstart raises on purpose.

    ``fix`` is an optional hint appended as "Fix: ..." so that messages share one shape.
    """

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message} Fix: {fix}" if fix else message)


class DataError(HeadstartError, ValueError):
    """The user's data cannot be used as given (unreadable file, missing column, one class...)."""


class ConfigError(HeadstartError, ValueError):
    """An argument or configuration value is out of range or inconsistent."""


class BackboneError(HeadstartError, LookupError):
    """A backbone cannot be found, loaded or used with this data."""


class ArtifactError(HeadstartError, OSError):
    """A saved model folder is missing, incomplete or from an incompatible version."""


class CheckpointError(HeadstartError, ValueError):
    """A checkpoint cannot be resumed: it is damaged or was made by another run."""


class OutputError(HeadstartError, OSError):
    """An output path cannot be written without destroying something that is not headstart's."""


class MissingDependencyError(HeadstartError, ImportError):
    """An optional package is needed for this feature and is not installed."""

    def __init__(self, package: str, feature: str, extra: str | None = None) -> None:
        hint = f"pip install 'headstart[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{feature} needs the package '{package}', which is not installed.", fix=hint)


class HeadstartWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints it as a log line)."""
