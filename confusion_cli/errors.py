"""The one exception type for user mistakes: the CLI prints its message on one line, no traceback."""


class ConfusionError(Exception):
    """A mistake the user can fix; the message says what is wrong and how to fix it."""


class DataError(ConfusionError):
    """A dataset is missing, corrupt or unknown."""


def is_count(value: object, minimum: int = 1, allow_none: bool = False) -> bool:
    """Whether a config value is an integer >= ``minimum`` (a bool is not), or None if allowed."""
    if value is None:
        return allow_none
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_number(value: object) -> bool:
    """Whether a config value is an int or a float (a bool is not a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
