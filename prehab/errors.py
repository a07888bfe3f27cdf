"""The one error type the CLI turns into a single line and a non-zero exit."""


class UsageError(Exception):
    """Bad input from the user: the message names the bad value and what is allowed."""


class NumericalError(Exception):
    """A computation went non-finite (a diverged loss): the message names the step and the term."""
