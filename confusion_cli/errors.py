"""The one exception type for user mistakes: the CLI prints its message on one line, no traceback."""


class ConfusionError(Exception):
    """A mistake the user can fix; the message says what is wrong and how to fix it."""


class DataError(ConfusionError):
    """A dataset is missing, corrupt or unknown."""
