"""User-facing errors.

Anything the user can fix (a bad recipe value, a missing file, mismatched models) raises a
`DistilError`; the CLI prints its message as one line instead of a traceback. Bugs stay ordinary
exceptions so they keep their stack trace.
"""


class DistilError(Exception):
    """A problem the user can fix; its message says what and how."""


class ConfigError(DistilError, ValueError):
    """A recipe or argument value is invalid. The message starts with the field path."""


class NonFiniteLossError(DistilError):
    """A loss part became NaN or inf; training stopped before the bad step was applied."""


class TrainingInterrupted(DistilError):
    """Ctrl-C stopped training at the end of a step, after a checkpoint was saved."""


def short_repr(value: object, limit: int = 80) -> str:
    """repr of an offending value, cut so that a huge one still gives a readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."
