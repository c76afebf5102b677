"""The one exception type the CLI turns into a one-line message (no traceback)."""


class UsageError(ValueError):
    """Bad user input: an unknown name, an out-of-range setting, a missing file.

    The message must be one line that names the problem and, where it helps, the valid choices.
    """
