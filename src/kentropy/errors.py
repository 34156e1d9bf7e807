"""The one exception type for bad input: the CLI prints its message on one line and exits 2."""


class KentropyError(Exception):
    """Bad input from the user (a file, field, flag or model): the message names it."""
