"""User-facing errors: the CLI prints them as one line and exits non-zero, never with a traceback."""


class SweepbenchError(Exception):
    """Bad input or an impossible request. ``str(err)`` is the whole message, one line."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(" ".join(str(message).split()))  # force one line
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(SweepbenchError):
    """A bad flag value or combination (exit code 2, like Click's usage errors)."""

    exit_code = 2
